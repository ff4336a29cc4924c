//! What `portfwd check` can find, and what it says: the verdicts, the kinds of finding with
//! their facts (for `--json`), and each finding's sentence, facts and fix as the user reads
//! them. Which finding applies is decided in the parent module; only the wording is here.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

use super::{netfilter::NatRule, netns::Namespace, probe, sockets::Bound};
use crate::publish::{Forward, Protocol};

/// How bad a finding is. Ordered: the worst finding is a forward's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A fact worth knowing, not a problem (a container engine's reservation of the port).
    Info,
    /// Works.
    Ok,
    /// Works, or cannot be told, but something deserves a look.
    Warn,
    /// Does not work (for some or all clients).
    Fail,
}

impl Verdict {
    /// `INFO`, `OK`, `WARN`, `FAIL`.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Info => "INFO",
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// What was found, with the facts behind it (for `--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// TCP: the target accepted a connection.
    Healthy { rtt_ms: f64 },
    /// UDP: the container answers and a socket is bound to the port.
    UdpBound { rtt_ms: f64, sockets: Vec<Bound> },
    /// The host has no route to the target.
    NoRoute,
    /// The next hop does not answer ARP.
    NoNeighbour { next_hop: IpAddr, dev: String },
    /// The next hop is there, the target does not answer in time.
    NoAnswer,
    /// A router reported the target unreachable.
    HostUnreachable,
    /// Refused: nothing bound to the port. `listening` are the sockets of the same protocol
    /// that the container's namespace has instead.
    NothingListens { listening: Vec<Bound> },
    /// The app is bound to the port on 127.0.0.1 or ::1 only.
    LoopbackOnly { sockets: Vec<Bound> },
    /// The app is bound to the port on another address than the target.
    OtherAddress { sockets: Vec<Bound> },
    /// Refused although something is bound to the port on a matching address.
    RefusedWhileListening { sockets: Vec<Bound> },
    /// UDP target without a namespace to look into.
    NotProbed,
    /// A process on the host is bound to the host port.
    HostPortInUse { sockets: Vec<Bound> },
    /// A container engine's own process (docker-proxy, dockerd, conmon, ...) holds the host
    /// port: its reservation, which portfwd's kernel path goes ahead of.
    EngineReservation { engine: String, sockets: Vec<Bound> },
    /// The daemon does not serve the forward now (its container is stopped, restarting, or has
    /// no address on its network): `reason` is the daemon's.
    Inactive { reason: String },
    /// An iptables/nftables DNAT rule publishes the host port too.
    PublishedTwice { rule: NatRule },
    /// The probe failed in an unexpected way.
    ProbeFailed { error: String },
}

/// One finding about a forward: verdict, reason, the facts, and a fix.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub verdict: Verdict,
    #[serde(flatten)]
    pub kind: Kind,
    /// One sentence.
    pub reason: String,
    /// More facts, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// What to do; may span lines (commands on their own line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(verdict: Verdict, kind: Kind, reason: impl Into<String>) -> Self {
        Finding {
            verdict,
            kind,
            reason: reason.into(),
            details: Vec::new(),
            fix: None,
        }
    }

    fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// How a note that is a warning starts; the report prints it as it is, other notes after
/// `note: `.
pub const WARNING: &str = "warning: ";

/// The one warning note for the forwards published on every host address to every source, naming
/// them all; `None` when there are none.
pub fn exposure_note(open: &[&Forward]) -> Option<String> {
    let names: Vec<String> = open.iter().map(|f| f.listen.to_string()).collect();
    let (last, listed) = names.split_last()?;
    let (names, is, its, it) = if listed.is_empty() {
        (last.clone(), "is", "its", "it")
    } else {
        (
            format!("{} and {last}", listed.join(", ")),
            "are",
            "their",
            "them",
        )
    };
    Some(format!(
        "{WARNING}{names} {is} published on every host address to every source, and the host firewall does not see {its} packets (they never pass netfilter INPUT/FORWARD); restrict {it} with `allow:` in the config (`portfwd add --allow CIDR`) or bind {it} to one host address"
    ))
}

/// The note when `count` namespaces hold the target address.
pub fn ambiguous_container(count: usize, addr: IpAddr) -> String {
    format!("{count} network namespaces hold {addr}; could not tell which one this host reaches")
}

/// The note when a UDP app could not be looked for.
pub const UDP_APP_NOT_CHECKED: &str = "UDP targets are probed with a TCP connect (for \
     reachability) and the container's socket table; without the container's namespace the app \
     is not checked";

/// Why no namespace holding the target was looked into.
pub fn not_found_hint(root: bool) -> String {
    if root {
        "no network namespace on this host holds that address (a container on another \
         machine?)"
            .into()
    } else {
        "the container's network namespace could not be looked into: run portfwd check as root"
            .into()
    }
}

/// The probe's connection time in milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn republish(fwd: &Forward, to: &str) -> String {
    format!("portfwd del {l} && portfwd add {l} {to}", l = fwd.listen)
}

/// The address that means "every address" of `target`'s family, as an app is told to bind it.
fn every_address(target: IpAddr) -> &'static str {
    match target {
        IpAddr::V4(_) => "0.0.0.0",
        IpAddr::V6(_) => "::",
    }
}

/// `172.17.0.2:PORT`, `[fd00::2]:PORT`: a target address with a port, as the grammar writes it.
fn target_with_port(target: IpAddr, port: &str) -> String {
    match target {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The fix when the target address itself is in doubt.
fn check_the_address(fwd: &Forward) -> String {
    let target = fwd.to.addr;
    format!(
        "check that the container runs and that {target} is its address (for Docker: \
         docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' \
         NAME), then publish to its address:\n  {}",
        republish(fwd, &format!("IP:{}", fwd.to.port))
    )
}

/// The host has no route to the target; `route_error` is what the route lookup said.
pub fn no_route(fwd: &Forward, route_error: Option<&str>) -> Finding {
    let why = route_error.map(|e| format!(" ({e})")).unwrap_or_default();
    Finding::new(
        Verdict::Fail,
        Kind::NoRoute,
        format!("this host has no route to {}{why}", fwd.to.addr),
    )
    .detail("no interface of this host is on a network that holds it, and no route leads there")
    .fix(check_the_address(fwd))
}

/// A router reported the target unreachable.
pub fn host_unreachable(fwd: &Forward) -> Finding {
    Finding::new(
        Verdict::Fail,
        Kind::HostUnreachable,
        format!(
            "{} is unreachable: a router said so (ICMP host unreachable)",
            fwd.to.addr
        ),
    )
    .fix(check_the_address(fwd))
}

/// ` on DEV`, or nothing without a device.
fn on_dev(dev: &str) -> String {
    if dev.is_empty() {
        String::new()
    } else {
        format!(" on {dev}")
    }
}

/// The next hop answers ARP (as `mac`, on `dev`), the target no connection within `timeout`.
pub fn no_answer(
    fwd: &Forward,
    timeout: Duration,
    next_hop: IpAddr,
    dev: &str,
    mac: &str,
) -> Finding {
    Finding::new(
        Verdict::Fail,
        Kind::NoAnswer,
        format!(
            "{} did not answer a TCP connection within {}",
            fwd.to,
            probe::format_rtt(timeout)
        ),
    )
    .detail(format!(
        "{next_hop} is there (it answers ARP{} as {mac}), so a firewall drops the connection, or \
         the target is very slow",
        on_dev(dev)
    ))
    .fix(
        "look for DROP rules in the container and on this host \
         (iptables -S; nft list ruleset), or try a longer --timeout",
    )
}

/// Nothing answers ARP for `next_hop` (the target, or the gateway towards it) on `dev`.
pub fn no_neighbour(fwd: &Forward, next_hop: IpAddr, dev: String) -> Finding {
    let target = fwd.to.addr;
    let what = if next_hop == target {
        format!("{target} (the container)")
    } else {
        format!("the gateway {next_hop} on the way to {target}")
    };
    let via = on_dev(&dev);
    Finding::new(
        Verdict::Fail,
        Kind::NoNeighbour { next_hop, dev },
        format!("nothing answers for {target}{via}: no reply to ARP"),
    )
    .detail(format!(
        "this host asked for {what} and no machine answered: it is not \
         running, or it has another address"
    ))
    .fix(check_the_address(fwd))
}

/// The connect probe failed in a way none of the above explains.
pub fn probe_failed(fwd: &Forward, error: &str) -> Finding {
    Finding::new(
        Verdict::Fail,
        Kind::ProbeFailed {
            error: error.to_owned(),
        },
        format!("connecting to {} failed: {error}", fwd.to),
    )
}

/// TCP: the target accepted a connection in `rtt`, served by `served` in `ns`.
pub fn healthy(fwd: &Forward, rtt: Duration, served: &[&Bound], ns: Option<&Namespace>) -> Finding {
    let mut f = Finding::new(
        Verdict::Ok,
        Kind::Healthy { rtt_ms: ms(rtt) },
        format!(
            "{} accepted a connection in {}",
            fwd.to,
            probe::format_rtt(rtt)
        ),
    );
    if let Some(ns) = ns {
        for s in served {
            f = f.detail(format!(
                "served by {} on {} in {}",
                s.owner_names(),
                s.addr_port(),
                ns.label()
            ));
        }
    }
    f
}

/// UDP: the target answers ARP but not the TCP probe.
pub fn udp_filtered(fwd: &Forward) -> Finding {
    Finding::new(
        Verdict::Warn,
        Kind::NotProbed,
        format!(
            "{} answers ARP but not a TCP probe; whether it takes UDP cannot be told \
             without sending the app a datagram",
            fwd.to.addr
        ),
    )
    .fix(format!(
        "try it from a client: a request to the host's port {}/udp",
        fwd.listen.port
    ))
}

/// UDP: the target answers, but no namespace to look for its app in.
pub fn udp_app_unknown(fwd: &Forward, hint: String) -> Finding {
    Finding::new(
        Verdict::Warn,
        Kind::NotProbed,
        format!(
            "{} answers, but no network namespace on this host holds it, so whether \
             an app is bound to {}/udp is unknown",
            fwd.to.addr, fwd.to.port
        ),
    )
    .detail(hint)
    .fix("check it from a client, or run portfwd check as root on the container's host")
}

/// UDP: the target answers in `rtt` and `bound` take its datagrams in `ns`.
pub fn udp_bound(fwd: &Forward, rtt: Duration, bound: Vec<Bound>, ns: &Namespace) -> Finding {
    let mut f = Finding::new(
        Verdict::Ok,
        Kind::UdpBound {
            rtt_ms: ms(rtt),
            sockets: bound.clone(),
        },
        format!(
            "{} answers in {} and an app is bound to {}/udp",
            fwd.to.addr,
            probe::format_rtt(rtt),
            fwd.to.port
        ),
    );
    for s in &bound {
        f = f.detail(format!(
            "bound by {} on {} in {}",
            s.owner_names(),
            s.addr_port(),
            ns.label()
        ));
    }
    f
}

/// ` (connection refused)` for TCP: what the probe saw.
fn refused_note(protocol: Protocol) -> &'static str {
    if protocol == Protocol::Tcp {
        " (connection refused)"
    } else {
        ""
    }
}

/// Refused, and no namespace to look for the app in.
pub fn nothing_listens_unseen(fwd: &Forward, protocol: Protocol, hint: String) -> Finding {
    Finding::new(
        Verdict::Fail,
        Kind::NothingListens { listening: vec![] },
        format!("nothing listens on {}{}", fwd.to, refused_note(protocol)),
    )
    .detail(hint)
    .fix(format!(
        "start the app so that it listens on port {}, or publish the port it listens on:\n  {}",
        fwd.to.port,
        republish(fwd, &target_with_port(fwd.to.addr, "PORT"))
    ))
}

/// Refused although `on_port` (in `ns`) accept the target address.
pub fn refused_while_listening(fwd: &Forward, on_port: Vec<Bound>, ns: &Namespace) -> Finding {
    let names = on_port
        .iter()
        .map(|s| format!("{} on {}", s.owner_names(), s.addr_port()))
        .collect::<Vec<_>>()
        .join("; ");
    Finding::new(
        Verdict::Fail,
        Kind::RefusedWhileListening { sockets: on_port },
        format!(
            "the connection to {} was refused although something listens there",
            fwd.to
        ),
    )
    .detail(format!("{names} in {}", ns.label()))
    .fix("a firewall in the container rejects it: look for REJECT rules there (iptables -S; nft list ruleset)")
}

/// One line per socket of `sockets`: who listens where in `ns`.
fn listeners(mut f: Finding, sockets: &[Bound], ns: &Namespace) -> Finding {
    for s in sockets {
        f = f.detail(format!(
            "{} listens on {} in {}",
            s.owner_names(),
            s.addr_port(),
            ns.label()
        ));
    }
    f
}

/// The app listens on the port on loopback only (`on_port`, in `ns`).
pub fn loopback_only(
    fwd: &Forward,
    protocol: Protocol,
    on_port: Vec<Bound>,
    ns: &Namespace,
) -> Finding {
    let target = fwd.to.addr;
    let f = Finding::new(
        Verdict::Fail,
        Kind::LoopbackOnly {
            sockets: on_port.clone(),
        },
        format!(
            "the app listens on {}/{} only on {} inside the container, so nothing from \
             outside it gets in{}",
            fwd.to.port,
            protocol.as_str(),
            on_port[0].addr,
            refused_note(protocol)
        ),
    );
    listeners(f, &on_port, ns)
        .detail(format!(
            "a published port arrives at the container's address {target}, never at its loopback"
        ))
        .fix(match target {
            IpAddr::V4(_) => {
                "make the app listen on every address (0.0.0.0) inside the container, e.g. \
                 `--host 0.0.0.0`, `--bind 0.0.0.0`, `HOST=0.0.0.0` (dev servers often \
                 default to 127.0.0.1)"
            }
            IpAddr::V6(_) => {
                "make the app listen on every address (::) inside the container, e.g. \
                 `--host ::`, `--bind [::]` (dev servers often default to 127.0.0.1 or ::1)"
            }
        })
}

/// The app listens on the port on another address (`on_port`, in `ns`).
pub fn other_address(
    fwd: &Forward,
    protocol: Protocol,
    on_port: Vec<Bound>,
    ns: &Namespace,
) -> Finding {
    let target = fwd.to.addr;
    let f = Finding::new(
        Verdict::Fail,
        Kind::OtherAddress {
            sockets: on_port.clone(),
        },
        format!(
            "the app listens on {}/{} on {}, not on {target}{}",
            fwd.to.port,
            protocol.as_str(),
            on_port[0].addr,
            refused_note(protocol)
        ),
    );
    listeners(f, &on_port, ns).fix(format!(
        "make the app listen on {} or {target}, or publish to the address it listens on",
        every_address(target)
    ))
}

/// Nothing on the port in `ns`; `listening` is what is there instead, `reachable_ports` the
/// ports among them that take the target address.
pub fn nothing_listens(
    fwd: &Forward,
    protocol: Protocol,
    listening: Vec<Bound>,
    reachable_ports: &[u16],
    ns: &Namespace,
) -> Finding {
    let target = fwd.to.addr;
    let p = protocol.as_str();
    let here = ns.label();
    let what = if protocol == Protocol::Tcp {
        "listens"
    } else {
        "is bound"
    };
    let mut f = Finding::new(
        Verdict::Fail,
        Kind::NothingListens {
            listening: listening.clone(),
        },
        format!("nothing {what} on {}{}", fwd.to, refused_note(protocol)),
    );
    if listening.is_empty() {
        f = f.detail(format!(
            "in {here} nothing {what} on any {p} port: is the app running?"
        ));
    } else {
        let list = listening
            .iter()
            .map(|s| format!("{}/{p} on {} by {}", s.port, s.addr, s.owner_names()))
            .collect::<Vec<_>>();
        f = f.detail(format!("in {here} the app {what} on: {}", list.join("; ")));
    }
    match reachable_ports {
        [] => f.fix(format!(
            "start the app so that it listens on port {} (on {}), or publish the port it listens on:\n  {}",
            fwd.to.port,
            every_address(target),
            republish(fwd, &target_with_port(target, "PORT"))
        )),
        [one] => f.fix(format!(
            "publish the port the app listens on:\n  {}",
            republish(fwd, &target_with_port(target, &one.to_string()))
        )),
        many => f.fix(format!(
            "publish one of the ports the app listens on ({}):\n  {}",
            many.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
            republish(fwd, &target_with_port(target, "PORT"))
        )),
    }
}

/// Host processes (`shared`, not on loopback) are bound to the published host port.
pub fn host_port_taken(fwd: &Forward, shared: &[&Bound]) -> Finding {
    let l = &fwd.listen;
    let who = shared[0].owner_names();
    let mut f = Finding::new(
        Verdict::Fail,
        Kind::HostPortInUse {
            sockets: shared.iter().map(|s| (*s).clone()).collect(),
        },
        format!(
            "host port {} is also bound by {who} on {}",
            l,
            shared[0].addr_port()
        ),
    );
    for s in &shared[1..] {
        f = f.detail(format!("also {} on {}", s.owner_names(), s.addr_port()));
    }
    f.detail(format!(
        "other machines reach {} through portfwd, but connections made on this host \
         reach {who}",
        fwd.to
    ))
    .fix(format!(
        "stop {who} or move it to another port, or publish another host port:\n  \
         portfwd del {l} && portfwd add HOST_PORT/{} {}",
        l.protocol, fwd.to
    ))
}

/// A container engine's processes (`held`, all of `engine`) hold the published host port: its
/// reservation, not a conflict; a warning when a docker-proxy among them sends what it takes to
/// another target than the forward's.
pub fn engine_reservation(fwd: &Forward, held: &[&Bound], engine: &str) -> Finding {
    let l = &fwd.listen;
    let who = held[0].owner_names();
    let program = held[0]
        .owners
        .first()
        .map_or("it", |p| p.comm.as_str())
        .to_owned();
    let target = std::net::SocketAddr::new(fwd.to.addr, fwd.to.port);
    let elsewhere = held
        .iter()
        .flat_map(|s| &s.owners)
        .find_map(|p| p.proxies_to.filter(|t| *t != target).map(|t| (p, t)));
    let kind = Kind::EngineReservation {
        engine: engine.to_owned(),
        sockets: held.iter().map(|s| (*s).clone()).collect(),
    };
    let at = held[0].addr_port();
    let mut f = match elsewhere {
        None => Finding::new(
            Verdict::Info,
            kind,
            format!(
                "host port {l} is held by {who} on {at}: {engine}'s reservation of the port, not a conflict"
            ),
        ),
        Some((p, t)) => Finding::new(
            Verdict::Warn,
            kind,
            format!(
                "host port {l} is held by {who} on {at}, {engine}'s reservation, but {p} \
                 proxies to {t}, not to {target}"
            ),
        )
        .fix(format!(
            "publish the port once: remove `-p {}:...` from the `docker run` of the container \
             at {}, or `portfwd del {l}`",
            l.port,
            t.ip()
        )),
    };
    for s in &held[1..] {
        f = f.detail(format!("also {} on {}", s.owner_names(), s.addr_port()));
    }
    f.detail(format!(
        "traffic goes through portfwd's kernel path first (tc for other machines, the socket \
         hooks for this host), so {program} only sees what portfwd does not take"
    ))
}

/// The daemon does not serve `listen` now, for `reason`; `container` is the one it goes to.
pub fn inactive(listen: &str, container: Option<&str>, reason: &str) -> Finding {
    let of = container
        .map(|c| format!(" (container {c})"))
        .unwrap_or_default();
    let f = Finding::new(
        Verdict::Warn,
        Kind::Inactive {
            reason: reason.to_owned(),
        },
        format!("{listen}{of} is not served now: {reason}"),
    )
    .detail(
        "the forward stays in the config; portfwd serves it again, at the container's address \
         then, once the container runs",
    );
    match container {
        Some(c) => f.fix(format!("start the container:\n  docker start {c}")),
        None => f,
    }
}

/// Host processes (`local`) listen on the published port on loopback.
pub fn host_port_on_loopback(fwd: &Forward, local: &[&Bound]) -> Finding {
    let who = local[0].owner_names();
    Finding::new(
        Verdict::Warn,
        Kind::HostPortInUse {
            sockets: local.iter().map(|s| (*s).clone()).collect(),
        },
        format!("{who} listens on {} on this host", local[0].addr_port()),
    )
    .detail(format!(
        "on this host, localhost:{} reaches {who}; other machines reach {} through portfwd",
        fwd.listen.port, fwd.to
    ))
    .fix("if that is not intended, move one of them to another port")
}

/// `rule` (Docker's when `docker`) publishes the host port too: to the same target when `same`.
pub fn published_twice(fwd: &Forward, rule: &NatRule, same: bool, docker: bool) -> Finding {
    let l = &fwd.listen;
    let owner = if docker {
        format!("a Docker {} rule", rule.tool)
    } else {
        format!("an {} DNAT rule", rule.tool)
    };
    let f = if same && docker {
        // Docker's own DNAT for the port portfwd serves: what coexisting with Docker's
        // defaults looks like, not a problem.
        return Finding::new(
            Verdict::Info,
            Kind::PublishedTwice { rule: rule.clone() },
            format!("host port {l} is also published by {owner}, to the same target"),
        )
        .detail(
            "portfwd's tc path acts ahead of netfilter, so packets from other machines never \
             reach the rule (its counter stays 0)",
        )
        .detail(format!("{}: {}", rule.tool, rule.rule));
    } else if same {
        Finding::new(
            Verdict::Warn,
            Kind::PublishedTwice { rule: rule.clone() },
            format!("host port {l} is also published by {owner}, to the same target"),
        )
    } else {
        Finding::new(
            Verdict::Fail,
            Kind::PublishedTwice { rule: rule.clone() },
            format!(
                "host port {l} is published twice: also by {owner}, to {}",
                rule.to
            ),
        )
        .detail(format!(
            "portfwd sees packets from other machines first and sends them to {}; \
             packets it does not see (sent from this host) follow the rule to {}",
            fwd.to, rule.to
        ))
    };
    let fix = if docker {
        format!(
            "publish it once: remove `-p {}:...` from the `docker run` that publishes \
             it, or `portfwd del {l}`",
            l.port
        )
    } else {
        format!(
            "publish it once: delete the {} rule, or `portfwd del {l}`",
            rule.tool
        )
    };
    f.detail(format!("{}: {}", rule.tool, rule.rule)).fix(fix)
}
