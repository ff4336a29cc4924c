//! Real podman (Debian's 4.3, CNI backend, `portfwd_lab::Podman`) in the lab's host namespace
//! with a conflist bridge + host-local -> portfwd-cni in spec 0.4.0 (what podman 4 writes),
//! against the real daemon: `podman run -p` over tcp, udp and a host IP, two containers, a
//! third refused for a taken port, a daemon crash, stop and rm; libcni's cache of the network
//! cleaned; no netfilter NAT rule.
//!
//! Needs root, containernetworking-plugins, podman and busybox-static (`cargo xtask setup`);
//! under `CI=true` a test that cannot run fails.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use portfwd_lab::{self as lab, DEBIAN_CNI_DIR, Lab, Podman};
use serde_json::{Value, json};

use crate::cni::{conflist, have, have_cni, plugin_dir};
use crate::support::{Daemon, T, assert_no_netfilter_nat, at, eventually, host_port};

/// True when podman, the test image's busybox and the CNI plugins are installed; under
/// `CI=true` their absence fails the test.
fn have_podman() -> bool {
    let paths = ["/usr/bin/podman", "/usr/bin/busybox"].map(PathBuf::from);
    have(&paths, "podman and busybox-static") && have_cni()
}

/// Waits (up to 10 s) until `to` answers the client's GET with the test page; how long.
fn wait_page(lab: &Lab, to: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        match lab::http_get(lab.client(), to, Duration::from_millis(500)) {
            Ok(answer) if answer.ends_with(Podman::PAGE) => return started.elapsed(),
            other => assert!(
                started.elapsed() < Duration::from_secs(10),
                "{to} not reachable from the client within 10 s: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unreachable(lab: &Lab, to: SocketAddr) -> bool {
    lab::http_get(lab.client(), to, Duration::from_millis(500)).is_err()
}

/// The forwards `portfwd list` shows with `origin`, as `LISTEN -> TO`, sorted.
fn forwards(daemon: &Daemon, lab: &Lab, origin: &str) -> Vec<String> {
    let mut out: Vec<String> = daemon
        .list_json(lab)
        .into_iter()
        .filter(|f: &Value| f["origin"] == origin)
        .map(|f| {
            format!(
                "{} -> {}",
                f["listen"].as_str().unwrap(),
                f["to"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn podman_run_p_is_served_by_portfwd_cni() {
    require_root!();
    if !have_podman() {
        return;
    }
    let mut lab = Lab::new("cnipodman").unwrap();
    let mut daemon = Daemon::start(&mut lab, "forwards: []\n");
    let net = "pfpodnet";
    let list = conflist("0.4.0", net, "portfwd-cni", &daemon.socket, false);
    let dirs: Vec<PathBuf> = vec![plugin_dir(), PathBuf::from(DEBIAN_CNI_DIR)];
    let podman = Podman::start(&lab, &list, &dirs).unwrap();

    // tcp, udp and a host IP.
    let started = Instant::now();
    let options = [
        "-p",
        "8080:3000",
        "-p",
        "5353:5353/udp",
        "-p",
        "10.77.0.1:8081:3000",
    ];
    podman.run("web1", &options).unwrap();
    let ran = started.elapsed();
    let took = wait_page(&lab, host_port(8080));
    eprintln!("podman: run -p returned in {ran:?}, reachable {took:?} later");
    let ip = podman.container_addr("web1").unwrap();
    let id = podman.container_id("web1").unwrap();
    let origin1 = format!("cni:{net}/{}", &id[..12]);
    assert_eq!(
        forwards(&daemon, &lab, &origin1),
        [
            format!("10.77.0.1:8081/tcp -> {ip}:3000"),
            format!("5353/udp -> {ip}:5353"),
            format!("8080/tcp -> {ip}:3000"),
        ]
    );
    wait_page(&lab, host_port(8081));
    let web1_ns = podman.container_ns("web1").unwrap();
    let udp = lab::udp_server(&web1_ns, at(ip, 5353), "web1udp").unwrap();
    let reply = lab::udp_request(lab.client(), host_port(5353), "q", T).unwrap();
    assert!(reply.starts_with("web1udp from 10.77.0.2:"), "{reply}");

    // A second container, and a third refused for a port the first has.
    podman.run("web2", &["-p", "8082:3000"]).unwrap();
    wait_page(&lab, host_port(8082));
    let err = podman.run("web3", &["-p", "8080:3000"]).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("8080/tcp") && err.contains(&origin1), "{err}");
    let web3 = podman.container_id("web3").ok();
    eprintln!("podman: the refused run said: {err}");
    if let Some(id) = web3 {
        assert!(forwards(&daemon, &lab, &format!("cni:{net}/{}", &id[..12])).is_empty());
        podman.rm("web3").unwrap();
    }

    // The daemon crashes and comes back: the containers' ports are served again.
    daemon.kill9();
    daemon.restart();
    assert_eq!(
        forwards(&daemon, &lab, &origin1).len(),
        3,
        "{}",
        daemon.log_text()
    );
    wait_page(&lab, host_port(8080));
    wait_page(&lab, host_port(8082));

    // stop withdraws web1's ports (libcni's DEL); web2 keeps its own; rm leaves no cache.
    drop(udp);
    podman.stop("web1").unwrap();
    assert!(forwards(&daemon, &lab, &origin1).is_empty());
    assert!(unreachable(&lab, host_port(8080)));
    wait_page(&lab, host_port(8082));
    podman.rm("web1").unwrap();
    podman.rm("web2").unwrap();
    eventually(|| daemon.list_json(&lab).is_empty()).unwrap();
    assert!(
        podman.libcni_cache().is_empty(),
        "{:?}",
        podman.libcni_cache()
    );
    assert_no_netfilter_nat(&lab);
    podman.shutdown().unwrap();
}

/// Runs `portfwd-cni` with CNI_COMMAND=GC (spec 1.1.0) for `network`, keeping `keep`
/// (container ids, interface eth0), as a runtime of 1.1 does and as an operator can by hand.
fn gc_by_hand(socket: &Path, network: &str, keep: &[&str]) {
    let valid: Vec<Value> = keep
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    let config = json!({"cniVersion": "1.1.0", "name": network, "type": "portfwd-cni",
        "socket": socket, "cni.dev/valid-attachments": valid});
    let mut child = Command::new(plugin_dir().join("portfwd-cni"))
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", DEBIAN_CNI_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "GC: {out:?}");
}

/// Podman 4.3 does not retry a failed CNI DEL: `podman stop` while the daemon is down
/// succeeds, and the container's forward stays (and its port with it) once the daemon is
/// back, also after `podman rm`. A GC naming the attachments still in use withdraws it.
#[test]
fn podman_stop_while_the_daemon_is_down_leaves_the_forward_until_a_gc() {
    require_root!();
    if !have_podman() {
        return;
    }
    let mut lab = Lab::new("cnipmdown").unwrap();
    let mut daemon = Daemon::start(&mut lab, "forwards: []\n");
    let net = "pfpoddown";
    let list = conflist("0.4.0", net, "portfwd-cni", &daemon.socket, false);
    let dirs: Vec<PathBuf> = vec![plugin_dir(), PathBuf::from(DEBIAN_CNI_DIR)];
    let podman = Podman::start(&lab, &list, &dirs).unwrap();
    podman.run("web1", &["-p", "8080:3000"]).unwrap();
    podman.run("web2", &["-p", "8081:3000"]).unwrap();
    wait_page(&lab, host_port(8080));
    let id1 = podman.container_id("web1").unwrap();
    let id2 = podman.container_id("web2").unwrap();
    let origin1 = format!("cni:{net}/{}", &id1[..12]);
    daemon.kill9();
    podman.stop("web1").unwrap();
    daemon.restart();
    podman.rm("web1").unwrap();
    assert_eq!(
        forwards(&daemon, &lab, &origin1).len(),
        1,
        "podman retried the DEL?"
    );
    gc_by_hand(&daemon.socket, net, &[&id2]);
    assert!(forwards(&daemon, &lab, &origin1).is_empty());
    assert_eq!(daemon.list_json(&lab).len(), 1, "web2's forward must stay");
    wait_page(&lab, host_port(8081));
    podman.shutdown().unwrap();
}
