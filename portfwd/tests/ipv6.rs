//! End-to-end tests of IPv6 forwarding: the dual-stack lab (client fd00:77::2, host fd00:77::1,
//! containers fd00:17::N behind docker0), real servers in the containers, the real daemon and CLI
//! in the host (tc mode, or the mode in `PORTFWD_E2E_MODE`).
//!
//! These need root. Under `CI=true` a test that cannot run fails; elsewhere it says it skipped.
mod support;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use portfwd_lab::{self as lab, Lab};
use support::{Daemon, require_root};

const T: Duration = Duration::from_secs(5);
/// How long to wait for something that must not arrive.
const SHORT: Duration = Duration::from_millis(700);

/// The host's IPv6 address on the client's network, port `port`.
fn host6(port: u16) -> SocketAddr {
    SocketAddr::from((Lab::HOST_ADDR6, port))
}

fn at(addr: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::from((addr, port))
}

/// The datapath's verdict counter named `reason`, from `portfwd status --json` (all hooks).
fn verdict(d: &Daemon, lab: &Lab, reason: &str) -> u64 {
    d.status_json(lab)["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reason"] == reason)
        .unwrap_or_else(|| panic!("no verdict counter {reason}"))["packets"]
        .as_u64()
        .unwrap()
}

/// `portfwd list --json`'s listen column.
fn listed(d: &Daemon, lab: &Lab) -> Vec<String> {
    d.list_json(lab)
        .iter()
        .map(|f| f["listen"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn tcp_and_udp_reach_the_target_with_the_clients_ipv6_address() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6basic").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let tcp = lab::tcp_server(&c1.ns, at(c1.addr6, 3000), "c1:3000").unwrap();
    let udp = lab::udp_server(&c1.ns, at(c1.addr6, 5353), "c1:5353").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"[{a}]:3000\"\n  - listen: \"[{h}]:5300/udp\"\n    to: \"[{a}]:5353\"\n",
            a = c1.addr6,
            h = Lab::HOST_ADDR6,
        ),
    );
    support::assert_no_netfilter_nat(&lab);

    // TCP: a session of several lines, the target sees the client's own address and port.
    let mut session = lab::tcp_session(lab.client(), host6(8080), T).unwrap();
    let local = session.local_addr();
    assert_eq!(local.ip(), IpAddr::from(Lab::CLIENT_ADDR6));
    for i in 0..3 {
        let reply = session.request(&format!("line {i}")).unwrap();
        assert_eq!(reply, format!("c1:3000 from {local}: line {i}"));
    }
    assert_eq!(session.peer_addr(), host6(8080));
    session.close();
    assert_eq!(tcp.peers()[0].ip(), IpAddr::from(Lab::CLIENT_ADDR6));

    // UDP, on a published host address; udp_request checks the reply comes from [host]:5300.
    let reply = lab::udp_request(lab.client(), host6(5300), "q", T).unwrap();
    assert!(reply.starts_with("c1:5353 from [fd00:77::2]:"), "{reply}");
    assert_eq!(udp.peers()[0].ip(), IpAddr::from(Lab::CLIENT_ADDR6));

    // Shown as [addr]:port everywhere.
    assert_eq!(listed(&d, &lab), ["[::]:8080/tcp", "[fd00:77::1]:5300/udp"]);
    let list = d.cli(&lab, &["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("[::]:8080/tcp") && text.contains("[fd00:17::2]:3000"),
        "{text}"
    );
    let entries = d.list_json(&lab);
    assert!(
        entries[0]["packets_to_target"].as_u64().unwrap() >= 4,
        "{entries:?}"
    );
    assert!(
        entries[0]["packets_to_client"].as_u64().unwrap() >= 4,
        "{entries:?}"
    );

    let status = d.status_json(&lab);
    let hosts: Vec<&str> = status["host_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in ["10.77.0.1", "fd00:77::1", "fd00:17::1"] {
        assert!(hosts.contains(&a), "{a} missing from {hosts:?}");
    }
    assert!(
        !hosts.iter().any(|a| a.starts_with("fe80")),
        "link-local addresses are not host addresses: {hosts:?}"
    );
    let fill = |name: &str| {
        status["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no map {name} in status"))["entries"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(fill("PF_FORWARDS6"), 2);
    assert_eq!(fill("PF_FORWARDS"), 0);
    assert!(fill("PF_FLOWS6") >= 2, "a flow per forward");
    assert!(fill("PF_HOST_ADDRS6") >= 2);
    let metrics_free = d.cli(&lab, &["status"]);
    assert!(metrics_free.status.success(), "{metrics_free:?}");
}

#[test]
fn ipv4_and_ipv6_on_the_same_port_are_two_forwards() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6dual").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let _v4 = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "v4").unwrap();
    let _v6 = lab::tcp_server(&c2.ns, at(c2.addr6, 3000), "v6").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"{}:3000\"\n  - listen: \"8080\"\n    to: \"[{}]:3000\"\n",
            c1.addr, c2.addr6
        ),
    );
    let reply = lab::tcp_request(
        lab.client(),
        SocketAddr::from((Lab::HOST_ADDR, 8080)),
        "a",
        T,
    )
    .unwrap();
    assert!(reply.starts_with("v4 from 10.77.0.2:"), "{reply}");
    let reply = lab::tcp_request(lab.client(), host6(8080), "b", T).unwrap();
    assert!(reply.starts_with("v6 from [fd00:77::2]:"), "{reply}");
    assert_eq!(listed(&d, &lab), ["8080/tcp", "[::]:8080/tcp"]);

    // A bare port names the IPv4 one; `[::]` the IPv6 one.
    let out = d.cli(&lab, &["del", "[::]:8080"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listed(&d, &lab), ["8080/tcp"]);
    assert!(lab::tcp_request(lab.client(), host6(8080), "c", SHORT).is_err());
    let reply = lab::tcp_request(
        lab.client(),
        SocketAddr::from((Lab::HOST_ADDR, 8080)),
        "d",
        T,
    )
    .unwrap();
    assert!(reply.starts_with("v4 from"), "{reply}");
}

#[test]
fn a_forward_added_at_runtime_works_until_deleted() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6add").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    assert_eq!(c1.addr6.to_string(), "fd00:17::2");
    let _s = lab::tcp_server(&c1.ns, at(c1.addr6, 3000), "c1:3000").unwrap();
    let d = Daemon::start(&mut lab, "forwards: []\n");
    assert!(lab::tcp_request(lab.client(), host6(8081), "x", SHORT).is_err());

    let out = d.cli(&lab, &["add", "[::]:8081", "[fd00:17::2]:3000"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "published [::]:8081/tcp -> [fd00:17::2]:3000"
    );
    let reply = lab::tcp_request(lab.client(), host6(8081), "hi", T).unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let saved = std::fs::read_to_string(&d.config).unwrap();
    assert!(
        saved.contains("\"[::]:8081/tcp\"") && saved.contains("\"[fd00:17::2]:3000\""),
        "{saved}"
    );

    // A bare port finds the IPv6 forward when it is the only one on that port; `0.0.0.0`
    // names IPv4 only, so it leaves the IPv6 forward alone.
    let out = d.cli(&lab, &["del", "0.0.0.0:8081"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(listed(&d, &lab), ["[::]:8081/tcp"]);
    let out = d.cli(&lab, &["del", "8081"]);
    assert!(out.status.success(), "{out:?}");
    assert!(listed(&d, &lab).is_empty());
    assert!(lab::tcp_request(lab.client(), host6(8081), "x", SHORT).is_err());
}

#[test]
fn ipv6_to_ipv4_is_refused_with_one_line() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6refuse").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let d = Daemon::start(&mut lab, "forwards: []\n");
    for (listen, to, message) in [
        (
            "[::]:8082",
            c1.addr.to_string() + ":3000",
            "portfwd: [::]:8082/tcp is IPv6 but 172.17.0.2:3000 is IPv4; portfwd does not translate between IPv4 and IPv6: publish an IPv4 target on an IPv4 host address or a bare port, or give the container's IPv6 address",
        ),
        (
            "10.77.0.1:8082",
            "[fd00:17::2]:3000".to_owned(),
            "portfwd: 10.77.0.1:8082/tcp is IPv4 but [fd00:17::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
        ),
        // `0.0.0.0` is IPv4 only, as `docker run -p 0.0.0.0:8082:3000` is.
        (
            "0.0.0.0:8082",
            "[fd00:17::2]:3000".to_owned(),
            "portfwd: 0.0.0.0:8082/tcp is IPv4 but [fd00:17::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
        ),
    ] {
        let out = d.cli(&lab, &["add", listen, &to]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{message}\n"));
    }
    assert!(listed(&d, &lab).is_empty(), "nothing was published");
}

#[test]
fn an_ipv6_range_maps_port_by_port() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6range").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _servers: Vec<_> = [9000u16, 9005, 9010]
        .into_iter()
        .map(|p| lab::tcp_server(&c1.ns, at(c1.addr6, p), &format!("c1:{p}")).unwrap())
        .collect();
    let _u = lab::udp_server(&c1.ns, at(c1.addr6, 54), "c1:54").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"[::]:8000-8010\"\n    to: \"[{a}]:9000-9010\"\n  - listen: \"5300-5301/udp\"\n    to: \"[{a}]:53-54\"\n",
            a = c1.addr6
        ),
    );
    for (host, target) in [(8000u16, 9000u16), (8005, 9005), (8010, 9010)] {
        let reply = lab::tcp_request(lab.client(), host6(host), "hi", T)
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(
            reply.starts_with(&format!("c1:{target} from [fd00:77::2]:")),
            "host port {host} must reach {target}: {reply}"
        );
    }
    let reply = lab::udp_request(lab.client(), host6(5301), "q", T).unwrap();
    assert!(reply.starts_with("c1:54 from [fd00:77::2]:"), "{reply}");
    for port in [7999u16, 8011] {
        assert!(lab::tcp_request(lab.client(), host6(port), "x", SHORT).is_err());
    }
    assert_eq!(
        listed(&d, &lab),
        ["[::]:8000-8010/tcp", "[::]:5300-5301/udp"]
    );
}

#[test]
fn an_ipv6_allowlist_drops_and_counts_other_sources() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6allow").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let client = lab.client().clone();
    let _s = lab::tcp_server(&c1.ns, at(c1.addr6, 3000), "c1:3000").unwrap();
    let _u = lab::udp_server(&c1.ns, at(c1.addr6, 5353), "c1:5353").unwrap();
    // The mixed list: the IPv4 prefix never matches an IPv6 forward.
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"[{a}]:3000\"\n    allow: [\"10.0.0.0/8\", \"fd00:77::2/128\"]\n  - listen: \"5300/udp\"\n    to: \"[{a}]:5353\"\n    allow: [\"10.0.0.0/8\", \"fd00:77::2\"]\n",
            a = c1.addr6
        ),
    );
    let reply = lab::tcp_request(&client, host6(8080), "ok", T).unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let before = verdict(&d, &lab, "drop_source_not_allowed");

    // From fd00:77::99 (the client's source for the host from now on): the SYN is dropped, so
    // the connection times out, and so is a datagram.
    lab.exec(
        &client,
        &[
            "ip",
            "addr",
            "add",
            "fd00:77::99/64",
            "dev",
            "eth0",
            "nodad",
        ],
    )
    .unwrap();
    lab.exec(
        &client,
        &[
            "ip",
            "-6",
            "route",
            "replace",
            "fd00:77::1/128",
            "dev",
            "eth0",
            "src",
            "fd00:77::99",
        ],
    )
    .unwrap();
    let err = lab::tcp_request(&client, host6(8080), "no", SHORT).unwrap_err();
    assert!(
        !format!("{err:#}").contains("refused"),
        "dropped, not refused: {err:#}"
    );
    assert!(lab::udp_request(&client, host6(5300), "no", SHORT).is_err());
    let after = verdict(&d, &lab, "drop_source_not_allowed");
    assert!(after >= before + 2, "drops counted: {before} -> {after}");
    let listed = d.list_json(&lab);
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["10.0.0.0/8", "fd00:77::2/128"])
    );
}

#[test]
fn an_icmpv6_error_reaches_the_client_translated() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6icmp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    // Nothing listens on the target port: the container answers port unreachable, which the
    // client's connected socket sees as ECONNREFUSED only if the error's source and its quoted
    // packet are translated back to the published address and port.
    let _d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"5400/udp\"\n    to: \"[{}]:3999\"\n",
            c1.addr6
        ),
    );
    let err = lab.client().run(|| {
        let s = UdpSocket::bind("[::]:0").unwrap();
        s.connect(host6(5400)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.send(b"anyone?\n").unwrap();
        s.recv(&mut [0u8; 64]).unwrap_err()
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ECONNREFUSED),
        "expected ECONNREFUSED from a translated ICMPv6 port unreachable, got {err}"
    );
}

#[test]
fn check_probes_ipv6_targets_and_finds_an_app_on_loopback_only() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6check").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let _ok = lab::tcp_server(&c1.ns, at(Ipv6Addr::UNSPECIFIED, 3000), "ok").unwrap();
    let _lo = lab::tcp_server(&c2.ns, at(Ipv6Addr::LOCALHOST, 3000), "lo").unwrap();
    let d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"[{}]:3000\"\n  - listen: \"8081\"\n    to: \"[{}]:3000\"\n",
            c1.addr6, c2.addr6
        ),
    );
    let out = d.cli(&lab, &["check", "--timeout", "500ms", "--json", "all"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = |listen: &str| {
        v["forwards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["listen"] == listen)
            .unwrap_or_else(|| panic!("no {listen} in {v:#}"))
            .clone()
    };
    let kinds = |f: &serde_json::Value| -> Vec<String> {
        f["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let ok = report("[::]:8080/tcp");
    assert_eq!(
        (ok["verdict"].as_str(), kinds(&ok)),
        (Some("ok"), vec!["healthy".to_owned()]),
        "{ok:#}"
    );
    // Other labs running at the same time hold fd00:17::2 too: the neighbour's MAC tells.
    assert_eq!(ok["container"]["name"], c1.ns.name.as_str());
    let lo = report("[::]:8081/tcp");
    assert_eq!(kinds(&lo), ["loopback_only"], "{lo:#}");

    let out = d.cli(&lab, &["check", "--timeout", "500ms", "[::]:8081"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[::]:8081/tcp -> [fd00:17::3]:3000"),
        "{text}"
    );
    assert!(text.contains("only on ::1 inside the container"), "{text}");
    assert!(
        text.contains("every address (::)"),
        "the fix names :: for IPv6: {text}"
    );
}

#[test]
fn ipv6_forwards_survive_a_daemon_restart_with_their_counters() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("v6restart").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _s = lab::tcp_server(&c1.ns, at(c1.addr6, 3000), "c1:3000").unwrap();
    let mut d = Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"8080\"\n    to: \"[{a}]:3000\"\n    allow: [\"fd00:77::/64\"]\n  - listen: \"[::]:8000-8001\"\n    to: \"[{a}]:3000-3001\"\n",
            a = c1.addr6
        ),
    );
    lab::tcp_request(lab.client(), host6(8080), "one", T).unwrap();
    let before = d.list_json(&lab)[0]["packets_to_target"].as_u64().unwrap();
    assert!(before > 0);

    // While no daemon runs, the pinned programs and maps keep forwarding.
    d.kill9();
    let reply = lab::tcp_request(lab.client(), host6(8080), "two", T).unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let reply = lab::tcp_request(lab.client(), host6(8000), "three", T).unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");

    // The new daemon adopts the IPv6 entries as they are: same slots, counters kept.
    d.restart();
    let after = d.list_json(&lab)[0]["packets_to_target"].as_u64().unwrap();
    assert!(after > before, "counters carried over: {before} -> {after}");
    assert!(
        d.log_text().contains("kept pinned forward"),
        "{}",
        d.log_text()
    );
    let reply = lab::tcp_request(lab.client(), host6(8080), "four", T).unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");
}
