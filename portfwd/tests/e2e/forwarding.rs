//! Forwarding: TCP and UDP to a container with the client's address kept, forwards added and
//! removed at runtime, what is not ours left alone, interfaces that come later, the daemon's
//! exit, XDP mode, and a datapath that survives the daemon (pinned state).

use std::{net::SocketAddr, time::Duration};

use crate::support::{self, Scenario, T, host_port, tcx_programs};
use portfwd_lab::{self as lab, Lab};

#[test]
fn tcp_is_forwarded_with_the_client_address_kept() {
    require_root!();
    let s = Scenario::new("tcp")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();

    let reply = s.client_tcp(host_port(8080), "hello").unwrap();
    assert!(
        reply.contains(&format!("from {}:", Lab::CLIENT_ADDR)) && reply.ends_with("hello"),
        "server must see the client's own address, got: {reply}"
    );

    let list = s.list_json();
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

    support::assert_no_netfilter_nat(&s.lab);
}

#[test]
fn udp_is_forwarded_and_replies_come_from_the_published_port() {
    require_root!();
    let s = Scenario::new("udp")
        .containers(1)
        .udp_server("c1", 53)
        .forward("5353/udp", "c1:53")
        .daemon();
    // udp_request checks that the reply's source is the address it sent to.
    let reply = s.client_udp(host_port(5353), "query").unwrap();
    assert!(
        reply.contains(&format!("from {}:", Lab::CLIENT_ADDR)),
        "{reply}"
    );
    support::assert_no_netfilter_nat(&s.lab);
}

#[test]
fn add_and_del_at_runtime_take_effect_and_are_saved() {
    require_root!();
    let s = Scenario::new("adddel")
        .containers(2)
        .tcp_server("c1", 3000)
        .yaml("# operator's comment")
        .daemon();
    let (c1, c2) = (s.c("c1"), s.c("c2"));

    assert!(
        s.client_tcp(host_port(8080), "x").is_err(),
        "nothing published yet"
    );

    let out = s.cli(&["add", "8080", &format!("{}:3000", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    let reply = s.client_tcp(host_port(8080), "after add").unwrap();
    assert!(reply.ends_with("after add"), "{reply}");
    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(
        saved.contains("8080") && saved.contains(&format!("{}:3000", c1.addr)),
        "{saved}"
    );
    assert!(
        saved.contains("# operator's comment"),
        "comments survive: {saved}"
    );

    // The same port again is refused with a clear message, and nothing changes.
    let out = s.cli(&["add", "8080", &format!("{}:3000", c2.addr)]);
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

    let out = s.cli(&["del", "8080"]);
    assert!(out.status.success(), "{out:?}");
    assert!(s.client_tcp(host_port(8080), "x").is_err(), "unpublished");
    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(!saved.contains(&format!("{}:3000", c1.addr)), "{saved}");

    let out = s.cli(&["del", "8080"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 8080/tcp is not published"));
}

#[test]
fn many_sequential_connections() {
    require_root!();
    let s = Scenario::new("many")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let n = 300;
    for i in 0..n {
        let reply = s
            .client_tcp(host_port(8080), &format!("req {i}"))
            .unwrap_or_else(|e| panic!("connection {i} of {n}: {e}"));
        assert!(reply.ends_with(&format!("req {i}")), "{reply}");
    }
    let list = s.list_json();
    assert!(
        list[0]["new_flows"].as_u64().unwrap() >= n as u64 / 2,
        "{list:?}"
    );
}

#[test]
fn traffic_routed_through_the_host_is_not_touched() {
    require_root!();
    // A server on the container's own 8080, and a forward of the host's 8080 to its 3000.
    let s = Scenario::new("routed")
        .containers(1)
        .tcp_server("c1", 8080)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    // The client routes 172.17.0.0/16 through the host (its default route). To the container's
    // address: routed, so it must reach port 8080 itself, not 3000.
    let reply = s
        .client_tcp(SocketAddr::from((s.c("c1").addr, 8080)), "routed")
        .unwrap();
    assert!(
        reply.contains(":8080"),
        "routed traffic was translated: {reply}"
    );
    // To the host's address: published, so it reaches 3000.
    let reply = s.client_tcp(host_port(8080), "published").unwrap();
    assert!(reply.contains(":3000"), "{reply}");
}

#[test]
fn interfaces_and_addresses_that_appear_later_are_followed() {
    require_root!();
    let mut s = Scenario::new("later").daemon();
    // A container created after the daemon: its veth must be attached so replies translate.
    let c1 = s.lab.add_container("c1").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "c1:3000").unwrap();
    let out = s.cli(&["add", "8080", &format!("{}:3000", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    support::eventually(|| s.client_tcp(host_port(8080), "late").is_ok())
        .expect("a forward to a container created after the daemon works");

    // A host address added later is published too.
    let lab = &s.lab;
    lab.exec(
        lab.host(),
        &["ip", "addr", "add", "10.77.0.100/24", "dev", "eth0"],
    )
    .unwrap();
    let extra = SocketAddr::from(([10, 77, 0, 100], 8080));
    support::eventually(|| s.client_tcp(extra, "new addr").is_ok())
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
    require_root!();
    let out = Scenario::new("badcfg")
        .forward("8080", "172.17.0.2")
        .run_to_exit(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portfwd.yaml:3"), "{err}");
    assert!(err.contains("forwards[0].to"), "{err}");
}

#[test]
fn sigterm_detaches_and_exits_zero() {
    require_root!();
    let mut s = Scenario::new("term")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    s.client_tcp(host_port(8080), "before").unwrap();
    let status = s.d.stop(&mut s.lab);
    assert!(status.success(), "exit status {status:?}");
    // Detached: the host's own stack answers port 8080 now, and nothing listens there.
    let err = s.client_tcp(host_port(8080), "after").unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!s.d.socket.exists(), "socket file removed");
}

#[test]
fn icmp_errors_about_a_forwarded_flow_reach_the_client_translated() {
    require_root!();
    // Nothing listens on the target port: the container answers with ICMP port unreachable,
    // quoting client -> 172.17.0.2:53. A connected socket on the client only learns of it if the
    // quote is translated back to client -> host:5353 and the error comes from the host.
    let s = Scenario::new("icmp")
        .containers(1)
        .forward("5353/udp", "c1:53")
        .daemon();
    let err = s.lab.client().run(|| {
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

/// The interface named `name` in a `status --json` report.
fn interface<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not attached: {status}"))
}

#[test]
fn xdp_mode_puts_native_xdp_in_front_of_tc() {
    require_root!();
    let s = Scenario::new("xdp")
        .containers(1)
        .tcp_server("c1", 3000)
        .yaml("interfaces: [eth0]")
        .forward("8080", "c1:3000")
        .mode("xdp")
        .daemon();
    let reply = s.client_tcp(host_port(8080), "via xdp").unwrap();
    assert!(reply.ends_with("via xdp"), "{reply}");

    let status = s.status_json();
    assert_eq!(interface(&status, "eth0")["attach"], "xdp+tc", "{status}");
    // The forwarded connection is a flow, and the count agrees with the flow tables' rows.
    let flow_rows: u64 = status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"].as_str().unwrap().starts_with("PF_FLOWS"))
        .map(|m| m["entries"].as_u64().unwrap())
        .sum();
    assert!(status["flows"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["flows"].as_u64().unwrap(), flow_rows, "{status}");
    // Not on the container's host-side veth, which exposes nothing: XDP there would only
    // convert frames for tc and cost GRO.
    let veth = interface(&status, &s.c("c1").host_veth);
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
    require_root!();
    // Every interface is exposed, docker0 included, and a bridge has no native XDP.
    let out = Scenario::new("xdpno").run_to_exit(&["--mode", "xdp"]);
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
    require_root!();
    let mut s = Scenario::new("survive")
        .containers(1)
        .tcp_server("c1", 3000)
        .udp_server("c1", 53)
        .forward("8080", "c1:3000")
        .forward("5353/udp", "c1:53")
        .daemon();

    // One long-lived TCP connection and one UDP flow (one socket, same 5-tuple throughout).
    let mut session = lab::tcp_session(s.lab.client(), host_port(8080), T).unwrap();
    let udp = s
        .lab
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
    let before = s.list_json();

    for i in 0..20 {
        s.d.kill9();
        if i == 0 {
            // Every map is pinned, so that the next daemon's programs see the same state from
            // their first packet: LPM tries (port ranges, allowlists) too, which were once left
            // out and came back empty until the config was applied again.
            let pinned: Vec<String> = std::fs::read_dir(s.d.pin_dir.join("maps"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            use portfwd_common::maps::{ALLOW, ALLOW6, FLOWS, FORWARDS, RANGES, RANGES6};
            for map in [FORWARDS, FLOWS, RANGES, ALLOW, RANGES6, ALLOW6] {
                assert!(
                    pinned.iter().any(|p| p == map),
                    "{map} not pinned: {pinned:?}"
                );
            }
        }
        // Nobody is running: the pinned links keep the programs attached.
        exchange(&mut session, format!("while-dead-{i}"));
        s.d.restart();
        exchange(&mut session, format!("after-restart-{i}"));
    }
    assert!(failures.is_empty(), "failed exchanges: {failures:#?}");

    // Counters carried over (the same slots), and grew by the 40 TCP exchanges.
    let after = s.list_json();
    let tcp = |l: &[serde_json::Value]| {
        l.iter()
            .find(|f| f["listen"] == "8080/tcp")
            .map(|f| f["packets_to_target"].as_u64().unwrap())
            .unwrap()
    };
    assert!(tcp(&after) >= tcp(&before) + 40, "{before:?} -> {after:?}");
    assert_eq!(after.len(), 2, "{after:?}");

    // Never attached twice: one portfwd tc program on the client-facing interface.
    let names = tcx_programs(s.lab.host(), "eth0", aya::programs::TcAttachType::Ingress);
    // (The kernel keeps the first 15 bytes of the name: portfwd_tc_ingr.)
    assert!(
        names.len() == 1 && names[0].starts_with("portfwd_tc"),
        "tcx ingress programs on eth0: {names:?}"
    );
    let status = s.status_json();
    let interfaces = status["interfaces"].as_array().unwrap();
    let pins: Vec<String> = std::fs::read_dir(s.d.pin_dir.join("links"))
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
    assert!(s.d.stop(&mut s.lab).success());
    assert_eq!(
        std::fs::read_dir(s.d.pin_dir.join("links"))
            .unwrap()
            .count(),
        0
    );
    let out = s.d.cleanup();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !s.d.pin_dir.join("maps").exists(),
        "maps still pinned after --cleanup"
    );
}

/// Issue #20: `max_flows` sizes the flow tables (`status` shows it); a reload that changes it
/// only warns; a restart with the new size (after `kill -9`, so the previous programs still run
/// on the old tables while it loads) carries the flows over, and the connections go on.
/// `--max-flows` is checked like the config key.
#[test]
fn a_restart_with_another_max_flows_carries_the_flows_over() {
    require_root!();
    let mut s = Scenario::new("maxflows")
        .containers(1)
        .tcp_server("c1", 3000)
        .udp_server("c1", 53)
        .yaml("max_flows: 8192")
        .forward("8080", "c1:3000")
        .forward("5353/udp", "c1:53")
        .daemon();
    // The kernel rounds a size up to a multiple of the possible CPUs.
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    let kernel_size = |n: u64| n.div_ceil(cpus) * cpus;
    let tables = |s: &Scenario| -> Vec<(String, u64, u64)> {
        s.status_json()["flow_tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let n = |k: &str| t[k].as_u64().unwrap();
                (
                    t["name"].as_str().unwrap().to_owned(),
                    n("entries"),
                    n("max_entries"),
                )
            })
            .collect()
    };
    let caps = |s: &Scenario| -> Vec<u64> { tables(s).iter().map(|t| t.2).collect() };
    assert_eq!(caps(&s), [kernel_size(8192); 4]);

    let mut session = lab::tcp_session(s.lab.client(), host_port(8080), T).unwrap();
    let udp = s
        .lab
        .client()
        .run(|| std::net::UdpSocket::bind((Lab::CLIENT_ADDR, 0)))
        .unwrap();
    udp.connect(host_port(5353)).unwrap();
    udp.set_read_timeout(Some(T)).unwrap();
    let exchange = |session: &mut lab::TcpSession, line: &str| {
        let r = session.request(line).unwrap();
        assert!(r.trim_end().ends_with(line), "TCP {line}: {r}");
        udp.send(line.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = udp.recv(&mut buf).unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(r.trim_end().ends_with(line), "UDP {line}: {r}");
    };
    exchange(&mut session, "before");
    exchange(&mut session, "established");

    // A reload with another size: a warning, the tables as they were.
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    std::fs::write(
        &s.d.config,
        text.replace("max_flows: 8192", "max_flows: 20000"),
    )
    .unwrap();
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let warned = support::eventually(|| s.d.log_text().contains("max_flows changed"));
    assert!(warned.is_ok(), "{}", s.d.log_text());
    assert_eq!(caps(&s), [kernel_size(8192); 4]);
    let before = tables(&s);

    // The restart: the new size, the flows carried over (the fill reads them before any new
    // packet), and the same connections go on.
    s.d.kill9();
    s.d.restart();
    let after = tables(&s);
    assert_eq!(
        after.iter().map(|t| t.2).collect::<Vec<_>>(),
        [kernel_size(20_000); 4]
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&a.0, a.1),
            (&b.0, b.1),
            "carried over: {before:?} -> {after:?}"
        );
    }
    let est = after.iter().find(|t| t.0 == "PF_FLOWS_EST").unwrap();
    // (The UDP flow may stay new in XDP mode, where XDP finishes its answers.)
    assert!(est.1 >= 1, "the TCP flow is established: {after:?}");
    let log = s.d.log_text();
    assert!(log.contains("flow table resized"), "{log}");
    exchange(&mut session, "after-resize");

    // `--max-flows` out of range is refused before anything is loaded.
    let out = Scenario::new("maxflowsbad").run_to_exit(&["--max-flows", "1000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1000 flows is too few: at least 1024"),
        "{err}"
    );
}

/// Issue #7: a daemon started over pinned state reconciles it with the config (adds what is
/// missing, removes what is stale), replaces a pinned map whose layout changed (as after an
/// upgrade) and says so, and `--cleanup` refuses while a daemon runs.
#[test]
fn restart_reconciles_pinned_state_with_the_config() {
    require_root!();
    let mut s = Scenario::new("reconcile")
        .containers(1)
        .tcp_server("c1", 3000)
        .tcp_server("c1", 4000)
        .forward("8080", "c1:3000")
        .daemon();
    let c1 = s.c("c1");
    let forward =
        |port: u16, to: u16| support::forward_yaml(&port.to_string(), &format!("{}:{to}", c1.addr));
    let out = s.d.cleanup();
    assert!(
        !out.status.success(),
        "--cleanup must refuse while the daemon runs"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a daemon is running"),
        "{out:?}"
    );
    s.client_tcp(host_port(8080), "one").unwrap();

    // While it is dead, the config changes: 8080 goes, 9090 comes.
    s.d.kill9();
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    std::fs::write(
        &s.d.config,
        text.replace(&forward(8080, 3000), &forward(9090, 4000)),
    )
    .unwrap();
    // And an "upgrade" finds a verdict counter map of another layout pinned.
    let verdicts = s.d.pin_dir.join("maps/PF_VERDICTS");
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
    s.d.restart();

    assert_eq!(s.listens(), ["9090/tcp"]);
    let reply = s.client_tcp(host_port(9090), "two").unwrap();
    assert!(reply.starts_with("c1:4000"), "{reply}");
    assert!(
        lab::tcp_request(
            s.lab.client(),
            host_port(8080),
            "gone",
            Duration::from_secs(1)
        )
        .is_err(),
        "the stale pinned forward 8080 must be gone"
    );
    let log = s.d.log_text();
    assert!(
        log.contains("removed a pinned forward the config no longer has")
            && log.contains("pinned map has another layout")
            && log.contains("took over the attachments of a previous daemon"),
        "{log}"
    );
    let status = s.cli(&["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
}

/// Once a container has sent a frame (its MAC learned on its veth bridge port), translated
/// packets for it go straight into its namespace (`bpf_redirect_peer`), not through the bridge:
/// the bridge's transmit counter stays flat while the container keeps receiving.
#[test]
fn translated_packets_skip_the_bridge_once_the_container_is_known() {
    require_root!();
    let s = Scenario::new("peer")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    let (lab, c1) = (&s.lab, s.c("c1"));
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
}
