//! The lab itself, built for real (root needed): topology, both address families, servers and
//! clients, several labs at once, and teardown.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use portfwd_lab::{
    Lab, Ns, is_root, tcp_request, tcp_server, tcp_session, udp_request, udp_server,
};

const T: Duration = Duration::from_secs(5);

/// Root is needed: under CI=true its absence is a failure, elsewhere the test is skipped loudly.
fn have_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the lab tests need root, and CI=true: run them as root");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED: needs root (the network lab creates namespaces) !!!!!!!!\n"
    );
    false
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[test]
fn lab_topology_is_built() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("topo").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    assert_eq!(c1.addr, Ipv4Addr::new(172, 17, 0, 2));
    assert_eq!(c2.addr, Ipv4Addr::new(172, 17, 0, 3));
    assert!(c1.host_veth.starts_with("veth") && c1.host_veth.len() <= 15);
    assert_ne!(c1.host_veth, c2.host_veth);
    assert!(lab.add_container("c1").is_err());
    assert!(lab.add_container("bad name").is_err());

    let host = lab.host().clone();
    let fwd = lab.sh(&host, "cat /proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(fwd.trim(), "1");
    let master = lab
        .sh(
            &host,
            &format!("ip -o link show {} master docker0", c1.host_veth),
        )
        .unwrap();
    assert!(master.contains("state UP"), "{master}");
    let addrs = lab.sh(&host, "ip -4 -o addr show").unwrap();
    assert!(addrs.contains("docker0    inet 172.17.0.1/16"), "{addrs}");
    assert!(addrs.contains("eth0    inet 10.77.0.1/24"), "{addrs}");
    let route = lab.sh(&c1.ns, "ip route show default").unwrap();
    assert!(route.contains("via 172.17.0.1 dev eth0"), "{route}");
    let route = lab.sh(lab.client(), "ip route show default").unwrap();
    assert!(route.contains("via 10.77.0.1 dev eth0"), "{route}");

    // Ns::run really runs in the namespace; the host can reach a container over the bridge.
    let ifs = c1.ns.run(|| {
        let s = UdpSocket::bind("172.17.0.2:0");
        s.is_ok()
    });
    assert!(ifs, "172.17.0.2 is not local in c1");
    let cookies = [host.cookie().unwrap(), c1.ns.cookie().unwrap()];
    assert_ne!(cookies[0], cookies[1]);
    let server = tcp_server(&c2.ns, sa(c2.addr, 80), "c2:80").unwrap();
    let reply = tcp_request(&host, sa(c2.addr, 80), "from host", T).unwrap();
    assert!(reply.starts_with("c2:80 from 172.17.0.1:"), "{reply}");
    let reply = tcp_request(&c1.ns, sa(c2.addr, 80), "from c1", T).unwrap();
    assert!(reply.starts_with("c2:80 from 172.17.0.2:"), "{reply}");
    // Port 0 picks a port.
    let any = udp_server(&host, sa(Lab::HOST_ADDR, 0), "any").unwrap();
    assert_ne!(any.local_addr().port(), 0);
    drop(server);
}

#[test]
fn ipv6_is_routed_between_client_and_containers() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("six").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let six = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    assert_eq!((c1.addr6, c2.addr6), (six("fd00:17::2"), six("fd00:17::3")));
    let (host, client) = (lab.host().clone(), lab.client().clone());
    let sysctl = |ns: &Ns, key: &str| {
        lab.sh(ns, &format!("cat /proc/sys/net/ipv6/conf/{key}"))
            .unwrap()
    };
    assert_eq!(sysctl(&host, "all/forwarding").trim(), "1");
    assert_eq!(sysctl(&client, "all/forwarding").trim(), "0");
    assert_eq!(sysctl(&c1.ns, "eth0/accept_ra").trim(), "0");
    let addrs = lab.sh(&host, "ip -6 -o addr show scope global").unwrap();
    assert!(addrs.contains("docker0    inet6 fd00:17::1/64"), "{addrs}");
    assert!(addrs.contains("eth0    inet6 fd00:77::1/64"), "{addrs}");
    assert!(!addrs.contains("tentative"), "nodad: {addrs}");

    // Plain routing, no NAT: the container sees the client's own IPv6 address.
    let to = SocketAddr::new(c1.addr6.into(), 3000);
    let server = tcp_server(&c1.ns, to, "c1:3000").unwrap();
    let reply = tcp_request(&client, to, "hello", T).unwrap();
    assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
    assert_eq!(server.peers()[0].ip(), Lab::CLIENT_ADDR6);
    let to = SocketAddr::new(c2.addr6.into(), 5353);
    let _udp = udp_server(&c2.ns, to, "c2:5353").unwrap();
    let reply = udp_request(&c1.ns, to, "ping", T).unwrap();
    assert!(reply.starts_with("c2:5353 from [fd00:17::2]:"), "{reply}");
}

#[test]
fn client_reaches_container_over_tcp_without_nat() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("tcp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let client = lab.client().clone();
    lab.exec(
        &client,
        &[
            "ip",
            "route",
            "replace",
            "172.17.0.0/16",
            "via",
            "10.77.0.1",
        ],
    )
    .unwrap();
    let server = tcp_server(&c1.ns, sa(c1.addr, 3000), "c1:3000").unwrap();
    let reply = tcp_request(&client, sa(c1.addr, 3000), "hello", T).unwrap();
    let peers = server.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), Lab::CLIENT_ADDR);
    assert_eq!(
        reply,
        format!("c1:3000 from 10.77.0.2:{}: hello", peers[0].port())
    );

    // A long-lived session: several lines on one connection.
    let mut session = tcp_session(&client, sa(c1.addr, 3000), T).unwrap();
    let port = session.local_addr().port();
    for i in 0..3 {
        let reply = session.request(&format!("line {i}")).unwrap();
        assert_eq!(reply, format!("c1:3000 from 10.77.0.2:{port}: line {i}"));
    }
    // The session's socket can be used from another thread.
    let reply = std::thread::spawn(move || session.request("from a thread"))
        .join()
        .unwrap()
        .unwrap();
    assert!(reply.ends_with(": from a thread"), "{reply}");
    assert_eq!(server.peers().len(), 2);

    // Nothing listens on 3001: refused, and the error says so.
    let err = tcp_request(&client, sa(c1.addr, 3001), "x", T).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

#[test]
fn client_reaches_container_over_udp_without_nat() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("udp").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let client = lab.client().clone();
    lab.exec(
        &client,
        &[
            "ip",
            "route",
            "replace",
            "172.17.0.0/16",
            "via",
            "10.77.0.1",
        ],
    )
    .unwrap();
    let server = udp_server(&c1.ns, sa(c1.addr, 3000), "c1:3000/udp").unwrap();
    let reply = udp_request(&client, sa(c1.addr, 3000), "ping", T).unwrap();
    let peers = server.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), Lab::CLIENT_ADDR);
    assert_eq!(
        reply,
        format!("c1:3000/udp from 10.77.0.2:{}: ping", peers[0].port())
    );

    // No server: a bounded wait and a clear error.
    let err = udp_request(&client, sa(c1.addr, 3001), "x", Duration::from_millis(300));
    assert!(format!("{:#}", err.unwrap_err()).contains("no UDP reply"));

    // A reply from another address than the one asked is an error naming the real source.
    let sock_in = c1.ns.run(|| UdpSocket::bind("172.17.0.2:4000")).unwrap();
    let sock_out = c1.ns.run(|| UdpSocket::bind("172.17.0.2:4001")).unwrap();
    let echo = std::thread::spawn(move || {
        sock_in.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 100];
        let (n, peer) = sock_in.recv_from(&mut buf).unwrap();
        sock_out.send_to(&buf[..n], peer).unwrap();
    });
    let err = udp_request(&client, sa(c1.addr, 4000), "x", T).unwrap_err();
    echo.join().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("172.17.0.2:4001"), "{msg}");
}

#[test]
fn two_labs_coexist() {
    if !have_root() {
        return;
    }
    let mut a = Lab::new("a").unwrap();
    let mut b = Lab::new("b").unwrap();
    assert_ne!(a.prefix(), b.prefix());
    let ca = a.add_container("c1").unwrap();
    let cb = b.add_container("c1").unwrap();
    assert_eq!(ca.addr, cb.addr);
    assert_ne!(ca.ns, cb.ns);
    // Same addresses and ports in both labs, no clash.
    let _sa = tcp_server(&ca.ns, sa(ca.addr, 3000), "lab-a").unwrap();
    let _sb = tcp_server(&cb.ns, sa(cb.addr, 3000), "lab-b").unwrap();
    let _ua = udp_server(a.host(), sa(Lab::HOST_ADDR, 5000), "host-a").unwrap();
    let _ub = udp_server(b.host(), sa(Lab::HOST_ADDR, 5000), "host-b").unwrap();
    let ra = tcp_request(a.client(), sa(ca.addr, 3000), "x", T).unwrap();
    let rb = tcp_request(b.client(), sa(cb.addr, 3000), "x", T).unwrap();
    assert!(ra.starts_with("lab-a from 10.77.0.2:"), "{ra}");
    assert!(rb.starts_with("lab-b from 10.77.0.2:"), "{rb}");
    let ra = udp_request(a.client(), sa(Lab::HOST_ADDR, 5000), "y", T).unwrap();
    let rb = udp_request(b.client(), sa(Lab::HOST_ADDR, 5000), "y", T).unwrap();
    assert!(ra.starts_with("host-a from 10.77.0.2:"), "{ra}");
    assert!(rb.starts_with("host-b from 10.77.0.2:"), "{rb}");
}

#[test]
fn drop_deletes_namespaces() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("drop").unwrap();
    lab.add_container("c1").unwrap();
    let names: Vec<String> = lab.namespaces().iter().map(|n| n.name.clone()).collect();
    assert_eq!(names.len(), 3);
    let listed = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = listed();
    for n in &names {
        assert!(before.contains(n.as_str()), "{n} not in {before}");
    }
    drop(lab);
    let after = listed();
    for n in &names {
        assert!(!after.contains(n.as_str()), "{n} still in {after}");
    }
}

#[test]
fn spawned_processes_are_killed_at_drop() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::new("spawn").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let host = lab.host().clone();
    let sleeper = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
    // A grandchild, not known to the lab, dies too (it is inside a lab namespace).
    let out = lab
        .sh(&c1.ns, "sleep 100 >/dev/null 2>&1 </dev/null & echo $!")
        .unwrap();
    let grandchild: u32 = out.trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{sleeper}")).exists());
    assert!(std::path::Path::new(&format!("/proc/{grandchild}")).exists());

    // Spawned processes see the namespace (including its own /sys) and keep their stdio.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ls /sys/class/net; ip -4 -o addr show dev eth0"])
        .stdout(Stdio::piped());
    let pid = lab.spawn(&c1.ns, &mut cmd).unwrap();
    let out = lab.take_child(pid).unwrap().wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("eth0") && out.contains("172.17.0.2/16"),
        "{out}"
    );
    assert!(!out.contains("docker0"), "{out}");

    // Early kill, and restart.
    let early = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
    let status = lab.kill(early).unwrap();
    assert!(!status.success());
    let late = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
    assert!(lab.children().contains(&late));

    drop(lab);
    // Our children are reaped at drop; the orphaned grandchild is reaped by init, a bit later.
    let dead = |pid: u32| match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    };
    for pid in [sleeper, late] {
        assert!(dead(pid), "pid {pid} survived the lab");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !dead(grandchild) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(dead(grandchild), "pid {grandchild} survived the lab");
}

#[test]
fn exec_reports_failures() {
    if !have_root() {
        return;
    }
    let lab = Lab::new("exec").unwrap();
    let err = lab.sh(lab.host(), "echo oops >&2; exit 3").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("oops") && msg.contains('3'), "{msg}");
    let err = lab
        .exec_timeout(lab.host(), &["sleep", "5"], Duration::from_millis(200))
        .unwrap_err();
    assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    assert_eq!(lab.sh(lab.client(), "echo hi").unwrap(), "hi\n");
}
