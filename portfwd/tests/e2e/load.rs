//! Under load and under attack (issue #19, item 9): new connections while both cores are busy,
//! and an idle established connection through a flood of new flows larger than the flow table.
//!
//! Both generate their load inside the lab only: CPU burners bounded in time (and killed at the
//! end), and a flood sent from the client's namespace with a raw socket, bounded in count and
//! time.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Child, Command},
    time::{Duration, Instant},
};

use portfwd_common::maps::MAX_FLOWS;
use portfwd_lab::{self as lab, Lab};

use crate::support::{Scenario, T, host_port};

/// Busy loops, one per core, each ending by itself after `secs` at the latest; stopped on drop.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize, secs: u32) -> Burners {
        let spin = |_| {
            Command::new("timeout")
                .args([&secs.to_string(), "sh", "-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        };
        Burners((0..n).map(spin).collect())
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM, which `timeout` passes on to its busy loop before it exits.
            // SAFETY: kill(2) on a child we spawned and have not yet waited for.
            let _ = unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// 1,000 sequential new TCP connections through a published port while both cores are busy with
/// other work: none may fail. (Once, on a busy machine, 7 of 200 did.)
#[test]
fn sequential_connections_while_cores_are_busy() {
    require_root!();
    let s = Scenario::new("busy")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners = Burners::start(cores, 180);
    let started = Instant::now();
    let mut failures = Vec::new();
    for i in 0..1_000 {
        if let Err(e) = s.client_tcp(host_port(8080), &format!("hello {i}")) {
            failures.push(format!("connection {i}: {e:#}"));
        }
    }
    let elapsed = started.elapsed();
    drop(burners);
    eprintln!(
        "1000 sequential connections with {cores} cores busy: {} failed, {elapsed:?}",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// How many unique sources the flood comes from, at least: more than the flow table for new
/// flows holds, so that each CPU's share of it is overrun, whatever CPU made the connection's
/// flow.
const FLOOD_FLOWS: u32 = MAX_FLOWS + 60_000;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(12);

/// An idle established TCP connection survives a 12 s flood of unique-source UDP to a published
/// port, more flows than the flow table holds, each datagram answered once by a UDP server:
/// afterwards the server speaks first, which needs the flow's reply translation, and the client
/// answers. The flood fills the table of new flows and is evicted from it; the established
/// connection's flow is in the other table.
#[test]
fn idle_connection_survives_a_flood_of_new_flows() {
    require_root!();
    let s = Scenario::new("flood")
        .containers(1)
        .forward("8080", "c1:3000")
        .udp_server("c1", 5353)
        .forward("5353/udp", "c1:5353")
        .daemon();
    idle_connection_through_a_flood(&s, FLOOD_FLOWS);
    let status = s.status_json();
    eprintln!("flow tables after the flood: {}", status["flow_tables"]);
    let tables = status["flow_tables"].as_array().unwrap();
    let table = |name: &str| tables.iter().find(|t| t["name"] == name).unwrap();
    let new = table("PF_FLOWS");
    assert!(
        new["evicted"].as_u64().unwrap() > 0,
        "the flood overran the table of new flows: {new}"
    );
    let est = table("PF_FLOWS_EST");
    assert!(
        est["entries"].as_u64().unwrap() >= 1 && est["evicted"] == 0,
        "the connection's flow is established, and nothing evicted it: {est}"
    );
}

/// The reference: the same case with iptables DNAT as Docker sets it (and the daemon publishing
/// nothing), the flood larger than the conntrack table (`nf_conntrack_max`). Conntrack keeps
/// the connection: when full, it drops entries that are not "assured" first.
#[test]
fn idle_connection_survives_a_flood_of_new_flows_with_iptables_dnat() {
    require_root!();
    let s = Scenario::new("floodnf")
        .containers(1)
        .udp_server("c1", 5353)
        .daemon();
    let c1 = s.c("c1").addr;
    let rules = s
        .lab
        .exec(
            s.lab.host(),
            &[
                "sh",
                "-c",
                &format!(
                "iptables -t nat -N DOCKER && \
                 iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER && \
                 iptables -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination {c1}:3000 && \
                 iptables -t nat -A DOCKER ! -i docker0 -p udp -m udp --dport 5353 -j DNAT --to-destination {c1}:5353 && \
                 iptables -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
                ),
            ],
        )
        .unwrap();
    assert!(rules.status.success(), "{rules:?}");
    let conntrack_max: u32 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    idle_connection_through_a_flood(&s, FLOOD_FLOWS.max(conntrack_max + 20_000));
    let count: u32 = s.lab.host().run(|| {
        let text = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count");
        text.unwrap().trim().parse().unwrap()
    });
    eprintln!("conntrack entries after the flood: {count} of {conntrack_max}");
    assert!(
        count + 100 >= conntrack_max,
        "the flood filled the conntrack table: {count} of {conntrack_max}"
    );
}

/// An idle TCP connection from the client to the host's 8080 (c1:3000), then a flood of
/// `flows` datagrams to the host's 5353/udp from unique sources; then the server speaks first,
/// and the client answers.
fn idle_connection_through_a_flood(s: &Scenario, flows: u32) {
    let c1 = s.c("c1");
    let listener = c1
        .ns
        .run(move || TcpListener::bind((c1.addr, 3000)))
        .unwrap();
    let mut client = lab::tcp_session(s.lab.client(), host_port(8080), T).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(T)).unwrap();
    client.send("before").unwrap();
    assert_eq!(read_line(&mut server), "before");
    server.write_all(b"hello\n").unwrap();
    assert_eq!(client.recv().unwrap(), "hello");

    let sent = flood(&s.lab, 5353, flows);
    eprintln!("flood: {sent} datagrams from unique sources in {FLOOD:?}");
    assert!(sent >= u64::from(flows), "the flood was cut short");

    // The server speaks first: its segment must be translated back to the published address.
    server.write_all(b"after the flood\n").unwrap();
    assert_eq!(
        client.recv().unwrap(),
        "after the flood",
        "the server's segment"
    );
    client.send("still here").unwrap();
    assert_eq!(read_line(&mut server), "still here");
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while stream.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Sends `flows` UDP datagrams to the host's `port` from the client's namespace, each from a
/// source address and port of its own, paced over [`FLOOD`] and split between two
/// threads, each pinned to one core (the flow tables keep an LRU list per CPU). Returns how many
/// were sent.
fn flood(lab: &Lab, port: u16, flows: u32) -> u64 {
    let threads = 2u32;
    let per_thread = flows.div_ceil(threads);
    let sockets: Vec<OwnedFd> = (0..threads).map(|_| raw_socket(lab)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let senders: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(t, fd)| {
                scope.spawn(move || {
                    pin_to_core(t % cores);
                    let first = t as u32 * per_thread;
                    send_paced(fd, first..first + per_thread, port)
                })
            })
            .collect();
        senders.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// An `IPPROTO_RAW` socket (headers included) created in the client's namespace.
fn raw_socket(lab: &Lab) -> OwnedFd {
    lab.client().run(|| {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor, owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity(0, ..) act on
    // this thread only and read nothing but the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Sends one datagram per index in `flows`, evenly over [`FLOOD`]: index `i` comes from
/// 10.78.0.0 + i / 50,000, port 1024 + i % 50,000.
fn send_paced(fd: &OwnedFd, flows: std::ops::Range<u32>, port: u16) -> u64 {
    const BURST: u32 = 500;
    let total = flows.len() as u32;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut packet = [0u8; 28 + 8];
    for i in flows {
        let src = u32::from(Ipv4Addr::new(10, 78, 0, 0)) + i / 50_000;
        let sport = 1024 + (i % 50_000) as u16;
        udp_packet(&mut packet, src, sport, port);
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(Lab::HOST_ADDR).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto(2) reads `packet.len()` bytes of `packet` and one sockaddr_in, both
        // alive for the call.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&dst).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if rc > 0 {
            sent += 1;
        }
        if sent.is_multiple_of(u64::from(BURST)) {
            let due = FLOOD.mul_f64(sent as f64 / f64::from(total));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if started.elapsed() > FLOOD + Duration::from_secs(10) {
            break;
        }
    }
    sent
}

/// An IPv4 + UDP datagram from `src:sport` to the host's `dport`, 8 bytes of payload. The kernel
/// fills in the IP checksum; UDP's 0 means none.
fn udp_packet(p: &mut [u8; 36], src: u32, sport: u16, dport: u16) {
    p[0] = 0x45;
    p[2..4].copy_from_slice(&36u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.to_be_bytes());
    p[16..20].copy_from_slice(&Lab::HOST_ADDR.octets());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&16u16.to_be_bytes());
    p[28..36].copy_from_slice(b"flooding");
}
