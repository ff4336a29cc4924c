//! Existing flows follow forward changes (issue #19, item 6; netavark#1045, CNI plugins#123,
//! moby#8795):
//! - a host process whose UDP socket was connected to a published address before the forward
//!   existed reaches the container once it is added (the daemon destroys the socket, the
//!   application opens a new one, which the socket hooks translate);
//! - a steady UDP stream from a client moves to the new target when the forward's target
//!   changes, where netfilter's conntrack keeps it on the old one (the reference run);
//! - an established TCP connection stays on its target across a target change, as with
//!   netfilter.
//!
//! Each case prints the switch-over time it measured.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::support::{Scenario, at, forward_yaml, host_port, host6};
use portfwd_lab::{self as lab, Lab, Ns};

/// How often the senders send.
const STEP: Duration = Duration::from_millis(10);
/// How long after a change the old target may still answer what was already on its way.
const SETTLE: Duration = Duration::from_millis(300);
/// The most a switch-over may take.
const BOUND: Duration = Duration::from_secs(2);

/// The answers a sender got: when (since the sender started), and which server answered (the
/// tag before " from ").
#[derive(Default)]
struct Log(Mutex<Vec<(Instant, String)>>);

impl Log {
    fn push(&self, tag: String) {
        self.0.lock().unwrap().push((Instant::now(), tag));
    }

    /// The first answer from `tag` at or after `since`.
    fn first_from(&self, tag: &str, since: Instant) -> Option<Instant> {
        let log = self.0.lock().unwrap();
        log.iter()
            .find(|(at, t)| *at >= since && t == tag)
            .map(|(at, _)| *at)
    }

    /// How many answers came from `tag` at or after `since`.
    fn count_from(&self, tag: &str, since: Instant) -> usize {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(at, t)| *at >= since && t == tag)
            .count()
    }
}

/// A sender running on its own thread until stopped.
struct Sender {
    stop: Arc<AtomicBool>,
    log: Arc<Log>,
    /// How many sockets it opened.
    thread: Option<JoinHandle<usize>>,
}

impl Sender {
    /// Stops the sender; returns how many sockets it opened.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The tag of a line-echo server's answer (`"c1:53 from ...: text"` -> `"c1:53"`).
fn tag_of(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    text.split(" from ").next().unwrap_or_default().to_owned()
}

/// A UDP socket in `ns`, bound to `bind`, connected to `to`, with a read timeout of one step.
fn connected(ns: &Ns, bind: SocketAddr, to: SocketAddr) -> std::io::Result<UdpSocket> {
    ns.run(move || {
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(STEP))?;
        s.connect(to)?;
        Ok(s)
    })
}

/// A client that keeps one connected socket to `to` (from `bind`) and sends a datagram every
/// step. What it does on errors is what long-lived UDP clients (syslog, statsd, DNS forwarders)
/// do: an unanswered datagram (`ECONNREFUSED`, a timeout) is ignored and the socket kept; any
/// other error (a destroyed socket reports `ECONNABORTED`) makes it open a new socket.
fn sender(ns: &Ns, bind: SocketAddr, to: SocketAddr) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Log::default());
    let mut socket = Some(connected(ns, bind, to).unwrap());
    let ns = ns.clone();
    let (stop2, log2) = (stop.clone(), log.clone());
    let thread = std::thread::spawn(move || {
        let mut opened = 1;
        let mut buf = [0u8; 512];
        let mut n: u64 = 0;
        while !stop2.load(Ordering::SeqCst) {
            n += 1;
            let Some(s) = &socket else {
                match connected(&ns, bind, to) {
                    Ok(s) => {
                        socket = Some(s);
                        opened += 1;
                    }
                    Err(_) => std::thread::sleep(STEP),
                }
                continue;
            };
            let result = s
                .send(format!("{n}\n").as_bytes())
                .and_then(|_| s.recv(&mut buf));
            match result {
                Ok(len) => {
                    log2.push(tag_of(&buf[..len]));
                    std::thread::sleep(STEP);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) =>
                {
                    std::thread::sleep(STEP)
                }
                // Closed first: the new socket may need its source port.
                Err(_) => socket = None,
            }
        }
        opened
    });
    Sender {
        stop,
        log,
        thread: Some(thread),
    }
}

/// Waits up to [`BOUND`] for an answer from `tag` after `since`; the delay.
fn switch_over(log: &Log, tag: &str, since: Instant) -> Option<Duration> {
    let deadline = since + BOUND;
    loop {
        if let Some(at) = log.first_from(tag, since) {
            return Some(at - since);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(STEP);
    }
}

/// Waits for each sender's first answer from `tag` after `since`, up to [`BOUND`] each.
fn switch_overs(senders: &[&Sender], tag: &str, since: Instant) -> Vec<Option<Duration>> {
    senders
        .iter()
        .map(|snd| switch_over(&snd.log, tag, since))
        .collect()
}

/// The addresses of one family a case uses.
#[derive(Clone, Copy, Debug)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    /// Any address, any port: what a sender binds to.
    fn any(self) -> SocketAddr {
        match self {
            Fam::V4 => at(Ipv4Addr::UNSPECIFIED, 0),
            Fam::V6 => at(Ipv6Addr::UNSPECIFIED, 0),
        }
    }

    fn loopback(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => at(Ipv4Addr::LOCALHOST, port),
            Fam::V6 => at(Ipv6Addr::LOCALHOST, port),
        }
    }

    /// The host's address on the client's network.
    fn host(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => host_port(port),
            Fam::V6 => host6(port),
        }
    }

    fn client(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => at(Lab::CLIENT_ADDR, port),
            Fam::V6 => at(Lab::CLIENT_ADDR6, port),
        }
    }

    /// Container `c`'s address and `port`, as a forward's target.
    fn target(self, s: &Scenario, c: &str, port: u16) -> String {
        let c = s.c(c);
        match self {
            Fam::V4 => at(c.addr, port).to_string(),
            Fam::V6 => at(c.addr6, port).to_string(),
        }
    }

    /// How many flows the pinned flow tables of this family (new and established) hold from
    /// container `c`'s address, read from the maps themselves (`status` counts inserts).
    fn flows_from(self, s: &Scenario, c: &str) -> usize {
        use aya::maps::{HashMap, Map, MapData};
        use portfwd_common::maps::{
            FLOWS, FLOWS_EST, FLOWS6, FLOWS6_EST, FlowKeyOf, FlowValueOf, Ipv6Words, ipv6_words,
        };
        let maps = s.d.pin_dir.join("maps");
        let open = |name: &str| Map::from_map_data(MapData::from_pin(maps.join(name)).unwrap());
        let c = s.c(c);
        let mut n = 0;
        match self {
            Fam::V4 => {
                let addr = u32::from_ne_bytes(c.addr.octets());
                for name in [FLOWS, FLOWS_EST] {
                    let t: HashMap<_, FlowKeyOf<u32>, FlowValueOf<u32>> =
                        HashMap::try_from(open(name).unwrap()).unwrap();
                    n += t
                        .keys()
                        .filter(|k| k.as_ref().unwrap().saddr_be == addr)
                        .count();
                }
            }
            Fam::V6 => {
                let addr = ipv6_words(c.addr6.octets());
                for name in [FLOWS6, FLOWS6_EST] {
                    let t: HashMap<_, FlowKeyOf<Ipv6Words>, FlowValueOf<Ipv6Words>> =
                        HashMap::try_from(open(name).unwrap()).unwrap();
                    n += t
                        .keys()
                        .filter(|k| k.as_ref().unwrap().saddr_be == addr)
                        .count();
                }
            }
        }
        n
    }

    /// Two containers, each with a UDP server on port 53 of this family, and `forwards`.
    fn scenario(self, tag: &str, forwards: &[(&str, &str)]) -> Scenario {
        let mut setup = Scenario::new(tag).containers(2);
        for c in ["c1", "c2"] {
            setup = match self {
                Fam::V4 => setup.udp_server(c, 53),
                Fam::V6 => setup.udp_server6(c, 53),
            };
        }
        for (listen, c) in forwards {
            let to = match self {
                Fam::V4 => format!("{c}:53"),
                Fam::V6 => format!("[{c}]:53"),
            };
            setup = setup.forward(listen, &to);
        }
        setup.daemon()
    }
}

/// Points the forward of 5353/udp to `c`:53 by a reload of the config (the real path for a
/// changed target: one map update); returns when the reload was asked for.
fn retarget(s: &Scenario, fam: Fam, c: &str) -> Instant {
    let to = fam.target(s, c, 53);
    std::fs::write(
        &s.d.config,
        format!("forwards:\n{}", forward_yaml("5353/udp", &to)),
    )
    .unwrap();
    let changed = Instant::now();
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    changed
}

/// Host sockets connected to the loopback and the host address (for IPv4 also from a
/// dual-stack IPv6 socket, through `::ffff:127.0.0.1`) before the forward exists reach c1 once
/// it is added, c2 once its target changes, and nothing once it is removed.
fn host_sockets_follow(fam: Fam, tag: &str) {
    let s = fam.scenario(tag, &[]);
    let host = s.lab.host();
    // Connected before the forward exists: nothing listens there, the datagrams are refused.
    let mut ends = vec![(fam.any(), fam.loopback(5353)), (fam.any(), fam.host(5353))];
    if let Fam::V4 = fam {
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        ends.push((Fam::V6.any(), at(mapped, 5353)));
    }
    let owned: Vec<Sender> = ends.iter().map(|(b, to)| sender(host, *b, *to)).collect();
    let senders: Vec<&Sender> = owned.iter().collect();
    std::thread::sleep(SETTLE);
    let never = Instant::now() - Duration::from_secs(60);
    for snd in &senders {
        assert_eq!(snd.log.count_from("c1:53", never), 0);
    }

    let added = Instant::now();
    let out = s.cli(&["add", "5353/udp", &fam.target(&s, "c1", 53)]);
    assert!(out.status.success(), "{out:?}");
    let took = switch_overs(&senders, "c1:53", added);
    println!("{fam:?} host-local switch-over after `portfwd add` {ends:?}: {took:?}");
    assert!(
        took.iter().all(Option::is_some),
        "all reach c1 within {BOUND:?} of the add: {took:?}\n{}",
        s.d.log_text()
    );

    // The sockets are now translated to c1; the target changes to c2.
    let changed = retarget(&s, fam, "c2");
    let took = switch_overs(&senders, "c2:53", changed);
    println!("{fam:?} host-local switch-over after a target change {ends:?}: {took:?}");
    std::thread::sleep(SETTLE * 2);
    assert!(
        took.iter().all(Option::is_some),
        "all reach c2 within {BOUND:?} of the change: {took:?}\n{}",
        s.d.log_text()
    );
    for snd in &senders {
        assert_eq!(
            snd.log.count_from("c1:53", changed + SETTLE),
            0,
            "c1 answers nothing more"
        );
    }

    // Removed: the sockets translated to c2 are destroyed too, and reach nothing any more.
    let removed = Instant::now();
    let out = s.cli(&["del", "5353/udp"]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(SETTLE * 2);
    for snd in &senders {
        assert_eq!(
            snd.log.count_from("c2:53", removed + SETTLE),
            0,
            "c2 answers nothing more"
        );
    }
    let log = s.d.log_text();
    drop(senders);
    let opened: Vec<usize> = owned.into_iter().map(Sender::finish).collect();
    assert_eq!(
        opened,
        vec![4; ends.len()],
        "each socket was destroyed once per change\n{log}"
    );
    assert_eq!(
        log.matches("destroyed UDP sockets").count(),
        3,
        "the daemon says what it destroyed, once per change\n{log}"
    );
    assert!(log.contains(&format!("sockets={}", ends.len())), "{log}");
}

#[test]
fn host_sockets_connected_the_old_way_follow_an_add_a_target_change_and_a_removal() {
    require_root!();
    host_sockets_follow(Fam::V4, "udphost");
}

#[test]
fn host_ipv6_sockets_connected_the_old_way_follow_an_add_a_target_change_and_a_removal() {
    require_root!();
    host_sockets_follow(Fam::V6, "udphost6");
}

#[test]
fn a_host_socket_connected_while_no_daemon_ran_reaches_the_container_once_it_starts() {
    require_root!();
    let mut s = Fam::V4.scenario("udpstart", &[("5353/udp", "c1")]);
    // SIGTERM detaches the socket hooks: a socket connected now is not translated.
    let stopped = s.d.stop(&mut s.lab);
    assert!(stopped.success(), "{stopped:?}\n{}", s.d.log_text());
    let snd = sender(s.lab.host(), Fam::V4.any(), Fam::V4.loopback(5353));
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    s.d.restart();
    // The daemon answers once the config is applied and the sockets were destroyed.
    let ready = Instant::now();
    let took = switch_over(&snd.log, "c1:53", ready);
    let first = snd.log.first_from("c1:53", started).map(|t| t - started);
    println!(
        "host-local: daemon ready {:?} after its start, first answer from c1 {first:?} after it",
        ready - started
    );
    let log = s.d.log_text();
    assert!(took.is_some(), "it reaches c1 within {BOUND:?}\n{log}");
    assert_eq!(snd.finish(), 2, "its socket was destroyed once\n{log}");
}

/// The iptables rules Docker writes to publish `port`/udp to `to` (nat table only: the lab's
/// FORWARD policy accepts).
fn docker_dnat(port: u16, to: SocketAddr) -> String {
    format!(
        "iptables -t nat -N DOCKER 2>/dev/null; \
         iptables -t nat -C PREROUTING -m addrtype --dst-type LOCAL -j DOCKER 2>/dev/null || \
         iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER; \
         iptables -t nat -F DOCKER && \
         iptables -t nat -A DOCKER ! -i {} -p udp -m udp --dport {port} -j DNAT --to-destination {to}",
        Lab::BRIDGE
    )
}

/// The client's steady stream to the published port 5353: one socket, a fixed source port.
fn client_stream(lab: &Lab, fam: Fam) -> Sender {
    sender(lab.client(), fam.client(40053), fam.host(5353))
}

/// What a stream did around a change made at `changed`.
struct Moved {
    /// When the first answer from the new target came, after the change.
    took: Option<Duration>,
    /// Answers from the old target after the change had settled.
    old_after: usize,
}

fn moved(log: &Log, old: &str, new: &str, changed: Instant) -> Moved {
    let took = switch_over(log, new, changed);
    // The stream runs on for a while after the switch, so that late answers of the old target
    // would be seen.
    std::thread::sleep(SETTLE * 2);
    Moved {
        took,
        old_after: log.count_from(old, changed + SETTLE),
    }
}

#[test]
fn a_steady_udp_stream_moves_when_the_target_changes_where_netfilter_keeps_it() {
    require_root!();
    // The reference: iptables DNAT as Docker writes it, no portfwd. The conntrack entry keeps
    // the stream on c1 for as long as it flows (moby#8795).
    let mut nf = Lab::new("udpnf").unwrap();
    let (c1, c2) = (
        nf.add_container("c1").unwrap(),
        nf.add_container("c2").unwrap(),
    );
    let servers = [&c1, &c2]
        .map(|c| lab::udp_server(&c.ns, at(c.addr, 53), &format!("{}:53", c.name)).unwrap());
    nf.sh(nf.host(), &docker_dnat(5353, at(c1.addr, 53)))
        .unwrap();
    let stream = client_stream(&nf, Fam::V4);
    assert!(switch_over(&stream.log, "c1:53", Instant::now() - STEP).is_some());
    let changed = Instant::now();
    nf.sh(nf.host(), &docker_dnat(5353, at(c2.addr, 53)))
        .unwrap();
    let netfilter = moved(&stream.log, "c1:53", "c2:53", changed);
    stream.finish();
    println!(
        "netfilter: switch-over {:?}, answers from the old target after the change: {}",
        netfilter.took, netfilter.old_after
    );
    assert!(
        netfilter.took.is_none() && netfilter.old_after > 0,
        "the reference: with netfilter the stream stays on c1"
    );
    drop(servers);
    drop(nf);

    stream_follows(Fam::V4, "udpmove");
}

#[test]
fn a_steady_ipv6_udp_stream_moves_when_the_target_changes() {
    require_root!();
    stream_follows(Fam::V6, "udpmove6");
}

/// A steady stream from the client moves from c1 to c2 when the target changes; the flow of
/// c1 is dropped.
fn stream_follows(fam: Fam, tag: &str) {
    let s = fam.scenario(tag, &[("5353/udp", "c1")]);
    let stream = client_stream(&s.lab, fam);
    assert!(switch_over(&stream.log, "c1:53", Instant::now() - STEP).is_some());
    let changed = retarget(&s, fam, "c2");
    let portfwd = moved(&stream.log, "c1:53", "c2:53", changed);
    // The old target's flow was dropped: the tables hold the stream's flows to c2 only.
    let (from_c1, from_c2) = (fam.flows_from(&s, "c1"), fam.flows_from(&s, "c2"));
    let c1_seen = s.servers.udp("c1:53").peers().len();
    std::thread::sleep(SETTLE);
    let c1_later = s.servers.udp("c1:53").peers().len();
    stream.finish();
    println!(
        "{fam:?} portfwd: switch-over {:?}, answers from the old target after the change: {}",
        portfwd.took, portfwd.old_after
    );
    let log = s.d.log_text();
    assert!(
        portfwd.took.is_some(),
        "the stream reaches c2 within {BOUND:?}\n{log}"
    );
    assert_eq!(portfwd.old_after, 0, "c1 answers nothing after the change");
    assert_eq!(c1_seen, c1_later, "c1 receives nothing after the change");
    assert_eq!(from_c1, 0, "the flow of c1 is gone\n{log}");
    assert!(from_c2 >= 1, "the stream's flow to c2 is there\n{log}");
    assert!(
        log.contains("flows=1"),
        "the daemon counts what it dropped\n{log}"
    );
}
