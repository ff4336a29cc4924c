//! `portfwd check`: each diagnosis against the real daemon, the real CLI (run in the host
//! namespace) and real sockets in the containers.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use serde_json::Value;

use crate::support::{Scenario, host_port};
use portfwd_lab::{self as lab, Lab};

/// `portfwd check ARGS` as text: (exit code, stdout, stderr).
pub fn check_text(s: &Scenario, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["check", "--timeout", "500ms"];
    all.extend_from_slice(args);
    let out = s.cli(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `portfwd check --json ARGS`, parsed, with the exit code.
pub fn check_json(s: &Scenario, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = check_text(s, &all);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\nstderr: {err}"));
    (code, v)
}

/// The forward report for `listen` in a JSON report.
pub fn forward_report<'a>(report: &'a Value, listen: &str) -> &'a Value {
    report["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["listen"] == listen)
        .unwrap_or_else(|| panic!("no {listen} in {report:#}"))
}

/// The kinds of the findings of a forward report.
pub fn kinds(f: &Value) -> Vec<String> {
    f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap().to_owned())
        .collect()
}

pub fn finding<'a>(f: &'a Value, kind: &str) -> &'a Value {
    f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} finding in {f:#}"))
}

fn me() -> String {
    format!("(pid {})", std::process::id())
}

#[test]
fn healthy_forward_reports_rtt_and_who_serves_it() {
    require_root!();
    let s = Scenario::new("chkok")
        .container("web")
        .tcp_server_at("web", "0.0.0.0:3000", "web")
        .forward("8080", "web:3000")
        .daemon();
    let c1 = s.c("web");

    let (code, out, err) = check_text(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "8080/tcp -> 172.17.0.2:3000\n  OK    172.17.0.2:3000 accepted a connection in "
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "on 0.0.0.0:3000 in network namespace {}",
            c1.ns.name
        )) && out.contains(&me()),
        "{out}"
    );
    assert!(out.contains("1 forward checked: 1 OK"), "{out}");

    let (code, v) = check_json(&s, &["8080"]);
    assert_eq!(code, 0);
    assert_eq!(v["healthy"], true);
    let f = forward_report(&v, "8080/tcp");
    assert_eq!(f["verdict"], "ok");
    assert_eq!(kinds(f), ["healthy"]);
    let rtt = finding(f, "healthy")["rtt_ms"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 500.0, "{rtt}");
    assert_eq!(f["container"]["name"], c1.ns.name.as_str());
}

#[test]
fn wrong_container_port_names_the_ports_that_do_listen() {
    require_root!();
    let s = Scenario::new("chkport")
        .container("api")
        .tcp_server_at("api", "0.0.0.0:8000", "api")
        .forward("8081", "api:3000")
        .daemon();

    // The silent failure first: the client only learns "refused".
    let err = s.client_tcp(host_port(8081), "x").unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");

    let (code, out, err) = check_text(&s, &["8081"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  nothing listens on 172.17.0.2:3000 (connection refused)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "in network namespace {} the app listens on: 8000/tcp on 0.0.0.0",
            s.c("api").ns.name
        )),
        "{out}"
    );
    assert!(
        out.contains("portfwd del 8081/tcp && portfwd add 8081/tcp 172.17.0.2:8000"),
        "{out}"
    );
    assert!(err.contains("1 of 1 forward is not OK"), "{err}");

    let (code, v) = check_json(&s, &["8081/tcp"]);
    assert_eq!(code, 1);
    assert_eq!(v["healthy"], false);
    let f = forward_report(&v, "8081/tcp");
    assert_eq!(f["verdict"], "fail");
    let n = finding(f, "nothing_listens");
    let ports: Vec<u64> = n["listening"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8000]);
    assert!(n["fix"].as_str().unwrap().contains("172.17.0.2:8000"));
}

#[test]
fn app_bound_to_loopback_inside_the_container() {
    require_root!();
    let s = Scenario::new("chklo")
        .container("v4")
        .container("v6")
        .tcp_server_at("v4", "127.0.0.1:3000", "v4")
        .tcp_server_at("v6", "[::1]:3000", "v6")
        .forward("8080", "v4:3000")
        .forward("8081", "v6:3000")
        .daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  the app listens on 3000/tcp only on 127.0.0.1 inside the container"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "listens on 127.0.0.1:3000 in network namespace {}",
            s.c("v4").ns.name
        )),
        "{out}"
    );
    assert!(out.contains("0.0.0.0"), "the fix names 0.0.0.0: {out}");
    assert!(out.contains("only on ::1 inside the container"), "{out}");
    assert!(out.contains("2 forwards checked: 2 FAIL"), "{out}");

    let (_, v) = check_json(&s, &["all"]);
    assert_eq!(kinds(forward_report(&v, "8080/tcp")), ["loopback_only"]);
    assert_eq!(kinds(forward_report(&v, "8081/tcp")), ["loopback_only"]);
    let sock = &finding(forward_report(&v, "8081/tcp"), "loopback_only")["sockets"][0];
    assert_eq!(sock["addr"], "::1");
}

#[test]
fn unreachable_targets_no_neighbour_and_no_route() {
    require_root!();
    // 172.17.0.99 is on the bridge's network but no container has it; 10.200.0.5 has no route
    // at all from the lab's host (nothing is sent there).
    let s = Scenario::new("chkunr")
        .forward("8080", "172.17.0.99:3000")
        .forward("8081", "10.200.0.5:3000")
        .daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  nothing answers for 172.17.0.99 on docker0: no reply to ARP"),
        "{out}"
    );
    assert!(
        out.contains("  FAIL  this host has no route to 10.200.0.5"),
        "{out}"
    );
    let (_, v) = check_json(&s, &[]);
    let n = finding(forward_report(&v, "8080/tcp"), "no_neighbour");
    assert_eq!(n["next_hop"], "172.17.0.99");
    assert_eq!(n["dev"], "docker0");
    assert_eq!(kinds(forward_report(&v, "8081/tcp")), ["no_route"]);
}

#[test]
fn host_port_bound_by_a_local_process() {
    require_root!();
    let setup = Scenario::new("chkbusy")
        .container("web")
        .tcp_server_at("web", "web:3000", "web")
        .forward("8080", "web:3000")
        .forward("8081", "web:3000");
    // This test process takes the host's port 8080 in the host namespace, on every address,
    // and 8081 on loopback only.
    let host = setup.lab().host();
    let _busy = host.run(|| TcpListener::bind("0.0.0.0:8080")).unwrap();
    let _local = host.run(|| TcpListener::bind("127.0.0.1:8081")).unwrap();
    let s = setup.daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        out.contains(&format!(
            "  FAIL  host port 8080/tcp is also bound by {} {} on 0.0.0.0:8080",
            comm.trim(),
            me()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  WARN  {} {} listens on 127.0.0.1:8081 on this host",
            comm.trim(),
            me()
        )),
        "{out}"
    );
    let (_, v) = check_json(&s, &[]);
    let f = forward_report(&v, "8080/tcp");
    assert_eq!(f["verdict"], "fail");
    assert_eq!(kinds(f), ["healthy", "host_port_in_use"]);
    let owner = &finding(f, "host_port_in_use")["sockets"][0]["owners"][0];
    assert_eq!(owner["pid"], std::process::id());
    assert_eq!(forward_report(&v, "8081/tcp")["verdict"], "warn");
}

#[test]
fn host_port_published_twice_by_iptables_and_nftables() {
    require_root!();
    let setup = Scenario::new("chktwice")
        .container("web")
        .tcp_server_at("web", "web:3000", "web")
        .forward("8080", "web:3000")
        .forward("8081/udp", "web:53")
        .forward("8082", "web:3000");
    // Docker's kind of rule for 8080 (iptables), a hand-made nftables one for 8081 (udp), and one
    // to the same target as portfwd's for 8082.
    let lab = setup.lab();
    lab.sh(
        lab.host(),
        "iptables -t nat -N DOCKER && \
         iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER && \
         iptables -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80 && \
         iptables -t nat -A DOCKER -p tcp --dport 8082 -j DNAT --to-destination 172.17.0.2:3000 && \
         nft add table ip mine && \
         nft add chain ip mine pre '{ type nat hook prerouting priority dstnat; }' && \
         nft add rule ip mine pre udp dport 8081 dnat to 172.17.0.4:53",
    )
    .unwrap();
    let s = setup.daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "  FAIL  host port 8080/tcp is published twice: also by a Docker iptables rule, to 172.17.0.3:80"
        ),
        "{out}"
    );
    assert!(
        out.contains("iptables: -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80"),
        "{out}"
    );
    assert!(
        out.contains(
            "host port 8081/udp is published twice: also by an nftables DNAT rule, to 172.17.0.4:53"
        ),
        "{out}"
    );
    let (_, v) = check_json(&s, &[]);
    // iptables-nft rules show in `nft list ruleset` too: reported once.
    let f = forward_report(&v, "8080/tcp");
    assert_eq!(kinds(f), ["healthy", "published_twice"], "{f:#}");
    assert_eq!(finding(f, "published_twice")["rule"]["tool"], "iptables");
    // Docker's own rule to the target portfwd serves is how Docker coexists: information.
    let f = forward_report(&v, "8082/tcp");
    assert_eq!(f["verdict"], "ok", "{f:#}");
    assert_eq!(finding(f, "published_twice")["verdict"], "info", "{f:#}");
    assert!(
        finding(f, "published_twice")["reason"]
            .as_str()
            .unwrap()
            .contains("to the same target")
    );
}

#[test]
fn udp_forwards_are_checked_from_the_socket_table() {
    require_root!();
    let setup = Scenario::new("chkudp")
        .container("dns")
        .udp_server_at("dns", "0.0.0.0:53", "dns")
        .forward("5353/udp", "dns:53")
        .forward("5354/udp", "dns:54")
        .forward("5355/udp", "dns:5300");
    let c1 = setup.lab().containers()[0].clone();
    let _lo = c1.ns.run(|| UdpSocket::bind("127.0.0.1:5300")).unwrap();
    let s = setup.daemon();
    let (code, out, _) = check_text(&s, &["5353/udp"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  OK    172.17.0.2 answers in ") && out.contains("an app is bound to 53/udp"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "on 0.0.0.0:53 in network namespace {}",
            c1.ns.name
        )),
        "{out}"
    );

    let (code, v) = check_json(&s, &[]);
    assert_eq!(code, 1);
    assert_eq!(kinds(forward_report(&v, "5353/udp")), ["udp_bound"]);
    let n = finding(forward_report(&v, "5354/udp"), "nothing_listens");
    assert!(
        n["fix"].as_str().unwrap().contains("172.17.0.2:53"),
        "{n:#}"
    );
    assert_eq!(kinds(forward_report(&v, "5355/udp")), ["loopback_only"]);
}

#[test]
fn the_right_container_is_found_when_labs_share_addresses() {
    require_root!();
    // Two labs, each with a container at 172.17.0.2: the check in lab A must look into A's.
    let a = Scenario::new("chka")
        .container("c")
        .tcp_server_at("c", "0.0.0.0:8000", "a")
        .forward("8080", "172.17.0.2:3000")
        .daemon();
    let mut b = Lab::new("chkb").unwrap();
    let cb = b.add_container("c").unwrap();
    let ca = a.c("c");
    assert_eq!(ca.addr, cb.addr);
    let _sb = lab::tcp_server(&cb.ns, SocketAddr::from(([0, 0, 0, 0], 9000)), "b").unwrap();
    let (code, v) = check_json(&a, &[]);
    assert_eq!(code, 1);
    let f = forward_report(&v, "8080/tcp");
    assert_eq!(f["container"]["name"], ca.ns.name.as_str(), "{f:#}");
    let n = finding(f, "nothing_listens");
    assert_eq!(n["listening"][0]["port"], 8000, "{n:#}");
}

#[test]
fn check_of_an_unpublished_port_is_an_error() {
    require_root!();
    let s = Scenario::new("chknone").daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 0, "nothing published, nothing unhealthy: {out}");
    assert!(out.contains("no ports published"), "{out}");
    let (code, _, err) = check_text(&s, &["9999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no forward publishes host port 9999"), "{err}");
}

/// A scenario: container `name` with a TCP server on 0.0.0.0:3000 published on 8080, and
/// `script` run in the container before the daemon starts.
fn one_container(tag: &str, name: &str, script: &str) -> Scenario {
    let setup = Scenario::new(tag)
        .container(name)
        .tcp_server_at(name, "0.0.0.0:3000", name)
        .forward("8080", &format!("{name}:3000"));
    let lab = setup.lab();
    lab.sh(&lab.containers()[0].ns, script).unwrap();
    setup.daemon()
}

#[test]
fn target_that_drops_connections_does_not_answer() {
    require_root!();
    // A firewall in the container drops the SYNs: the container answers ARP, not TCP.
    let s = one_container(
        "chkdrop",
        "fw",
        "iptables -A INPUT -p tcp --dport 3000 -j DROP",
    );
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  172.17.0.2:3000 did not answer a TCP connection within 500"),
        "{out}"
    );
    assert!(
        out.contains("172.17.0.2 is there (it answers ARP on docker0 as "),
        "{out}"
    );
    assert!(out.contains("look for DROP rules"), "{out}");
    let (code, v) = check_json(&s, &[]);
    assert_eq!(code, 1);
    assert_eq!(kinds(forward_report(&v, "8080/tcp")), ["no_answer"]);
}

#[test]
fn refused_although_the_app_listens_points_at_a_reject_rule() {
    require_root!();
    let s = one_container(
        "chkrej",
        "fw",
        "iptables -A INPUT -p tcp --dport 3000 -j REJECT --reject-with tcp-reset",
    );
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "  FAIL  the connection to 172.17.0.2:3000 was refused although something listens there"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "on 0.0.0.0:3000 in network namespace {}",
            s.c("fw").ns.name
        )),
        "{out}"
    );
    assert!(out.contains("REJECT"), "{out}");
    let (_, v) = check_json(&s, &[]);
    let f = finding(forward_report(&v, "8080/tcp"), "refused_while_listening");
    assert_eq!(f["sockets"][0]["port"], 3000, "{f:#}");
}

#[test]
fn app_bound_to_another_address_of_the_container() {
    require_root!();
    // The container has a second address, and the app listens on that one only.
    let setup = Scenario::new("chkaddr").container("multi");
    let lab = setup.lab();
    lab.sh(
        &lab.containers()[0].ns,
        "ip addr add 172.17.0.50/16 dev eth0",
    )
    .unwrap();
    let s = setup
        .tcp_server_at("multi", "172.17.0.50:3000", "m")
        .forward("8080", "multi:3000")
        .daemon();
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "  FAIL  the app listens on 3000/tcp on 172.17.0.50, not on 172.17.0.2 (connection refused)"
        ),
        "{out}"
    );
    assert!(
        out.contains("make the app listen on 0.0.0.0 or 172.17.0.2"),
        "{out}"
    );
    let (_, v) = check_json(&s, &[]);
    let f = finding(forward_report(&v, "8080/tcp"), "other_address");
    assert_eq!(f["sockets"][0]["addr"], "172.17.0.50", "{f:#}");
    assert_eq!(
        forward_report(&v, "8080/tcp")["container"]["name"],
        s.c("multi").ns.name.as_str()
    );
}

/// A scenario whose host routes 10.99.0.0/24 through container `router` (172.17.0.2), which
/// runs `script` (as root in its namespace) before the daemon starts. Every packet stays in the
/// lab's namespaces.
fn behind_a_router(tag: &str, script: &str, forwards: &[(&str, &str)]) -> Scenario {
    let mut setup = Scenario::new(tag).container("router");
    let lab = setup.lab();
    lab.sh(lab.host(), "ip route add 10.99.0.0/24 via 172.17.0.2")
        .unwrap();
    lab.sh(
        &lab.containers()[0].ns,
        &format!("echo 1 > /proc/sys/net/ipv4/ip_forward && {script}"),
    )
    .unwrap();
    for (listen, to) in forwards {
        setup = setup.forward(listen, to);
    }
    setup.daemon()
}

#[test]
fn router_on_the_way_says_host_unreachable() {
    require_root!();
    // The container routes nowhere and says so with ICMP host unreachable.
    let s = behind_a_router(
        "chkicmp",
        "ip route add unreachable 10.99.0.0/24",
        &[("8080", "10.99.0.5:3000")],
    );
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  10.99.0.5 is unreachable: a router said so (ICMP host unreachable)"),
        "{out}"
    );
    let (_, v) = check_json(&s, &[]);
    assert_eq!(kinds(forward_report(&v, "8080/tcp")), ["host_unreachable"]);
}

#[test]
fn udp_targets_that_cannot_be_looked_into_are_warnings() {
    require_root!();
    // 10.99.0.5 is "on another machine" behind the container acting as a router, which resets
    // TCP to it in its name: it answers, but no namespace here holds it. The container itself
    // drops TCP to port 53: it answers ARP, not the probe.
    let s = behind_a_router(
        "chkudpw",
        "iptables -A FORWARD -d 10.99.0.5 -p tcp -j REJECT --reject-with tcp-reset && \
         iptables -A INPUT -p tcp --dport 53 -j DROP",
        &[("5353/udp", "10.99.0.5:53"), ("5354/udp", "router:53")],
    );
    let (code, out, _) = check_text(&s, &[]);
    assert_eq!(code, 1, "a warning is not healthy: {out}");
    assert!(
        out.contains("  WARN  10.99.0.5 answers, but no network namespace on this host holds it"),
        "{out}"
    );
    assert!(
        out.contains("  WARN  172.17.0.2 answers ARP but not a TCP probe"),
        "{out}"
    );
    assert!(out.contains("2 forwards checked: 2 WARN"), "{out}");
    let (code, v) = check_json(&s, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["healthy"], false);
    for listen in ["5353/udp", "5354/udp"] {
        let f = forward_report(&v, listen);
        assert_eq!(f["verdict"], "warn", "{f:#}");
        assert_eq!(kinds(f), ["not_probed"], "{f:#}");
    }
}

#[test]
fn a_warning_shared_by_several_forwards_is_said_once_naming_them() {
    require_root!();
    let s = Scenario::new("chkwarn")
        .containers(1)
        .tcp_server("c1", 3000)
        .tcp_server("c1", 3001)
        .forward("8080", "c1:3000")
        .forward("8081", "c1:3001")
        .forward_allow("8082", "c1:3000", &["10.0.0.0/8"])
        .daemon();
    let (code, out, err) = check_text(&s, &[]);
    assert_eq!(code, 0, "every forward works: {out}{err}");
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("published on every host address"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].starts_with("warning: 8080/tcp and 8081/tcp are published"),
        "named together, labelled once: {out}"
    );
    assert!(!out.contains("note: warning"), "{out}");

    let (_, v) = check_json(&s, &[]);
    let notes = v["notes"].as_array().unwrap();
    let open: Vec<&Value> = notes
        .iter()
        .filter(|n| n.as_str().unwrap().contains("every host address"))
        .collect();
    assert_eq!(open.len(), 1, "{notes:?}");
}
