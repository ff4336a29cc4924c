//! The Docker follower (#15) against a real dockerd in the lab's host namespace: the daemon
//! with a `docker:` section serves what `docker run -p` publishes, ahead of Docker's own DNAT.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{have_docker, lab_with_docker, rule_packets, wait_reachable};
use crate::support::{Daemon, eventually, host_port};

/// The forwards `portfwd list --json` shows with `origin`.
fn with_origin(daemon: &Daemon, lab: &portfwd_lab::Lab, origin: &str) -> Vec<Value> {
    daemon
        .list_json(lab)
        .into_iter()
        .filter(|f| f["origin"] == origin)
        .collect()
}

#[test]
fn docker_run_p_is_served_by_portfwd_ahead_of_dockers_dnat() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkfol");
    docker.import_test_image().unwrap();
    let config = format!("docker:\n  socket: {}\n", docker.socket().display());
    let daemon = Daemon::start(&mut lab, &config);
    eventually(|| daemon.status_json(&lab)["docker"]["connected"] == true)
        .unwrap_or_else(|e| panic!("never connected to dockerd: {e}\n{}", daemon.log_text()));

    let started = Instant::now();
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let ip = docker.container_addr("web").unwrap();
    let took = wait_reachable(&lab, host_port(8080));
    eprintln!(
        "follower: docker run to reachable {:?} (after the run returned {took:?})",
        started.elapsed()
    );
    let ours = with_origin(&daemon, &lab, "docker:web");
    assert_eq!(ours.len(), 1, "{ours:?}\n{}", daemon.log_text());
    assert_eq!(ours[0]["listen"], "8080/tcp");
    assert_eq!(ours[0]["to"], format!("{ip}:3000"));
    assert_eq!(ours[0]["container"], "web");
    assert!(
        ours[0]["packets_to_target"].as_u64().unwrap() > 0,
        "{ours:?}"
    );
    // portfwd's tc path acted ahead of netfilter: Docker's DNAT rule saw nothing.
    let dnat = rule_packets(
        &lab,
        "nat",
        "DOCKER",
        &["DNAT", "dpt:8080", &format!("to:{ip}:3000")],
    );
    assert_eq!(dnat, 0, "Docker's DNAT rule counted packets");
    // Derived state: not in the YAML, and `del` refuses it naming the container.
    let yaml = std::fs::read_to_string(&daemon.config).unwrap_or_default();
    assert!(!yaml.contains("8080"), "{yaml}");
    let del = daemon.cli(&lab, &["del", "8080"]);
    assert!(!del.status.success());
    let stderr = String::from_utf8_lossy(&del.stderr);
    assert!(stderr.contains("container web"), "{stderr}");
    // The status line.
    let status = daemon.status_json(&lab);
    assert_eq!(status["docker"]["forwards"], 1, "{status}");
    assert_eq!(status["docker"]["containers"], 1, "{status}");
    assert_eq!(status["docker"]["api_version"], "1.41", "{status}");
    let not_served = status["docker"]["not_served"].as_array().unwrap();
    assert!(
        not_served.iter().any(|b| b["listen"] == "[::]:8080/tcp"),
        "{status}"
    );

    // Stopped: withdrawn.
    let stopped = Instant::now();
    docker.stop("web").unwrap();
    eventually(|| with_origin(&daemon, &lab, "docker:web").is_empty())
        .unwrap_or_else(|e| panic!("not withdrawn: {e}\n{}", daemon.log_text()));
    eprintln!("follower: docker stop to withdrawn {:?}", stopped.elapsed());
    assert!(
        crate::docker::http_get(&lab, host_port(8080), Duration::from_millis(500)).is_err(),
        "still answered after docker stop"
    );
    drop(daemon);
    docker.shutdown().unwrap();
}
