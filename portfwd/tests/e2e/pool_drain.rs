//! Draining (issue #16, item 4) and daemon restarts, end to end:
//! - a backend removed by a reload keeps its established TCP connections until the grace
//!   period ends (2 s here), `list` shows it `draining`, new flows avoid it, its UDP flows move
//!   to the others at once; after the grace, its connections no longer reach it;
//! - `portfwd drain` does the same to a backend that stays listed (weight 0), and
//!   `portfwd drain --undo` gives it new flows again;
//! - `portfwd del LISTEN TARGET` takes one target out of a pool, drained the same way;
//! - a daemon killed and started again (with a backend added while it was dead) keeps every
//!   established flow on its backend.
//!
//! Flows are picked with [`predicted`] (the daemon's Maglev table and flow hash): ports whose
//! flow goes to the backend the test drains.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::support::{
    Scenario, host_port,
    pool::{Conn, Datagrams, TCP, UDP, backend_of, names, predicted, tcp_backend},
};

const PORT: u16 = 3000;
const GRACE: Duration = Duration::from_secs(2);

/// Containers c1..cN, each with a TCP and a UDP server on 3000, and a TCP and a UDP pool on
/// 8080 over all of them, with a grace period of 2 s.
fn drained_lab(tag: &str, n: usize) -> Scenario {
    let targets: Vec<String> = names(n).iter().map(|c| format!("{c}:{PORT}")).collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut setup = Scenario::new(tag).containers(n);
    for c in names(n) {
        setup = setup.tcp_server(&c, PORT).udp_server(&c, PORT);
    }
    setup
        .pool("8080", &targets, &[r#"grace: "2s""#])
        .pool("8080/udp", &targets, &[r#"grace: "2s""#])
        .daemon()
}

fn addrs(s: &Scenario, n: usize) -> Vec<SocketAddr> {
    names(n)
        .iter()
        .map(|c| SocketAddr::from((s.c(c).addr, PORT)))
        .collect()
}

/// Source ports from `from` whose flow of `proto` to 8080 Maglev gives `to` among `set`.
fn ports_to(set: &[SocketAddr], to: SocketAddr, proto: u8, from: u16) -> Vec<u16> {
    (from..)
        .filter(|&p| predicted(set, proto, p, host_port(8080)) == to)
        .take(20)
        .collect()
}

/// What a test holds on the backend it drains: TCP connections and a UDP flow on c1.
struct OnC1 {
    conns: Vec<Conn>,
    udp: Datagrams,
    /// Fresh ports whose new TCP flows went to c1 before it was drained.
    fresh: Vec<u16>,
}

/// Opens three connections and one UDP flow that go to c1 (checked), keeping ten more of c1's
/// ports unused.
fn hold_c1(s: &Scenario, set: &[SocketAddr]) -> OnC1 {
    let client = s.lab.client().clone();
    let tcp = ports_to(set, set[0], TCP, 20_000);
    let udp = ports_to(set, set[0], UDP, 30_000);
    let conns: Vec<Conn> = tcp[..3]
        .iter()
        .map(|&p| {
            let mut c = Conn::open(&client, p, host_port(8080), Duration::from_secs(3)).unwrap();
            let r = c.request("hello").unwrap();
            assert_eq!(
                backend_of(&r),
                "c1:3000",
                "flow from {p}: Maglev gives it c1"
            );
            c
        })
        .collect();
    let flow = Datagrams::open(&client, udp[0], host_port(8080));
    assert_eq!(flow.backend("hello").unwrap(), "c1:3000");
    OnC1 {
        conns,
        udp: flow,
        fresh: tcp[3..13].to_vec(),
    }
}

/// While c1 drains: its connections are still answered by c1, new flows that went to c1 go
/// elsewhere, its UDP flow moved (`udp_drained`; else it stays), and `list` says `draining`
/// (weight 0).
fn check_draining(s: &Scenario, held: &mut OnC1, c1: &str, udp_drained: bool) {
    let client = s.lab.client().clone();
    for round in 0..5 {
        for conn in &mut held.conns {
            let r = conn
                .request(&format!("draining {round}"))
                .unwrap_or_else(|e| panic!("a draining connection (port {}): {e:#}", conn.sport));
            assert_eq!(backend_of(&r), "c1:3000", "{r}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for &p in &held.fresh {
        let tag = tcp_backend(&client, p, host_port(8080)).unwrap();
        assert_ne!(
            tag, "c1:3000",
            "a new flow from {p} went to the draining backend"
        );
    }
    let udp = held.udp.backend("after").unwrap();
    if udp_drained {
        assert_ne!(
            udp, "c1:3000",
            "the UDP flow of a draining backend re-hashes"
        );
    } else {
        assert_eq!(udp, "c1:3000", "the UDP pool's c1 was left alone");
    }
    let row = s.backend("8080/tcp", c1);
    assert_eq!((row.state.as_str(), row.weight), ("draining", 0), "{row:?}");
    assert!(
        row.live_flows >= 3,
        "its three connections are live: {row:?}"
    );
}

/// After the grace period (counted from `since`, plus 1 s), c1's connections no longer reach
/// it: a line sent gets no answer from c1.
fn check_cut(held: &mut OnC1, since: Instant) {
    let end = since + GRACE + Duration::from_secs(1);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    for conn in &mut held.conns {
        match conn.request_within("after the grace", Duration::from_secs(2)) {
            Ok(r) => panic!(
                "the connection from {} still reached a backend after the grace: {r}",
                conn.sport
            ),
            Err(e) => eprintln!("pool e2e: after the grace, port {}: {e:#}", conn.sport),
        }
    }
}

#[test]
fn a_reload_that_removes_a_backend_drains_its_connections_until_the_grace_ends() {
    require_root!();
    let s = drained_lab("drainrld", 3);
    let set = addrs(&s, 3);
    let c1 = set[0].to_string();
    let mut held = hold_c1(&s, &set);

    let config = std::fs::read_to_string(&s.d.config).unwrap();
    let without = config.replace(&format!("\"{c1}\", "), "");
    assert_ne!(without, config, "{config}");
    s.reload_with(&without);
    let reloaded = Instant::now();
    check_draining(&s, &mut held, &c1, true);
    check_cut(&mut held, reloaded);
    // Its grace over, the backend is gone from the list.
    let rows = s.backends("8080/tcp");
    assert!(rows.iter().all(|b| b.target != c1), "{rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn portfwd_drain_and_undo() {
    require_root!();
    let s = drained_lab("draincli", 3);
    let set = addrs(&s, 3);
    let c1 = set[0].to_string();
    let mut held = hold_c1(&s, &set);

    s.cli_ok(&["drain", "8080", &c1]);
    s.cli_ok(&["drain", "8080/udp", &c1]);
    let drained = Instant::now();
    check_draining(&s, &mut held, &c1, true);
    check_cut(&mut held, drained);
    // Still listed, drained, until undone.
    let row = s.backend("8080/tcp", &c1);
    assert_eq!((row.state.as_str(), row.weight), ("draining", 0), "{row:?}");

    s.cli_ok(&["drain", "8080", &c1, "--undo"]);
    s.cli_ok(&["drain", "8080/udp", &c1, "--undo"]);
    let row = s.backend("8080/tcp", &c1);
    assert_eq!(row.weight, 1, "{row:?}");
    assert_ne!(row.state, "draining", "{row:?}");
    let client = s.lab.client().clone();
    for &p in &ports_to(&set, set[0], TCP, 25_000)[..5] {
        assert_eq!(
            tcp_backend(&client, p, host_port(8080)).unwrap(),
            "c1:3000",
            "after --undo, c1's flows reach it again (port {p})"
        );
    }
    let udp_row = s.backend("8080/udp", &c1);
    assert_eq!(udp_row.weight, 1, "{udp_row:?}");
}

#[test]
fn portfwd_del_one_target_drains_it_out_of_the_pool() {
    require_root!();
    let s = drained_lab("draindel", 3);
    let set = addrs(&s, 3);
    let c1 = set[0].to_string();
    let mut held = hold_c1(&s, &set);

    s.cli_ok(&["del", "8080", &c1]);
    let deleted = Instant::now();
    check_draining(&s, &mut held, &c1, false);
    let saved = std::fs::read_to_string(&s.d.config).unwrap();
    assert_eq!(
        saved.matches(&c1).count(),
        1,
        "removed from the TCP pool only (the UDP pool keeps it): {saved}"
    );
    check_cut(&mut held, deleted);
    assert!(s.backends("8080/tcp").iter().all(|b| b.target != c1));
    assert!(s.backends("8080/udp").iter().any(|b| b.target == c1));
}

/// Twelve TCP connections and twelve UDP flows over four backends; the daemon is killed, a
/// fifth backend is added to the config while it is dead, and it is started again: every flow
/// is answered by its backend before, while no daemon runs, and after, including the flows the
/// five-backend table sends elsewhere. New flows reach the fifth backend (the set did change).
#[test]
fn a_daemon_restart_keeps_every_flow_on_its_backend() {
    require_root!();
    let targets: Vec<String> = names(4).iter().map(|c| format!("{c}:{PORT}")).collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut setup = Scenario::new("poolrst").containers(5);
    for c in names(5) {
        setup = setup.tcp_server(&c, PORT).udp_server(&c, PORT);
    }
    let mut s = setup
        .pool("8080", &targets, &[])
        .pool("8080/udp", &targets, &[])
        .daemon();
    let (four, five) = (addrs(&s, 4), addrs(&s, 5));
    let client = s.lab.client().clone();
    let moving = |proto: u8, from: u16| -> Vec<u16> {
        let movers = (from..)
            .filter(|&p| {
                predicted(&four, proto, p, host_port(8080))
                    != predicted(&five, proto, p, host_port(8080))
            })
            .take(6);
        movers.chain(from + 1000..from + 1006).collect()
    };
    let mut conns: Vec<(Conn, String)> = moving(TCP, 20_000)
        .into_iter()
        .map(|p| {
            let mut c = Conn::open(&client, p, host_port(8080), Duration::from_secs(3)).unwrap();
            let tag = backend_of(&c.request("hello").unwrap()).to_owned();
            (c, tag)
        })
        .collect();
    let flows: Vec<(Datagrams, String)> = moving(UDP, 30_000)
        .into_iter()
        .map(|p| {
            let f = Datagrams::open(&client, p, host_port(8080));
            let tag = f.backend("hello").unwrap();
            (f, tag)
        })
        .collect();
    let mut failures = Vec::new();
    let mut exchange = |conns: &mut Vec<(Conn, String)>, when: &str| {
        for (c, tag) in conns.iter_mut() {
            match c.request(when) {
                Ok(r) if backend_of(&r) == tag => {}
                r => failures.push(format!("tcp {} {when}: {r:?} (was {tag})", c.sport)),
            }
        }
        for (f, tag) in &flows {
            match f.backend(when) {
                Ok(got) if got == *tag => {}
                r => failures.push(format!("udp {when}: {r:?} (was {tag})")),
            }
        }
    };
    exchange(&mut conns, "before");

    s.d.kill9();
    exchange(&mut conns, "while-dead");
    let c4 = format!("\"{}\"", four[3]);
    let config = std::fs::read_to_string(&s.d.config).unwrap();
    let grown = config.replace(&c4, &format!("{c4}, \"{}\"", five[4]));
    assert_ne!(grown, config);
    std::fs::write(&s.d.config, grown).unwrap();
    s.d.restart();
    exchange(&mut conns, "after-restart");
    std::thread::sleep(Duration::from_secs(1));
    exchange(&mut conns, "a-second-later");
    assert!(
        failures.is_empty(),
        "flows left their backend: {failures:#?}"
    );
    assert_eq!(s.backends("8080/tcp").len(), 5);
    let c5: Vec<u16> = (35_000..)
        .filter(|&p| predicted(&five, TCP, p, host_port(8080)) == five[4])
        .take(3)
        .collect();
    for p in c5 {
        assert_eq!(
            tcp_backend(&client, p, host_port(8080)).unwrap(),
            "c5:3000",
            "a new flow after the restart (port {p})"
        );
    }
}
