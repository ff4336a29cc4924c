//! Port ranges and source allowlists (tc mode, or the mode in `PORTFWD_E2E_MODE`).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use crate::support::{self, SHORT, Scenario, T, host_port};
use portfwd_lab::{self as lab, Lab};

#[test]
fn a_range_maps_port_by_port_and_lists_as_one_row() {
    require_root!();
    let s = Scenario::new("range")
        .containers(1)
        .tcp_server("c1", 9000)
        .tcp_server("c1", 9005)
        .tcp_server("c1", 9010)
        .udp_server("c1", 53)
        .udp_server("c1", 54)
        .forward("8000-8010", "c1:9000-9010")
        .forward("5300-5301/udp", "c1:53-54")
        .daemon();

    for (host, target) in [(8000u16, 9000u16), (8005, 9005), (8010, 9010)] {
        let reply = s
            .client_tcp(host_port(host), "hi")
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(
            reply.contains(&format!("c1:{target}"))
                && reply.contains(&format!("from {}:", Lab::CLIENT_ADDR)),
            "host port {host} must reach target port {target} with the client's address: {reply}"
        );
    }
    for (host, target) in [(5300u16, 53u16), (5301, 54)] {
        // udp_request also checks that the reply comes from the published port.
        let reply = s
            .client_udp(host_port(host), "q")
            .unwrap_or_else(|e| panic!("{host}/udp: {e}"));
        assert!(reply.contains(&format!("c1:{target}")), "{reply}");
    }
    // Just past either end is not published.
    for port in [7999u16, 8011] {
        assert!(
            lab::tcp_request(s.lab.client(), host_port(port), "x", SHORT).is_err(),
            "{port} is outside the range"
        );
    }

    let list = s.list_json();
    assert_eq!(list.len(), 2, "{list:?}");
    let tcp = list
        .iter()
        .find(|f| f["listen"] == "8000-8010/tcp")
        .unwrap();
    assert_eq!(tcp["to"], format!("{}:9000-9010", s.c("c1").addr));
    assert_eq!(
        tcp["new_flows"].as_u64().unwrap(),
        3,
        "one counter set: {tcp}"
    );
    let udp = list
        .iter()
        .find(|f| f["listen"] == "5300-5301/udp")
        .unwrap();
    assert_eq!(udp["new_flows"].as_u64().unwrap(), 2, "{udp}");

    let table = s.cli(&["list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("8000-8010/tcp"))
            .count(),
        1,
        "{table}"
    );
    support::assert_no_netfilter_nat(&s.lab);
}

#[test]
fn ranges_are_added_and_removed_at_runtime_and_overlaps_refused() {
    require_root!();
    let s = Scenario::new("rangecli")
        .containers(1)
        .tcp_server("c1", 15000)
        .daemon();
    let c1 = s.c("c1");

    // A 10,000-port range is one forward.
    let out = s.cli(&["add", "10000-19999", &format!("{}:10000-19999", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    let reply = s.client_tcp(host_port(15000), "mid").unwrap();
    assert!(reply.ends_with("mid"), "{reply}");

    // Overlapping it, or a range of another length, is refused and changes nothing.
    for (listen, to, message) in [
        (
            "15000",
            format!("{}:1", c1.addr),
            format!(
                "15000/tcp overlaps 10000-19999/tcp, already published to {}:10000-19999",
                c1.addr
            ),
        ),
        (
            "19999-20001",
            format!("{}:1-3", c1.addr),
            format!(
                "19999-20001/tcp overlaps 10000-19999/tcp, already published to {}:10000-19999",
                c1.addr
            ),
        ),
        (
            "20000-20010",
            format!("{}:80", c1.addr),
            format!(
                "20000-20010/tcp covers 11 ports but {}:80 covers 1; a range maps port by port, so both sides must be the same length",
                c1.addr
            ),
        ),
    ] {
        let out = s.cli(&["add", listen, &to]);
        assert!(!out.status.success(), "{listen} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&message), "{listen}: {err}");
    }
    // The same port on another protocol does not overlap.
    let out = s.cli(&["add", "15000/udp", &format!("{}:1", c1.addr)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.list_json().len(), 2);

    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(saved.contains("\"10000-19999/tcp\""), "{saved}");

    let out = s.cli(&["del", "10000-19999"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        lab::tcp_request(s.lab.client(), host_port(15000), "gone", SHORT).is_err(),
        "the range is gone"
    );
}

#[test]
fn cross_family_and_sctp_are_refused_with_one_line() {
    require_root!();
    let s = Scenario::new("v6refuse").daemon();
    for (args, message) in [
        (
            ["add", "[::1]:8080", "172.17.0.2:80"],
            "[::1]:8080/tcp is IPv6 but 172.17.0.2:80 is IPv4; portfwd does not translate between IPv4 and IPv6",
        ),
        (
            ["add", "8080", "fd00::2:3000"],
            "'fd00::2:3000': write an IPv6 address in brackets before its port",
        ),
        (
            ["add", "8080/sctp", "172.17.0.2:80"],
            "sctp is not supported yet: portfwd forwards tcp and udp",
        ),
    ] {
        let out = s.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(message) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    assert!(s.list_json().is_empty());
}

/// Sends one UDP datagram to `to` from `from` (an address of the client) and waits up to `wait`
/// for a reply.
fn udp_from(lab: &Lab, from: Ipv4Addr, to: SocketAddr, wait: Duration) -> Option<String> {
    lab.client().run(move || {
        let s = UdpSocket::bind((from, 0)).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(b"who\n", to).unwrap();
        let mut buf = [0u8; 512];
        s.recv_from(&mut buf)
            .ok()
            .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

#[test]
fn allowlists_admit_listed_sources_and_drop_and_count_the_rest() {
    require_root!();
    let client_32 = format!("{}/32", Lab::CLIENT_ADDR);
    let setup = Scenario::new("allow")
        .containers(1)
        .tcp_server("c1", 3000)
        .udp_server("c1", 53)
        .forward_allow("5353/udp", "c1:53", &[&client_32, "192.0.2.0/24"])
        .forward_allow("8080", "c1:3000", &["10.77.0.0/30"]);
    // A second client address on the same LAN, outside the allowlist.
    let other = Ipv4Addr::new(10, 77, 0, 3);
    let lab = setup.lab();
    lab.sh(lab.client(), &format!("ip addr add {other}/24 dev eth0"))
        .unwrap();
    let s = setup.daemon();
    let (lab, c1) = (&s.lab, s.c("c1"));
    let list = s.list_json();
    assert_eq!(
        list[0]["allow"],
        serde_json::json!([client_32, "192.0.2.0/24"])
    );

    // Allowed: the client's own address (UDP, /32) and a prefix holding it (TCP).
    let allowed = udp_from(lab, Lab::CLIENT_ADDR, host_port(5353), T);
    assert!(
        allowed.as_deref().is_some_and(|r| r.contains("c1:53")),
        "{allowed:?}"
    );
    let reply = s.client_tcp(host_port(8080), "in").unwrap();
    assert!(reply.ends_with("in"), "{reply}");

    // Not allowed: dropped before translation, and counted.
    let before = s.verdict("drop_source_not_allowed");
    for _ in 0..3 {
        assert_eq!(udp_from(lab, other, host_port(5353), SHORT), None);
    }
    let after = s.verdict("drop_source_not_allowed");
    assert!(
        after >= before + 3,
        "3 datagrams from {other} must be counted as drop_source_not_allowed: {before} -> {after}"
    );
    let udp = &s.list_json()[0];
    assert_eq!(
        udp["packets_to_target"].as_u64().unwrap(),
        1,
        "only the allowed datagram was forwarded: {udp}"
    );

    // Replace the TCP forward's allowlist from the CLI: the client is now outside it.
    let out = s.cli(&["del", "8080"]);
    assert!(out.status.success(), "{out:?}");
    let to = format!("{}:3000", c1.addr);
    let out = s.cli(&[
        "add",
        "8080",
        &to,
        "--allow",
        "192.0.2.0/24",
        "--allow",
        "198.51.100.7",
    ]);
    assert!(out.status.success(), "{out:?}");
    let before = s.verdict("drop_source_not_allowed");
    assert!(
        lab::tcp_request(lab.client(), host_port(8080), "out", SHORT).is_err(),
        "the client is no longer allowed"
    );
    assert!(s.verdict("drop_source_not_allowed") > before);
    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(
        saved.contains("allow: [\"192.0.2.0/24\", \"198.51.100.7/32\"]"),
        "{saved}"
    );

    // A bad prefix is refused by the CLI with one line.
    let out = s.cli(&["add", "9090", &to, "--allow", "10.0.0.1/8"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow: '10.0.0.1/8' has bits set past /8: write the network, 10.0.0.0/8"),
        "{err}"
    );
    support::assert_no_netfilter_nat(lab);
}
