//! What is measured: the systems, the cases, which system runs which case, how long, and what
//! sends the UDP load.

use std::fmt;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

/// A way of getting packets from the client to the container (or, for the ceiling, of dropping
/// them as early as the host can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// portfwd's daemon with its tc programs (the default attach mode).
    PortfwdTc,
    /// portfwd's daemon started with `--mode xdp`.
    PortfwdXdp,
    /// iptables DNAT in the nat table's DOCKER chain, the way Docker writes it.
    Iptables,
    /// nftables DNAT through a port -> address . port map.
    Nftables,
    /// No NAT: the client sends to the container's address and the host routes it.
    Routing,
    /// A userspace proxy in the host the way docker-proxy works (socat, fork per connection).
    Proxy,
    /// The same generator into a drop at the host's tc ingress: the most the lab can deliver.
    Ceiling,
}

impl System {
    pub const ALL: [System; 7] = [
        System::PortfwdTc,
        System::PortfwdXdp,
        System::Iptables,
        System::Nftables,
        System::Routing,
        System::Proxy,
        System::Ceiling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::PortfwdTc => "portfwd-tc",
            System::PortfwdXdp => "portfwd-xdp",
            System::Iptables => "iptables",
            System::Nftables => "nftables",
            System::Routing => "routing",
            System::Proxy => "proxy",
            System::Ceiling => "ceiling",
        }
    }

    pub fn from_name(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            System::PortfwdTc => {
                "portfwd daemon with tc ingress programs (`portfwd daemon --mode tc`), \
                 publishing on the host's `eth0`"
            }
            System::PortfwdXdp => {
                "portfwd daemon with native XDP in front of tc (`portfwd daemon --mode xdp`), \
                 publishing on the host's `eth0`"
            }
            System::Iptables => {
                "iptables DNAT as Docker writes it: nat PREROUTING -m addrtype --dst-type LOCAL \
                 -j DOCKER, one DNAT rule per forward (the measured one last), filter FORWARD \
                 policy DROP with Docker's ESTABLISHED and DOCKER accept rules, MASQUERADE"
            }
            System::Nftables => {
                "nftables: one `dnat ip to udp|tcp dport map @fwd` rule, the forwards in a map; \
                 a forward filter chain like Docker's"
            }
            System::Routing => {
                "plain kernel routing to 172.17.0.2 (no NAT, no netfilter rules loaded)"
            }
            System::Proxy => {
                "userspace proxy like docker-proxy: socat TCP-LISTEN:8080,fork,reuseaddr \
                 TCP:172.17.0.2:PORT in the host"
            }
            System::Ceiling => {
                "the same generator into a classic-BPF tc filter that drops every frame at the \
                 host's eth0 ingress (no forwarding at all)"
            }
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The UDP flows the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flows {
    /// Every packet has the same 5-tuple.
    One,
    /// Random source address (10.78.0.0/16) and port on every packet: every packet is a new flow.
    Unique,
}

/// One measurement: a load and what is read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Case {
    /// 64-byte UDP frames from trafgen, with `forwards` published ports (the measured one last).
    Udp { flows: Flows, forwards: u32 },
    /// One iperf3 TCP stream.
    TcpStream,
    /// Request/response on one TCP connection.
    TcpRr,
    /// A new TCP connection per request.
    TcpCrr,
}

impl Case {
    pub fn name(self) -> String {
        match self {
            Case::Udp {
                flows: Flows::One,
                forwards: 1,
            } => "udp-1flow".into(),
            Case::Udp {
                flows: Flows::One,
                forwards,
            } => format!("udp-1flow-{forwards}fwd"),
            Case::Udp {
                flows: Flows::Unique,
                forwards: 1,
            } => "udp-unique".into(),
            Case::Udp {
                flows: Flows::Unique,
                forwards,
            } => format!("udp-unique-{forwards}fwd"),
            Case::TcpStream => "tcp-stream".into(),
            Case::TcpRr => "tcp-rr".into(),
            Case::TcpCrr => "tcp-crr".into(),
        }
    }

    /// One line for the report.
    pub fn describe(self) -> String {
        match self {
            Case::Udp { flows, forwards } => format!(
                "64-byte UDP frames, {}, {forwards} forward{}; packets per second \
                 delivered to the container",
                match flows {
                    Flows::One => "one flow",
                    Flows::Unique => "a new flow every packet",
                },
                if forwards == 1 { "" } else { "s" }
            ),
            Case::TcpStream => "one TCP stream (iperf3), throughput".into(),
            Case::TcpRr => {
                "request/response on one TCP connection (one line each way), rate and latency"
                    .into()
            }
            Case::TcpCrr => {
                "a new TCP connection per request/response (connect, one line each way, close), \
                 rate and latency"
                    .into()
            }
        }
    }

    /// The figure the case is judged by, then the others it reports.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Case::Udp { .. } => &[RATE_MPPS, CPU, FORWARDED],
            Case::TcpStream => &[THROUGHPUT],
            Case::TcpRr => &[RATE_RR, P50, P99],
            Case::TcpCrr => &[RATE_CRR, P50, P99],
        }
    }

    pub fn primary(self) -> Metric {
        self.metrics()[0]
    }
}

/// A figure read from a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

impl Metric {
    /// A figure where more is better (a rate, a throughput).
    pub const fn higher_is_better(name: &'static str, unit: &'static str) -> Metric {
        Metric {
            name,
            unit,
            higher_is_better: true,
        }
    }

    /// A figure where less is better (a cost, a latency).
    pub const fn lower_is_better(name: &'static str, unit: &'static str) -> Metric {
        Metric {
            name,
            unit,
            higher_is_better: false,
        }
    }
}

pub const RATE_MPPS: Metric = Metric::higher_is_better("rate", "Mpps");
pub const CPU: Metric = Metric::lower_is_better("cpu", "ns/packet");
/// portfwd's `forwarded` verdict counter at the end of the run (portfwd systems only).
pub const FORWARDED: Metric = Metric::higher_is_better("forwarded", "packets");
pub const THROUGHPUT: Metric = Metric::higher_is_better("throughput", "Gbit/s");
pub const RATE_RR: Metric = Metric::higher_is_better("rate", "transactions/s");
pub const RATE_CRR: Metric = Metric::higher_is_better("rate", "connections/s");
pub const P50: Metric = Metric::lower_is_better("p50", "µs");
pub const P99: Metric = Metric::lower_is_better("p99", "µs");

/// A transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A published port: host port `port`/`proto` on every host address to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub proto: Proto,
    pub to: SocketAddrV4,
}

/// How many runs and how long each load lasts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub runs: u32,
    /// Load before the UDP counters are first read (after the first packet arrived).
    pub udp_warmup: Duration,
    /// The UDP measurement window.
    pub udp_window: Duration,
    /// iperf3's `-t`.
    pub stream_secs: u32,
    /// How long the request/response and connection loops run.
    pub rr_window: Duration,
    /// Forward counts of the UDP scaling series (1 is the plain `udp-unique` case).
    pub scales: Vec<u32>,
    /// `--profile DIR`: a system-wide `perf record` of every UDP window, reported into DIR.
    pub profile: Option<PathBuf>,
}

impl Settings {
    pub fn new(quick: bool, runs: Option<u32>) -> Settings {
        if quick {
            Settings {
                quick,
                runs: runs.unwrap_or(3),
                udp_warmup: Duration::from_millis(300),
                udp_window: Duration::from_millis(1000),
                stream_secs: 1,
                rr_window: Duration::from_millis(700),
                scales: vec![1, 10_000],
                profile: None,
            }
        } else {
            Settings {
                quick,
                // Issue #20's goals are judged on the median of 3 rounds.
                runs: runs.unwrap_or(3),
                udp_warmup: Duration::from_millis(500),
                udp_window: Duration::from_secs(2),
                stream_secs: 3,
                rr_window: Duration::from_secs(2),
                scales: vec![1, 100, 1_000, 10_000],
                profile: None,
            }
        }
    }
}

/// What sends the UDP load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    /// XDP live frames: the `portfwd-pktgen` binary (`bench/pktgen`).
    Xdp { pktgen: PathBuf },
    /// trafgen's AF_PACKET TX ring.
    Trafgen,
}

impl Generator {
    pub fn name(&self) -> &'static str {
        match self {
            Generator::Xdp { .. } => "xdp",
            Generator::Trafgen => "trafgen",
        }
    }
}

/// Every case of a run, in the order they are measured.
pub fn cases(settings: &Settings) -> Vec<Case> {
    let mut cases = vec![Case::Udp {
        flows: Flows::One,
        forwards: 1,
    }];
    // One flow through the most forwards too: the cost table's rows are 1 and the most
    // forwards x one and unique flows.
    if let Some(&most) = settings.scales.iter().max().filter(|&&n| n > 1) {
        cases.push(Case::Udp {
            flows: Flows::One,
            forwards: most,
        });
    }
    cases.extend(settings.scales.iter().map(|&forwards| Case::Udp {
        flows: Flows::Unique,
        forwards,
    }));
    cases.extend([Case::TcpStream, Case::TcpRr, Case::TcpCrr]);
    cases
}

/// Whether a system takes part in a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Run,
    /// The pair makes no sense (the reason says why); reported as "n/a".
    NotApplicable(String),
    /// The pair makes sense but cannot be measured here (the reason says why).
    NotAvailable(String),
}

/// Whether `system` runs `case`; `xdp` is `Err(why)` when the daemon has no XDP mode.
pub fn availability(system: System, case: Case, xdp: &Result<(), String>) -> Availability {
    use Availability::*;
    match (system, case) {
        (System::PortfwdXdp, _) => match xdp {
            Ok(()) => Run,
            Err(why) => NotAvailable(why.clone()),
        },
        (System::Proxy, Case::Udp { .. }) => NotApplicable(
            "a userspace UDP proxy (socat UDP4-RECVFROM,fork) is not comparable in packets \
             per second"
                .into(),
        ),
        (System::Routing, Case::Udp { forwards, .. }) if forwards > 1 => {
            NotApplicable("no rules to scale".into())
        }
        (System::Ceiling, Case::Udp { forwards, .. }) if forwards > 1 => {
            NotApplicable("no rules to scale; the ceiling is `udp-unique`".into())
        }
        (System::Ceiling, _) if !matches!(case, Case::Udp { .. }) => {
            NotApplicable("a drop program has no TCP peer".into())
        }
        _ => Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cases_are_unique() {
        for s in System::ALL {
            assert_eq!(System::from_name(s.name()), Some(s));
        }
        let settings = Settings::new(false, None);
        let names: Vec<String> = cases(&settings).iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "udp-1flow",
                "udp-1flow-10000fwd",
                "udp-unique",
                "udp-unique-100fwd",
                "udp-unique-1000fwd",
                "udp-unique-10000fwd",
                "tcp-stream",
                "tcp-rr",
                "tcp-crr"
            ]
        );
        assert_eq!(Settings::new(true, None).scales, [1, 10_000]);
    }

    #[test]
    fn availability_rules() {
        let ok = Ok(());
        let no: Result<(), String> = Err("no --mode".into());
        let udp1 = Case::Udp {
            flows: Flows::One,
            forwards: 1,
        };
        let udp10k = Case::Udp {
            flows: Flows::Unique,
            forwards: 10_000,
        };
        assert_eq!(
            availability(System::PortfwdXdp, udp1, &ok),
            Availability::Run
        );
        assert!(matches!(
            availability(System::PortfwdXdp, udp1, &no),
            Availability::NotAvailable(_)
        ));
        assert!(matches!(
            availability(System::Proxy, udp1, &ok),
            Availability::NotApplicable(_)
        ));
        assert_eq!(
            availability(System::Proxy, Case::TcpRr, &ok),
            Availability::Run
        );
        assert_eq!(availability(System::Ceiling, udp1, &ok), Availability::Run);
        assert!(matches!(
            availability(System::Ceiling, udp10k, &ok),
            Availability::NotApplicable(_)
        ));
        assert!(matches!(
            availability(System::Ceiling, Case::TcpStream, &ok),
            Availability::NotApplicable(_)
        ));
        assert!(matches!(
            availability(System::Routing, udp10k, &ok),
            Availability::NotApplicable(_)
        ));
        assert_eq!(
            availability(System::Iptables, udp10k, &ok),
            Availability::Run
        );
    }
}
