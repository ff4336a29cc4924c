//! `portfwd check`: why a published port does or does not work.
//!
//! For each forward the host's side and the target's side are diagnosed separately:
//! - the target, from the host: a route to it (`probe::route_source`), a TCP connect with a time
//!   limit (`probe::tcp`: refused, no route, no answer, or the round-trip time), and when it does
//!   not answer, the neighbour (ARP) entry of the next hop;
//! - the container: the network namespace that holds the target address (`netns::scan`) and the
//!   sockets bound in it (`sockets`): nothing on the port (and which ports are listened on
//!   instead), or only on 127.0.0.1 / ::1, or on another address;
//! - the host port: a local process bound to it (`sockets`, named from `/proc/*/fd`), or an
//!   iptables/nftables DNAT rule that publishes it too (`netfilter`).
//!
//! UDP targets cannot be connect-probed without sending the app a datagram: their reachability is
//! probed with a TCP connect to the same port (an RST proves the container is there; it opens
//! no connection unless something listens on that TCP port), and the app's socket is read from
//! the container's socket table.
//!
//! A forward published on every host address without an allowlist of clients is what
//! `docker run -p` does too, so it is not a finding of its own (it would turn every default
//! forward into a WARN); it is pointed out as a warning note instead ([`exposure_notes`]):
//! portfwd's packets never pass the host's netfilter INPUT/FORWARD chains, so the allowlist is
//! the only firewall such a port has.
//!
//! Everything here runs in the caller's network namespace, which must be the daemon's.

pub mod netfilter;
pub mod netns;
pub mod probe;
pub mod report;
pub mod sockets;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use crate::publish::{Forward, Protocol};
use netfilter::NatRule;
use netns::{Namespace, Scan};
use probe::Connect;
use sockets::{Bound, Scope};

/// The default time limit of one connect probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this many probes run at once.
const PARALLEL_PROBES: usize = 32;

/// How bad a finding is. Ordered: the worst finding is a forward's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, or cannot be told, but something deserves a look.
    Warn,
    /// Does not work (for some or all clients).
    Fail,
}

impl Verdict {
    /// `OK`, `WARN`, `FAIL`.
    pub fn word(self) -> &'static str {
        match self {
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

/// The diagnosis of one forward.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardReport {
    /// `8080/tcp`
    pub listen: String,
    /// `172.17.0.2:3000`
    pub to: String,
    /// The worst verdict of the findings.
    pub verdict: Verdict,
    /// The network namespace holding the target address, when found.
    pub container: Option<Namespace>,
    pub findings: Vec<Finding>,
}

/// The diagnosis of every checked forward.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether every forward is OK.
    pub healthy: bool,
    pub forwards: Vec<ForwardReport>,
    /// What could not be looked at (not root, a tool missing, ...).
    pub notes: Vec<String>,
}

/// How to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time limit of each connect probe.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A probe's outcome and how long it took.
#[derive(Debug, Clone)]
struct Probe {
    route: Result<IpAddr, String>,
    connect: Connect,
    elapsed: Duration,
}

/// Diagnoses `forwards` from the calling thread's network namespace.
pub fn check(forwards: &[Forward], opts: &Options) -> Report {
    let probes = probe_all(forwards, opts.timeout);
    let mut scan = netns::scan();
    let owners = sockets::socket_owners();
    for ns in &mut scan.namespaces {
        sockets::name_owners(&mut ns.sockets, &owners);
    }
    let (rules, mut notes) = netfilter::rules();
    notes.extend(scan.errors.iter().cloned());
    notes.extend(exposure_notes(forwards));
    let ctx = Context {
        scan: &scan,
        rules: &rules,
        timeout: opts.timeout,
    };
    let forwards: Vec<ForwardReport> = forwards
        .iter()
        .zip(&probes)
        .map(|(f, p)| ctx.diagnose(f, p, &mut notes))
        .collect();
    notes.dedup();
    Report {
        healthy: forwards.iter().all(|f| f.verdict == Verdict::Ok),
        forwards,
        notes,
    }
}

/// A warning for each forward published on every host address to every source.
pub fn exposure_notes(forwards: &[Forward]) -> Vec<String> {
    forwards
        .iter()
        .filter(|f| f.listen.addr.is_none_or(|a| a.is_unspecified()) && f.allow.is_empty())
        .map(|f| {
            format!(
                "warning: {} is published on every host address to every source, and the host firewall does not see its packets (they never pass netfilter INPUT/FORWARD); restrict it with `allow:` in the config (`portfwd add --allow CIDR`) or bind it to one host address",
                f.listen
            )
        })
        .collect()
}

/// Probes every target, [`PARALLEL_PROBES`] at a time.
fn probe_all(forwards: &[Forward], timeout: Duration) -> Vec<Probe> {
    let mut out = Vec::with_capacity(forwards.len());
    for chunk in forwards.chunks(PARALLEL_PROBES) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|f| {
                    let target = SocketAddr::new(f.to.addr, f.to.port);
                    s.spawn(move || {
                        let route = probe::route_source(f.to.addr).map_err(|e| e.to_string());
                        let start = std::time::Instant::now();
                        let connect = match &route {
                            Err(_) => Connect::NoRoute,
                            Ok(_) => probe::tcp(target, timeout),
                        };
                        Probe {
                            route,
                            connect,
                            elapsed: start.elapsed(),
                        }
                    })
                })
                .collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| Probe {
                    route: Err("probe panicked".into()),
                    connect: Connect::Error("probe panicked".into()),
                    elapsed: Duration::ZERO,
                }));
            }
        });
    }
    out
}

struct Context<'a> {
    scan: &'a Scan,
    rules: &'a [NatRule],
    timeout: Duration,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn republish(fwd: &Forward, to: &str) -> String {
    format!("portfwd del {l} && portfwd add {l} {to}", l = fwd.listen)
}

impl Context<'_> {
    fn host(&self) -> Option<&Namespace> {
        self.scan.namespaces.iter().find(|n| n.is_host)
    }

    /// The namespace holding `addr` that the host reaches: the host itself if the address is
    /// its own; for an on-link target, the one whose interface has the MAC the host resolved;
    /// otherwise the only one holding it.
    fn container_of(&self, addr: IpAddr, notes: &mut Vec<String>) -> Option<Namespace> {
        let holders: Vec<&Namespace> = self
            .scan
            .namespaces
            .iter()
            .filter(|n| n.interface_with(addr).is_some())
            .collect();
        if let Some(h) = holders.iter().find(|n| n.is_host) {
            return Some((*h).clone());
        }
        let on_link = probe::route(addr).is_some_and(|r| r.gateway.is_none());
        let neigh = probe::neighbour(addr).filter(|n| n.complete);
        if let (true, Some(neigh)) = (on_link, neigh) {
            return holders
                .into_iter()
                .find(|n| n.interface_with(addr).is_some_and(|i| i.mac == neigh.mac))
                .cloned();
        }
        match holders.as_slice() {
            [one] => Some((*one).clone()),
            [] => None,
            many => {
                notes.push(format!(
                    "{} network namespaces hold {addr}; could not tell which one this host reaches",
                    many.len()
                ));
                None
            }
        }
    }

    fn diagnose(&self, fwd: &Forward, probe: &Probe, notes: &mut Vec<String>) -> ForwardReport {
        let reachable = matches!(probe.connect, Connect::Connected(_) | Connect::Refused);
        let container = if reachable {
            self.container_of(fwd.to.addr, notes)
        } else {
            None
        };
        let mut findings = match fwd.listen.protocol {
            Protocol::Tcp => self.tcp_target(fwd, probe, container.as_ref()),
            Protocol::Udp => self.udp_target(fwd, probe, container.as_ref(), notes),
        };
        findings.extend(self.host_port(fwd));
        findings.extend(self.nat_rules(fwd));
        let verdict = findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Ok);
        ForwardReport {
            listen: fwd.listen.to_string(),
            to: fwd.to.to_string(),
            verdict,
            container,
            findings,
        }
    }

    /// Why the target cannot be reached (anything but connected or refused).
    fn unreachable(&self, fwd: &Forward, probe: &Probe) -> Finding {
        let target = fwd.to.addr;
        let fix_addr = format!(
            "check that the container runs and that {target} is its address (for Docker: \
             docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' \
             NAME), then publish to its address:\n  {}",
            republish(fwd, &format!("IP:{}", fwd.to.port))
        );
        match &probe.connect {
            Connect::NoRoute => {
                let why = match &probe.route {
                    Err(e) => format!(" ({e})"),
                    Ok(_) => String::new(),
                };
                Finding::new(
                    Verdict::Fail,
                    Kind::NoRoute,
                    format!("this host has no route to {target}{why}"),
                )
                .detail("no interface of this host is on a network that holds it, and no route leads there")
                .fix(fix_addr)
            }
            Connect::HostUnreachable | Connect::TimedOut => {
                let route = probe::route(target);
                let next_hop = route.as_ref().map_or(target, |r| r.next_hop(target));
                let dev = route.as_ref().map(|r| r.dev.clone()).unwrap_or_default();
                let neigh = probe::neighbour(next_hop);
                let via = if dev.is_empty() {
                    String::new()
                } else {
                    format!(" on {dev}")
                };
                match neigh {
                    Some(n) if n.complete => {
                        if probe.connect == Connect::HostUnreachable {
                            Finding::new(
                                Verdict::Fail,
                                Kind::HostUnreachable,
                                format!("{target} is unreachable: a router said so (ICMP host unreachable)"),
                            )
                            .fix(fix_addr)
                        } else {
                            Finding::new(
                                Verdict::Fail,
                                Kind::NoAnswer,
                                format!(
                                    "{} did not answer a TCP connection within {}",
                                    fwd.to,
                                    probe::format_rtt(self.timeout)
                                ),
                            )
                            .detail(format!(
                                "{next_hop} is there (it answers ARP{via} as {}), so a firewall \
                                 drops the connection, or the target is very slow",
                                n.mac
                            ))
                            .fix(
                                "look for DROP rules in the container and on this host \
                                 (iptables -S; nft list ruleset), or try a longer --timeout",
                            )
                        }
                    }
                    _ => {
                        let what = if next_hop == target {
                            format!("{target} (the container)")
                        } else {
                            format!("the gateway {next_hop} on the way to {target}")
                        };
                        Finding::new(
                            Verdict::Fail,
                            Kind::NoNeighbour {
                                next_hop,
                                dev: dev.clone(),
                            },
                            format!("nothing answers for {target}{via}: no reply to ARP"),
                        )
                        .detail(format!(
                            "this host asked for {what} and no machine answered: it is not \
                             running, or it has another address"
                        ))
                        .fix(fix_addr)
                    }
                }
            }
            Connect::Error(e) => Finding::new(
                Verdict::Fail,
                Kind::ProbeFailed { error: e.clone() },
                format!("connecting to {} failed: {e}", fwd.to),
            ),
            Connect::Connected(_) | Connect::Refused => unreachable!("handled by the caller"),
        }
    }

    fn tcp_target(&self, fwd: &Forward, probe: &Probe, ns: Option<&Namespace>) -> Vec<Finding> {
        match probe.connect {
            Connect::Connected(rtt) => {
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
                    for s in self.on_port(ns, Protocol::Tcp, fwd.to.port) {
                        if s.accepts(fwd.to.addr) {
                            f = f.detail(format!(
                                "served by {} on {} in {}",
                                s.owner_names(),
                                s.addr_port(),
                                ns.label()
                            ));
                        }
                    }
                }
                vec![f]
            }
            Connect::Refused => vec![self.refused(fwd, Protocol::Tcp, ns)],
            _ => vec![self.unreachable(fwd, probe)],
        }
    }

    fn udp_target(
        &self,
        fwd: &Forward,
        probe: &Probe,
        ns: Option<&Namespace>,
        notes: &mut Vec<String>,
    ) -> Vec<Finding> {
        match probe.connect {
            Connect::Connected(_) | Connect::Refused => {}
            Connect::TimedOut if probe::neighbour(fwd.to.addr).is_some_and(|n| n.complete) => {
                // TCP may be filtered where UDP is not: cannot tell.
                return vec![
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
                    )),
                ];
            }
            _ => return vec![self.unreachable(fwd, probe)],
        }
        let Some(ns) = ns else {
            notes.push(
                "UDP targets are probed with a TCP connect (for reachability) and the container's \
                 socket table; without the container's namespace the app is not checked"
                    .into(),
            );
            return vec![
                Finding::new(
                    Verdict::Warn,
                    Kind::NotProbed,
                    format!(
                        "{} answers, but no network namespace on this host holds it, so whether \
                         an app is bound to {}/udp is unknown",
                        fwd.to.addr, fwd.to.port
                    ),
                )
                .detail(self.not_found_hint())
                .fix(
                    "check it from a client, or run portfwd check as root on the container's host",
                ),
            ];
        };
        let bound: Vec<Bound> = self
            .on_port(ns, Protocol::Udp, fwd.to.port)
            .filter(|s| s.accepts(fwd.to.addr))
            .cloned()
            .collect();
        if bound.is_empty() {
            return vec![self.refused(fwd, Protocol::Udp, Some(ns))];
        }
        let rtt = probe.elapsed;
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
        vec![f]
    }

    fn on_port<'n>(
        &self,
        ns: &'n Namespace,
        protocol: Protocol,
        port: u16,
    ) -> impl Iterator<Item = &'n Bound> {
        ns.sockets
            .iter()
            .filter(move |s| s.protocol == protocol && s.port == port)
    }

    fn not_found_hint(&self) -> String {
        let root = crate::check::is_root();
        if root {
            "no network namespace on this host holds that address (a container on another \
             machine?)"
                .into()
        } else {
            "the container's network namespace could not be looked into: run portfwd check as root"
                .into()
        }
    }

    /// The target's machine answered, nothing took the connection (TCP), or no socket accepts
    /// it (UDP): say what the container does listen on.
    fn refused(&self, fwd: &Forward, protocol: Protocol, ns: Option<&Namespace>) -> Finding {
        let target = fwd.to.addr;
        let port = fwd.to.port;
        let p = protocol.as_str();
        let refused = if protocol == Protocol::Tcp {
            " (connection refused)"
        } else {
            ""
        };
        let Some(ns) = ns else {
            return Finding::new(
                Verdict::Fail,
                Kind::NothingListens { listening: vec![] },
                format!("nothing listens on {}{refused}", fwd.to),
            )
            .detail(self.not_found_hint())
            .fix(format!(
                "start the app so that it listens on port {port}, or publish the port it listens on:\n  {}",
                republish(fwd, &target_with_port(target, "PORT"))
            ));
        };
        let here = ns.label();
        let on_port: Vec<Bound> = self.on_port(ns, protocol, port).cloned().collect();
        if on_port.iter().any(|s| s.accepts(target)) {
            let names = on_port
                .iter()
                .map(|s| format!("{} on {}", s.owner_names(), s.addr_port()))
                .collect::<Vec<_>>()
                .join("; ");
            return Finding::new(
                Verdict::Fail,
                Kind::RefusedWhileListening { sockets: on_port },
                format!("the connection to {} was refused although something listens there", fwd.to),
            )
            .detail(format!("{names} in {here}"))
            .fix("a firewall in the container rejects it: look for REJECT rules there (iptables -S; nft list ruleset)");
        }
        if !on_port.is_empty() && on_port.iter().all(|s| s.scope(target) == Scope::Loopback) {
            let mut f = Finding::new(
                Verdict::Fail,
                Kind::LoopbackOnly {
                    sockets: on_port.clone(),
                },
                format!(
                    "the app listens on {port}/{p} only on {} inside the container, so nothing from \
                     outside it gets in{refused}",
                    on_port[0].addr
                ),
            );
            for s in &on_port {
                f = f.detail(format!(
                    "{} listens on {} in {here}",
                    s.owner_names(),
                    s.addr_port()
                ));
            }
            return f
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
                });
        }
        if !on_port.is_empty() {
            let mut f = Finding::new(
                Verdict::Fail,
                Kind::OtherAddress {
                    sockets: on_port.clone(),
                },
                format!(
                    "the app listens on {port}/{p} on {}, not on {target}{refused}",
                    on_port[0].addr
                ),
            );
            for s in &on_port {
                f = f.detail(format!(
                    "{} listens on {} in {here}",
                    s.owner_names(),
                    s.addr_port()
                ));
            }
            return f.fix(format!(
                "make the app listen on {} or {target}, or publish to the address it listens on",
                every_address(target)
            ));
        }
        // Nothing on that port: what is there instead?
        let mut listening: Vec<Bound> = ns
            .sockets
            .iter()
            .filter(|s| s.protocol == protocol)
            .cloned()
            .collect();
        listening.sort_by_key(|s| (s.port, s.addr));
        listening.dedup_by_key(|s| (s.port, s.addr));
        let reachable_ports: Vec<u16> = {
            let mut v: Vec<u16> = listening
                .iter()
                .filter(|s| s.accepts(target))
                .map(|s| s.port)
                .collect();
            v.dedup();
            v
        };
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
            format!("nothing {what} on {}{refused}", fwd.to),
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
        match reachable_ports.as_slice() {
            [] => f.fix(format!(
                "start the app so that it listens on port {port} (on {}), or publish the port it listens on:\n  {}",
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

    /// A process on the host bound to the published port.
    fn host_port(&self, fwd: &Forward) -> Vec<Finding> {
        let Some(host) = self.host() else {
            return vec![];
        };
        let l = &fwd.listen;
        let clash: Vec<&Bound> = host
            .sockets
            .iter()
            .filter(|s| s.protocol == l.protocol && s.port == l.port)
            .filter(|s| match l.addr {
                None => true,
                Some(a) => a.is_unspecified() || s.addr.is_unspecified() || s.addr == a,
            })
            .collect();
        let (local, shared): (Vec<&Bound>, Vec<&Bound>) =
            clash.into_iter().partition(|s| s.addr.is_loopback());
        let mut out = Vec::new();
        if !shared.is_empty() {
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
            out.push(
                f.detail(format!(
                    "other machines reach {} through portfwd, but connections made on this host \
                     reach {who}",
                    fwd.to
                ))
                .fix(format!(
                    "stop {who} or move it to another port, or publish another host port:\n  \
                     portfwd del {l} && portfwd add HOST_PORT/{} {}",
                    l.protocol, fwd.to
                )),
            );
        }
        if !local.is_empty() {
            let who = local[0].owner_names();
            out.push(
                Finding::new(
                    Verdict::Warn,
                    Kind::HostPortInUse {
                        sockets: local.iter().map(|s| (*s).clone()).collect(),
                    },
                    format!(
                        "{who} listens on {} on this host",
                        local[0].addr_port()
                    ),
                )
                .detail(format!(
                    "on this host, localhost:{} reaches {who}; other machines reach {} through portfwd",
                    l.port, fwd.to
                ))
                .fix("if that is not intended, move one of them to another port"),
            );
        }
        out
    }

    /// iptables/nftables rules that publish the same host port.
    fn nat_rules(&self, fwd: &Forward) -> Vec<Finding> {
        let l = &fwd.listen;
        self.rules
            .iter()
            .filter(|r| r.covers(l.protocol, l.port))
            .map(|r| {
                let same = r.to == fwd.to.to_string();
                let docker = r.rule.contains(" DOCKER ") || r.rule.contains("chain DOCKER");
                let owner = if docker {
                    format!("a Docker {} rule", r.tool)
                } else {
                    format!("an {} DNAT rule", r.tool)
                };
                let f = if same {
                    Finding::new(
                        Verdict::Warn,
                        Kind::PublishedTwice { rule: r.clone() },
                        format!("host port {l} is also published by {owner}, to the same target"),
                    )
                } else {
                    Finding::new(
                        Verdict::Fail,
                        Kind::PublishedTwice { rule: r.clone() },
                        format!(
                            "host port {l} is published twice: also by {owner}, to {}",
                            r.to
                        ),
                    )
                    .detail(format!(
                        "portfwd sees packets from other machines first and sends them to {}; \
                         packets it does not see (sent from this host) follow the rule to {}",
                        fwd.to, r.to
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
                        r.tool
                    )
                };
                f.detail(format!("{}: {}", r.tool, r.rule)).fix(fix)
            })
            .collect()
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_forwards_on_every_address_are_warned_about() {
        let f = |s: &str| s.parse::<Forward>().unwrap();
        let notes = exposure_notes(&[
            f("8080 -> 172.17.0.2:80"),
            f("8000-8010/udp -> 172.17.0.2:9000-9010"),
            f("8081 -> 172.17.0.2:80 allow 10.0.0.0/8"),
            f("127.0.0.1:8082 -> 172.17.0.2:80"),
            f("10.0.0.1:8083 -> 172.17.0.2:80"),
        ]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("warning: 8080/tcp is published on every host address"));
        assert!(notes[0].contains("netfilter INPUT/FORWARD"));
        assert!(notes[1].starts_with("warning: 8000-8010/udp"));
    }
}
