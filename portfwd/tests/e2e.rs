//! End-to-end tests: a lab of network namespaces (a client, a host with a docker0-like bridge,
//! containers), real TCP/UDP servers in the containers, the real daemon and CLI in the host.
//!
//! These need root. Under `CI=true` a test that cannot run fails; elsewhere it says it skipped.
mod support;

use std::{net::SocketAddr, time::Duration};

use portfwd_lab::{self as lab, Lab};
use support::{Daemon, require_root};

const T: Duration = Duration::from_secs(5);

fn host_port(port: u16) -> SocketAddr {
    SocketAddr::from((Lab::HOST_ADDR, port))
}

#[test]
fn tcp_is_forwarded_with_the_client_address_kept() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("tcp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
    );

    let reply = lab::tcp_request(lab.client(), host_port(8080), "hello", T).unwrap();
    assert!(
        reply.contains(&format!("from {}:", Lab::CLIENT_ADDR)) && reply.ends_with("hello"),
        "server must see the client's own address, got: {reply}"
    );

    let list = d.list_json(&lab);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["listen"], "8080/tcp");
    assert!(
        list[0]["packets_to_target"].as_u64().unwrap() >= 3,
        "{list:?}"
    );
    assert!(
        list[0]["packets_to_client"].as_u64().unwrap() >= 2,
        "{list:?}"
    );
    assert!(list[0]["new_flows"].as_u64().unwrap() >= 1, "{list:?}");

    support::assert_no_netfilter_nat(&lab);
}

#[test]
fn udp_is_forwarded_and_replies_come_from_the_published_port() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("udp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::udp_server(&c1.ns, SocketAddr::from((c1.addr, 53)), "c1:53").unwrap();
    let _d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"5353/udp\"\n    to: \"{}:53\"\n",
            c1.addr
        ),
    );
    // udp_request checks that the reply's source is the address it sent to.
    let reply = lab::udp_request(lab.client(), host_port(5353), "query", T).unwrap();
    assert!(
        reply.contains(&format!("from {}:", Lab::CLIENT_ADDR)),
        "{reply}"
    );
    support::assert_no_netfilter_nat(&lab);
}

#[test]
fn add_and_del_at_runtime_take_effect_and_are_saved() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("adddel").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let _s1 = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let d = Daemon::start(&mut lab, "# operator's comment\nforwards: []\n");

    assert!(
        lab::tcp_request(lab.client(), host_port(8080), "x", T).is_err(),
        "nothing published yet"
    );

    let out = d.cli(&lab, &["add", "8080", &format!("{}:3000", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    let reply = lab::tcp_request(lab.client(), host_port(8080), "after add", T).unwrap();
    assert!(reply.ends_with("after add"), "{reply}");
    let saved = std::fs::read_to_string(&d.config).unwrap();
    assert!(
        saved.contains("8080") && saved.contains(&format!("{}:3000", c1.addr)),
        "{saved}"
    );
    assert!(
        saved.contains("# operator's comment"),
        "comments survive: {saved}"
    );

    // The same port again is refused with a clear message, and nothing changes.
    let out = d.cli(&lab, &["add", "8080", &format!("{}:3000", c2.addr)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "port 8080/tcp is already published to {}:3000",
            c1.addr
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = d.cli(&lab, &["del", "8080"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        lab::tcp_request(lab.client(), host_port(8080), "x", T).is_err(),
        "unpublished"
    );
    let saved = std::fs::read_to_string(&d.config).unwrap();
    assert!(!saved.contains(&format!("{}:3000", c1.addr)), "{saved}");

    let out = d.cli(&lab, &["del", "8080"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 8080/tcp is not published"));
}

#[test]
fn many_sequential_connections() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("many").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
    );
    let n = 300;
    for i in 0..n {
        let reply = lab::tcp_request(lab.client(), host_port(8080), &format!("req {i}"), T)
            .unwrap_or_else(|e| panic!("connection {i} of {n}: {e}"));
        assert!(reply.ends_with(&format!("req {i}")), "{reply}");
    }
    let list = d.list_json(&lab);
    assert!(
        list[0]["new_flows"].as_u64().unwrap() >= n as u64 / 2,
        "{list:?}"
    );
}

#[test]
fn traffic_routed_through_the_host_is_not_touched() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("routed").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    // A server on the container's own 8080, and a forward of the host's 8080 to its 3000.
    let _direct = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 8080)), "c1:8080").unwrap();
    let _fwd = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let _d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
    );
    // The client routes 172.17.0.0/16 through the host (its default route). To the container's
    // address: routed, so it must reach port 8080 itself, not 3000.
    let reply =
        lab::tcp_request(lab.client(), SocketAddr::from((c1.addr, 8080)), "routed", T).unwrap();
    assert!(
        reply.contains(":8080"),
        "routed traffic was translated: {reply}"
    );
    // To the host's address: published, so it reaches 3000.
    let reply = lab::tcp_request(lab.client(), host_port(8080), "published", T).unwrap();
    assert!(reply.contains(":3000"), "{reply}");
}

#[test]
fn interfaces_and_addresses_that_appear_later_are_followed() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("later").unwrap();
    let d = Daemon::start(&mut lab, "forwards: []\n");
    // A container created after the daemon: its veth must be attached so replies translate.
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let out = d.cli(&lab, &["add", "8080", &format!("{}:3000", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    support::eventually(|| lab::tcp_request(lab.client(), host_port(8080), "late", T).is_ok())
        .expect("a forward to a container created after the daemon works");

    // A host address added later is published too.
    lab.exec(
        lab.host(),
        &["ip", "addr", "add", "10.77.0.100/24", "dev", "eth0"],
    )
    .unwrap();
    let extra = SocketAddr::from(([10, 77, 0, 100], 8080));
    support::eventually(|| lab::tcp_request(lab.client(), extra, "new addr", T).is_ok())
        .expect("a host address added after start is published");

    // And removed again: then it is no longer translated (nothing listens there: refused).
    lab.exec(
        lab.host(),
        &["ip", "addr", "del", "10.77.0.100/24", "dev", "eth0"],
    )
    .unwrap();
    support::eventually(|| {
        lab::tcp_request(lab.client(), extra, "gone", Duration::from_millis(500)).is_err()
    })
    .expect("a removed host address is no longer published");
}

#[test]
fn cli_errors_are_one_clear_line() {
    let bin = support::portfwd_bin();
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .env("PORTFWD_SOCKET", "/nonexistent/portfwd-test.sock")
            .output()
            .unwrap()
    };
    for (args, expect) in [
        (
            vec!["add", "8080", "172.17.0.2:3000"],
            "daemon is not running",
        ),
        (vec!["list"], "daemon is not running"),
        (vec!["add", "70000", "172.17.0.2:3000"], "70000"),
        (vec!["add", "0", "172.17.0.2:3000"], "port 0"),
        (vec!["add", "8080", "172.17.0.2"], "needs a port"),
        (vec!["add", "8080", "300.1.1.1:80"], "300.1.1.1"),
        (vec!["add", "8080/icmp", "172.17.0.2:3000"], "icmp"),
        (vec!["del", "abc"], "abc"),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err:?}"
        );
    }
}

#[test]
fn invalid_config_stops_the_daemon_naming_file_line_and_field() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("badcfg").unwrap();
    let out = Daemon::run_to_exit(
        &mut lab,
        "forwards:\n  - listen: \"8080\"\n    to: \"172.17.0.2\"\n",
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portfwd.yaml:3"), "{err}");
    assert!(err.contains("forwards[0].to"), "{err}");
}

#[test]
fn sigterm_detaches_and_exits_zero() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("term").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let mut d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
    );
    lab::tcp_request(lab.client(), host_port(8080), "before", T).unwrap();
    let status = d.stop(&mut lab);
    assert!(status.success(), "exit status {status:?}");
    // Detached: the host's own stack answers port 8080 now, and nothing listens there.
    let err = lab::tcp_request(lab.client(), host_port(8080), "after", T).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!d.socket.exists(), "socket file removed");
}

#[test]
fn icmp_errors_about_a_forwarded_flow_reach_the_client_translated() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("icmp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    // Nothing listens on the target port: the container answers with ICMP port unreachable,
    // quoting client -> 172.17.0.2:53. A connected socket on the client only learns of it if the
    // quote is translated back to client -> host:5353 and the error comes from the host.
    let _d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"5353/udp\"\n    to: \"{}:53\"\n",
            c1.addr
        ),
    );
    let err = lab.client().run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.connect(host_port(5353)).unwrap();
        s.send(b"anyone?").unwrap();
        let mut buf = [0u8; 64];
        s.recv(&mut buf).map(|_| ()).unwrap_err()
    });
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the port-unreachable error must reach the client's socket: {err}"
    );
}

#[test]
fn xdp_mode_puts_native_xdp_in_front_of_tc() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("xdp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let d = Daemon::start_with(
        &mut lab,
        &format!(
            "interfaces: [eth0]\nforwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
        Some("xdp"),
    );
    let reply = lab::tcp_request(lab.client(), host_port(8080), "via xdp", T).unwrap();
    assert!(reply.ends_with("via xdp"), "{reply}");

    let out = d.cli(&lab, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eth0 = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .expect("eth0 attached");
    assert_eq!(eth0["attach"], "xdp+tc", "{status}");
    // The forwarded connection is a flow, and the count agrees with the flow tables' rows.
    let flow_rows: u64 = status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "PF_FLOWS" || m["name"] == "PF_FLOWS6")
        .map(|m| m["entries"].as_u64().unwrap())
        .sum();
    assert!(status["flows"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["flows"].as_u64().unwrap(), flow_rows, "{status}");
    // Not on the container's host-side veth, which exposes nothing: XDP there would only
    // convert frames for tc and cost GRO.
    let veth = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == c1.host_veth.as_str())
        .expect("the container's veth attached");
    assert_eq!(veth["attach"], "tc", "{status}");
    // XDP saw the client's packets first; their next hop is a bridge, which takes no XDP
    // frames, so it handed them to tc untouched, and tc forwarded them.
    let xdp = &status["verdicts_by_hook"]["xdp"];
    assert!(xdp["pass_to_tc"].as_u64().unwrap() >= 3, "{status}");
    assert!(
        status["verdicts_by_hook"]["tc"]["forwarded"]
            .as_u64()
            .unwrap()
            >= 3,
        "{status}"
    );
}

#[test]
fn xdp_mode_refuses_an_exposed_interface_without_native_xdp() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("xdpno").unwrap();
    // Every interface is exposed, docker0 included, and a bridge has no native XDP.
    let out = Daemon::run_to_exit(&mut lab, "forwards: []\n", &["--mode", "xdp"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker0 has no native XDP support"), "{err}");
    assert!(err.contains("mode: auto or mode: tc"), "{err}");
}

/// Issue #7: the datapath is pinned, so `kill -9` of the daemon loses nothing, and a restarted
/// daemon takes the pinned state over (same maps, programs swapped into the same links) without
/// attaching twice or resetting counters.
#[test]
fn connections_survive_twenty_kill_9_and_restart_cycles() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("survive").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _tcp = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let _udp = lab::udp_server(&c1.ns, SocketAddr::from((c1.addr, 53)), "c1:53").unwrap();
    let mut d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{a}:3000\"\n  - listen: \"5353/udp\"\n    to: \"{a}:53\"\n",
            a = c1.addr
        ),
    );

    // One long-lived TCP connection and one UDP flow (one socket, same 5-tuple throughout).
    let mut session = lab::tcp_session(lab.client(), host_port(8080), T).unwrap();
    let udp = lab
        .client()
        .run(|| std::net::UdpSocket::bind((Lab::CLIENT_ADDR, 0)))
        .unwrap();
    udp.connect(host_port(5353)).unwrap();
    udp.set_read_timeout(Some(T)).unwrap();
    let udp_exchange = |line: &str| -> Result<String, String> {
        udp.send(line.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = udp
            .recv(&mut buf)
            .map_err(|e| format!("no UDP reply to {line}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let mut failures = Vec::new();
    let mut exchange = |session: &mut lab::TcpSession, line: String| {
        match session.request(&line) {
            Ok(r) if r.trim_end().ends_with(&line) => {}
            Ok(r) => failures.push(format!("TCP {line}: wrong reply {r}")),
            Err(e) => failures.push(format!("TCP {line}: {e:#}")),
        }
        match udp_exchange(&line) {
            Ok(r) if r.trim_end().ends_with(&line) => {}
            Ok(r) => failures.push(format!("UDP {line}: wrong reply {r}")),
            Err(e) => failures.push(e),
        }
    };
    exchange(&mut session, "before".into());
    let before = d.list_json(&lab);

    for i in 0..20 {
        d.kill9();
        // Nobody is running: the pinned links keep the programs attached.
        exchange(&mut session, format!("while-dead-{i}"));
        d.restart();
        exchange(&mut session, format!("after-restart-{i}"));
    }
    assert!(failures.is_empty(), "failed exchanges: {failures:#?}");

    // Counters carried over (the same slots), and grew by the 40 TCP exchanges.
    let after = d.list_json(&lab);
    let tcp = |l: &[serde_json::Value]| {
        l.iter()
            .find(|f| f["listen"] == "8080/tcp")
            .map(|f| f["packets_to_target"].as_u64().unwrap())
            .unwrap()
    };
    assert!(tcp(&after) >= tcp(&before) + 40, "{before:?} -> {after:?}");
    assert_eq!(after.len(), 2, "{after:?}");

    // Never attached twice: one portfwd tc program on the client-facing interface.
    let tcx = lab.host().run(|| {
        aya::programs::SchedClassifier::query_tcx("eth0", aya::programs::TcAttachType::Ingress)
    });
    let names: Vec<String> = tcx
        .unwrap()
        .1
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect();
    // (The kernel keeps the first 15 bytes of the name: portfwd_tc_ingr.)
    assert!(
        names.len() == 1 && names[0].starts_with("portfwd_tc"),
        "tcx ingress programs on eth0: {names:?}"
    );
    let status = d.cli(&lab, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let interfaces = status["interfaces"].as_array().unwrap();
    let pins: Vec<String> = std::fs::read_dir(d.pin_dir.join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |kind: &str| pins.iter().filter(|p| p.starts_with(kind)).count();
    assert_eq!(count("tc-"), interfaces.len(), "{pins:?} vs {interfaces:?}");
    let with_xdp = interfaces
        .iter()
        .filter(|i| i["attach"] == "xdp+tc")
        .count();
    assert_eq!(count("xdp-"), with_xdp, "{pins:?} vs {interfaces:?}");

    // A clean stop detaches; --cleanup then frees the maps it kept for the next start.
    assert!(d.stop(&mut lab).success());
    assert_eq!(
        std::fs::read_dir(d.pin_dir.join("links")).unwrap().count(),
        0
    );
    let out = d.cleanup();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !d.pin_dir.join("maps").exists(),
        "maps still pinned after --cleanup"
    );
}

/// Issue #7: a daemon started over pinned state reconciles it with the config (adds what is
/// missing, removes what is stale), replaces a pinned map whose layout changed (as after an
/// upgrade) and says so, and `--cleanup` refuses while a daemon runs.
#[test]
fn restart_reconciles_pinned_state_with_the_config() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("reconcile").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _a = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let _b = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 4000)), "c1:4000").unwrap();
    let forward =
        |port: u16, to: u16| format!("  - listen: \"{port}\"\n    to: \"{}:{to}\"\n", c1.addr);
    let mut d = Daemon::start(&mut lab, &format!("forwards:\n{}", forward(8080, 3000)));
    let out = d.cleanup();
    assert!(
        !out.status.success(),
        "--cleanup must refuse while the daemon runs"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a daemon is running"),
        "{out:?}"
    );
    lab::tcp_request(lab.client(), host_port(8080), "one", T).unwrap();

    // While it is dead, the config changes: 8080 goes, 9090 comes.
    d.kill9();
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        text.replace(&forward(8080, 3000), &forward(9090, 4000)),
    )
    .unwrap();
    // And an "upgrade" finds a verdict counter map of another layout pinned.
    let verdicts = d.pin_dir.join("maps/PF_VERDICTS");
    std::fs::remove_file(&verdicts).unwrap();
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&verdicts)
        .args([
            "type", "array", "key", "4", "value", "4", "entries", "1", "name", "old",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    d.restart();

    let list = d.list_json(&lab);
    let listens: Vec<&str> = list.iter().map(|f| f["listen"].as_str().unwrap()).collect();
    assert_eq!(listens, ["9090/tcp"]);
    let reply = lab::tcp_request(lab.client(), host_port(9090), "two", T).unwrap();
    assert!(reply.starts_with("c1:4000"), "{reply}");
    assert!(
        lab::tcp_request(
            lab.client(),
            host_port(8080),
            "gone",
            Duration::from_secs(1)
        )
        .is_err(),
        "the stale pinned forward 8080 must be gone"
    );
    let log = d.log_text();
    assert!(
        log.contains("removed a pinned forward the config no longer has")
            && log.contains("pinned map has another layout")
            && log.contains("took over the attachments of a previous daemon"),
        "{log}"
    );
    let status = d.cli(&lab, &["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
}

/// Once a container has sent a frame (its MAC learned on its veth bridge port), translated
/// packets for it go straight into its namespace (`bpf_redirect_peer`), not through the bridge:
/// the bridge's transmit counter stays flat while the container keeps receiving.
#[test]
fn translated_packets_skip_the_bridge_once_the_container_is_known() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("peer").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n",
            c1.addr
        ),
    );
    let mut session = lab::tcp_session(lab.client(), host_port(8080), T).unwrap();
    session.request("learn").unwrap();

    let counter = |ns: &portfwd_lab::Ns, path: &str| -> u64 {
        lab.sh(ns, &format!("cat {path}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let bridge_tx = "/sys/class/net/docker0/statistics/tx_packets";
    let container_rx = "/sys/class/net/eth0/statistics/rx_packets";
    let (bridge_before, rx_before) = (
        counter(lab.host(), bridge_tx),
        counter(&c1.ns, container_rx),
    );
    for i in 0..50 {
        let line = format!("direct-{i}");
        let reply = session.request(&line).unwrap();
        assert!(reply.trim_end().ends_with(&line), "{reply}");
    }
    let bridge_sent = counter(lab.host(), bridge_tx) - bridge_before;
    let received = counter(&c1.ns, container_rx) - rx_before;
    assert!(
        received >= 50,
        "the container received {received} frames for 50 requests"
    );
    // A few stray frames (neighbour probes, IPv6) may still cross the bridge; 50+ must not.
    assert!(
        bridge_sent < 10,
        "{bridge_sent} frames crossed the bridge for 50 requests (the container got {received})"
    );
    drop(d);
}
