//! A real dockerd (Debian's docker.io 20.10) in the lab's host namespace: the reference that the
//! Docker follower (#15) is measured against, and the source of the API fixtures it is tested
//! with. None of these runs portfwd.
//!
//! - Docker's own path: `docker run -p 8080:3000` is reachable from the lab's client through
//!   Docker's iptables DNAT (its packet counter moves), with the timings printed;
//! - Docker 28's raw PREROUTING rule (a container's address is dropped when it arrives on any
//!   interface but the bridge), added here by hand to docker.io 20.10: direct routing to the
//!   container stops, the published port still works (the DNAT comes later, in nat PREROUTING);
//! - the fixtures in `tests/fixtures/docker/`: regenerated from this dockerd when
//!   `PORTFWD_DOCKER_FIXTURES=1`, otherwise checked to parse and to hold what the follower reads.
//!
//! Needs root and docker.io + busybox-static (`cargo xtask setup`); under `CI=true` a test that
//! cannot run fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portfwd_lab::{self as lab, Docker, Lab};
use serde_json::Value;

use crate::support::{SHORT, at, host_port};

/// Set to `1` to regenerate the fixtures from a real dockerd.
const REGENERATE: &str = "PORTFWD_DOCKER_FIXTURES";

/// How many times a container is run to time run-to-reachable.
const RUNS: usize = 3;

/// True when dockerd and the test image's busybox are installed; under `CI=true` their absence
/// fails the test.
pub(crate) fn have_docker() -> bool {
    let missing: Vec<&str> = ["/usr/sbin/dockerd", "/usr/bin/docker", "/usr/bin/busybox"]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing: install docker.io and busybox-static (`cargo xtask setup`)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true this test must run, not skip");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A lab and a dockerd in its host namespace (dropped in the reverse order: dockerd first).
pub(crate) fn lab_with_docker(tag: &str) -> (Lab, Docker) {
    let lab = Lab::new(tag).unwrap();
    let docker = Docker::start(&lab).unwrap();
    (lab, docker)
}

/// The answer to an HTTP GET from the client to `to`.
pub(crate) fn http_get(lab: &Lab, to: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    lab::http_get(lab.client(), to, timeout)
}

/// Waits (up to 10 s) until `to` answers the client's GET with the test page; how long that
/// took.
pub(crate) fn wait_reachable(lab: &Lab, to: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        match http_get(lab, to, Duration::from_millis(500)) {
            Ok(answer) if answer.starts_with("HTTP/1.") && answer.ends_with(Docker::PAGE) => {
                return started.elapsed();
            }
            other => assert!(
                started.elapsed() < Duration::from_secs(10),
                "{to} not reachable from the client within 10 s: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The packets counted by the rule of `table`/`chain` in the host namespace whose text (as
/// `iptables -L -v -n -x` prints it) contains every one of `needles`.
pub(crate) fn rule_packets(lab: &Lab, table: &str, chain: &str, needles: &[&str]) -> u64 {
    let listing = lab
        .sh(
            lab.host(),
            &format!("iptables -w -t {table} -L {chain} -v -n -x"),
        )
        .unwrap();
    let line = listing
        .lines()
        .find(|line| needles.iter().all(|needle| line.contains(needle)))
        .unwrap_or_else(|| panic!("no {table}/{chain} rule with {needles:?} in:\n{listing}"));
    line.split_whitespace()
        .next()
        .and_then(|packets| packets.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line:?}"))
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn dockerd_publishes_through_its_own_dnat() {
    require_root!();
    if !have_docker() {
        return;
    }
    let started = Instant::now();
    let (lab, mut docker) = lab_with_docker("dkdnat");
    eprintln!(
        "dockerd: lab + dockerd ready in {:?} (dockerd spawn to API ready {:?})",
        started.elapsed(),
        docker.ready_in()
    );
    let imported = Instant::now();
    docker.import_test_image().unwrap();
    eprintln!("dockerd: image imported in {:?}", imported.elapsed());

    let mut runs = Vec::new();
    for run in 0..RUNS {
        let name = format!("web{run}");
        let started = Instant::now();
        docker.run(&name, &["-p", "8080:3000"]).unwrap();
        let took = wait_reachable(&lab, host_port(8080));
        runs.push(started.elapsed());
        eprintln!(
            "dockerd: run {run}: `docker run` to reachable {:?} (after the run returned {took:?})",
            started.elapsed()
        );
        let dnat = rule_packets(
            &lab,
            "nat",
            "DOCKER",
            &["DNAT", "dpt:8080", &format!("to:{}", "172.18.0.2:3000")],
        );
        assert!(
            dnat > 0,
            "Docker's DNAT rule counted no packet: who answered?"
        );
        // Through Docker's bridge, not the lab's.
        assert_eq!(
            docker.container_addr(&name).unwrap(),
            Ipv4Addr::new(172, 18, 0, 2)
        );
        docker.rm(&name).unwrap();
    }
    eprintln!(
        "dockerd: run to reachable through Docker's DNAT, median of {RUNS}: {:?} ({runs:?})",
        median(runs.clone())
    );
    let took = docker.shutdown().unwrap();
    eprintln!("dockerd: teardown (containers, dockerd, mounts, dirs) {took:?}");
    drop(lab);
}

#[test]
fn docker28_raw_prerouting_drop_is_in_effect() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (lab, mut docker) = lab_with_docker("dkraw");
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let addr = docker.container_addr("web").unwrap();
    let direct = at(addr, Docker::SERVER_PORT);
    wait_reachable(&lab, host_port(8080));
    // Before: the client's default route goes through the host, which routes to the bridge.
    wait_reachable(&lab, direct);

    // Docker 28 (after CVE-2025-54388): raw PREROUTING drops packets for a container's address
    // unless they come in on its bridge.
    lab.sh(
        lab.host(),
        &format!(
            "iptables -w -t raw -A PREROUTING -d {addr}/32 ! -i {} -j DROP",
            Docker::BRIDGE
        ),
    )
    .unwrap();
    let blocked = http_get(&lab, direct, SHORT);
    assert!(
        blocked.is_err(),
        "{direct} still answers the client directly: {blocked:?}"
    );
    let dropped = rule_packets(&lab, "raw", "PREROUTING", &["DROP", &format!("{addr} ")]);
    assert!(dropped > 0, "the raw drop rule counted no packet");

    // The published port still works: raw sees the host's address, the DNAT comes after it.
    let before = rule_packets(&lab, "nat", "DOCKER", &["DNAT", "dpt:8080"]);
    wait_reachable(&lab, host_port(8080));
    let after = rule_packets(&lab, "nat", "DOCKER", &["DNAT", "dpt:8080"]);
    assert!(
        after > before,
        "the published port answered without Docker's DNAT"
    );
    assert_eq!(
        rule_packets(&lab, "raw", "PREROUTING", &["DROP", &format!("{addr} ")]),
        dropped,
        "the DNATed connection was dropped in raw PREROUTING"
    );
    docker.shutdown().unwrap();
}

/// `portfwd/tests/fixtures/docker/`.
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker")
}

/// A container whose inspect answer is a fixture, and the binding the follower must find in it.
struct Inspected {
    /// The container's name and the file's stem (`inspect-STEM.json`).
    stem: &'static str,
    /// Its `docker run` options.
    options: &'static [&'static str],
    /// The key of `NetworkSettings.Ports`.
    port: &'static str,
    /// The binding's `HostIp`.
    host_ip: &'static str,
    /// The binding's `HostPort`; `None`: any port (`-P`).
    host_port: Option<&'static str>,
}

const fn inspected(
    stem: &'static str,
    options: &'static [&'static str],
    port: &'static str,
    host_ip: &'static str,
    host_port: Option<&'static str>,
) -> Inspected {
    Inspected {
        stem,
        options,
        port,
        host_ip,
        host_port,
    }
}

/// The containers whose inspect answers are fixtures.
const INSPECTED: &[Inspected] = &[
    inspected(
        "publish",
        &["-p", "8080:3000"],
        "3000/tcp",
        "0.0.0.0",
        Some("8080"),
    ),
    inspected(
        "publish-all",
        &["-P", "--expose", "3000"],
        "3000/tcp",
        "0.0.0.0",
        None,
    ),
    inspected(
        "loopback",
        &["-p", "127.0.0.1:8081:3000"],
        "3000/tcp",
        "127.0.0.1",
        Some("8081"),
    ),
    inspected(
        "udp",
        &["-p", "5353:5353/udp"],
        "5353/udp",
        "0.0.0.0",
        Some("5353"),
    ),
    inspected(
        "range",
        &["-p", "9000-9002:9000-9002"],
        "9001/tcp",
        "0.0.0.0",
        Some("9001"),
    ),
];

/// The container actions the follower reacts to, in Docker's order.
const LIFECYCLE: &[&str] = &["create", "start", "kill", "die", "stop", "destroy"];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `GET path`, which must answer 200; the body as sent.
fn api_ok(docker: &Docker, path: &str) -> String {
    let r = docker.api(path).unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// Captures the fixtures from a real dockerd.
fn regenerate(dir: &Path) {
    let (lab, mut docker) = lab_with_docker("dkfix");
    let write = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    write("version.json", &api_ok(&docker, "/version"));
    docker.import_test_image().unwrap();
    let mut ids = Vec::new();
    for c in INSPECTED {
        ids.push(docker.run(c.stem, c.options).unwrap());
    }
    write("containers.json", &api_ok(&docker, "/containers/json"));
    for (c, id) in INSPECTED.iter().zip(&ids) {
        write(
            &format!("inspect-{}.json", c.stem),
            &api_ok(&docker, &format!("/containers/{id}/json")),
        );
    }
    // One container's whole life, as the follower's event stream sees it.
    let since = unix_now();
    let id = docker.run("lifecycle", &["-p", "8090:3000"]).unwrap();
    docker.stop("lifecycle").unwrap();
    docker.rm("lifecycle").unwrap();
    let gone = docker.api(&format!("/containers/{id}/json")).unwrap();
    write(
        "inspect-destroyed.json",
        &format!(
            "{{\"status\":{},\"body\":{}}}\n",
            gone.status,
            gone.body.trim()
        ),
    );
    let events = docker.container_events(since, unix_now() + 1).unwrap();
    let lines: Vec<&String> = events.iter().filter(|line| line.contains(&id)).collect();
    write(
        "events.jsonl",
        &lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    );
    docker.shutdown().unwrap();
    drop(lab);
}

fn read_json(dir: &Path, name: &str) -> Value {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with {REGENERATE}=1)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// The bridge address of a container as `NetworkSettings.Networks.*.IPAddress` gives it.
fn network_addrs(settings: &Value) -> Vec<Ipv4Addr> {
    settings["Networks"]
        .as_object()
        .expect("NetworkSettings.Networks is an object")
        .values()
        .map(|network| {
            let addr = network["IPAddress"]
                .as_str()
                .expect("IPAddress is a string");
            addr.parse()
                .unwrap_or_else(|_| panic!("IPAddress {addr:?}"))
        })
        .collect()
}

fn check_fixtures(dir: &Path) {
    let version = read_json(dir, "version.json");
    assert_eq!(
        version["ApiVersion"], "1.41",
        "Debian's dockerd speaks 1.41"
    );

    let mut inspected_ids = Vec::new();
    for &Inspected {
        stem,
        port,
        host_ip,
        host_port,
        ..
    } in INSPECTED
    {
        let name = format!("inspect-{stem}.json");
        let c = read_json(dir, &name);
        let id = c["Id"].as_str().expect("Id");
        assert_eq!(id.len(), 64, "{name}: Id {id}");
        assert_eq!(c["Name"], format!("/{stem}"), "{name}: Name");
        assert_eq!(c["State"]["Status"], "running", "{name}: State.Status");
        assert_eq!(c["State"]["Running"], true, "{name}: State.Running");
        let settings = &c["NetworkSettings"];
        let addrs = network_addrs(settings);
        assert_eq!(addrs.len(), 1, "{name}: one network");
        assert!(
            addrs.iter().all(|a| a.octets()[..2] == [172, 18]),
            "{name}: {addrs:?} not on Docker's bridge"
        );
        let bindings = settings["Ports"][port]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no binding for {port}: {}", settings["Ports"]));
        let matching = bindings
            .iter()
            .find(|b| b["HostIp"] == host_ip)
            .unwrap_or_else(|| panic!("{name}: no {host_ip} binding for {port}: {bindings:?}"));
        let published = matching["HostPort"].as_str().expect("HostPort is a string");
        match host_port {
            Some(expected) => assert_eq!(published, expected, "{name}: {port}"),
            None => assert!(
                published.parse::<u16>().is_ok(),
                "{name}: -P gave {published:?}"
            ),
        }
        inspected_ids.push(id.to_owned());
    }
    // A wildcard binding is listed twice: IPv4 ("0.0.0.0") and IPv6 ("::"), same port.
    let publish = read_json(dir, "inspect-publish.json");
    let ips: Vec<&Value> = publish["NetworkSettings"]["Ports"]["3000/tcp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["HostIp"])
        .collect();
    assert_eq!(ips, ["0.0.0.0", "::"]);
    // The request keeps "" for the wildcard.
    assert_eq!(
        publish["HostConfig"]["PortBindings"]["3000/tcp"][0]["HostIp"],
        ""
    );
    let range = read_json(dir, "inspect-range.json");
    for port in 9000..=9002 {
        assert!(
            range["NetworkSettings"]["Ports"][format!("{port}/tcp")].is_array(),
            "range: {port}/tcp"
        );
    }

    // The list: State is a string there, ports a flat array of numbers.
    let list = read_json(dir, "containers.json");
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), INSPECTED.len());
    for c in list {
        let id = c["Id"].as_str().expect("Id");
        assert!(
            inspected_ids.iter().any(|i| i == id),
            "{id} listed, not inspected"
        );
        assert!(c["Names"][0].as_str().is_some_and(|n| n.starts_with('/')));
        assert_eq!(c["State"], "running");
        assert_eq!(network_addrs(&c["NetworkSettings"]).len(), 1);
        assert!(c["Ports"].as_array().is_some_and(|p| !p.is_empty()));
    }

    let gone = read_json(dir, "inspect-destroyed.json");
    assert_eq!(gone["status"], 404, "inspect after destroy");

    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let actions: Vec<String> = events
        .lines()
        .map(|line| {
            let e: Value = serde_json::from_str(line).expect("an event is JSON");
            assert_eq!(e["Type"], "container");
            assert_eq!(e["Actor"]["ID"].as_str().map(str::len), Some(64));
            assert_eq!(e["Actor"]["Attributes"]["name"], "lifecycle");
            e["Action"].as_str().expect("Action").to_owned()
        })
        .collect();
    // `stop -t 0` sends SIGTERM, then SIGKILL: two `kill` events in a row.
    let mut lifecycle: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| LIFECYCLE.contains(a))
        .collect();
    lifecycle.dedup();
    assert_eq!(lifecycle, LIFECYCLE, "events: {actions:?}");
}

#[test]
fn api_fixtures_hold_what_the_follower_reads() {
    let dir = fixtures_dir();
    if std::env::var(REGENERATE).is_ok_and(|v| v == "1") {
        require_root!();
        assert!(have_docker(), "{REGENERATE}=1 needs docker.io");
        regenerate(&dir);
    }
    check_fixtures(&dir);
}
