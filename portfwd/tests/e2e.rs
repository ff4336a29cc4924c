//! End-to-end tests: a lab of network namespaces (a client, a host with a docker0-like bridge,
//! containers), real TCP/UDP servers in the containers, the real daemon and CLI in the host.
//!
//! These need root. Under `CI=true` a test that cannot run fails; elsewhere it says it skipped.
mod support;

use std::{net::SocketAddr, time::Duration};

use support::{Daemon, require_root};
use xtask::lab::{self, Lab};

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
