//! Measurements of the Docker follower (#15, "Measure"), printed for the record with bounds
//! generous enough never to fail on a slow machine (timing asserts are not proofs):
//!
//! - from `docker run` (and from the container's `start` event, stamped by dockerd) to the
//!   first packet forwarded to the container, and from its `die` event (and from `docker
//!   stop`) to the withdrawal of its forward: median and worst of 50 runs;
//! - the follower's idle cost: the daemon's context switches over 10 s, Docker followed or not.
//!
//! The first forwarded packet is seen by its answer: the client sends a UDP datagram to
//! `HOST:5353` every millisecond, the container (with no UDP server) answers the first one
//! forwarded with an ICMP port unreachable, which a packet socket in the host namespace sees
//! (see [`sniff`]). dockerd runs with `--iptables=false --userland-proxy=false` so that only portfwd can send it
//! there (with its iptables on, Docker's own DNAT would forward the probes as soon as the
//! container starts). The daemon's log stamps publication and withdrawal; dockerd's events
//! stamp `start` and `die` (`timeNano`): all on the same clock, CLOCK_REALTIME.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portfwd_lab::{Docker, Lab, Ns};
use serde_json::Value;

use crate::docker::have_docker;
use crate::docker_follow::{Followed, wait_for};
use crate::support::{Daemon, host_port};

/// How many containers are run and stopped.
const RUNS: usize = 50;
/// The whole series must be done within this.
const SERIES_LIMIT: Duration = Duration::from_secs(150);
/// dockerd's events are read after this many runs (7 events each, 256 kept).
const EVENTS_EVERY: usize = 10;
/// The UDP port the measured containers publish.
const PORT: u16 = 5353;
/// How long the daemon's idle cost is measured, each way.
const IDLE: Duration = Duration::from_secs(10);

/// When a container answered a probe (see the module docs), and which container.
type Seen = Arc<Mutex<Vec<(SystemTime, Ipv4Addr)>>>;

/// Records every ICMP port unreachable that an address on Docker's bridge sends the client about
/// a datagram to port [`PORT`], on any interface of `ns`, until `stop`. portfwd hands forwarded
/// packets straight to the container's side of its veth (`bpf_redirect_peer`): no packet socket
/// in the host sees them on their way in. The container's answer is seen, as it enters the host
/// side of the veth, before any tc program: the test image has no UDP server, so its kernel
/// answers the first forwarded datagram at once (the ICMP rate limit lets the first through).
fn sniff(ns: &Ns, stop: Arc<AtomicBool>, seen: Seen) -> std::thread::JoinHandle<()> {
    let fd = ns.run(|| {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                // Every protocol: only such a socket is a tap, which sees packets before tc
                // (one for ETH_P_IP sees those the stack gets after tc, not those redirected).
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        fd
    });
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: `timeout` is a live timeval of the size given, as SO_RCVTIMEO expects.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let at = SystemTime::now();
            if let Some(from) = port_unreachable_from_container(&buf[..n]) {
                seen.lock().unwrap().push((at, from));
            }
        }
        // SAFETY: the descriptor is ours and not used after this.
        unsafe { libc::close(fd) };
    })
}

/// The sender of `p` (an IPv4 packet) when it is an ICMP port unreachable from an address on
/// Docker's bridge to the client about a UDP datagram to port [`PORT`].
fn port_unreachable_from_container(p: &[u8]) -> Option<Ipv4Addr> {
    let ihl = usize::from(p.first()? & 0xf) * 4;
    if p[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(*p.get(12)?, *p.get(13)?, *p.get(14)?, *p.get(15)?);
    let dst = Ipv4Addr::new(*p.get(16)?, *p.get(17)?, *p.get(18)?, *p.get(19)?);
    let bridge = Docker::BRIDGE_ADDR.octets();
    if ihl < 20 || p[9] != 1 || src.octets()[..2] != bridge[..2] || dst != Lab::CLIENT_ADDR {
        return None;
    }
    // Destination unreachable, port unreachable; then the datagram's IP and UDP headers.
    let icmp = p.get(ihl..)?;
    let inner = icmp.get(8..)?;
    let inner_ihl = usize::from(inner.first()? & 0xf) * 4;
    let udp = inner.get(inner_ihl..inner_ihl + 4)?;
    (icmp[..2] == [3, 3] && inner.get(9) == Some(&17) && udp[2..4] == PORT.to_be_bytes())
        .then_some(src)
}

/// Sends a datagram from the client to `HOST:PORT` every millisecond until `stop`.
fn probe(ns: &Ns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let socket = ns.run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            // Refused (ICMP port unreachable, before the forward exists) is expected.
            let _ = socket.send_to(b"probe\n", host_port(PORT));
            sent += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    })
}

/// `2026-12-03T15:52:00.123456Z` (the daemon's log) as a time.
fn log_time(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(line.split_whitespace().next()?.trim_end_matches('Z')).ok()
}

/// When the daemon logged `what` (`published`, `withdrawn`) for container `name`'s forward.
fn logged(log: &str, what: &str, name: &str) -> Option<SystemTime> {
    let origin = format!("origin=docker:{name}");
    log.lines()
        .find(|l| l.contains(&format!(" {what} ")) && l.split_whitespace().any(|w| w == origin))
        .and_then(log_time)
}

/// Unix seconds now.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// dockerd's `start` and `die` times of each container, by name, since `since` (Unix
/// seconds), added to `out`. dockerd keeps its last 256 events only: ask every few runs.
fn event_times(docker: &Docker, since: u64, out: &mut BTreeMap<(String, String), SystemTime>) {
    let until = unix_secs() + 1;
    for line in docker.container_events(since, until).unwrap() {
        let e: Value = serde_json::from_str(&line).unwrap();
        let (Some(action), Some(name), Some(nanos)) = (
            e["Action"].as_str(),
            e["Actor"]["Attributes"]["name"].as_str(),
            e["timeNano"].as_u64(),
        ) else {
            continue;
        };
        if action == "start" || action == "die" {
            out.entry((name.to_owned(), action.to_owned()))
                .or_insert(UNIX_EPOCH + Duration::from_nanos(nanos));
        }
    }
}

/// `b - a`, which must not be negative by more than a clock read's jitter.
fn since(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

/// Median and worst, printed.
fn report(what: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    assert!(!samples.is_empty(), "{what}: no samples");
    samples.sort();
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];
    let p90 = samples[samples.len() * 9 / 10];
    eprintln!(
        "measure: {what}: median {median:.1?}, p90 {p90:.1?}, worst {worst:.1?} ({} runs)",
        samples.len()
    );
    (median, worst)
}

#[test]
fn run_to_first_forwarded_packet_and_stop_to_withdrawal_median_and_worst_of_50() {
    require_root!();
    if !have_docker() {
        return;
    }
    let f = Followed::start(
        "dkmeas",
        &["--iptables=false", "--userland-proxy=false"],
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let sniffer = sniff(f.lab.host(), stop.clone(), seen.clone());
    let prober = probe(f.lab.client(), stop.clone());
    let mut events = BTreeMap::new();
    let mut since_secs = unix_secs();

    let series = Instant::now();
    // Per run: `docker run` called, the first forwarded packet, `docker stop` called.
    let mut runs: Vec<(String, SystemTime, SystemTime, SystemTime)> = Vec::new();
    for i in 0..RUNS {
        assert!(
            series.elapsed() < SERIES_LIMIT,
            "only {i} runs in {SERIES_LIMIT:?}"
        );
        let name = format!("m{i}");
        let port = format!("{PORT}:{PORT}/udp");
        let run = SystemTime::now();
        f.docker
            .cli(&["run", "-d", "--name", &name, "-p", &port, Docker::IMAGE])
            .unwrap();
        let ip = f.addr(&name);
        let mut first = None;
        wait_for(Duration::from_secs(10), || {
            first = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(t, dst)| *t >= run && *dst == ip)
                .map(|(t, _)| *t);
            first.is_some()
        })
        .unwrap_or_else(|e| {
            panic!(
                "run {i}: no packet forwarded to {ip} ({} seen in all): {e}\n{:?}\n{}",
                seen.lock().unwrap().len(),
                f.of(&name),
                f.d.log_text()
            )
        });
        let stopped = SystemTime::now();
        f.docker.stop(&name).unwrap();
        wait_for(Duration::from_secs(10), || {
            logged(&f.d.log_text(), "withdrawn", &name).is_some()
        })
        .unwrap_or_else(|e| panic!("run {i}: not withdrawn: {e}\n{}", f.d.log_text()));
        f.docker.rm(&name).unwrap();
        runs.push((name, run, first.unwrap(), stopped));
        if (i + 1) % EVENTS_EVERY == 0 || i + 1 == RUNS {
            let now = unix_secs();
            event_times(&f.docker, since_secs, &mut events);
            since_secs = now;
        }
    }
    let took = series.elapsed();
    stop.store(true, Ordering::SeqCst);
    sniffer.join().unwrap();
    let probes = prober.join().unwrap();

    let log = f.d.log_text();
    let event = |name: &str, action: &str| {
        *events
            .get(&(name.to_owned(), action.to_owned()))
            .unwrap_or_else(|| panic!("no {action} event of {name}"))
    };
    let at = |what: &str, name: &str| {
        logged(&log, what, name).unwrap_or_else(|| panic!("{name} never {what}:\n{log}"))
    };
    let mut run_to_first = Vec::new();
    let mut start_to_first = Vec::new();
    let mut start_to_published = Vec::new();
    let mut die_to_withdrawn = Vec::new();
    let mut stop_to_withdrawn = Vec::new();
    for (name, run, first, stopped) in &runs {
        let (start, die) = (event(name, "start"), event(name, "die"));
        let (published, withdrawn) = (at("published", name), at("withdrawn", name));
        run_to_first.push(since(*run, *first));
        start_to_first.push(since(start, *first));
        start_to_published.push(since(start, published));
        die_to_withdrawn.push(since(die, withdrawn));
        stop_to_withdrawn.push(since(*stopped, withdrawn));
    }
    eprintln!(
        "measure: {RUNS} runs of docker run + stop + rm in {took:.1?}, {probes} probe datagrams"
    );
    report("docker run -> first forwarded packet", run_to_first);
    let (start_median, _) = report("start event -> first forwarded packet", start_to_first);
    report("start event -> published (daemon log)", start_to_published);
    let (die_median, _) = report("die event -> withdrawn (daemon log)", die_to_withdrawn);
    report("docker stop -> withdrawn (daemon log)", stop_to_withdrawn);
    assert!(start_median < Duration::from_secs(1), "{start_median:?}");
    assert!(die_median < Duration::from_secs(1), "{die_median:?}");
}

/// Context switches (voluntary + involuntary) of each thread of `pid` so far, by thread id and
/// name.
fn context_switches(pid: u32) -> BTreeMap<(u32, String), u64> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert((tid, name), switches);
    }
    out
}

/// The daemon's context switches over [`IDLE`] from now: in all, and by thread (`name/tid: n`,
/// those with any).
fn idle_switches(pid: u32) -> (u64, String) {
    let before = context_switches(pid);
    std::thread::sleep(IDLE);
    let after = context_switches(pid);
    let mut total = 0;
    let mut by_thread = Vec::new();
    for ((tid, name), n) in &after {
        let n = n - before.get(&(*tid, name.clone())).copied().unwrap_or(0);
        total += n;
        if n > 0 {
            by_thread.push(format!("{name}/{tid}: {n}"));
        }
    }
    (total, by_thread.join(", "))
}

/// Idle, the follower waits on dockerd's event stream only: following Docker adds no wakeups
/// to the daemon's. The same daemon is measured without a `docker:` section, then with one
/// (added by a reload), a container's port published.
///
/// The daemon also wakes for other reasons, each costing some 50 switches: its resync every
/// 30 s from its start, and every netlink link event, of which the kernel sends one 15 s after
/// a port joined a bridge (the container's veth on dk0). Both windows avoid them: the first
/// from 1 to 11 s after the daemon started, the second from 16 s after the container started
/// until before the daemon's first resync at 30 s.
#[test]
fn the_followers_idle_cost_is_no_wakeups() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut lab = Lab::new("dkidle").unwrap();
    let mut docker = Docker::start(&lab).unwrap();
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let container_started = Instant::now();
    let d = Daemon::start(&mut lab, "forwards: []\n");
    let daemon_started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let (alone, alone_threads) = idle_switches(d.pid());

    let config = format!(
        "docker:\n  socket: {}\nforwards: []\n",
        docker.socket().display()
    );
    std::fs::write(&d.config, config).unwrap();
    let reload = d.cli(&lab, &["reload"]);
    assert!(reload.status.success(), "{reload:?}");
    wait_for(Duration::from_secs(5), || {
        d.status_json(&lab)["docker"]["forwards"] == 1
    })
    .unwrap_or_else(|e| panic!("Docker's forward not published: {e}\n{}", d.log_text()));
    std::thread::sleep(Duration::from_secs(16).saturating_sub(container_started.elapsed()));
    let (followed, followed_threads) = idle_switches(d.pid());
    assert!(
        daemon_started.elapsed() < Duration::from_secs(30),
        "the second window reached the daemon's resync: measure again"
    );
    eprintln!(
        "measure: idle daemon, context switches in {IDLE:?}: {alone} not following Docker \
         ({alone_threads}), {followed} following it ({followed_threads})"
    );
    // A poll every second would add at least 10.
    assert!(
        followed < alone + 10,
        "following Docker costs {followed} switches in {IDLE:?} against {alone}\n{}",
        d.log_text()
    );
    drop(d);
    docker.shutdown().unwrap();
}
