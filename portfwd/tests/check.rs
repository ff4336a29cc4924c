//! `portfwd check` in a lab of network namespaces: each diagnosis against the real daemon, the
//! real CLI (run in the host namespace) and real sockets in the containers.
//!
//! These need root. Under `CI=true` a test that cannot run fails; elsewhere it says it skipped.
mod support;

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    process::Output,
};

use portfwd_lab::{self as lab, Lab};
use serde_json::Value;
use support::{Daemon, require_root};

fn forward(listen: &str, to: &str) -> String {
    format!("  - listen: \"{listen}\"\n    to: \"{to}\"\n")
}

fn config(forwards: &[(&str, &str)]) -> String {
    let mut s = String::from("forwards:\n");
    for (l, t) in forwards {
        s.push_str(&forward(l, t));
    }
    s
}

/// `portfwd check ARGS` as text: (exit code, stdout, stderr).
fn check_text(d: &Daemon, lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["check", "--timeout", "500ms"];
    all.extend_from_slice(args);
    let out: Output = d.cli(lab, &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `portfwd check --json ARGS`, parsed, with the exit code.
fn check_json(d: &Daemon, lab: &Lab, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = check_text(d, lab, &all);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\nstderr: {err}"));
    (code, v)
}

/// The forward report for `listen` in a JSON report.
fn fwd<'a>(report: &'a Value, listen: &str) -> &'a Value {
    report["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["listen"] == listen)
        .unwrap_or_else(|| panic!("no {listen} in {report:#}"))
}

/// The kinds of the findings of a forward report.
fn kinds(f: &Value) -> Vec<String> {
    f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn finding<'a>(f: &'a Value, kind: &str) -> &'a Value {
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
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkok").unwrap();
    let c1 = lab.add_container("web").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from(([0, 0, 0, 0], 3000)), "web").unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8080", &format!("{}:3000", c1.addr))]));

    let (code, out, err) = check_text(&d, &lab, &[]);
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

    let (code, v) = check_json(&d, &lab, &["8080"]);
    assert_eq!(code, 0);
    assert_eq!(v["healthy"], true);
    let f = fwd(&v, "8080/tcp");
    assert_eq!(f["verdict"], "ok");
    assert_eq!(kinds(f), ["healthy"]);
    let rtt = finding(f, "healthy")["rtt_ms"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 500.0, "{rtt}");
    assert_eq!(f["container"]["name"], c1.ns.name.as_str());
}

#[test]
fn wrong_container_port_names_the_ports_that_do_listen() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkport").unwrap();
    let c1 = lab.add_container("api").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from(([0, 0, 0, 0], 8000)), "api").unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8081", &format!("{}:3000", c1.addr))]));

    // The silent failure first: the client only learns "refused".
    let err = lab::tcp_request(
        lab.client(),
        SocketAddr::from((Lab::HOST_ADDR, 8081)),
        "x",
        std::time::Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");

    let (code, out, err) = check_text(&d, &lab, &["8081"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  nothing listens on 172.17.0.2:3000 (connection refused)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "in network namespace {} the app listens on: 8000/tcp on 0.0.0.0",
            c1.ns.name
        )),
        "{out}"
    );
    assert!(
        out.contains("portfwd del 8081/tcp && portfwd add 8081/tcp 172.17.0.2:8000"),
        "{out}"
    );
    assert!(err.contains("1 of 1 forward is not OK"), "{err}");

    let (code, v) = check_json(&d, &lab, &["8081/tcp"]);
    assert_eq!(code, 1);
    assert_eq!(v["healthy"], false);
    let f = fwd(&v, "8081/tcp");
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
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chklo").unwrap();
    let c1 = lab.add_container("v4").unwrap();
    let c2 = lab.add_container("v6").unwrap();
    let _s1 = lab::tcp_server(&c1.ns, SocketAddr::from(([127, 0, 0, 1], 3000)), "v4").unwrap();
    let _s2 = lab::tcp_server(&c2.ns, "[::1]:3000".parse().unwrap(), "v6").unwrap();
    let d = Daemon::start(
        &mut lab,
        &config(&[
            ("8080", &format!("{}:3000", c1.addr)),
            ("8081", &format!("{}:3000", c2.addr)),
        ]),
    );
    let (code, out, _) = check_text(&d, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  the app listens on 3000/tcp only on 127.0.0.1 inside the container"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "listens on 127.0.0.1:3000 in network namespace {}",
            c1.ns.name
        )),
        "{out}"
    );
    assert!(out.contains("0.0.0.0"), "the fix names 0.0.0.0: {out}");
    assert!(out.contains("only on ::1 inside the container"), "{out}");
    assert!(out.contains("2 forwards checked: 2 FAIL"), "{out}");

    let (_, v) = check_json(&d, &lab, &["all"]);
    assert_eq!(kinds(fwd(&v, "8080/tcp")), ["loopback_only"]);
    assert_eq!(kinds(fwd(&v, "8081/tcp")), ["loopback_only"]);
    let s = &finding(fwd(&v, "8081/tcp"), "loopback_only")["sockets"][0];
    assert_eq!(s["addr"], "::1");
}

#[test]
fn unreachable_targets_no_neighbour_and_no_route() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkunr").unwrap();
    // 172.17.0.99 is on the bridge's network but no container has it; 10.200.0.5 has no route
    // at all from the lab's host (nothing is sent there).
    let d = Daemon::start(
        &mut lab,
        &config(&[("8080", "172.17.0.99:3000"), ("8081", "10.200.0.5:3000")]),
    );
    let (code, out, _) = check_text(&d, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  nothing answers for 172.17.0.99 on docker0: no reply to ARP"),
        "{out}"
    );
    assert!(
        out.contains("  FAIL  this host has no route to 10.200.0.5"),
        "{out}"
    );
    let (_, v) = check_json(&d, &lab, &[]);
    let n = finding(fwd(&v, "8080/tcp"), "no_neighbour");
    assert_eq!(n["next_hop"], "172.17.0.99");
    assert_eq!(n["dev"], "docker0");
    assert_eq!(kinds(fwd(&v, "8081/tcp")), ["no_route"]);
}

#[test]
fn host_port_bound_by_a_local_process() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkbusy").unwrap();
    let c1 = lab.add_container("web").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "web").unwrap();
    // This test process takes the host's port 8080 in the host namespace, on every address,
    // and 8081 on loopback only.
    let _busy = lab
        .host()
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .unwrap();
    let _local = lab
        .host()
        .run(|| TcpListener::bind("127.0.0.1:8081"))
        .unwrap();
    let d = Daemon::start(
        &mut lab,
        &config(&[
            ("8080", &format!("{}:3000", c1.addr)),
            ("8081", &format!("{}:3000", c1.addr)),
        ]),
    );
    let (code, out, _) = check_text(&d, &lab, &[]);
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
    let (_, v) = check_json(&d, &lab, &[]);
    let f = fwd(&v, "8080/tcp");
    assert_eq!(f["verdict"], "fail");
    assert_eq!(kinds(f), ["healthy", "host_port_in_use"]);
    let owner = &finding(f, "host_port_in_use")["sockets"][0]["owners"][0];
    assert_eq!(owner["pid"], std::process::id());
    assert_eq!(fwd(&v, "8081/tcp")["verdict"], "warn");
}

#[test]
fn host_port_published_twice_by_iptables_and_nftables() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chktwice").unwrap();
    let c1 = lab.add_container("web").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from((c1.addr, 3000)), "web").unwrap();
    // Docker's kind of rule for 8080 (iptables), a hand-made nftables one for 8081 (udp), and one
    // to the same target as portfwd's for 8082.
    let host = lab.host().clone();
    lab.sh(
        &host,
        "iptables -t nat -N DOCKER && \
         iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER && \
         iptables -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80 && \
         iptables -t nat -A DOCKER -p tcp --dport 8082 -j DNAT --to-destination 172.17.0.2:3000 && \
         nft add table ip mine && \
         nft add chain ip mine pre '{ type nat hook prerouting priority dstnat; }' && \
         nft add rule ip mine pre udp dport 8081 dnat to 172.17.0.4:53",
    )
    .unwrap();
    let d = Daemon::start(
        &mut lab,
        &config(&[
            ("8080", &format!("{}:3000", c1.addr)),
            ("8081/udp", &format!("{}:53", c1.addr)),
            ("8082", &format!("{}:3000", c1.addr)),
        ]),
    );
    let (code, out, _) = check_text(&d, &lab, &[]);
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
    let (_, v) = check_json(&d, &lab, &[]);
    // iptables-nft rules show in `nft list ruleset` too: reported once.
    let f = fwd(&v, "8080/tcp");
    assert_eq!(kinds(f), ["healthy", "published_twice"], "{f:#}");
    assert_eq!(finding(f, "published_twice")["rule"]["tool"], "iptables");
    let f = fwd(&v, "8082/tcp");
    assert_eq!(f["verdict"], "warn", "{f:#}");
    assert!(
        finding(f, "published_twice")["reason"]
            .as_str()
            .unwrap()
            .contains("to the same target")
    );
}

#[test]
fn udp_forwards_are_checked_from_the_socket_table() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkudp").unwrap();
    let c1 = lab.add_container("dns").unwrap();
    let _srv = lab::udp_server(&c1.ns, SocketAddr::from(([0, 0, 0, 0], 53)), "dns").unwrap();
    let _lo = c1.ns.run(|| UdpSocket::bind("127.0.0.1:5300")).unwrap();
    let d = Daemon::start(
        &mut lab,
        &config(&[
            ("5353/udp", &format!("{}:53", c1.addr)),
            ("5354/udp", &format!("{}:54", c1.addr)),
            ("5355/udp", &format!("{}:5300", c1.addr)),
        ]),
    );
    let (code, out, _) = check_text(&d, &lab, &["5353/udp"]);
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

    let (code, v) = check_json(&d, &lab, &[]);
    assert_eq!(code, 1);
    assert_eq!(kinds(fwd(&v, "5353/udp")), ["udp_bound"]);
    let n = finding(fwd(&v, "5354/udp"), "nothing_listens");
    assert!(
        n["fix"].as_str().unwrap().contains("172.17.0.2:53"),
        "{n:#}"
    );
    assert_eq!(kinds(fwd(&v, "5355/udp")), ["loopback_only"]);
}

#[test]
fn the_right_container_is_found_when_labs_share_addresses() {
    if !require_root() {
        return;
    }
    // Two labs, each with a container at 172.17.0.2: the check in lab A must look into A's.
    let mut a = Lab::new("chka").unwrap();
    let mut b = Lab::new("chkb").unwrap();
    let ca = a.add_container("c").unwrap();
    let cb = b.add_container("c").unwrap();
    assert_eq!(ca.addr, cb.addr);
    let _sa = lab::tcp_server(&ca.ns, SocketAddr::from(([0, 0, 0, 0], 8000)), "a").unwrap();
    let _sb = lab::tcp_server(&cb.ns, SocketAddr::from(([0, 0, 0, 0], 9000)), "b").unwrap();
    let d = Daemon::start(&mut a, &config(&[("8080", "172.17.0.2:3000")]));
    let (code, v) = check_json(&d, &a, &[]);
    assert_eq!(code, 1);
    let f = fwd(&v, "8080/tcp");
    assert_eq!(f["container"]["name"], ca.ns.name.as_str(), "{f:#}");
    let n = finding(f, "nothing_listens");
    assert_eq!(n["listening"][0]["port"], 8000, "{n:#}");
}

#[test]
fn check_of_an_unpublished_port_is_an_error() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chknone").unwrap();
    let d = Daemon::start(&mut lab, "forwards: []\n");
    let (code, out, _) = check_text(&d, &lab, &[]);
    assert_eq!(code, 0, "nothing published, nothing unhealthy: {out}");
    assert!(out.contains("no ports published"), "{out}");
    let (code, _, err) = check_text(&d, &lab, &["9999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no forward publishes host port 9999"), "{err}");
}

#[test]
fn target_that_drops_connections_does_not_answer() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkdrop").unwrap();
    let c1 = lab.add_container("fw").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from(([0, 0, 0, 0], 3000)), "fw").unwrap();
    // A firewall in the container drops the SYNs: the container answers ARP, not TCP.
    lab.sh(&c1.ns, "iptables -A INPUT -p tcp --dport 3000 -j DROP")
        .unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8080", &format!("{}:3000", c1.addr))]));
    let (code, out, _) = check_text(&d, &lab, &[]);
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
    let (code, v) = check_json(&d, &lab, &[]);
    assert_eq!(code, 1);
    assert_eq!(kinds(fwd(&v, "8080/tcp")), ["no_answer"]);
}

#[test]
fn refused_although_the_app_listens_points_at_a_reject_rule() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkrej").unwrap();
    let c1 = lab.add_container("fw").unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from(([0, 0, 0, 0], 3000)), "fw").unwrap();
    lab.sh(
        &c1.ns,
        "iptables -A INPUT -p tcp --dport 3000 -j REJECT --reject-with tcp-reset",
    )
    .unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8080", &format!("{}:3000", c1.addr))]));
    let (code, out, _) = check_text(&d, &lab, &[]);
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
            c1.ns.name
        )),
        "{out}"
    );
    assert!(out.contains("REJECT"), "{out}");
    let (_, v) = check_json(&d, &lab, &[]);
    let f = finding(fwd(&v, "8080/tcp"), "refused_while_listening");
    assert_eq!(f["sockets"][0]["port"], 3000, "{f:#}");
}

#[test]
fn app_bound_to_another_address_of_the_container() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkaddr").unwrap();
    let c1 = lab.add_container("multi").unwrap();
    // The container has a second address, and the app listens on that one only.
    lab.sh(&c1.ns, "ip addr add 172.17.0.50/16 dev eth0")
        .unwrap();
    let _srv = lab::tcp_server(&c1.ns, SocketAddr::from(([172, 17, 0, 50], 3000)), "m").unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8080", &format!("{}:3000", c1.addr))]));
    let (code, out, _) = check_text(&d, &lab, &[]);
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
    let (_, v) = check_json(&d, &lab, &[]);
    let f = finding(fwd(&v, "8080/tcp"), "other_address");
    assert_eq!(f["sockets"][0]["addr"], "172.17.0.50", "{f:#}");
    assert_eq!(
        fwd(&v, "8080/tcp")["container"]["name"],
        c1.ns.name.as_str()
    );
}

#[test]
fn router_on_the_way_says_host_unreachable() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkicmp").unwrap();
    let c1 = lab.add_container("router").unwrap();
    // The host routes 10.99.0.0/24 through the container, which routes nowhere and says so with
    // ICMP host unreachable. Every packet stays in the lab's namespaces.
    let host = lab.host().clone();
    lab.sh(&host, "ip route add 10.99.0.0/24 via 172.17.0.2")
        .unwrap();
    lab.sh(
        &c1.ns,
        "echo 1 > /proc/sys/net/ipv4/ip_forward && ip route add unreachable 10.99.0.0/24",
    )
    .unwrap();
    let d = Daemon::start(&mut lab, &config(&[("8080", "10.99.0.5:3000")]));
    let (code, out, _) = check_text(&d, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  10.99.0.5 is unreachable: a router said so (ICMP host unreachable)"),
        "{out}"
    );
    let (_, v) = check_json(&d, &lab, &[]);
    assert_eq!(kinds(fwd(&v, "8080/tcp")), ["host_unreachable"]);
}

#[test]
fn udp_targets_that_cannot_be_looked_into_are_warnings() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("chkudpw").unwrap();
    let c1 = lab.add_container("router").unwrap();
    // 10.99.0.5 is "on another machine" behind the container acting as a router, which resets
    // TCP to it in its name: it answers, but no namespace here holds it. The container itself
    // drops TCP to port 53: it answers ARP, not the probe.
    let host = lab.host().clone();
    lab.sh(&host, "ip route add 10.99.0.0/24 via 172.17.0.2")
        .unwrap();
    lab.sh(
        &c1.ns,
        "echo 1 > /proc/sys/net/ipv4/ip_forward && \
         iptables -A FORWARD -d 10.99.0.5 -p tcp -j REJECT --reject-with tcp-reset && \
         iptables -A INPUT -p tcp --dport 53 -j DROP",
    )
    .unwrap();
    let d = Daemon::start(
        &mut lab,
        &config(&[
            ("5353/udp", "10.99.0.5:53"),
            ("5354/udp", &format!("{}:53", c1.addr)),
        ]),
    );
    let (code, out, _) = check_text(&d, &lab, &[]);
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
    let (code, v) = check_json(&d, &lab, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["healthy"], false);
    for listen in ["5353/udp", "5354/udp"] {
        let f = fwd(&v, listen);
        assert_eq!(f["verdict"], "warn", "{f:#}");
        assert_eq!(kinds(f), ["not_probed"], "{f:#}");
    }
}
