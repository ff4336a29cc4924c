//! IPv6 forwarding: the dual-stack lab (client fd00:77::2, host fd00:77::1, containers
//! fd00:17::N behind docker0), tc mode or the mode in `PORTFWD_E2E_MODE`.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::{
    check::{forward_report, kinds},
    support::{self, SHORT, Scenario, T, at, eventually, host_port, host6},
};
use portfwd_lab::{self as lab, Lab};

#[test]
fn tcp_and_udp_reach_the_target_with_the_clients_ipv6_address() {
    require_root!();
    let s = Scenario::new("v6basic")
        .containers(1)
        .tcp_server6("c1", 3000)
        .udp_server6("c1", 5353)
        .forward("8080", "[c1]:3000")
        .forward(&format!("[{}]:5300/udp", Lab::HOST_ADDR6), "[c1]:5353")
        .daemon();
    let (tcp, udp) = (s.servers.tcp("c1:3000"), s.servers.udp("c1:5353"));
    support::assert_no_netfilter_nat(&s.lab);

    // TCP: a session of several lines, the target sees the client's own address and port.
    let mut session = lab::tcp_session(s.lab.client(), host6(8080), T).unwrap();
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
    let reply = s.client_udp(host6(5300), "q").unwrap();
    assert!(reply.starts_with("c1:5353 from [fd00:77::2]:"), "{reply}");
    assert_eq!(udp.peers()[0].ip(), IpAddr::from(Lab::CLIENT_ADDR6));

    // Shown as [addr]:port everywhere.
    assert_eq!(s.listens(), ["[::]:8080/tcp", "[fd00:77::1]:5300/udp"]);
    let list = s.cli(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("[::]:8080/tcp") && text.contains("[fd00:17::2]:3000"),
        "{text}"
    );
    let entries = s.list_json();
    assert!(
        entries[0]["packets_to_target"].as_u64().unwrap() >= 4,
        "{entries:?}"
    );
    assert!(
        entries[0]["packets_to_client"].as_u64().unwrap() >= 4,
        "{entries:?}"
    );

    let status = s.status_json();
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
    let metrics_free = s.cli(&["status"]);
    assert!(metrics_free.status.success(), "{metrics_free:?}");
}

#[test]
fn ipv4_and_ipv6_on_the_same_port_are_two_forwards() {
    require_root!();
    let s = Scenario::new("v6dual")
        .containers(2)
        .tcp_server_at("c1", "c1:3000", "v4")
        .tcp_server_at("c2", "[c2]:3000", "v6")
        .forward("8080", "c1:3000")
        .forward("8080", "[c2]:3000")
        .daemon();
    let reply = s.client_tcp(host_port(8080), "a").unwrap();
    assert!(reply.starts_with("v4 from 10.77.0.2:"), "{reply}");
    let reply = s.client_tcp(host6(8080), "b").unwrap();
    assert!(reply.starts_with("v6 from [fd00:77::2]:"), "{reply}");
    assert_eq!(s.listens(), ["8080/tcp", "[::]:8080/tcp"]);

    // A bare port names the IPv4 one; `[::]` the IPv6 one.
    let out = s.cli(&["del", "[::]:8080"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.listens(), ["8080/tcp"]);
    assert!(lab::tcp_request(s.lab.client(), host6(8080), "c", SHORT).is_err());
    let reply = s.client_tcp(host_port(8080), "d").unwrap();
    assert!(reply.starts_with("v4 from"), "{reply}");
}

#[test]
fn a_forward_added_at_runtime_works_until_deleted() {
    require_root!();
    let s = Scenario::new("v6add")
        .containers(1)
        .tcp_server6("c1", 3000)
        .daemon();
    assert_eq!(s.c("c1").addr6.to_string(), "fd00:17::2");
    assert!(lab::tcp_request(s.lab.client(), host6(8081), "x", SHORT).is_err());

    let out = s.cli(&["add", "[::]:8081", "[fd00:17::2]:3000"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "published [::]:8081/tcp -> [fd00:17::2]:3000"
    );
    let reply = s.client_tcp(host6(8081), "hi").unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(
        saved.contains("\"[::]:8081/tcp\"") && saved.contains("\"[fd00:17::2]:3000\""),
        "{saved}"
    );

    // A bare port finds the IPv6 forward when it is the only one on that port; `0.0.0.0`
    // names IPv4 only, so it leaves the IPv6 forward alone.
    let out = s.cli(&["del", "0.0.0.0:8081"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(s.listens(), ["[::]:8081/tcp"]);
    let out = s.cli(&["del", "8081"]);
    assert!(out.status.success(), "{out:?}");
    assert!(s.listens().is_empty());
    assert!(lab::tcp_request(s.lab.client(), host6(8081), "x", SHORT).is_err());
}

#[test]
fn ipv6_to_ipv4_is_refused_with_one_line() {
    require_root!();
    let s = Scenario::new("v6refuse").containers(1).daemon();
    for (listen, to, message) in [
        (
            "[::]:8082",
            s.c("c1").addr.to_string() + ":3000",
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
        let out = s.cli(&["add", listen, &to]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{message}\n"));
    }
    assert!(s.listens().is_empty(), "nothing was published");
}

#[test]
fn an_ipv6_range_maps_port_by_port() {
    require_root!();
    let s = Scenario::new("v6range")
        .containers(1)
        .tcp_server6("c1", 9000)
        .tcp_server6("c1", 9005)
        .tcp_server6("c1", 9010)
        .udp_server6("c1", 54)
        .forward("[::]:8000-8010", "[c1]:9000-9010")
        .forward("5300-5301/udp", "[c1]:53-54")
        .daemon();
    for (host, target) in [(8000u16, 9000u16), (8005, 9005), (8010, 9010)] {
        let reply = s
            .client_tcp(host6(host), "hi")
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(
            reply.starts_with(&format!("c1:{target} from [fd00:77::2]:")),
            "host port {host} must reach {target}: {reply}"
        );
    }
    let reply = s.client_udp(host6(5301), "q").unwrap();
    assert!(reply.starts_with("c1:54 from [fd00:77::2]:"), "{reply}");
    for port in [7999u16, 8011] {
        assert!(lab::tcp_request(s.lab.client(), host6(port), "x", SHORT).is_err());
    }
    assert_eq!(s.listens(), ["[::]:8000-8010/tcp", "[::]:5300-5301/udp"]);
}

#[test]
fn an_ipv6_allowlist_drops_and_counts_other_sources() {
    require_root!();
    // The mixed list: the IPv4 prefix never matches an IPv6 forward.
    let s = Scenario::new("v6allow")
        .containers(1)
        .tcp_server6("c1", 3000)
        .udp_server6("c1", 5353)
        .forward_allow("8080", "[c1]:3000", &["10.0.0.0/8", "fd00:77::2/128"])
        .forward_allow("5300/udp", "[c1]:5353", &["10.0.0.0/8", "fd00:77::2"])
        .daemon();
    let (lab, client) = (&s.lab, s.lab.client());
    let reply = s.client_tcp(host6(8080), "ok").unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let before = s.verdict("drop_source_not_allowed");

    // From fd00:77::99 (the client's source for the host from now on): the SYN is dropped, so
    // the connection times out, and so is a datagram.
    lab.sh(client, "ip addr add fd00:77::99/64 dev eth0 nodad")
        .unwrap();
    lab.sh(
        client,
        "ip -6 route replace fd00:77::1/128 dev eth0 src fd00:77::99",
    )
    .unwrap();
    let err = lab::tcp_request(client, host6(8080), "no", SHORT).unwrap_err();
    assert!(
        !format!("{err:#}").contains("refused"),
        "dropped, not refused: {err:#}"
    );
    assert!(lab::udp_request(client, host6(5300), "no", SHORT).is_err());
    let after = s.verdict("drop_source_not_allowed");
    assert!(after >= before + 2, "drops counted: {before} -> {after}");
    let listed = s.list_json();
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["10.0.0.0/8", "fd00:77::2/128"])
    );
}

#[test]
fn an_icmpv6_error_reaches_the_client_translated() {
    require_root!();
    // Nothing listens on the target port: the container answers port unreachable, which the
    // client's connected socket sees as ECONNREFUSED only if the error's source and its quoted
    // packet are translated back to the published address and port.
    let s = Scenario::new("v6icmp")
        .containers(1)
        .forward("5400/udp", "[c1]:3999")
        .daemon();
    let err = s.lab.client().run(|| {
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
    require_root!();
    let s = Scenario::new("v6check")
        .containers(2)
        .tcp_server_at("c1", "[::]:3000", "ok")
        .tcp_server_at("c2", "[::1]:3000", "lo")
        .forward("8080", "[c1]:3000")
        .forward("8081", "[c2]:3000")
        .daemon();
    let out = s.cli(&["check", "--timeout", "500ms", "--json", "all"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = forward_report(&v, "[::]:8080/tcp");
    assert_eq!(
        (ok["verdict"].as_str(), kinds(ok)),
        (Some("ok"), vec!["healthy".to_owned()]),
        "{ok:#}"
    );
    // Other labs running at the same time hold fd00:17::2 too: the neighbour's MAC tells.
    assert_eq!(ok["container"]["name"], s.c("c1").ns.name.as_str());
    let lo = forward_report(&v, "[::]:8081/tcp");
    assert_eq!(kinds(lo), ["loopback_only"], "{lo:#}");

    let out = s.cli(&["check", "--timeout", "500ms", "[::]:8081"]);
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
    require_root!();
    let mut s = Scenario::new("v6restart")
        .containers(1)
        .tcp_server6("c1", 3000)
        .forward_allow("8080", "[c1]:3000", &["fd00:77::/64"])
        .forward("[::]:8000-8001", "[c1]:3000-3001")
        .daemon();
    s.client_tcp(host6(8080), "one").unwrap();
    let before = s.list_json()[0]["packets_to_target"].as_u64().unwrap();
    assert!(before > 0);

    // While no daemon runs, the pinned programs and maps keep forwarding.
    s.d.kill9();
    let reply = s.client_tcp(host6(8080), "two").unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    let reply = s.client_tcp(host6(8000), "three").unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");

    // The new daemon adopts the IPv6 entries as they are: same slots, counters kept.
    s.d.restart();
    let after = s.list_json()[0]["packets_to_target"].as_u64().unwrap();
    assert!(after > before, "counters carried over: {before} -> {after}");
    assert!(
        s.d.log_text().contains("kept pinned forward"),
        "{}",
        s.d.log_text()
    );
    let reply = s.client_tcp(host6(8080), "four").unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");
}

/// How soon an address added to or removed from the host must be served or left: the daemon
/// follows netlink address events of both families (the 30 s resync is only a fallback).
const ADDRESS_EVENT_BOUND: Duration = Duration::from_secs(1);

#[test]
fn an_address_added_to_the_host_is_served_within_a_second_and_left_when_removed() {
    require_root!();
    let s = Scenario::new("v6addrev")
        .containers(1)
        .tcp_server_at("c1", "[::]:3000", "c1:3000")
        .forward("8090", "c1:3000")
        .forward("8090", "[c1]:3000")
        .daemon();
    let (host, eth) = (s.lab.host(), portfwd_lab::Lab::ETH);
    for (new, prefix_len, listen, flags) in [
        ("fd00:77::50", 64, "[::]:8090/tcp", " nodad"),
        ("10.77.0.50", 24, "8090/tcp", ""),
    ] {
        let to = at(new.parse::<IpAddr>().unwrap(), 8090);
        let (mut served, mut left) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            s.lab
                .sh(
                    host,
                    &format!("ip addr add {new}/{prefix_len} dev {eth}{flags}"),
                )
                .unwrap();
            served.push(
                until_within(ADDRESS_EVENT_BOUND, || forwarded(&s, to))
                    .unwrap_or_else(|| panic!("{to} not forwarded within 1 s of `ip addr add`")),
            );
            s.lab
                .sh(host, &format!("ip addr del {new}/{prefix_len} dev {eth}"))
                .unwrap();
            left.push(
                until_within(ADDRESS_EVENT_BOUND, || !forwarded(&s, to))
                    .unwrap_or_else(|| panic!("{to} still forwarded 1 s after `ip addr del`")),
            );
            // Gone from the datapath, not merely unreachable for a moment: nothing more is
            // counted for the forward.
            let before = packets_to_target(&s, listen);
            assert!(!forwarded(&s, to));
            assert_eq!(packets_to_target(&s, listen), before, "{to} after removal");
        }
        eprintln!(
            "{new}: served {} after `ip addr add` (median of {}, {served:?}), left {} after \
             `ip addr del` ({left:?})",
            ms(median(&mut served)),
            served.len(),
            ms(median(&mut left)),
        );
    }

    // An IPv6 address in duplicate address detection receives nothing (neither does netfilter
    // DNAT it): it becomes a host address once DAD completes, which the kernel announces. The lab
    // turns DAD off; one probe, up to 1 s of random delay, then 1 s of waiting for an answer.
    s.lab
        .sh(
            host,
            &format!(
                "sysctl -qw net.ipv6.conf.{eth}.accept_dad=1 net.ipv6.conf.{eth}.dad_transmits=1 && \
                 ip addr add fd00:77::51/64 dev {eth}"
            ),
        )
        .unwrap();
    let host_addrs = || s.status_json()["host_addresses"].to_string();
    std::thread::sleep(Duration::from_millis(300));
    let listed = host_addrs();
    let shown = s
        .lab
        .sh(host, &format!("ip -6 addr show dev {eth}"))
        .unwrap();
    assert!(
        shown.contains("tentative"),
        "DAD takes 1 s at least: {shown}"
    );
    assert!(!listed.contains("fd00:77::51"), "tentative: {listed}");
    eventually(|| host_addrs().contains("fd00:77::51")).unwrap();
    assert!(forwarded(
        &s,
        at("fd00:77::51".parse::<IpAddr>().unwrap(), 8090)
    ));
}

/// Whether one request to `to` (port 8090) reaches c1 through the forward, within 200 ms.
fn forwarded(s: &Scenario, to: SocketAddr) -> bool {
    lab::tcp_request(s.lab.client(), to, "ping", Duration::from_millis(200))
        .is_ok_and(|reply| reply.starts_with("c1:3000 from"))
}

fn packets_to_target(s: &Scenario, listen: &str) -> u64 {
    s.list_json()
        .iter()
        .find(|f| f["listen"] == listen)
        .unwrap_or_else(|| panic!("no forward {listen}"))["packets_to_target"]
        .as_u64()
        .unwrap()
}

/// How long `f` took to become true, polled every 5 ms for at most `bound`.
fn until_within(bound: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= bound {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
