//! A reload is atomic for the datapath (issue #19, item 7): under steady traffic, 1,000 reloads
//! alternating between two configs over the same published ports never send a packet to a
//! target that neither config maps it to, never lose a packet that both configs forward, and
//! never translate a packet by the old config after one was translated by the new config.
//!
//! Config A and B publish the same UDP ports with other targets: a single port, a range whose
//! targets move, a range that B splits in two (another listen shape: removed and added), and
//! two ports whose allowlist admits the client in one config only. The client sends datagrams
//! at a steady rate, each from a new source port (a new flow: every packet is looked up) and
//! carrying its sequence number; each container captures every UDP datagram it receives (a
//! packet socket, so that a datagram to a port nobody listens on is seen too).
//!
//! The sender runs on one CPU, so the host's tc program sees the datagrams in the order they
//! were sent. An atomic switch then makes the configs the packets were translated by a
//! non-decreasing sequence of reloads; a packet that no such sequence explains (given when it
//! was sent, when it was captured, and when each reload's file was written and its request
//! answered) was translated by a mix.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::net::UnixStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use portfwd_lab::{Container, Lab, Ns};

use crate::support::{Scenario, forward_yaml};

/// Reloads to run, alternating B, A, B, ...
const RELOADS: usize = 1_000;
/// The whole run is bounded: the reloads must be done within this.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// One datagram every this long (4,000 a second).
const SEND_INTERVAL: Duration = Duration::from_micros(250);

/// The published ports the client sends to, in turn.
const PORTS: [u16; 11] = [
    8080, 8081, 8082, 20000, 20037, 20064, 20099, 21000, 21031, 21032, 21063,
];

/// Which config, and where it sends the client's datagrams to a listen port: `(container
/// index, port)`, or `None` when it drops them (allowlist).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    A,
    B,
}

impl Config {
    /// The config in force after `reloads` reloads.
    fn after(reloads: usize) -> Config {
        if reloads.is_multiple_of(2) {
            Config::A
        } else {
            Config::B
        }
    }

    fn target(self, port: u16) -> Option<(usize, u16)> {
        match (self, port) {
            (Config::A, 8080) => Some((0, 5000)),
            (Config::B, 8080) => Some((1, 5000)),
            (Config::A, 8081) => Some((0, 5001)),
            (Config::B, 8081) => None,
            (Config::A, 8082) => None,
            (Config::B, 8082) => Some((1, 5002)),
            (Config::A, 20000..=20099) => Some((0, port + 10_000)),
            (Config::B, 20000..=20099) => Some((1, port + 11_000)),
            (Config::A, 21000..=21063) => Some((0, port + 11_000)),
            (Config::B, 21000..=21031) => Some((1, port + 12_000)),
            (Config::B, 21032..=21063) => Some((1, port + 13_000)),
            _ => None,
        }
    }

    /// The config's file: `top` (settings), then its forwards.
    fn yaml(self, top: &str, c: &[Container], client: Ipv4Addr) -> String {
        let to = |i: usize, ports: &str| format!("{}:{ports}", c[i].addr);
        let allow = |listen: &str, target: String, net: &str| {
            format!("{}    allow: [\"{net}\"]\n", forward_yaml(listen, &target))
        };
        let client = format!("{client}/32");
        // TEST-NET-1: never the client.
        let other = "192.0.2.0/24";
        let forwards = match self {
            Config::A => [
                forward_yaml("8080/udp", &to(0, "5000")),
                allow("8081/udp", to(0, "5001"), &client),
                allow("8082/udp", to(0, "5002"), other),
                forward_yaml("20000-20099/udp", &to(0, "30000-30099")),
                forward_yaml("21000-21063/udp", &to(0, "32000-32063")),
                String::new(),
            ],
            Config::B => [
                forward_yaml("8080/udp", &to(1, "5000")),
                allow("8081/udp", to(1, "5001"), other),
                allow("8082/udp", to(1, "5002"), &client),
                forward_yaml("20000-20099/udp", &to(1, "31000-31099")),
                forward_yaml("21000-21031/udp", &to(1, "33000-33031")),
                forward_yaml("21032-21063/udp", &to(1, "34032-34063")),
            ],
        };
        format!("{top}forwards:\n{}", forwards.concat())
    }
}

/// A datagram captured in a container: its sequence number, destination port, and when it was
/// read (after it arrived, so after it was translated).
type Captured = (u64, u16, Instant);

/// Every UDP datagram from the client arriving in a container, captured until `stop`.
fn capture(ns: &Ns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Captured>> {
    let fd = ns.run(|| {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from((libc::ETH_P_IP as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        fd
    });
    let set = |opt: libc::c_int, value: &[u8]| {
        // SAFETY: `value` is a live buffer of the length given, as the option expects.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
    };
    set(libc::SO_RCVBUFFORCE, &(16i32 << 20).to_ne_bytes());
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: timeval is plain data; viewed as its bytes for the call.
    set(libc::SO_RCVTIMEO, unsafe {
        std::slice::from_raw_parts(
            (&raw const timeout).cast::<u8>(),
            size_of::<libc::timeval>(),
        )
    });
    let client = Lab::CLIENT_ADDR.octets();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let p = &buf[..n];
            // IPv4, UDP, from the client, carrying a sequence number.
            let ihl = usize::from(p.first().map_or(0, |b| b & 0xf)) * 4;
            if n < ihl + 16 || ihl < 20 || p[9] != 17 || p[12..16] != client {
                continue;
            }
            let dport = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
            let seq = u64::from_le_bytes(p[ihl + 8..ihl + 16].try_into().unwrap());
            got.push((seq, dport, Instant::now()));
        }
        // SAFETY: the descriptor is ours and not used after this.
        unsafe { libc::close(fd) };
        got
    })
}

/// When a datagram was handed to the kernel: just before and just after its send call.
type Sent = Vec<(Instant, Instant)>;

/// Sends to [`PORTS`] in turn, one datagram per [`SEND_INTERVAL`], each from a new source port,
/// until `stop`; pinned to one CPU.
fn send(ns: &Ns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Sent> {
    let ns = ns.clone();
    std::thread::spawn(move || {
        ns.run(|| {
            // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes within it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            }
            let mut sent = Sent::new();
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let seq = sent.len() as u64;
                let due = start + SEND_INTERVAL * seq as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let port = PORTS[seq as usize % PORTS.len()];
                let sport = 1024 + (seq % 64_000) as u16;
                let socket = UdpSocket::bind(SocketAddr::from((Lab::CLIENT_ADDR, sport)))
                    .expect("binding the client's source port");
                let before = Instant::now();
                socket
                    .send_to(&seq.to_le_bytes(), (Lab::HOST_ADDR, port))
                    .expect("sending");
                sent.push((before, Instant::now()));
            }
            sent
        })
    })
}

/// One reload through the control socket (what `portfwd reload` sends).
fn reload(socket: &std::path::Path) -> String {
    let mut s = UnixStream::connect(socket).expect("connecting to the control socket");
    s.write_all(b"{\"op\":\"reload\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

/// What the run showed.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    /// Per config, datagrams that arrived where it sends them.
    by: [usize; 2],
    /// Arrived where neither config sends them.
    stray: usize,
    /// Forwarded by both configs, arrived nowhere.
    lost: usize,
    /// Translated by a config no in-order sequence of atomic switches explains.
    mixed: usize,
    /// The listen ports of the stray, lost and mixed ones, with how many each.
    ports: BTreeMap<u16, [usize; 3]>,
}

#[test]
fn reloads_under_traffic_never_mix_two_configs() {
    require_root!();
    let s = Scenario::new("reload")
        .containers(2)
        .expose_containers_in_xdp()
        .daemon();
    let containers = s.lab.containers().to_vec();
    // The settings the daemon started with (the mode's, under PORTFWD_E2E_MODE), kept.
    let top = s.config.replace("forwards: []\n", "");
    let configs = [Config::A, Config::B].map(|c| c.yaml(&top, &containers, Lab::CLIENT_ADDR));
    std::fs::write(&s.d.config, &configs[0]).unwrap();
    let answer = reload(&s.d.socket);
    assert!(answer.contains("\"done\""), "config A: {answer}");

    let stop = Arc::new(AtomicBool::new(false));
    let captures: Vec<_> = containers
        .iter()
        .map(|c| capture(&c.ns, stop.clone()))
        .collect();
    let stop_sending = Arc::new(AtomicBool::new(false));
    let sender = send(s.lab.client(), stop_sending.clone());
    std::thread::sleep(Duration::from_millis(300));

    // Each reload: when the file was written, when the request was answered.
    let mut reloads: Vec<(Instant, Instant)> = Vec::new();
    let started = Instant::now();
    for k in 1..=RELOADS {
        if started.elapsed() > RUN_LIMIT {
            break;
        }
        let written = Instant::now();
        // Renamed over the file, so that the daemon's file watcher never reads half of it.
        let next = s.d.config.with_extension("next");
        std::fs::write(&next, &configs[k % 2]).unwrap();
        std::fs::rename(&next, &s.d.config).unwrap();
        let answer = reload(&s.d.socket);
        assert!(answer.contains("\"done\""), "reload {k}: {answer}");
        reloads.push((written, Instant::now()));
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop_sending.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let mut arrived: HashMap<u64, Arrived> = HashMap::new();
    for (i, c) in captures.into_iter().enumerate() {
        for (seq, port, at) in c.join().unwrap() {
            arrived.insert(seq, ((i, port), at));
        }
    }
    let t = tally(&sent, &arrived, &reloads);
    eprintln!(
        "{} reloads in {took:?} ({:?} each), {} datagrams sent; {t:?}",
        reloads.len(),
        took / reloads.len().max(1) as u32,
        t.sent
    );
    assert_eq!(
        reloads.len(),
        RELOADS,
        "the reloads took longer than {RUN_LIMIT:?}"
    );
    assert!(
        t.by[0] > 0 && t.by[1] > 0,
        "both configs' targets got datagrams: {t:?}"
    );
    assert_eq!(
        (t.stray, t.lost, t.mixed),
        (0, 0, 0),
        "(stray, lost, mixed) under {RELOADS} reloads: {t:?}"
    );
}

/// Where a datagram arrived (container index, port) and when it was captured.
type Arrived = ((usize, u16), Instant);

/// Counts what the run showed (see [`Tally`]). A datagram's config is the one whose target it
/// reached. The configs are numbered by reload: `k` reloads in, config [`Config::after`]`(k)`
/// is in force, and reload `k` switches to it between its file being written and its answer.
/// A datagram was translated at a count no lower than the reloads answered before it was sent,
/// and no higher than the reloads whose file was written before it, or any datagram sent after
/// it (translated after it), was captured. Going through the datagrams in the order sent, the
/// count must never decrease: each datagram takes the smallest count its config and those
/// bounds allow, and one that none allows is `mixed`.
fn tally(sent: &Sent, arrived: &HashMap<u64, Arrived>, reloads: &[(Instant, Instant)]) -> Tally {
    let mut t = Tally {
        sent: sent.len(),
        ..Tally::default()
    };
    // The earliest capture of this datagram or any sent after it.
    let mut translated_by = vec![None; sent.len()];
    let mut earliest: Option<Instant> = None;
    for seq in (0..sent.len()).rev() {
        if let Some((_, at)) = arrived.get(&(seq as u64)) {
            earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
        }
        translated_by[seq] = earliest;
    }
    let mut at = 0;
    for (seq, &(before, _)) in sent.iter().enumerate() {
        let port = PORTS[seq % PORTS.len()];
        let (a, b) = (Config::A.target(port), Config::B.target(port));
        let arrival = arrived.get(&(seq as u64));
        let config = match arrival.map(|(got, _)| *got) {
            None if a.is_some() && b.is_some() => {
                t.lost += 1;
                t.ports.entry(port).or_default()[1] += 1;
                continue;
            }
            None => continue,
            Some(got) if Some(got) == a => Config::A,
            Some(got) if Some(got) == b => Config::B,
            Some(_) => {
                t.stray += 1;
                t.ports.entry(port).or_default()[0] += 1;
                continue;
            }
        };
        t.by[config as usize] += 1;
        let translated_by = translated_by[seq].expect("it arrived");
        let done = reloads.partition_point(|r| r.1 < before);
        let possible = reloads.partition_point(|r| r.0 <= translated_by);
        match (at.max(done)..=possible).find(|&k| Config::after(k) == config) {
            Some(k) => at = k,
            None => {
                t.mixed += 1;
                t.ports.entry(port).or_default()[2] += 1;
            }
        }
    }
    t
}

/// A daemon killed after a reload (the second generation active) and started again takes over
/// the pinned generation: the forward both configs share keeps its counters, every forward
/// answers while no daemon runs and after, and the restart switches generation without a
/// packet going to the previous config's target.
#[test]
fn a_restarted_daemon_takes_over_the_pinned_generation() {
    require_root!();
    let mut s = Scenario::new("regen")
        .containers(2)
        .udp_server("c1", 5000)
        .udp_server("c2", 5000)
        .forward("8080/udp", "c1:5000")
        .forward("8082/udp", "c1:5000")
        .expose_containers_in_xdp()
        .daemon();
    let c2 = s.c("c2");
    let ask = |s: &Scenario, port: u16, line: &str| -> String {
        s.client_udp(crate::support::host_port(port), line)
            .unwrap_or_else(|e| panic!("{port} {line}: {e:#}"))
    };
    assert!(ask(&s, 8080, "a").starts_with("c1:5000"));
    // Config B moves 8080 to c2 and keeps 8082 as it is: a generation switch.
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    std::fs::write(
        &s.d.config,
        text.replacen(&s.c("c1").addr.to_string(), &c2.addr.to_string(), 1),
    )
    .unwrap();
    assert!(reload(&s.d.socket).contains("\"done\""));
    assert!(ask(&s, 8080, "b").starts_with("c2:5000"));
    for i in 0..3 {
        assert!(ask(&s, 8082, &format!("kept {i}")).starts_with("c1:5000"));
    }
    let counted = |s: &Scenario| -> u64 {
        let list = s.list_json();
        let kept = list.iter().find(|f| f["listen"] == "8082/udp").unwrap();
        kept["packets_to_target"].as_u64().unwrap()
    };
    let before = counted(&s);
    assert!(before >= 3, "{before}");

    s.d.kill9();
    assert!(ask(&s, 8080, "while dead").starts_with("c2:5000"));
    s.d.restart();
    assert!(ask(&s, 8080, "after").starts_with("c2:5000"));
    assert!(ask(&s, 8082, "after").starts_with("c1:5000"));
    assert!(
        counted(&s) > before,
        "the kept forward's counters carry on: {before} -> {}",
        counted(&s)
    );
    assert!(
        s.d.log_text().contains("kept pinned forward"),
        "{}",
        s.d.log_text()
    );
}
