//! Replies on published ports are never taken for new connections (issue #19, item 1).
//!
//! The daemon keeps the published ports out of the kernel's ephemeral port choice, so the host
//! does not connect out from one of them by itself; and when a flow leaves from one anyway (an
//! explicit `bind()`, or a container's connection masqueraded onto it), its replies reach the
//! host, as they do with netfilter's DNAT, which only translates new connections. Each case runs
//! once with iptables (ip6tables) DNAT + MASQUERADE as Docker writes them, once with portfwd (and
//! Docker's MASQUERADE, which portfwd does not replace), and expects the same outcome; the
//! host's and the masqueraded cases in both families.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};
use nix::sys::{
    socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket,
        sockopt,
    },
    time::TimeVal,
};
use portfwd_lab::{self as lab, Container, Lab, Ns};

use crate::support::{Scenario, T, at, tcx_programs};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

#[test]
fn published_ports_are_reserved_and_given_back() {
    require_root!();
    let s = Scenario::new("resv")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    // One read(2) of a large buffer: the sysctl answers only a read at offset 0, so
    // `read_to_string` (which starts small) would see the list cut after 32 bytes.
    let read = || {
        s.lab.host().run(|| {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            let n = std::fs::File::open(RESERVED_PORTS)
                .and_then(|mut f| f.read(&mut buf))
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).trim().to_owned()
        })
    };
    // The lab's host namespace starts with none reserved.
    assert_eq!(read(), "8080", "the forward of the config");

    let out = s.cli(&[
        "add",
        "20000-20999/udp",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999");
    assert_eq!(s.status_json()["reserved_ports"], "8080,20000-20999");

    // A list longer than the 32 bytes a first small read gets: the sysctl answers only one read.
    let out = s.cli(&[
        "add",
        "30000-30999",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&[
        "add",
        "40000-40999/udp",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999,30000-30999,40000-40999");
    let out = s.cli(&["del", "30000-30999"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999,40000-40999");
    assert_eq!(
        s.status_json()["reserved_ports"],
        "8080,20000-20999,40000-40999"
    );
    let out = s.cli(&["del", "40000-40999/udp"]);
    assert!(out.status.success(), "{out:?}");

    let out = s.cli(&["del", "20000-20999/udp"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080", "the range's ports are given back");

    let out = s.cli(&["del", "8080"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "", "what the namespace had before the daemon");
}

/// Who publishes 20000-20099 (TCP and UDP) to c2:3000-3099.
#[derive(Clone, Copy, Debug)]
enum Nat {
    Iptables,
    Portfwd,
}

/// The address family a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn host(self) -> IpAddr {
        match self {
            Fam::V4 => Lab::HOST_ADDR.into(),
            Fam::V6 => Lab::HOST_ADDR6.into(),
        }
    }

    fn client(self) -> IpAddr {
        match self {
            Fam::V4 => Lab::CLIENT_ADDR.into(),
            Fam::V6 => Lab::CLIENT_ADDR6.into(),
        }
    }

    fn of(self, c: &Container) -> IpAddr {
        match self {
            Fam::V4 => c.addr.into(),
            Fam::V6 => c.addr6.into(),
        }
    }

    /// iptables or ip6tables, the containers' subnet, loopback.
    fn netfilter(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Fam::V4 => ("iptables", "172.17.0.0/16", "127.0.0.0/8"),
            Fam::V6 => ("ip6tables", "fd00:17::/64", "::1/128"),
        }
    }
}

/// The published range, and the port a flow leaves from inside it.
const RANGE: &str = "20000-20099";
const PORT: u16 = 20042;
/// The server on the client's side that the host and the containers connect to.
const SERVER_PORT: u16 = 7000;

/// A lab publishing [`RANGE`] of one family to c2 one way or the other, with Docker's
/// MASQUERADE for the containers' subnet, and echo servers (TCP and UDP) in the client.
struct Published {
    fam: Fam,
    /// With portfwd: the scenario (which owns the lab).
    s: Option<Scenario>,
    /// With iptables: the lab alone.
    lab: Option<Lab>,
    _servers: (lab::TcpServer, lab::UdpServer),
}

impl Published {
    fn new(nat: Nat, tag: &str) -> Published {
        Published::of(nat, Fam::V4, tag)
    }

    fn of(nat: Nat, fam: Fam, tag: &str) -> Published {
        let (s, lab) = match nat {
            Nat::Iptables => {
                let mut lab = Lab::new(tag).unwrap();
                lab.add_container("c1").unwrap();
                lab.add_container("c2").unwrap();
                (None, Some(lab))
            }
            Nat::Portfwd => {
                let (listen, to) = match fam {
                    Fam::V4 => (RANGE.to_owned(), "c2:3000-3099"),
                    Fam::V6 => (format!("[::]:{RANGE}"), "[c2]:3000-3099"),
                };
                let s = Scenario::new(tag)
                    .containers(2)
                    .forward(&listen, to)
                    .forward(&format!("{listen}/udp"), to)
                    .daemon();
                (Some(s), None)
            }
        };
        let l = s.as_ref().map_or_else(|| lab.as_ref().unwrap(), |s| &s.lab);
        let c2 = at(fam.of(&l.containers()[1]), 3000);
        let c2_range = format!("{c2}-3099");
        let (lo, hi) = RANGE.split_once('-').unwrap();
        let (ipt, subnet, lo_net) = fam.netfilter();
        let mut rules =
            format!("{ipt} -t nat -A POSTROUTING -s {subnet} ! -o docker0 -j MASQUERADE\n");
        if let Nat::Iptables = nat {
            rules += &format!(
                "{ipt} -t nat -N DOCKER\n\
                 {ipt} -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                 {ipt} -t nat -A OUTPUT ! -d {lo_net} -m addrtype --dst-type LOCAL -j DOCKER\n\
                 {ipt} -t nat -A DOCKER -i docker0 -j RETURN\n"
            );
            for p in ["tcp", "udp"] {
                rules += &format!(
                    "{ipt} -t nat -A DOCKER ! -i docker0 -p {p} -m {p} --dport {lo}:{hi} \
                     -j DNAT --to-destination {c2_range}\n"
                );
            }
        }
        l.sh(l.host(), &rules).unwrap();
        let server = at(fam.client(), SERVER_PORT);
        let servers = (
            lab::tcp_server(l.client(), server, "server").unwrap(),
            lab::udp_server(l.client(), server, "server").unwrap(),
        );
        Published {
            fam,
            s,
            lab,
            _servers: servers,
        }
    }

    fn lab(&self) -> &Lab {
        self.s
            .as_ref()
            .map_or_else(|| self.lab.as_ref().unwrap(), |s| &s.lab)
    }

    /// Sends a line from `ns`, from `from` (an explicit bind), to the client's server; the
    /// reply, which must reach `from`'s socket.
    fn request(&self, ns: &Ns, udp: bool, from: SocketAddr) -> anyhow::Result<String> {
        request_from(ns, udp, from, at(self.fam.client(), SERVER_PORT), "hello")
    }

    /// With portfwd, how many replies were passed to the stack as the host's own.
    fn passed_as_local(&self) -> Option<u64> {
        let s = self.s.as_ref()?;
        Some(s.verdict("pass_local_flow") + s.verdict("pass_local_socket"))
    }
}

/// A socket of `ns` bound to `from` (SO_REUSEADDR, so a test may rerun at once), sends `line` to
/// `to` (TCP: connects first) and returns the first line of the reply, within [`T`].
fn request_from(
    ns: &Ns,
    udp: bool,
    from: SocketAddr,
    to: SocketAddr,
    line: &str,
) -> anyhow::Result<String> {
    let fd: OwnedFd = ns.try_run(move || {
        let fd = bound(udp, from);
        // Bounds connect() too.
        setsockopt(
            &fd,
            sockopt::SendTimeout,
            &TimeVal::new(T.as_secs() as i64, 0),
        )
        .unwrap();
        fd
    })?;
    let msg = format!("{line}\n");
    if udp {
        let sock = UdpSocket::from(fd);
        sock.set_read_timeout(Some(T))?;
        sock.send_to(msg.as_bytes(), to)?;
        let mut buf = [0u8; 2048];
        let (n, peer) = sock
            .recv_from(&mut buf)
            .with_context(|| format!("no UDP reply from {to} to {from}"))?;
        if peer != to {
            bail!("UDP reply from {peer}, not {to}");
        }
        return Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
    }
    connect(fd.as_raw_fd(), &sockaddr(to))
        .with_context(|| format!("TCP connect from {from} to {to}"))?;
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(T))?;
    stream.write_all(msg.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .with_context(|| format!("no TCP reply from {to} to {from}"))?;
    Ok(reply.trim_end().to_owned())
}

/// (a): the host connects out from a published port, bound explicitly.
fn host_connects_from_published_port(fam: Fam, udp: bool) {
    for nat in [Nat::Iptables, Nat::Portfwd] {
        let p = Published::of(nat, fam, if udp { "rplhu" } else { "rplht" });
        let from = at(fam.host(), PORT);
        let reply = p.request(p.lab().host(), udp, from);
        assert_eq!(
            reply.as_deref().map_err(|e| format!("{e:#}")),
            Ok(format!("server from {from}: hello").as_str()),
            "{nat:?}: the reply reaches the host's socket"
        );
        if let Some(n) = p.passed_as_local() {
            assert!(n > 0, "the replies were passed as the host's own");
        }
    }
}

#[test]
fn host_connecting_from_a_published_tcp_port_gets_its_replies() {
    require_root!();
    host_connects_from_published_port(Fam::V4, false);
}

#[test]
fn host_sending_from_a_published_udp_port_gets_its_replies() {
    require_root!();
    host_connects_from_published_port(Fam::V4, true);
}

#[test]
fn host_connecting_from_a_published_tcp_port_gets_its_replies_ipv6() {
    require_root!();
    host_connects_from_published_port(Fam::V6, false);
}

#[test]
fn host_sending_from_a_published_udp_port_gets_its_replies_ipv6() {
    require_root!();
    host_connects_from_published_port(Fam::V6, true);
}

/// (b): a container connects out through MASQUERADE from a port that is published on the host
/// (MASQUERADE keeps the source port when it is free): the replies reach the container, not the
/// forward's target.
fn masqueraded_flow_on_published_port(fam: Fam, udp: bool) {
    for nat in [Nat::Iptables, Nat::Portfwd] {
        let p = Published::of(nat, fam, if udp { "rplmu" } else { "rplmt" });
        let c1 = &p.lab().containers()[0];
        let from = at(fam.of(c1), PORT);
        let reply = p.request(&c1.ns, udp, from);
        // The server sees the masqueraded source: the host's address, the same port.
        let seen = at(fam.host(), PORT);
        assert_eq!(
            reply.as_deref().map_err(|e| format!("{e:#}")),
            Ok(format!("server from {seen}: hello").as_str()),
            "{nat:?}: the reply reaches the container that connected"
        );
        if let Some(n) = p.passed_as_local() {
            assert!(
                n > 0,
                "the replies were passed to the stack to be un-masqueraded"
            );
        }
    }
}

#[test]
fn masqueraded_tcp_flow_on_a_published_port_gets_its_replies() {
    require_root!();
    masqueraded_flow_on_published_port(Fam::V4, false);
}

#[test]
fn masqueraded_udp_flow_on_a_published_port_gets_its_replies() {
    require_root!();
    masqueraded_flow_on_published_port(Fam::V4, true);
}

#[test]
fn masqueraded_tcp_flow_on_a_published_port_gets_its_replies_ipv6() {
    require_root!();
    masqueraded_flow_on_published_port(Fam::V6, false);
}

#[test]
fn masqueraded_udp_flow_on_a_published_port_gets_its_replies_ipv6() {
    require_root!();
    masqueraded_flow_on_published_port(Fam::V6, true);
}

/// A port published after the host's connections from it exist: nothing leaves from it once
/// published before the peer speaks, so only the socket lookup knows the replies are the host's
/// (with iptables: the connections' conntrack entries, made before the DNAT rule).
#[test]
fn port_published_after_the_hosts_sockets_exist() {
    require_root!();
    for nat in [Nat::Iptables, Nat::Portfwd] {
        let p = Published::new(nat, "rpllate");
        let l = p.lab();
        let (tcp_port, udp_port) = (21000, 21001);
        let host_tcp = at(Lab::HOST_ADDR, tcp_port);
        let host_udp = at(Lab::HOST_ADDR, udp_port);
        let (peer_tcp, peer_udp) = (at(Lab::CLIENT_ADDR, 7100), at(Lab::CLIENT_ADDR, 7101));
        let listener = l.client().run(move || TcpListener::bind(peer_tcp).unwrap());
        let peer_sock = l.client().run(move || UdpSocket::bind(peer_udp).unwrap());
        let (mut host_stream, host_dgram) = l.host().run(move || {
            let stream = bound(false, host_tcp);
            connect(stream.as_raw_fd(), &sockaddr(peer_tcp)).unwrap();
            let dgram = UdpSocket::from(bound(true, host_udp));
            dgram.connect(peer_udp).unwrap();
            // The host speaks first, as a client does: with iptables, this makes the conntrack
            // entry the reply later matches.
            dgram.send(b"hi\n").unwrap();
            (TcpStream::from(stream), dgram)
        });
        let (mut peer_stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        peer_sock.set_read_timeout(Some(T)).unwrap();
        peer_sock.recv_from(&mut buf).unwrap();

        let c2 = l.containers()[1].addr;
        match nat {
            Nat::Iptables => {
                let rule = |p: &str, port: u16| {
                    format!(
                        "iptables -t nat -A DOCKER ! -i docker0 -p {p} -m {p} --dport {port} \
                         -j DNAT --to-destination {c2}:3000"
                    )
                };
                let rules = format!("{} && {}", rule("tcp", tcp_port), rule("udp", udp_port));
                l.sh(l.host(), &rules).unwrap();
            }
            Nat::Portfwd => {
                let s = p.s.as_ref().unwrap();
                for (listen, to) in [
                    (format!("{tcp_port}"), format!("{c2}:3000")),
                    (format!("{udp_port}/udp"), format!("{c2}:3000")),
                ] {
                    let out = s.cli(&["add", &listen, &to]);
                    assert!(out.status.success(), "{out:?}");
                }
            }
        }

        peer_stream.write_all(b"late\n").unwrap();
        peer_sock.send_to(b"late\n", host_udp).unwrap();
        host_stream.set_read_timeout(Some(T)).unwrap();
        let mut line = String::new();
        let tcp = BufReader::new(&host_stream)
            .read_line(&mut line)
            .map(|_| line);
        host_dgram.set_read_timeout(Some(T)).unwrap();
        let udp = host_dgram
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        assert_eq!(
            (
                tcp.map_err(|e| e.to_string()),
                udp.map_err(|e| e.to_string())
            ),
            (Ok("late\n".to_owned()), Ok("late\n".to_owned())),
            "{nat:?}: the peer's data reaches the host's sockets"
        );
        if let Some(s) = &p.s {
            assert!(
                s.verdict("pass_local_socket") >= 2,
                "the socket lookup recognised both"
            );
        }
        let _ = host_stream.flush();
    }
}

/// A socket of the calling thread's namespace, SO_REUSEADDR, bound to `at`.
fn bound(udp: bool, at: SocketAddr) -> OwnedFd {
    let ty = if udp {
        SockType::Datagram
    } else {
        SockType::Stream
    };
    let family = if at.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    bind(fd.as_raw_fd(), &sockaddr(at)).unwrap();
    fd
}

fn sockaddr(a: SocketAddr) -> SockaddrStorage {
    SockaddrStorage::from(a)
}

/// The egress recorder is pinned and taken over like the ingress programs: after kill -9 and a
/// restart there is still exactly one on each interface, and masqueraded replies still reach
/// their container.
#[test]
fn egress_recorder_survives_restarts_once() {
    require_root!();
    let mut p = Published::new(Nat::Portfwd, "rplrst");
    for _ in 0..2 {
        let s = p.s.as_mut().unwrap();
        s.d.kill9();
        s.d.restart();
    }
    let s = p.s.as_ref().unwrap();
    let names = tcx_programs(s.lab.host(), "eth0", aya::programs::TcAttachType::Egress);
    // (The kernel keeps the first 15 bytes of the name: portfwd_tc_egre.)
    assert!(
        names.len() == 1 && names[0].starts_with("portfwd_tc_egr"),
        "tcx egress programs on eth0: {names:?}"
    );
    let pins: Vec<String> = std::fs::read_dir(s.d.pin_dir.join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |kind: &str| pins.iter().filter(|p| p.starts_with(kind)).count();
    assert_eq!(count("egress-"), count("tc-"), "{pins:?}");

    let c1 = &s.lab.containers()[0];
    let reply = p.request(&c1.ns, false, at(c1.addr, PORT));
    assert_eq!(
        reply.as_deref().map_err(|e| format!("{e:#}")),
        Ok(format!("server from {}: hello", at(Lab::HOST_ADDR, PORT)).as_str()),
    );
}
