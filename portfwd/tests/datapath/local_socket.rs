//! The socket lookup of `local` against real sockets: the test runs in the lab's host
//! namespace, where BPF_PROG_TEST_RUN's skb (on eth0) looks sockets up. A socket that owns a
//! packet's exact addresses and ports (a TCP connection from a published port, a connected UDP
//! socket on one) makes it the host's (`pass_local_socket`); a listener or an unconnected UDP
//! socket on the published port does not, and the packet is forwarded.
//!
//! Also measures, with BPF_PROG_TEST_RUN's own repeat loop, what the lookups cost per packet
//! (printed, never asserted: the machine is shared).
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use portfwd::datapath::Datapath;
use portfwd_common::reason::Reason;

use super::env::Env;
use super::frame::{ACK, Pkt, SYN};
use super::program::{self, PROGRAMS, Program};
use super::world::{CLIENT_MAC, ETH0_MAC, NETS, Net, V6};

/// Runs a frame and returns the reason counted for it.
fn verdict(env: &Env, dp: &mut Datapath, prog: &Program, p: &Pkt) -> Reason {
    let before = program::verdicts(dp);
    program::test_run(dp, prog, &p.bytes(), env.eth0).expect("test run");
    program::verdict_delta(prog.hook, &before, &program::verdicts(dp)).expect("one verdict")
}

/// Sockets in the host namespace: a TCP connection from host:8080 to the client's listener on
/// 7000, a UDP socket on host:5353 connected to client:7001; and the ones that must not count: a
/// TCP listener on host:8080, an unconnected UDP socket on host:5353.
struct Sockets {
    _tcp: (TcpListener, TcpStream, TcpStream, TcpListener),
    _udp: (UdpSocket, UdpSocket),
}

fn sockets(env: &Env, w: &Net) -> Sockets {
    let (host, client) = (w.host, w.client);
    let peer = env
        .lab
        .client()
        .run(move || TcpListener::bind(SocketAddr::new(client, 7000)).unwrap());
    env.run(move || {
        let reuse = |fd: &std::os::fd::OwnedFd| {
            nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReusePort, &true).unwrap();
        };
        let family = match host {
            IpAddr::V4(_) => nix::sys::socket::AddressFamily::Inet,
            IpAddr::V6(_) => nix::sys::socket::AddressFamily::Inet6,
        };
        let sock = |ty, at: SocketAddr| {
            let fd = nix::sys::socket::socket(
                family,
                ty,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            reuse(&fd);
            let addr = nix::sys::socket::SockaddrStorage::from(at);
            nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
            fd
        };
        use nix::sys::socket::SockType::{Datagram, Stream};
        let published = SocketAddr::new(host, 8080);
        let listener = sock(Stream, published);
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
        let conn = sock(Stream, published);
        let to = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(client, 7000));
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&conn), &to).unwrap();
        let udp_at = SocketAddr::new(host, 5353);
        let unconnected = UdpSocket::from(sock(Datagram, udp_at));
        let connected = UdpSocket::from(sock(Datagram, udp_at));
        connected.connect(SocketAddr::new(client, 7001)).unwrap();
        let accepted = peer.accept().unwrap().0;
        Sockets {
            _tcp: (
                TcpListener::from(listener),
                TcpStream::from(conn),
                accepted,
                peer,
            ),
            _udp: (unconnected, connected),
        }
    })
}

fn eth0_pkt(p: Pkt) -> Pkt {
    p.macs(CLIENT_MAC, ETH0_MAC)
}

#[test]
fn local_socket_lookup() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dplocal");
    // The world's permanent neighbour entry names the client by CLIENT_MAC, and its IPv6
    // client address is the world's: give the lab's client both, so that the host's real
    // connections to it work.
    let client_ns = env.lab.client().clone();
    env.lab
        .sh(
            &client_ns,
            &format!(
                "ip link set eth0 address {} && ip -6 addr add {}/{} dev eth0 nodad",
                super::world::mac(CLIENT_MAC),
                V6.client,
                V6.lan.1
            ),
        )
        .expect("setting the client's MAC and IPv6 address");
    let mut failures = Vec::new();
    for w in NETS {
        let _sockets = sockets(&env, w);
        let (host, client) = (w.host, w.client);
        let cases = [
            (
                "TCP client:7000 -> host:8080 of the host's connection from 8080",
                eth0_pkt(Pkt::tcp((client, 7000), (host, 8080), ACK)),
                Reason::PassLocalSocket,
            ),
            (
                "UDP client:7001 -> host:5353 to the host's socket connected to it",
                eth0_pkt(Pkt::udp((client, 7001), (host, 5353))),
                Reason::PassLocalSocket,
            ),
            (
                "TCP SYN client:7000 -> host:8080: a SYN is never a reply",
                eth0_pkt(Pkt::tcp((client, 7000), (host, 8080), SYN)),
                Reason::Forwarded,
            ),
            (
                "TCP client:7002 -> host:8080, only a listener there: forwarded",
                eth0_pkt(Pkt::tcp((client, 7002), (host, 8080), ACK)),
                Reason::Forwarded,
            ),
            (
                "UDP client:7002 -> host:5353, only an unconnected socket there: forwarded",
                eth0_pkt(Pkt::udp((client, 7002), (host, 5353))),
                Reason::Forwarded,
            ),
        ];
        env.run(|| {
            for prog in PROGRAMS {
                let (mut dp, _) = env.load(prog);
                for (name, p, want) in &cases {
                    let got = verdict(&env, &mut dp, prog, p);
                    // XDP without XDP egress hands translations to tc.
                    let want = match (*want, prog.xdp_egress, prog.hook) {
                        (Reason::Forwarded, false, portfwd_common::maps::Hook::Xdp) => {
                            Reason::PassToTc
                        }
                        (r, _, _) => r,
                    };
                    if got != want {
                        failures.push(format!(
                            "{} {}: {name}: {} instead of {}",
                            prog.label,
                            w.family.name(),
                            got.name(),
                            want.name()
                        ));
                    }
                }
            }
            print_costs(&env, w);
        });
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// ns per packet of frames whose verdict leaves them unchanged, so that each of the kernel's
/// repeated runs sees the same frame.
fn print_costs(env: &Env, w: &Net) {
    const REPEAT: u32 = 200_000;
    let (host, client) = (w.host, w.client);
    let cases = [
        (
            "pass_local_socket (UDP, connected socket found)",
            eth0_pkt(Pkt::udp((client, 7001), (host, 5353))),
        ),
        (
            "pass_local_socket (TCP, connection found)",
            eth0_pkt(Pkt::tcp((client, 7000), (host, 8080), ACK)),
        ),
        (
            "pass_local_flow (LRU hit)",
            eth0_pkt(Pkt::tcp((w.remote, 443), (host, 8080), ACK)),
        ),
        (
            "drop_source_not_allowed, TCP SYN (lookups skipped)",
            eth0_pkt(Pkt::tcp((w.client_no_neigh, 7000), (host, 8090), SYN)),
        ),
        (
            "drop_source_not_allowed, TCP ACK (flow, local flow, socket lookups all miss)",
            eth0_pkt(Pkt::tcp((w.client_no_neigh, 7000), (host, 8090), ACK)),
        ),
    ];
    for prog in PROGRAMS.iter().take(2) {
        let (mut dp, _) = env.load(prog);
        for (name, p) in &cases {
            let frame = p.bytes();
            let ctx = (prog.ctx)(env.eth0, frame.len());
            let t: Duration = dp
                .time_program(prog.name, &frame, Some(&ctx), REPEAT)
                .expect("timed test run");
            println!(
                "cost {} {}: {name}: {} ns/packet",
                prog.label,
                w.family.name(),
                t.as_nanos()
            );
        }
    }
}

/// The tc egress program records a flow leaving eth0 from a host address and a published port
/// (its replies' key), but not a reply portfwd translated (host:8080 -> client_no_neigh:40002
/// is a forwarded flow's, host:8080 -> c1:45001 a hairpin's), nor a flow from a port that is
/// not published. Prints its cost.
#[test]
fn egress_records_flows_from_published_ports() {
    if !crate::support::require_root() {
        return;
    }
    use portfwd::datapath::maps::MapAddr;
    use portfwd_common::maps::{FlowKeyOf, Ipv6Words, Program as Prog};

    fn recorded<A: MapAddr>(dp: &Datapath, from: (IpAddr, u16), to: (IpAddr, u16)) -> bool {
        let a = |ip| A::from_ip(ip).unwrap();
        dp.maps.is_local_flow(&FlowKeyOf::<A> {
            saddr_be: a(to.0),
            daddr_be: a(from.0),
            sport_be: to.1.to_be(),
            dport_be: from.1.to_be(),
            proto: 6,
            _pad: [0; 3],
        })
    }
    let env = Env::new("dpegress");
    let mut failures = Vec::new();
    env.run(|| {
        for w in NETS {
            let (mut dp, _) = env.load(&program::TC);
            let out = |from: (IpAddr, u16), to: (IpAddr, u16)| {
                Pkt::tcp(from, to, ACK).macs(ETH0_MAC, CLIENT_MAC).bytes()
            };
            let cases = [
                (
                    "from published host:8080",
                    env.eth0,
                    (w.host, 8080),
                    (w.remote, 443),
                    true,
                ),
                (
                    "from unpublished host:22",
                    env.eth0,
                    (w.host, 22),
                    (w.remote, 443),
                    false,
                ),
                (
                    "portfwd's translated reply to a forwarded flow",
                    env.eth0,
                    (w.host, 8080),
                    (w.client_no_neigh, 40002),
                    false,
                ),
                (
                    "portfwd's translated reply to c1's hairpin call, out of an exposed bridge port",
                    env.port,
                    (w.host, 8080),
                    (w.c1, 45001),
                    false,
                ),
            ];
            // For scale: the cheapest way out, an interface where nothing is exposed.
            let frame = out((w.host, 8080), (w.remote, 443));
            let ctx = (program::TC.ctx)(env.docker0, frame.len());
            let t = dp
                .time_program(Prog::TcEgress, &frame, Some(&ctx), 200_000)
                .expect("timed test run");
            println!(
                "cost tc egress {}: on docker0 (nothing exposed): {} ns/packet",
                w.family.name(),
                t.as_nanos()
            );
            for (name, ifindex, from, to, want) in cases {
                let frame = out(from, to);
                let ctx = (program::TC.ctx)(ifindex, frame.len());
                let (code, _) = dp
                    .test_run_program(Prog::TcEgress, &frame, Some(&ctx))
                    .expect("test run");
                let got = match w.family {
                    super::world::Family::V4 => recorded::<u32>(&dp, from, to),
                    super::world::Family::V6 => recorded::<Ipv6Words>(&dp, from, to),
                };
                if code != program::TC.pass || got != want {
                    failures.push(format!(
                        "{} {name}: returned {code}, recorded {got}",
                        w.family.name()
                    ));
                }
                let t = dp
                    .time_program(Prog::TcEgress, &frame, Some(&ctx), 200_000)
                    .expect("timed test run");
                println!(
                    "cost tc egress {}: {name}: {} ns/packet",
                    w.family.name(),
                    t.as_nanos()
                );
            }
        }
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
