//! Containers by name as targets (#15 item 6), with a real dockerd in the lab's host
//! namespace: `to: "web:3000"` in the config and `portfwd add PORT NAME:PORT` are resolved to
//! the container's address and follow it when it restarts on another one; while it is stopped
//! the forward stays in the config, inactive, and says why.

use std::time::Duration;

use serde_json::Value;

use crate::docker::{have_docker, http_get, lab_with_docker, wait_reachable};
use crate::support::{Daemon, eventually, host_port};

/// The entry of `portfwd list --json` for `listen`.
fn entry(daemon: &Daemon, lab: &portfwd_lab::Lab, listen: &str) -> Option<Value> {
    daemon
        .list_json(lab)
        .into_iter()
        .find(|f| f["listen"] == listen)
}

#[test]
fn a_container_by_name_is_followed_across_a_restart_on_another_address() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dknamed");
    docker.run("web", &[]).unwrap();
    let first = docker.container_addr("web").unwrap();
    let config = format!(
        "docker:\n  socket: {}\nforwards:\n  - listen: \"8080\"\n    to: \"web:3000\"\n",
        docker.socket().display()
    );
    let daemon = Daemon::start(&mut lab, &config);
    eventually(|| {
        entry(&daemon, &lab, "8080/tcp").is_some_and(|e| e["to"] == format!("{first}:3000"))
    })
    .unwrap_or_else(|e| panic!("web:3000 not resolved: {e}\n{}", daemon.log_text()));
    wait_reachable(&lab, host_port(8080));
    let e = entry(&daemon, &lab, "8080/tcp").unwrap();
    assert_eq!(e["origin"], "config", "{e}");
    assert_eq!(e["container"], "web", "{e}");
    assert!(e.get("inactive").is_none(), "{e}");

    // An unknown name is refused, naming it; a known one is added and written as a name.
    let out = daemon.cli(&lab, &["add", "8081", "nosuch:3000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nosuch"), "{stderr}");
    let out = daemon.cli(&lab, &["add", "8082", "web:3000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(&daemon.config).unwrap();
    assert!(
        yaml.contains("\"web:3000\"") && yaml.contains("8082"),
        "{yaml}"
    );
    wait_reachable(&lab, host_port(8082));
    let out = daemon.cli(&lab, &["del", "8082"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !std::fs::read_to_string(&daemon.config)
            .unwrap()
            .contains("8082")
    );

    // Stopped: kept in the config, inactive, and the port no longer answers.
    docker.stop("web").unwrap();
    eventually(|| {
        entry(&daemon, &lab, "8080/tcp").is_some_and(|e| {
            e["inactive"]
                .as_str()
                .is_some_and(|why| why.contains("web is not running"))
        })
    })
    .unwrap_or_else(|e| panic!("not inactive: {e}\n{:?}", daemon.list_json(&lab)));
    assert_eq!(entry(&daemon, &lab, "8080/tcp").unwrap()["to"], "web:3000");
    assert!(http_get(&lab, host_port(8080), Duration::from_millis(500)).is_err());

    // Another container takes web's address; web starts again on a new one.
    docker.run("other", &[]).unwrap();
    assert_eq!(docker.container_addr("other").unwrap(), first);
    docker.cli(&["start", "web"]).unwrap();
    let second = docker.container_addr("web").unwrap();
    assert_ne!(first, second);
    eventually(|| {
        entry(&daemon, &lab, "8080/tcp").is_some_and(|e| e["to"] == format!("{second}:3000"))
    })
    .unwrap_or_else(|e| panic!("did not follow web: {e}\n{:?}", daemon.list_json(&lab)));
    wait_reachable(&lab, host_port(8080));
    let e = entry(&daemon, &lab, "8080/tcp").unwrap();
    assert!(e["packets_to_target"].as_u64().unwrap() > 0, "{e}");
    drop(daemon);
    docker.shutdown().unwrap();
}
