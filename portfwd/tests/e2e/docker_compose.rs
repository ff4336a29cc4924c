//! A compose service's name as a target (#16 item 1), with a real dockerd in the lab's host
//! namespace: `to: "web:3000"` where `web` is no container but the service of several replicas
//! becomes a pool of all of them, and follows the service as it scales up and down, in place
//! (flows stay on their replicas; a replica that stops drains).
//!
//! The replicas are run with the labels `docker compose` puts on a service's containers
//! (`com.docker.compose.service`, `com.docker.compose.project`), by `docker run -l`, since the
//! machine has no compose plugin; the follower reads only those labels.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;

use crate::docker::{have_docker, http_get, lab_with_docker};
use crate::support::{Daemon, eventually, host_port};

/// A replica of the compose service `web` named `name`, whose httpd answers with its name.
fn replica(docker: &mut portfwd_lab::Docker, name: &str) {
    let script = format!(
        "mkdir -p /w && echo {name} > /w/index.html && exec /bin/busybox httpd -f -p 3000 -h /w"
    );
    docker
        .run_cmd(
            name,
            &[
                "-l",
                "com.docker.compose.service=web",
                "-l",
                "com.docker.compose.project=demo",
            ],
            &["/bin/busybox", "sh", "-c", &script],
        )
        .unwrap();
}

/// The replicas that answer `tries` new connections to the published port.
fn answering(lab: &portfwd_lab::Lab, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .filter_map(|_| http_get(lab, host_port(8080), Duration::from_secs(2)).ok())
        .map(|body| body.trim().to_owned())
        .collect()
}

/// The backends `portfwd list --json` shows for 8080/tcp: (target, state).
fn backends(daemon: &Daemon, lab: &portfwd_lab::Lab) -> Vec<(String, String)> {
    let list = daemon.list_json(lab);
    let Some(e) = list.iter().find(|f| f["listen"] == "8080/tcp") else {
        return Vec::new();
    };
    e["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b: &Value| {
            (
                b["target"].as_str().unwrap_or_default().to_owned(),
                b["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_compose_service_is_a_pool_that_follows_its_scale() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkcompose");
    replica(&mut docker, "demo-web-1");
    replica(&mut docker, "demo-web-2");
    let config = format!(
        "docker:\n  socket: {}\nforwards:\n  - listen: \"8080\"\n    to: \"web:3000\"\n",
        docker.socket().display()
    );
    let daemon = Daemon::start(&mut lab, &config);
    eventually(|| backends(&daemon, &lab).len() == 2)
        .unwrap_or_else(|e| panic!("web is not a pool of 2: {e}\n{}", daemon.log_text()));
    let seen = answering(&lab, 40);
    assert_eq!(
        seen,
        BTreeSet::from(["demo-web-1".to_owned(), "demo-web-2".to_owned()]),
        "40 connections over two replicas"
    );

    // Scaled up: the new replica joins the pool.
    replica(&mut docker, "demo-web-3");
    eventually(|| backends(&daemon, &lab).len() == 3)
        .unwrap_or_else(|e| panic!("the third replica did not join: {e}\n{}", daemon.log_text()));
    assert!(answering(&lab, 60).contains("demo-web-3"));

    // Scaled down: the stopped replica drains (listed as such), no new connection reaches it.
    let gone = docker.container_addr("demo-web-1").unwrap();
    docker.stop("demo-web-1").unwrap();
    eventually(|| {
        backends(&daemon, &lab)
            .iter()
            .any(|(t, s)| t.starts_with(&format!("{gone}:")) && s == "draining")
    })
    .unwrap_or_else(|e| {
        panic!(
            "demo-web-1 does not drain: {e}\n{:?}",
            backends(&daemon, &lab)
        )
    });
    let seen = answering(&lab, 40);
    assert!(!seen.contains("demo-web-1"), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    drop(daemon);
    docker.shutdown().unwrap();
}
