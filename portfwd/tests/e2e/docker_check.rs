//! `portfwd check` knows Docker (#15): a real dockerd in the lab's host namespace with its
//! default userland-proxy, so docker-proxy listens on the host port that `docker run -p
//! 8080:3000` publishes, and the real daemon serving that port with a forward added by hand to
//! the container's address. `check` must call docker-proxy Docker's reservation (INFO), not a
//! conflict; a plain process on a forward's host port, even one that calls itself docker-proxy,
//! is still a conflict (FAIL). With the follower (`docker:` in the config), Docker's own
//! forwards are named after their container, the bindings left to Docker are noted, and a
//! daemon that lost dockerd warns that Docker is not followed.
//!
//! Needs root and docker.io + busybox-static; under `CI=true` a test that cannot run fails.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use portfwd_lab::{Docker, Lab};
use serde_json::Value;

use super::check::{check_json, check_text as check, finding, forward_report, kinds};
use super::docker::{have_docker, lab_with_docker, median, rule_packets};
use crate::support::{Daemon, Scenario, T, eventually, host_port};

/// How many times `portfwd check` is timed, with and without Docker.
const TIMED_RUNS: usize = 5;

/// The median wall time of [`TIMED_RUNS`] runs of `portfwd check ARGS`.
fn time_check(s: &Scenario, args: &[&str]) -> Duration {
    median(
        (0..TIMED_RUNS)
            .map(|_| {
                let started = Instant::now();
                check(s, args);
                started.elapsed()
            })
            .collect(),
    )
}

/// The `(comm, pid)` of every owner of every socket of a finding.
fn owners(finding: &Value) -> Vec<(String, u32)> {
    finding["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["owners"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["comm"].as_str().unwrap().to_owned(),
                p["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

#[test]
fn docker_proxy_is_dockers_reservation_and_a_plain_process_a_conflict() {
    require_root!();
    if !have_docker() {
        return;
    }
    // A lab container with its own server: the forward checked before and after dockerd runs.
    let mut s = Scenario::new("dkchk")
        .container("app")
        .tcp_server_at("app", "0.0.0.0:3000", "app")
        .forward("8090", "app:3000")
        .daemon();
    let without = time_check(&s, &["8090"]);

    // Declared after the scenario: dropped (torn down) before its lab.
    let mut docker = Docker::start(&s.lab).unwrap();
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let web = docker.container_addr("web").unwrap();
    let host = s.lab.host().clone();
    eventually(|| {
        s.lab
            .sh(&host, "ss -Hltnp 'sport = :8080'")
            .is_ok_and(|o| o.contains("docker-proxy"))
    })
    .expect("docker-proxy listens on the host's port 8080");

    // The forward of Docker's port, by hand (no follower), and two plain processes on the
    // host ports of two more forwards: this test process on 8082, and a python3 that calls
    // itself docker-proxy (its comm) on 8081.
    let add = s.cli(&["add", "8080", &format!("{web}:3000")]);
    assert!(add.status.success(), "{add:?}");
    let _plain = host.run(|| TcpListener::bind("0.0.0.0:8082")).unwrap();
    let fake = s
        .lab
        .spawn(
            &host,
            Command::new("/usr/bin/python3").args([
                "-c",
                "import socket, time\n\
                 open('/proc/self/comm', 'w').write('docker-proxy')\n\
                 s = socket.socket(); s.bind(('0.0.0.0', 8081)); s.listen()\n\
                 time.sleep(600)\n",
            ]),
        )
        .unwrap();
    eventually(|| {
        s.lab
            .sh(&host, "ss -Hltn 'sport = :8081'")
            .is_ok_and(|o| !o.trim().is_empty())
    })
    .expect("the fake docker-proxy listens on 8081");
    for port in ["8081", "8082"] {
        let add = s.cli(&["add", port, &format!("{web}:3000")]);
        assert!(add.status.success(), "{add:?}");
    }

    // Docker's port: docker-proxy is named as Docker's reservation, and the forward is OK.
    let (code, out, err) = check(&s, &["8080"]);
    assert_eq!(code, 0, "docker-proxy is no conflict:\n{out}{err}");
    let proxy = proxy_of(&s.lab, 8080);
    assert!(
        out.contains(&format!(
            "  INFO  host port 8080/tcp is held by docker-proxy (pid {proxy}) on 0.0.0.0:8080: \
             Docker's reservation of the port, not a conflict\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("traffic goes through portfwd's kernel path first")
            && out.contains("so docker-proxy only sees what portfwd does not take"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    // And it is so: the client's request to 8080 passes Docker's DNAT rule by.
    let page = portfwd_lab::http_get(s.lab.client(), host_port(8080), T).unwrap();
    assert!(page.ends_with(Docker::PAGE), "{page}");
    let dnat = rule_packets(&s.lab, "nat", "DOCKER", &["DNAT", "dpt:8080"]);
    assert_eq!(dnat, 0, "Docker's DNAT rule saw the client's request");
    let (code, v) = check_json(&s, &["8080"]);
    assert_eq!(code, 0);
    let f = forward_report(&v, "8080/tcp");
    assert_eq!(f["verdict"], "ok", "{f:#}");
    assert!(!kinds(f).contains(&"host_port_in_use".to_owned()), "{f:#}");
    let held = finding(f, "engine_reservation");
    assert_eq!(held["verdict"], "info");
    assert_eq!(held["engine"], "Docker");
    assert!(
        owners(held).contains(&("docker-proxy".to_owned(), proxy)),
        "{held:#}"
    );

    // The plain processes are conflicts: the fake docker-proxy (python3's executable) too.
    let (code, out, _) = check(&s, &["8081"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "  FAIL  host port 8081/tcp is also bound by docker-proxy (pid {fake}) on 0.0.0.0:8081"
        )),
        "{out}"
    );
    assert!(!out.contains("INFO  host port 8081/tcp"), "{out}");
    let (code, v) = check_json(&s, &["8082"]);
    assert_eq!(code, 1);
    let f = forward_report(&v, "8082/tcp");
    assert_eq!(f["verdict"], "fail");
    let busy = finding(f, "host_port_in_use");
    assert!(
        owners(busy)
            .iter()
            .any(|(_, pid)| *pid == std::process::id()),
        "{busy:#}"
    );
    assert!(!kinds(f).contains(&"engine_reservation".to_owned()));

    // A second container publishes 8083, while portfwd serves 8083 to the first: the proxy's
    // own target (from its command line) is not the forward's, which is a warning.
    docker.run("web2", &["-p", "8083:3000"]).unwrap();
    let web2 = docker.container_addr("web2").unwrap();
    let add = s.cli(&["add", "8083", &format!("{web}:3000")]);
    assert!(add.status.success(), "{add:?}");
    let (code, out, _) = check(&s, &["8083"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            ", Docker's reservation, but docker-proxy (pid {}) proxies to {web2}:3000, not to \
             {web}:3000\n",
            proxy_of(&s.lab, 8083)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  FAIL  host port 8083/tcp is published twice: also by a Docker iptables rule, to \
             {web2}:3000"
        )),
        "{out}"
    );

    let with = time_check(&s, &["8090"]);
    let all = time_check(&s, &["all"]);
    eprintln!(
        "docker check: `portfwd check 8090` median of {TIMED_RUNS}: {without:?} without dockerd, \
         {with:?} with dockerd and two containers; `check all` (5 forwards) {all:?}"
    );
    s.lab.kill(fake).unwrap();
    docker.shutdown().unwrap();
}

#[test]
fn dockers_forwards_are_named_after_their_container_and_an_outage_is_warned_about() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkchkf");
    docker.import_test_image().unwrap();
    let config = format!("docker:\n  socket: {}\n", docker.socket().display());
    let daemon = Daemon::start(&mut lab, &config);
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let web = docker.container_addr("web").unwrap();
    eventually(|| {
        daemon
            .list_json(&lab)
            .iter()
            .any(|f| f["origin"] == "docker:web")
    })
    .unwrap_or_else(|e| panic!("docker:web never listed: {e}\n{}", daemon.log_text()));
    let check = |args: &[&str]| {
        let mut all = vec!["check", "--timeout", "500ms"];
        all.extend_from_slice(args);
        let out = daemon.cli(&lab, &all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };

    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with(&format!(
            "8080/tcp -> {web}:3000 (docker:web)\n  OK    {web}:3000 accepted a connection in "
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  INFO  host port 8080/tcp is held by docker-proxy (pid {}) on 0.0.0.0:8080: \
             Docker's reservation of the port, not a conflict\n",
            proxy_of(&lab, 8080)
        )),
        "{out}"
    );
    // The follower leaves `[::]:8080` of an IPv4-only container to docker-proxy: a note.
    assert!(
        out.contains(
            "\nnote: Docker's binding [::]:8080/tcp of container web (docker:web) is not served \
             by portfwd: "
        ),
        "{out}"
    );
    assert!(!out.contains("Docker is not followed"), "{out}");

    // dockerd stops (its containers removed first): the daemon is not connected any more.
    let socket = docker.socket();
    docker.shutdown().unwrap();
    eventually(|| daemon.status_json(&lab)["docker"]["connected"] == false)
        .unwrap_or_else(|e| panic!("still connected: {e}\n{}", daemon.log_text()));
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "nothing is published: {out}");
    assert!(
        out.contains(&format!(
            "\nwarning: Docker is not followed right now: not connected to {} for ",
            socket.display()
        )),
        "{out}"
    );
}

/// The pid of the IPv4 docker-proxy of host port `port` (its command line says `-host-ip
/// 0.0.0.0 -host-port PORT`).
/// The docker-proxy of `lab`'s dockerd for 0.0.0.0:`port` (other tests' labs run their own on
/// the same port at the same time: it is the one in this lab's host namespace).
fn proxy_of(lab: &Lab, port: u16) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let want = format!("-host-ip\00.0.0.0\0-host-port\0{port}\0");
    let netns = std::fs::metadata(lab.host().path()).unwrap().ino();
    processes_named("docker-proxy")
        .into_iter()
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == netns)
        })
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
        })
        .unwrap_or_else(|| panic!("no docker-proxy for 0.0.0.0:{port} in {}", lab.host()))
}

/// The pids of the processes whose comm is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}
