//! Host-local, hairpin and loopback-only access to published ports: the socket hooks (cgroup
//! `sock_addr` programs) for processes on the host, the hairpin translation for containers
//! calling the host, and forwards bound to 127.0.0.1 that only the host reaches.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::support::{self, Daemon, Scenario, Setup, T, at, sock_verdict, verdict};
use portfwd_common::sock::SOCK_NETNS;
use portfwd_lab::{self as lab, Container, Lab};

/// How long a connection that must fail may take to fail.
const SHORT: Duration = Duration::from_millis(1500);

/// A lab whose daemon, in XDP mode, also exposes the containers' bridge ports (for hairpin).
fn scenario(tag: &str) -> Setup {
    Scenario::new(tag).expose_containers_in_xdp()
}

/// Connects from the host namespace, checks what `getpeername` says, and exchanges one line.
fn host_tcp(lab: &Lab, to: SocketAddr, line: &str) -> (SocketAddr, String) {
    lab.host().run(|| {
        let s = TcpStream::connect_timeout(&to, T)
            .unwrap_or_else(|e| panic!("host connect to {to}: {e}"));
        s.set_read_timeout(Some(T)).unwrap();
        let peer = s.peer_addr().unwrap();
        (&s).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        (peer, reply.trim_end().to_owned())
    })
}

/// A connected UDP socket in the host namespace sends `line` to `to`; returns what `getpeername`
/// says, the reply's source (`recvfrom`) and the reply.
fn host_udp_connected(lab: &Lab, to: SocketAddr, line: &str) -> (SocketAddr, SocketAddr, String) {
    lab.host().run(|| {
        let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(any).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.connect(to).unwrap();
        s.send(format!("{line}\n").as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
        (s.peer_addr().unwrap(), from, text)
    })
}

/// The only processes in the host namespace are the daemon itself: no proxy.
fn assert_no_proxy(lab: &Lab, d: &Daemon) {
    let pids = support::processes_in(lab.host());
    assert_eq!(
        pids,
        vec![d.pid()],
        "the host namespace must hold the daemon and nothing else (no proxy process)"
    );
}

#[test]
fn host_tcp_to_loopback_and_host_addresses_reaches_the_container_without_a_proxy() {
    require_root!();
    let s = scenario("hltcp")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let lab = &s.lab;
    let srv = s.servers.tcp("c1:3000");

    let st = s.status_json();
    assert_eq!(st["host_local"]["attached"], true, "{st}");

    for to in [
        at(Ipv4Addr::LOCALHOST, 8080),
        at(Lab::HOST_ADDR, 8080),
        at(Lab::BRIDGE_ADDR, 8080),
    ] {
        let (peer, reply) = host_tcp(lab, to, "from the host");
        assert_eq!(peer, to, "getpeername must return the address connected to");
        assert!(
            reply.starts_with("c1:3000 from ") && reply.ends_with("from the host"),
            "{to}: {reply}"
        );
    }
    // The container saw the host's own address on the bridge: the socket really connected
    // there, with no proxy in between.
    assert!(
        srv.peers().iter().all(|p| p.ip() == Lab::BRIDGE_ADDR),
        "{:?}",
        srv.peers()
    );

    // While a connection is open, still nothing but the daemon runs in the host namespace.
    let session = lab::tcp_session(lab.host(), at(Ipv4Addr::LOCALHOST, 8080), T).unwrap();
    assert_no_proxy(lab, &s.d);
    assert_eq!(
        session.stream().peer_addr().unwrap(),
        at(Ipv4Addr::LOCALHOST, 8080)
    );
    drop(session);

    let st = s.status_json();
    assert!(sock_verdict(&st, "connect_translated") >= 4, "{st}");
    assert!(sock_verdict(&st, "getpeername_restored") >= 4, "{st}");
    // Not a single packet was translated for it: the sockets talk to the container directly.
    assert_eq!(verdict(&st, "forwarded"), 0, "{st}");
    support::assert_no_netfilter_nat(lab);
}

#[test]
fn host_udp_connected_and_unconnected_sees_replies_from_the_published_address() {
    require_root!();
    let s = scenario("hludp")
        .containers(1)
        .udp_server("c1", 53)
        .forward("5353/udp", "c1:53")
        .daemon();
    let lab = &s.lab;

    for to in [at(Ipv4Addr::LOCALHOST, 5353), at(Lab::HOST_ADDR, 5353)] {
        // Unconnected: sendto/recvfrom; udp_request fails unless the reply comes from `to`.
        let reply = lab::udp_request(lab.host(), to, "unconnected", T)
            .unwrap_or_else(|e| panic!("{to}: {e:#}"));
        assert!(
            reply.starts_with("c1:53 from ") && reply.ends_with("unconnected"),
            "{reply}"
        );

        // Connected: connect/send, then recvfrom and getpeername.
        let (peer, from, reply) = host_udp_connected(lab, to, "connected");
        assert_eq!(peer, to, "getpeername");
        assert_eq!(from, to, "the reply's source");
        assert!(reply.ends_with("connected"), "{reply}");
    }
    assert_no_proxy(lab, &s.d);

    let st = s.status_json();
    assert!(sock_verdict(&st, "sendmsg_translated") >= 2, "{st}");
    assert!(sock_verdict(&st, "connect_translated") >= 2, "{st}");
    assert!(sock_verdict(&st, "recvmsg_restored") >= 4, "{st}");
}

#[test]
fn a_containers_own_loopback_is_never_hijacked() {
    require_root!();
    let s = scenario("hlown")
        .containers(2)
        .tcp_server("c1", 3000)
        .tcp_server_at("c2", "127.0.0.1:8080", "c2-own")
        .udp_server_at("c2", "127.0.0.1:5353", "c2-own")
        .forward("8080", "c1:3000")
        .forward("5353/udp", "c1:3000")
        .daemon();
    let c2 = s.c("c2");

    let reply = lab::tcp_request(&c2.ns, at(Ipv4Addr::LOCALHOST, 8080), "mine", T).unwrap();
    assert!(reply.starts_with("c2-own from 127.0.0.1:"), "{reply}");
    let reply = lab::udp_request(&c2.ns, at(Ipv4Addr::LOCALHOST, 5353), "mine", T).unwrap();
    assert!(reply.starts_with("c2-own from 127.0.0.1:"), "{reply}");
    // The client machine's own loopback neither.
    assert!(lab::tcp_request(s.lab.client(), at(Ipv4Addr::LOCALHOST, 8080), "x", SHORT).is_err());

    let st = s.status_json();
    assert!(sock_verdict(&st, "pass_other_netns") >= 2, "{st}");
    assert_eq!(sock_verdict(&st, "connect_translated"), 0, "{st}");
}

/// Calls the host's published port from inside container `from`.
fn hairpin(from: &Container, port: u16, line: &str) -> String {
    lab::tcp_request(&from.ns, at(Lab::HOST_ADDR, port), line, T)
        .unwrap_or_else(|e| panic!("{} -> host:{port}: {e:#}", from.name))
}

#[test]
fn hairpin_reaches_the_container_itself_and_another_one() {
    require_root!();
    let s = scenario("hlhair")
        .containers(2)
        .tcp_server("c1", 3000)
        .tcp_server("c2", 3000)
        .udp_server("c1", 53)
        .forward("8080", "c1:3000")
        .forward("8081", "c2:3000")
        .forward("5353/udp", "c1:53")
        .daemon();
    let (c1, c2) = (s.c("c1"), s.c("c2"));

    // To itself: the source is translated to the published address, so the reply comes back
    // through the host.
    let reply = hairpin(&c1, 8080, "self");
    assert!(
        reply.starts_with(&format!("c1:3000 from {}:", Lab::HOST_ADDR)) && reply.ends_with("self"),
        "{reply}"
    );
    // To another container: the caller's address is kept.
    let reply = hairpin(&c1, 8081, "other");
    assert!(
        reply.starts_with(&format!("c2:3000 from {}:", c1.addr)) && reply.ends_with("other"),
        "{reply}"
    );
    let reply = hairpin(&c2, 8080, "back");
    assert!(
        reply.starts_with(&format!("c1:3000 from {}:", c2.addr)),
        "{reply}"
    );
    // UDP to itself: udp_request fails unless the reply comes from the address it sent to.
    let reply = lab::udp_request(&c1.ns, at(Lab::HOST_ADDR, 5353), "udp self", T).unwrap();
    assert!(reply.ends_with("udp self"), "{reply}");
    // Several connections in a row to itself (distinct flows, each translated both ways).
    for i in 0..20 {
        let reply = hairpin(&c1, 8080, &format!("again {i}"));
        assert!(reply.ends_with(&format!("again {i}")), "{reply}");
    }

    let st = s.status_json();
    assert!(verdict(&st, "hairpinned") >= 3, "{st}");
    assert!(verdict(&st, "hairpin_replied") >= 2, "{st}");
    assert!(verdict(&st, "forwarded") >= 2, "{st}");
    assert!(verdict(&st, "replied") >= 2, "{st}");
    assert_no_proxy(&s.lab, &s.d);
    support::assert_no_netfilter_nat(&s.lab);
}

/// An Ethernet + IPv4 frame to 127.0.0.1:`dport` (UDP, or a TCP SYN), as a LAN neighbour could
/// craft it against CVE-2020-8558.
fn loopback_frame(dst_mac: [u8; 6], src_mac: [u8; 6], tcp: bool, dport: u16) -> Vec<u8> {
    let src = Lab::CLIENT_ADDR.octets();
    let dst = Ipv4Addr::LOCALHOST.octets();
    let l4: Vec<u8> = if tcp {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..8].copy_from_slice(&1u32.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = 0x02; // SYN
        h[14..16].copy_from_slice(&64240u16.to_be_bytes());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&h);
        let c = csum(&pseudo);
        h[16..18].copy_from_slice(&c.to_be_bytes());
        h
    } else {
        let payload = b"crafted\n";
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        // Checksum 0: none, valid for UDP over IPv4.
        h.extend_from_slice(payload);
        h
    };
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = if tcp { 6 } else { 17 };
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&l4);
    frame
}

fn csum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn mac(lab: &Lab, ns: &portfwd_lab::Ns) -> [u8; 6] {
    lab.mac(ns, Lab::ETH).unwrap()
}

/// Sends `frames` out of the client's `eth0` through an AF_PACKET socket.
fn send_raw(lab: &Lab, frames: &[Vec<u8>]) {
    lab.client().run(|| {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a socket we just opened and own from here on.
        let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(Lab::ETH).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "client eth0 index");
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        for f in frames {
            // SAFETY: `f` is valid for `f.len()` bytes and `sll` is a valid sockaddr_ll of the
            // size passed.
            let n = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
        }
    });
}

#[test]
fn a_loopback_only_forward_is_reachable_from_the_host_only() {
    require_root!();
    let s = scenario("hllo")
        .containers(2)
        .tcp_server("c1", 3000)
        .udp_server("c1", 53)
        .forward("127.0.0.1:9090", "c1:3000")
        .forward("127.0.0.1:9090/udp", "c1:53")
        .daemon();
    let (lab, c1, c2) = (&s.lab, s.c("c1"), s.c("c2"));
    let (tcp, udp) = (s.servers.tcp("c1:3000"), s.servers.udp("c1:53"));

    // From the host, on loopback: reachable.
    let (peer, reply) = host_tcp(lab, at(Ipv4Addr::LOCALHOST, 9090), "host");
    assert_eq!(peer, at(Ipv4Addr::LOCALHOST, 9090));
    assert!(reply.ends_with("host"), "{reply}");
    let reply = lab::udp_request(lab.host(), at(Ipv4Addr::LOCALHOST, 9090), "host", T).unwrap();
    assert!(reply.ends_with("host"), "{reply}");
    let served_tcp = tcp.peers().len();
    let served_udp = udp.peers().len();

    // From the host on its other addresses: not published there.
    assert!(lab::tcp_request(lab.host(), at(Lab::HOST_ADDR, 9090), "x", SHORT).is_err());
    // From the client machine: neither on the host's address nor on its own loopback.
    assert!(lab::tcp_request(lab.client(), at(Lab::HOST_ADDR, 9090), "x", SHORT).is_err());
    assert!(lab::udp_request(lab.client(), at(Lab::HOST_ADDR, 9090), "x", SHORT).is_err());
    assert!(lab::tcp_request(lab.client(), at(Ipv4Addr::LOCALHOST, 9090), "x", SHORT).is_err());
    // From containers, itself and another: on the host's addresses and on their loopback.
    for c in [&c1, &c2] {
        for addr in [Lab::HOST_ADDR, Lab::BRIDGE_ADDR, Ipv4Addr::LOCALHOST] {
            assert!(
                lab::tcp_request(&c.ns, at(addr, 9090), "x", SHORT).is_err(),
                "{} reached {addr}:9090",
                c.name
            );
            assert!(
                lab::udp_request(&c.ns, at(addr, 9090), "x", SHORT).is_err(),
                "{} reached {addr}:9090/udp",
                c.name
            );
        }
    }

    // Frames crafted with destination 127.0.0.1, sent to the host's MAC.
    let before = s.verdict("drop_loopback_dst");
    let host_mac = mac(lab, lab.host());
    let client_mac = mac(lab, lab.client());
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(loopback_frame(host_mac, client_mac, false, 9090));
        frames.push(loopback_frame(host_mac, client_mac, true, 9090));
    }
    send_raw(lab, &frames);
    support::eventually(|| s.verdict("drop_loopback_dst") >= before + frames.len() as u64)
        .expect("every crafted frame is dropped and counted as drop_loopback_dst");
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(
        tcp.peers().len(),
        served_tcp,
        "only the host reached the target"
    );
    assert_eq!(
        udp.peers().len(),
        served_udp,
        "only the host reached the target"
    );
    assert!(
        tcp.peers()
            .iter()
            .chain(udp.peers().iter())
            .all(|p| p.ip() == Lab::BRIDGE_ADDR),
        "tcp {:?} udp {:?}",
        tcp.peers(),
        udp.peers()
    );
    let list = s.list_json();
    for f in &list {
        assert_eq!(
            f["packets_to_target"], 0,
            "never through the packet path: {list:?}"
        );
    }
    assert_no_proxy(lab, &s.d);
}

#[test]
fn sigterm_detaches_the_socket_hooks() {
    require_root!();
    let mut s = scenario("hlterm")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let (_, reply) = host_tcp(&s.lab, at(Ipv4Addr::LOCALHOST, 8080), "before");
    assert!(reply.ends_with("before"), "{reply}");
    let status = s.d.stop(&mut s.lab);
    assert!(status.success(), "{status:?}");
    let err =
        lab::tcp_request(s.lab.host(), at(Ipv4Addr::LOCALHOST, 8080), "after", T).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

/// IPv6: the `connect6`/`sendmsg6`/`recvmsg6`/`getpeername6` hooks, on ::1 and the host's IPv6
/// addresses, TCP and UDP (connected and unconnected).
#[test]
fn host_ipv6_tcp_and_udp_reach_the_container_through_the_socket_hooks() {
    require_root!();
    let s = scenario("hl6")
        .containers(1)
        .tcp_server6("c1", 3000)
        .udp_server6("c1", 53)
        .forward("[::]:8080", "[c1]:3000")
        .forward("[::]:5353/udp", "[c1]:53")
        .daemon();
    let lab = &s.lab;
    let srv = s.servers.tcp("c1:3000");

    for addr in [Ipv6Addr::LOCALHOST, Lab::HOST_ADDR6, Lab::BRIDGE_ADDR6] {
        let to = at(addr, 8080);
        let (peer, reply) = host_tcp(lab, to, "tcp6");
        assert_eq!(peer, to, "getpeername must return the address connected to");
        assert!(
            reply.starts_with("c1:3000 from ") && reply.ends_with("tcp6"),
            "{to}: {reply}"
        );

        let to = at(addr, 5353);
        let reply = lab::udp_request(lab.host(), to, "unconnected6", T)
            .unwrap_or_else(|e| panic!("{to}: {e:#}"));
        assert!(reply.ends_with("unconnected6"), "{reply}");
        let (peer, from, reply) = host_udp_connected(lab, to, "connected6");
        assert_eq!(peer, to, "getpeername");
        assert_eq!(from, to, "the reply's source");
        assert!(reply.ends_with("connected6"), "{reply}");
    }
    // The container saw the host's own IPv6 address on the bridge: no proxy in between.
    assert!(
        srv.peers().iter().all(|p| p.ip() == Lab::BRIDGE_ADDR6),
        "{:?}",
        srv.peers()
    );
    assert_no_proxy(lab, &s.d);

    let st = s.status_json();
    assert!(sock_verdict(&st, "connect_translated") >= 6, "{st}");
    assert!(sock_verdict(&st, "getpeername_restored") >= 6, "{st}");
    assert!(sock_verdict(&st, "sendmsg_translated") >= 3, "{st}");
    assert!(sock_verdict(&st, "recvmsg_restored") >= 6, "{st}");
    assert_eq!(verdict(&st, "forwarded"), 0, "{st}");
}

/// A dual-stack IPv6 socket talking IPv4 (an IPv4-mapped address, `::ffff:127.0.0.1`, as Java or
/// Node use by default) reaches an IPv4 forward, and sees the mapped address it used.
#[test]
fn a_dual_stack_socket_reaches_an_ipv4_forward_through_a_mapped_address() {
    require_root!();
    let s = scenario("hlmap")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();

    for v4 in [Ipv4Addr::LOCALHOST, Lab::HOST_ADDR] {
        let to = at(v4.to_ipv6_mapped(), 8080);
        let (peer, reply) = host_tcp(&s.lab, to, "mapped");
        assert_eq!(
            peer, to,
            "getpeername must return the mapped address connected to"
        );
        assert!(
            reply.starts_with("c1:3000 from ") && reply.ends_with("mapped"),
            "{to}: {reply}"
        );
    }
    let st = s.status_json();
    assert!(sock_verdict(&st, "connect_translated") >= 2, "{st}");
    assert!(sock_verdict(&st, "getpeername_restored") >= 2, "{st}");
}

/// `[::1]:PORT` is published on loopback only: the host reaches it, the client and the
/// containers do not (on the host's addresses, nor on their own loopback).
#[test]
fn an_ipv6_loopback_only_forward_is_reachable_from_the_host_only() {
    require_root!();
    let s = scenario("hllo6")
        .containers(1)
        .tcp_server6("c1", 3000)
        .forward("[::1]:9090", "[c1]:3000")
        .daemon();
    let (lab, c1, tcp) = (&s.lab, s.c("c1"), s.servers.tcp("c1:3000"));

    let (peer, reply) = host_tcp(lab, at(Ipv6Addr::LOCALHOST, 9090), "host6");
    assert_eq!(peer, at(Ipv6Addr::LOCALHOST, 9090));
    assert!(reply.ends_with("host6"), "{reply}");
    let served = tcp.peers().len();

    assert!(lab::tcp_request(lab.host(), at(Lab::HOST_ADDR6, 9090), "x", SHORT).is_err());
    assert!(lab::tcp_request(lab.client(), at(Lab::HOST_ADDR6, 9090), "x", SHORT).is_err());
    assert!(lab::tcp_request(lab.client(), at(Ipv6Addr::LOCALHOST, 9090), "x", SHORT).is_err());
    for addr in [Lab::HOST_ADDR6, Lab::BRIDGE_ADDR6, Ipv6Addr::LOCALHOST] {
        assert!(
            lab::tcp_request(&c1.ns, at(addr, 9090), "x", SHORT).is_err(),
            "c1 reached [{addr}]:9090"
        );
    }
    assert_eq!(
        tcp.peers().len(),
        served,
        "only the host's request was served"
    );
    let st = s.status_json();
    assert!(sock_verdict(&st, "connect_translated") >= 1, "{st}");
}

/// Issue #19: the socket hooks' links are pinned, so host-local access survives `kill -9` of the
/// daemon. A host-local client loop runs while the daemon is killed and restarted five times: no
/// request fails, a connect made while no daemon runs reaches the container, every restart takes
/// the pinned links over (one program per hook on the root cgroup, never two), and after a clean
/// stop and `--cleanup` nothing stays pinned or attached.
#[test]
fn host_local_access_survives_five_kill_9_and_restart_cycles() {
    require_root!();
    const CYCLES: usize = 5;
    const PER_CYCLE: usize = 40;
    let mut s = scenario("hlkill")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let to = at(Ipv4Addr::LOCALHOST, 8080);
    let first = our_hooks_on_the_root_cgroup(&s.d.pin_dir);
    assert_hooks_attached_once(&first);

    let host = s.lab.host().clone();
    let (sent, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let failures = Mutex::new(Vec::new());
    let mut adoption = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.load(Ordering::Relaxed);
                let line = format!("request {n}");
                if let Err(e) = request(&host, to, &line) {
                    failures.lock().unwrap().push(e);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        for cycle in 0..CYCLES {
            let start = sent.load(Ordering::Relaxed);
            s.d.kill9();
            // No daemon runs: the pinned links keep the hooks attached.
            let line = format!("while dead {cycle}");
            if let Err(e) = request(&host, to, &line) {
                failures.lock().unwrap().push(e);
            }
            std::thread::sleep(Duration::from_millis(300));
            let started = SystemTime::now();
            s.d.restart();
            adoption.push(hooks_taken_over_after(&s.d.log_text(), started));
            // Requests after the restart too, and at least PER_CYCLE in the cycle.
            let end = (sent.load(Ordering::Relaxed) + 10).max(start + PER_CYCLE);
            while sent.load(Ordering::Relaxed) < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "host-local requests: {} and {CYCLES} while dead, failed: {}; daemon start to hooks \
         taken over: {adoption:?}",
        sent.into_inner(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(adoption.iter().all(Option::is_some), "{}", s.d.log_text());

    // Taken over, not attached again: still one program per hook, and the restarted daemon's
    // (swapped into the links: none of the first daemon's programs is left).
    let after = our_hooks_on_the_root_cgroup(&s.d.pin_dir);
    assert_hooks_attached_once(&after);
    assert!(
        after.iter().all(|hook| !first.contains(hook)),
        "{first:?} -> {after:?}"
    );

    // A pin that is not the link its name says (here connect4's and connect6's, swapped) is
    // not taken over: it is removed and the hook attached afresh, once.
    s.d.kill9();
    let sock = s.d.pin_dir.join("sock");
    let (v4, v6) = (sock.join("portfwd_connect4"), sock.join("portfwd_connect6"));
    std::fs::rename(&v4, sock.join("swap")).unwrap();
    std::fs::rename(&v6, &v4).unwrap();
    std::fs::rename(sock.join("swap"), &v6).unwrap();
    s.d.restart();
    assert_eq!(
        s.d.log_text()
            .matches("not taking over the pinned socket hook")
            .count(),
        2,
        "{}",
        s.d.log_text()
    );
    let swapped = our_hooks_on_the_root_cgroup(&s.d.pin_dir);
    assert_hooks_attached_once(&swapped);
    request(&host, to, "after the swap").unwrap();

    // A clean stop detaches them; `--cleanup` leaves nothing pinned.
    assert!(s.d.stop(&mut s.lab).success());
    let err = lab::tcp_request(&host, to, "after stop", T).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    let out = s.d.cleanup();
    assert!(out.status.success(), "{out:?}");
    // (The pin directory is a bpffs of the test's own; the kernel's `*.debug` files stay.)
    let left: Vec<_> = ["links", "sock", "maps"]
        .iter()
        .flat_map(|sub| walk(&s.d.pin_dir.join(sub)))
        .collect();
    assert!(left.is_empty(), "still pinned after --cleanup: {left:?}");
    let ids: BTreeSet<u32> = [first, after, swapped]
        .iter()
        .flatten()
        .map(|(id, _)| *id)
        .collect();
    let attached: Vec<_> = root_cgroup_programs()
        .into_iter()
        .filter(|(id, _)| ids.contains(id))
        .collect();
    assert!(attached.is_empty(), "still attached: {attached:?}");
}

/// One request from `ns` to `to`, within [`SHORT`], answered with `line`.
fn request(ns: &lab::Ns, to: SocketAddr, line: &str) -> Result<(), String> {
    match lab::tcp_request(ns, to, line, SHORT) {
        Ok(reply) if reply.ends_with(line) => Ok(()),
        Ok(reply) => Err(format!("{line}: wrong reply {reply}")),
        Err(e) => Err(format!("{line}: {e:#}")),
    }
}

/// Exactly one program per socket hook, each attached at its own hook.
fn assert_hooks_attached_once(hooks: &[(u32, String)]) {
    let mut types: Vec<&str> = hooks.iter().map(|(_, t)| t.as_str()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "cgroup_inet4_connect",
            "cgroup_inet4_getpeername",
            "cgroup_inet6_connect",
            "cgroup_inet6_getpeername",
            "cgroup_udp4_recvmsg",
            "cgroup_udp4_sendmsg",
            "cgroup_udp6_recvmsg",
            "cgroup_udp6_sendmsg",
        ],
        "{hooks:?}"
    );
}

/// `bpftool -j ARGS`, parsed.
fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool {args:?}: {out:?}");
    // `cgroup show` of a cgroup with nothing attached prints nothing at all.
    if out.stdout.trim_ascii().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The programs attached to the root of the cgroup v2 hierarchy, as (program id, attach type).
fn root_cgroup_programs() -> Vec<(u32, String)> {
    let root = portfwd::datapath::cgroup::cgroup2_root().unwrap();
    let shown = bpftool(&["cgroup", "show", root.to_str().unwrap()]);
    shown
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let id = p["id"].as_u64().unwrap() as u32;
            (id, p["attach_type"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The programs attached to the root cgroup that belong to the daemon whose pin directory is
/// `pin_dir` (they use its pinned namespace-cookie map; other tests' daemons run concurrently).
fn our_hooks_on_the_root_cgroup(pin_dir: &Path) -> Vec<(u32, String)> {
    let netns_map = pin_dir.join("maps").join(SOCK_NETNS);
    let map = bpftool(&["map", "show", "pinned", netns_map.to_str().unwrap()]);
    let map_id = map["id"].clone();
    let ours: BTreeSet<u32> = bpftool(&["prog", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["map_ids"].as_array().is_some_and(|m| m.contains(&map_id)))
        .map(|p| p["id"].as_u64().unwrap() as u32)
        .collect();
    root_cgroup_programs()
        .into_iter()
        .filter(|(id, _)| ours.contains(id))
        .collect()
}

/// How long after `started` the daemon's log says it took the socket hooks over (from the
/// log line's UTC timestamp, `2026-12-03T10:41:08.123456Z`).
fn hooks_taken_over_after(log: &str, started: SystemTime) -> Option<Duration> {
    let since_midnight = |t: SystemTime| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        d.as_secs_f64() % 86_400.0
    };
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("socket hooks taken over"))?;
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.trim_end_matches('Z');
    let mut hms = time.split(':').map(|f| f.parse::<f64>());
    let (h, m, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let at = h * 3600.0 + m * 60.0 + s;
    let after = at - since_midnight(started);
    (after >= 0.0).then(|| Duration::from_secs_f64(after))
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path()),
            _ => vec![e.path()],
        })
        .collect()
}
