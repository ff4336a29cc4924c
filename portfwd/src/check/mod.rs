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
//!   iptables/nftables DNAT rule that publishes it too (`netfilter`). A container engine's own
//!   holder of the port (docker-proxy, dockerd, conmon: `engine`) is its reservation, reported
//!   as information, not as a conflict;
//! - what the daemon says about Docker (`docker`): forwards it does not serve now (their
//!   container is stopped), the container each forward belongs to, and whether Docker is
//!   followed.
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

pub mod docker;
mod engine;
mod findings;
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

pub use findings::{Finding, Kind, Verdict};

use crate::publish::{Forward, Protocol};
use netfilter::NatRule;
use netns::{Namespace, Scan};
use probe::Connect;
use sockets::{Bound, Scope};

/// The default time limit of one connect probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this many probes run at once.
const PARALLEL_PROBES: usize = 32;

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
    /// Who made the forward: `config`, or `docker:NAME` (see `api::ForwardEntry::origin`).
    pub origin: String,
    /// The container the forward goes to, by name, when the daemon knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
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

/// Diagnoses `forwards` from the calling thread's network namespace. A forward with several
/// backends (a pool) is diagnosed backend by backend, and its report holds the findings of
/// each (their sentences name the backend), the host port's once.
pub fn check(forwards: &[Forward], opts: &Options) -> Report {
    let units: Vec<(usize, Forward)> = forwards
        .iter()
        .enumerate()
        .flat_map(|(i, f)| each_backend(f).into_iter().map(move |b| (i, b)))
        .collect();
    let unit_forwards: Vec<Forward> = units.iter().map(|(_, f)| f.clone()).collect();
    let probes = probe_all(&unit_forwards, opts.timeout);
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
    let mut reports: Vec<ForwardReport> = Vec::with_capacity(forwards.len());
    for ((i, unit), probe) in units.iter().zip(&probes) {
        let report = ctx.diagnose(unit, probe, &mut notes);
        match reports.get_mut(*i) {
            Some(pool) => pool.merge_backend(report),
            None => reports.push(ForwardReport {
                to: match &forwards[*i].pool {
                    Some(pool) => crate::publish::Targets(&pool.targets).to_string(),
                    None => forwards[*i].to.to_string(),
                },
                ..report
            }),
        }
    }
    let forwards = reports;
    notes.dedup();
    Report {
        healthy: forwards.iter().all(|f| f.verdict == Verdict::Ok),
        forwards,
        notes,
    }
}

/// The forwards `check` diagnoses for `fwd`: itself, or for a pool one per backend (each as a
/// forward to that backend alone).
fn each_backend(fwd: &Forward) -> Vec<Forward> {
    match &fwd.pool {
        None => vec![fwd.clone()],
        Some(pool) => pool
            .targets
            .iter()
            .map(|w| Forward {
                to: w.target,
                pool: None,
                ..fwd.clone()
            })
            .collect(),
    }
}

impl ForwardReport {
    /// Adds the diagnosis of another backend of the same pool: its findings (a finding about
    /// the host port, the same for every backend, once) and the worse verdict.
    fn merge_backend(&mut self, other: ForwardReport) {
        for f in other.findings {
            let seen = self
                .findings
                .iter()
                .any(|g| g.reason == f.reason && g.details == f.details);
            if !seen {
                self.findings.push(f);
            }
        }
        self.verdict = worst(&self.findings);
        if self.container.is_none() {
            self.container = other.container;
        }
    }
}

/// One warning naming the forwards published on every host address to every source, if any.
pub fn exposure_notes(forwards: &[Forward]) -> Vec<String> {
    let open: Vec<&Forward> = forwards
        .iter()
        .filter(|f| f.listen.addr.is_none_or(|a| a.is_unspecified()) && f.allow.is_empty())
        .collect();
    findings::exposure_note(&open).into_iter().collect()
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
                notes.push(findings::ambiguous_container(many.len(), addr));
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
        ForwardReport {
            listen: fwd.listen.to_string(),
            to: fwd.to.to_string(),
            verdict: worst(&findings),
            container,
            origin: crate::api::CONFIG_ORIGIN.to_owned(),
            container_name: None,
            findings,
        }
    }

    /// Why the target cannot be reached (anything but connected or refused).
    fn unreachable(&self, fwd: &Forward, probe: &Probe) -> Finding {
        let target = fwd.to.addr;
        match &probe.connect {
            Connect::NoRoute => {
                findings::no_route(fwd, probe.route.as_ref().err().map(String::as_str))
            }
            Connect::HostUnreachable | Connect::TimedOut => {
                let route = probe::route(target);
                let next_hop = route.as_ref().map_or(target, |r| r.next_hop(target));
                let dev = route.as_ref().map(|r| r.dev.clone()).unwrap_or_default();
                match probe::neighbour(next_hop) {
                    Some(n) if n.complete => {
                        if probe.connect == Connect::HostUnreachable {
                            findings::host_unreachable(fwd)
                        } else {
                            findings::no_answer(fwd, self.timeout, next_hop, &dev, &n.mac)
                        }
                    }
                    _ => findings::no_neighbour(fwd, next_hop, dev),
                }
            }
            Connect::Error(e) => findings::probe_failed(fwd, e),
            Connect::Connected(_) | Connect::Refused => unreachable!("handled by the caller"),
        }
    }

    fn tcp_target(&self, fwd: &Forward, probe: &Probe, ns: Option<&Namespace>) -> Vec<Finding> {
        match probe.connect {
            Connect::Connected(rtt) => {
                let served: Vec<&Bound> = ns
                    .into_iter()
                    .flat_map(|ns| self.on_port(ns, Protocol::Tcp, fwd.to.port))
                    .filter(|s| s.accepts(fwd.to.addr))
                    .collect();
                vec![findings::healthy(fwd, rtt, &served, ns)]
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
            // TCP may be filtered where UDP is not: cannot tell.
            Connect::TimedOut if probe::neighbour(fwd.to.addr).is_some_and(|n| n.complete) => {
                return vec![findings::udp_filtered(fwd)];
            }
            _ => return vec![self.unreachable(fwd, probe)],
        }
        let Some(ns) = ns else {
            notes.push(findings::UDP_APP_NOT_CHECKED.into());
            return vec![findings::udp_app_unknown(fwd, self.not_found_hint())];
        };
        let bound: Vec<Bound> = self
            .on_port(ns, Protocol::Udp, fwd.to.port)
            .filter(|s| s.accepts(fwd.to.addr))
            .cloned()
            .collect();
        if bound.is_empty() {
            return vec![self.refused(fwd, Protocol::Udp, Some(ns))];
        }
        vec![findings::udp_bound(fwd, probe.elapsed, bound, ns)]
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
        findings::not_found_hint(is_root())
    }

    /// The target's machine answered, nothing took the connection (TCP), or no socket accepts
    /// it (UDP): say what the container does listen on.
    fn refused(&self, fwd: &Forward, protocol: Protocol, ns: Option<&Namespace>) -> Finding {
        let target = fwd.to.addr;
        let Some(ns) = ns else {
            return findings::nothing_listens_unseen(fwd, protocol, self.not_found_hint());
        };
        let on_port: Vec<Bound> = self.on_port(ns, protocol, fwd.to.port).cloned().collect();
        if on_port.iter().any(|s| s.accepts(target)) {
            return findings::refused_while_listening(fwd, on_port, ns);
        }
        if !on_port.is_empty() && on_port.iter().all(|s| s.scope(target) == Scope::Loopback) {
            return findings::loopback_only(fwd, protocol, on_port, ns);
        }
        if !on_port.is_empty() {
            return findings::other_address(fwd, protocol, on_port, ns);
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
        let mut reachable_ports: Vec<u16> = listening
            .iter()
            .filter(|s| s.accepts(target))
            .map(|s| s.port)
            .collect();
        reachable_ports.dedup();
        findings::nothing_listens(fwd, protocol, listening, &reachable_ports, ns)
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
        // A container engine's reservation is no clash: portfwd's kernel path goes first.
        let (held, clash): (Vec<&Bound>, Vec<&Bound>) =
            clash.into_iter().partition(|s| s.engine().is_some());
        let (local, shared): (Vec<&Bound>, Vec<&Bound>) =
            clash.into_iter().partition(|s| s.addr.is_loopback());
        let mut out = Vec::new();
        if let Some(engine) = held.first().and_then(|s| s.engine()) {
            out.push(findings::engine_reservation(fwd, &held, engine));
        }
        if !shared.is_empty() {
            out.push(findings::host_port_taken(fwd, &shared));
        }
        if !local.is_empty() {
            out.push(findings::host_port_on_loopback(fwd, &local));
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
                findings::published_twice(fwd, r, same, docker)
            })
            .collect()
    }
}

/// A forward's verdict: its worst finding's, and OK when all are informational.
pub fn worst(findings: &[Finding]) -> Verdict {
    findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Ok)
        .max(Verdict::Ok)
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    crate::sys::is_root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockets::Process;

    #[test]
    fn an_engines_reservation_is_information_unless_its_proxy_goes_elsewhere() {
        let fwd: Forward = "8080 -> 172.18.0.2:3000".parse().unwrap();
        let proxy = |pid, addr: &str, to: &str| Bound {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port: 8080,
            inode: 1,
            owners: vec![Process {
                pid,
                comm: "docker-proxy".into(),
                engine: Some("Docker"),
                proxies_to: Some(to.parse().unwrap()),
            }],
        };
        let (v4, v6) = (
            proxy(7, "0.0.0.0", "172.18.0.2:3000"),
            proxy(8, "::", "172.18.0.2:3000"),
        );
        assert_eq!(v4.engine(), Some("Docker"));
        let f = findings::engine_reservation(&fwd, &[&v4, &v6], "Docker");
        assert_eq!(f.verdict, Verdict::Info);
        assert_eq!(
            f.reason,
            "host port 8080/tcp is held by docker-proxy (pid 7) on 0.0.0.0:8080: Docker's \
             reservation of the port, not a conflict"
        );
        assert_eq!(f.details[0], "also docker-proxy (pid 8) on [::]:8080");
        assert!(f.details[1].ends_with("so docker-proxy only sees what portfwd does not take"));
        assert!(f.fix.is_none());

        let other = proxy(9, "0.0.0.0", "172.18.0.3:3000");
        let f = findings::engine_reservation(&fwd, &[&other], "Docker");
        assert_eq!(f.verdict, Verdict::Warn);
        assert!(
            f.reason.ends_with(
                "but docker-proxy (pid 9) proxies to 172.18.0.3:3000, not to 172.18.0.2:3000"
            ),
            "{}",
            f.reason
        );
        assert!(f.fix.unwrap().contains("container at 172.18.0.3"));

        // One owner that is no engine's: the socket is no reservation.
        let mut shared = v4.clone();
        shared.owners.push(Process {
            pid: 10,
            comm: "nc".into(),
            engine: None,
            proxies_to: None,
        });
        assert_eq!(shared.engine(), None);
    }

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
        assert_eq!(notes.len(), 1, "one warning for all: {notes:?}");
        assert!(
            notes[0].starts_with(
                "warning: 8080/tcp and 8000-8010/udp are published on every host address"
            ),
            "{notes:?}"
        );
        assert!(notes[0].contains("see their packets"));
        assert!(notes[0].contains("netfilter INPUT/FORWARD"));

        let notes = exposure_notes(&[f("8080 -> 172.17.0.2:80")]);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("warning: 8080/tcp is published"));
        assert!(notes[0].ends_with("or bind it to one host address"));
        let three = exposure_notes(&[
            f("1 -> 10.0.0.1:1"),
            f("2 -> 10.0.0.1:2"),
            f("3 -> 10.0.0.1:3"),
        ]);
        assert!(three[0].starts_with("warning: 1/tcp, 2/tcp and 3/tcp are published"));
        assert!(exposure_notes(&[f("8081 -> 172.17.0.2:80 allow 10.0.0.0/8")]).is_empty());
    }
}
