//! The Docker follower (#15) through outages, with a real dockerd: the daemon killed with
//! SIGKILL while containers start and stop, and dockerd stopped and started again (with and
//! without `--live-restore`). Forwards stay as they are while dockerd is away, established
//! connections survive, the outage is logged once, and what changed meanwhile is reconciled.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use portfwd_lab::{self as lab, Docker};

use crate::docker::{have_docker, http_get, wait_reachable};
use crate::docker_follow::{ECHO_CMD, Followed, run_page, wait_for, wait_page};
use crate::support::{SHORT, T, host_port};

/// What the follower logs when dockerd stops answering, once per outage.
const OUTAGE: &str = "Docker is not answering";
/// What it logs when it has reconnected and reconciled.
const BACK: &str = "following Docker again (reconciled)";

/// How many lines of the daemon's log contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The containers that have forwards, by name (from `origin: docker:NAME`).
fn containers_served(f: &Followed) -> BTreeSet<String> {
    f.d.list_json(&f.lab)
        .iter()
        .filter_map(|e| {
            e["origin"]
                .as_str()?
                .strip_prefix("docker:")
                .map(str::to_owned)
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The daemon is killed with SIGKILL while containers start and stop: one started just before
/// the kill, one removed and one started while no daemon runs, one started while the daemon
/// starts again. The restarted daemon serves exactly the running containers, and a connection
/// through a Docker forward, open all along, still works.
#[test]
fn daemon_kill_9_while_containers_start_and_stop_reconciles_and_keeps_connections() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkkill", &[], "");
    f.docker
        .run_cmd("keep", &["-p", "8080:3000"], ECHO_CMD)
        .unwrap();
    run_page(&mut f.docker, "gone", &["-p", "8081:3000"], "gone");
    f.wait_forwards("keep", 1);
    f.wait_forwards("gone", 1);
    wait_page(&f.lab, host_port(8081), "gone");
    let mut session = lab::tcp_session(f.lab.client(), host_port(8080), T).unwrap();
    assert_eq!(session.request("before").unwrap(), "before");

    // Started as the daemon dies: seen by it or not, the restarted one must serve it.
    run_page(&mut f.docker, "early", &["-p", "8083:3000"], "early");
    f.d.kill9();
    f.docker.rm("gone").unwrap();
    run_page(&mut f.docker, "late", &["-p", "8082:3000"], "late");
    // The pinned datapath serves the established connection with no daemon at all.
    assert_eq!(session.request("no daemon").unwrap(), "no daemon");

    let restarted = Instant::now();
    std::thread::scope(|s| {
        let docker = &f.docker;
        let racing = s.spawn(move || {
            docker
                .cli(&[
                    "run",
                    "-d",
                    "--name",
                    "racing",
                    "-p",
                    "8084:3000",
                    Docker::IMAGE,
                ])
                .unwrap()
        });
        f.d.restart();
        racing.join().unwrap();
    });
    eprintln!(
        "kill -9: the daemon answered again {:?} after its restart",
        restarted.elapsed()
    );
    f.wait_connected(true);
    let expected = set(&["keep", "early", "late", "racing"]);
    let mut served = BTreeSet::new();
    wait_for(Duration::from_secs(10), || {
        served = containers_served(&f);
        served == expected
    })
    .unwrap_or_else(|e| {
        panic!(
            "served {served:?}, expected {expected:?}: {e}\n{}",
            f.d.log_text()
        )
    });
    assert_eq!(f.docker_status()["forwards"], 4);
    assert_eq!(session.request("after").unwrap(), "after");
    wait_page(&f.lab, host_port(8082), "late");
    wait_page(&f.lab, host_port(8083), "early");
    wait_reachable(&f.lab, host_port(8084));
    // Gone's port is withdrawn: nothing answers there now.
    let gone = http_get(&f.lab, host_port(8081), SHORT);
    assert!(
        gone.is_err(),
        "the removed container's port answered: {gone:?}"
    );
    // The established connection is still the same one, on the same container.
    assert_eq!(session.request("still").unwrap(), "still");
}

/// dockerd with `--live-restore` stopped and started again: containers keep running, so the
/// forwards stay and serve (old connections and new ones) while dockerd is away; the status says
/// it is not connected, the log says so once. A container that dies meanwhile is withdrawn
/// when dockerd is back and the daemon has reconciled.
#[test]
fn dockerd_stopped_and_started_again_forwards_stay_and_are_reconciled() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkout", &["--live-restore"], "");
    f.docker
        .run_cmd("web", &["-p", "8080:3000"], ECHO_CMD)
        .unwrap();
    run_page(&mut f.docker, "dies", &["-p", "8081:3000"], "dies");
    f.wait_forwards("web", 1);
    f.wait_forwards("dies", 1);
    let mut session = lab::tcp_session(f.lab.client(), host_port(8080), T).unwrap();
    assert_eq!(session.request("before").unwrap(), "before");
    let dies_pid = f.docker.container_pid("dies").unwrap();
    let log_before = f.d.log_text();
    assert_eq!(lines_with(&log_before, OUTAGE), 0, "{log_before}");

    let status = f.docker.stop_daemon().unwrap();
    assert!(status.success(), "dockerd exited with {status}");
    let down = Instant::now();
    f.wait_connected(false);
    let st = f.docker_status();
    assert!(st["error"].as_str().is_some_and(|e| !e.is_empty()), "{st}");
    assert_eq!(
        containers_served(&f),
        set(&["web", "dies"]),
        "the forwards did not stay"
    );
    // live-restore: the containers run on, and portfwd still serves them.
    assert_eq!(session.request("dockerd down").unwrap(), "dockerd down");
    wait_page(&f.lab, host_port(8081), "dies");
    // One container dies while dockerd is away.
    // SAFETY: kill(2) on the pid of a container this test started, read just before.
    assert_eq!(unsafe { libc::kill(dies_pid as i32, libc::SIGKILL) }, 0);
    // Several reconnection tries (backoff 0.1, 0.2, 0.4, 0.8, 1.6 s...).
    std::thread::sleep(Duration::from_secs(4).saturating_sub(down.elapsed()));
    let log = f.d.log_text();
    assert_eq!(
        lines_with(&log, OUTAGE),
        1,
        "the outage is not logged once:\n{log}"
    );
    assert_eq!(f.docker_status()["forwards"], 2);

    f.docker.start_daemon().unwrap();
    let back = Instant::now();
    f.wait_connected(true);
    eprintln!(
        "dockerd outage: connected again {:?} after dockerd answered",
        back.elapsed()
    );
    let mut served = BTreeSet::new();
    wait_for(Duration::from_secs(10), || {
        served = containers_served(&f);
        served == set(&["web"])
    })
    .unwrap_or_else(|e| panic!("served {served:?}: {e}\n{}", f.d.log_text()));
    let st = f.docker_status();
    assert_eq!(st["forwards"], 1, "{st}");
    assert_eq!(st["error"], serde_json::Value::Null, "{st}");
    assert_eq!(session.request("dockerd back").unwrap(), "dockerd back");
    let log = f.d.log_text();
    assert_eq!(lines_with(&log, OUTAGE), 1, "{log}");
    assert_eq!(lines_with(&log, BACK), 1, "{log}");
    let dead = http_get(&f.lab, host_port(8081), SHORT);
    assert!(
        dead.is_err(),
        "the dead container's port answered: {dead:?}"
    );

    // Followed as before: a new container is served.
    run_page(&mut f.docker, "new", &["-p", "8082:3000"], "new");
    f.wait_forwards("new", 1);
    wait_page(&f.lab, host_port(8082), "new");
}

/// dockerd without `--live-restore` (the default) stops its containers when it stops: their
/// `die` events reach the daemon before the connection ends, so their forwards are withdrawn;
/// a container with `--restart always` is started again with dockerd and served again.
#[test]
fn dockerd_stopped_without_live_restore_withdraws_and_serves_again_on_restart() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkout2", &[], "");
    run_page(
        &mut f.docker,
        "always",
        &["--restart", "always", "-p", "8080:3000"],
        "always",
    );
    f.wait_forwards("always", 1);
    wait_page(&f.lab, host_port(8080), "always");

    let status = f.docker.stop_daemon().unwrap();
    assert!(status.success(), "dockerd exited with {status}");
    f.wait_connected(false);
    // dockerd 20.10 stops its containers before it exits, and closes only its listener
    // first: the `die` events still come down the open event stream, before it ends. The
    // follower handles events in order, so once it saw the end, the forwards are withdrawn.
    let served = containers_served(&f);
    assert!(
        served.is_empty(),
        "still served: {served:?}\n{}",
        f.d.log_text()
    );
    let answer = http_get(&f.lab, host_port(8080), SHORT);
    assert!(answer.is_err(), "a stopped container answered: {answer:?}");

    f.docker.start_daemon().unwrap();
    f.wait_connected(true);
    let ip = f.addr("always");
    f.wait_forward_to("always", crate::support::at(ip, 3000));
    wait_page(&f.lab, host_port(8080), "always");
    let log = f.d.log_text();
    assert_eq!(lines_with(&log, OUTAGE), 1, "{log}");
    assert_eq!(lines_with(&log, BACK), 1, "{log}");
}
