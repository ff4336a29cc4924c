//! portfwd beside Docker's defaults (iptables on, userland-proxy on), with a real dockerd in
//! the lab's host namespace (#15 item 4):
//! - from the host itself, a published port is reached through portfwd's socket hooks (the
//!   connection goes straight to the container), ahead of docker-proxy listening on it;
//! - an IPv6 client of an IPv4-only container gets what Docker gives it (docker-proxy's
//!   `[::]:PORT`), with portfwd as without: portfwd does not translate between families and
//!   leaves that binding to Docker.

use std::time::Duration;

use portfwd_lab::{self as lab, Docker, Lab};

use crate::docker::{have_docker, lab_with_docker, wait_reachable};
use crate::support::{Daemon, at, eventually, host_port, host6, sock_verdict};

/// The daemon following the lab's dockerd, with `docker run -p 8080:3000 web` served.
fn following(lab: &mut Lab, docker: &mut Docker) -> Daemon {
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let config = format!("docker:\n  socket: {}\n", docker.socket().display());
    let daemon = Daemon::start(lab, &config);
    eventually(|| {
        daemon
            .list_json(lab)
            .iter()
            .any(|f| f["origin"] == "docker:web")
    })
    .unwrap_or_else(|e| panic!("web not served: {e}\n{}", daemon.log_text()));
    daemon
}

fn page(ns: &lab::Ns, to: std::net::SocketAddr) -> String {
    lab::http_get(ns, to, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("GET {to} from {ns}: {e}"))
}

#[test]
fn host_local_access_goes_through_the_socket_hooks_ahead_of_docker_proxy() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkhost");
    let daemon = following(&mut lab, &mut docker);
    let ip = docker.container_addr("web").unwrap();
    // docker-proxy holds the port in the host namespace (userland-proxy on).
    let listeners = lab.sh(lab.host(), "ss -Htlnp 'sport = :8080'").unwrap();
    assert!(listeners.contains("docker-proxy"), "{listeners}");

    let before = sock_verdict(&daemon.status_json(&lab), "connect_translated");
    for to in [at([127, 0, 0, 1], 8080), host_port(8080)] {
        let answer = page(lab.host(), to);
        assert!(answer.ends_with(Docker::PAGE), "{to}: {answer}");
    }
    let after = sock_verdict(&daemon.status_json(&lab), "connect_translated");
    assert!(
        after >= before + 2,
        "the socket hooks did not take the host's connections ({before} -> {after}): docker-proxy answered"
    );
    // And from outside through the tc path, to the container's address.
    wait_reachable(&lab, host_port(8080));
    let ours = daemon
        .list_json(&lab)
        .into_iter()
        .find(|f| f["origin"] == "docker:web")
        .unwrap();
    assert_eq!(ours["to"], format!("{ip}:3000"));
    drop(daemon);
    docker.shutdown().unwrap();
}

#[test]
fn an_ipv6_client_of_an_ipv4_only_container_gets_what_docker_gives_it() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkv6");
    // Docker alone: docker-proxy answers on [::]:8080 for the IPv4-only container.
    docker.run("ref", &["-p", "8080:3000"]).unwrap();
    wait_reachable(&lab, host_port(8080));
    let alone = lab::http_get(lab.client(), host6(8080), Duration::from_secs(2));
    assert!(
        alone.as_ref().is_ok_and(|a| a.ends_with(Docker::PAGE)),
        "Docker alone: {alone:?}"
    );
    docker.rm("ref").unwrap();

    // With portfwd: the same answer; [::]:8080 is listed as left to docker-proxy.
    let daemon = following(&mut lab, &mut docker);
    let with = lab::http_get(lab.client(), host6(8080), Duration::from_secs(2));
    assert!(
        with.as_ref().is_ok_and(|a| a.ends_with(Docker::PAGE)),
        "with portfwd: {with:?}"
    );
    let status = daemon.status_json(&lab);
    let left = status["docker"]["not_served"].as_array().unwrap();
    assert!(
        left.iter().any(|b| b["listen"] == "[::]:8080/tcp"
            && b["reason"].as_str().unwrap().contains("docker-proxy")),
        "{status}"
    );
    drop(daemon);
    docker.shutdown().unwrap();
}

/// Docker's `DOCKER-USER` rules do not see portfwd's packets; `docker.allow` restricts who may
/// use Docker's forwards instead: a client outside it is dropped (and counted), and a reload
/// that lets it in serves it.
#[test]
fn docker_allow_takes_the_place_of_docker_user() {
    require_root!();
    if !have_docker() {
        return;
    }
    let (mut lab, mut docker) = lab_with_docker("dkallow");
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    let socket = docker.socket();
    let config = |allow: &str| {
        format!(
            "docker:\n  socket: {}\n  allow: [\"{allow}\"]\n",
            socket.display()
        )
    };
    let daemon = Daemon::start(&mut lab, &config("10.99.0.0/16"));
    let listed = |daemon: &Daemon, lab: &Lab| {
        daemon
            .list_json(lab)
            .into_iter()
            .find(|f| f["origin"] == "docker:web")
    };
    eventually(|| listed(&daemon, &lab).is_some_and(|f| f["allow"][0] == "10.99.0.0/16"))
        .unwrap_or_else(|e| {
            panic!(
                "web not served with the allowlist: {e}\n{}",
                daemon.log_text()
            )
        });
    let before = crate::support::verdict(&daemon.status_json(&lab), "drop_source_not_allowed");
    let refused = lab::http_get(lab.client(), host_port(8080), Duration::from_millis(700));
    assert!(
        refused.is_err(),
        "a client outside docker.allow was served: {refused:?}"
    );
    let after = crate::support::verdict(&daemon.status_json(&lab), "drop_source_not_allowed");
    assert!(
        after > before,
        "the client's packets were not dropped as not allowed"
    );

    let client_net = format!("{}/32", Lab::CLIENT_ADDR);
    std::fs::write(&daemon.config, config(&client_net)).unwrap();
    let out = daemon.cli(&lab, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    eventually(|| listed(&daemon, &lab).is_some_and(|f| f["allow"][0] == client_net.as_str()))
        .unwrap_or_else(|e| panic!("allowlist not reloaded: {e}\n{}", daemon.log_text()));
    wait_reachable(&lab, host_port(8080));
    drop(daemon);
    docker.shutdown().unwrap();
}
