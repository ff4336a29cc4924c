//! Several backends behind one port (issue #16): new flows spread over 2 and over 16 backends
//! (TCP and UDP), and a flow stays on its backend for its life, while a reload adds a backend.
//!
//! The backends are line-echo servers in the lab's containers that answer with their name
//! (`c3:3000 from ...`), so each reply says which backend served the flow. Every flow of these
//! tests comes from a source port the test picks, so the hash, and so the outcome, is the same
//! on every run: a bound on the spread cannot be met by luck on one run and missed on the next.
//! [`pool::predicted`] computes where Maglev sends a flow with the daemon's own table builder and
//! flow hash, which lets the affinity test pick flows that the added backend's table would move.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::support::{
    Scenario, Setup, host_port,
    pool::{self, Conn, Datagrams, TCP, UDP, names, predicted, tcp_backend},
};

/// The containers' server port.
const PORT: u16 = 3000;

/// `n` containers, each with a TCP and a UDP server on [`PORT`] answering as `cN:3000`.
fn backends(tag: &str, n: usize) -> Setup {
    let mut setup = Scenario::new(tag).containers(n);
    for c in names(n) {
        setup = setup.tcp_server(&c, PORT).udp_server(&c, PORT);
    }
    setup
}

/// `c1:3000`, … `cN:3000` (resolved to addresses by the scenario).
fn targets(n: usize) -> Vec<String> {
    names(n).iter().map(|c| format!("{c}:{PORT}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The addresses of backends `c1..cN` (what `list` and [`predicted`] name them by).
fn addrs(s: &Scenario, n: usize) -> Vec<SocketAddr> {
    names(n)
        .iter()
        .map(|c| SocketAddr::from((s.c(c).addr, PORT)))
        .collect()
}

/// The bound on each backend's count of `flows` new flows spread over `k` backends: the
/// expected count `flows / k` plus or minus 5 standard deviations of a binomial count
/// (`sqrt(flows × p × (1 - p))`, `p = 1/k`) and 1% of the expected count for the Maglev table's
/// own unevenness (a table of 16,381 slots gives each of 16 backends its share within about
/// 1%). A fair hash leaves a given backend outside 5 σ with probability 6e-7; these flows are
/// fixed, so the check is deterministic: it catches a hash or table that favours backends.
fn spread_bound(flows: usize, k: usize) -> (f64, f64) {
    let p = 1.0 / k as f64;
    let expected = flows as f64 * p;
    let sigma = (flows as f64 * p * (1.0 - p)).sqrt();
    let slack = 5.0 * sigma + 0.01 * expected;
    (expected - slack, expected + slack)
}

/// Sends `flows` new flows to `listen` from source ports `first..`, each asking `serve(sport)`
/// which backend answered; asserts every one of the `k` backends got a share within
/// [`spread_bound`], and that `list`'s per-backend `new_flows` counted exactly those flows.
fn check_spread(
    s: &Scenario,
    listen: &str,
    k: usize,
    flows: usize,
    first: u16,
    serve: impl Fn(u16) -> anyhow::Result<String>,
) {
    let before: BTreeMap<String, u64> = s
        .backends(listen)
        .into_iter()
        .map(|b| (b.target, b.new_flows))
        .collect();
    let started = Instant::now();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..flows {
        let sport = first + i as u16;
        let tag =
            serve(sport).unwrap_or_else(|e| panic!("{listen}, flow from port {sport}: {e:#}"));
        *got.entry(tag).or_default() += 1;
    }
    let (low, high) = spread_bound(flows, k);
    eprintln!(
        "pool e2e: {flows} flows to {listen} over {k} backends in {:?}: {got:?} (each within \
         {low:.0}..{high:.0})",
        started.elapsed()
    );
    assert_eq!(got.len(), k, "every backend gets flows: {got:?}");
    for (tag, n) in &got {
        assert!(
            (low..=high).contains(&(*n as f64)),
            "{tag} got {n} of {flows} flows, outside {low:.0}..{high:.0}: {got:?}"
        );
    }
    // The per-backend counters saw the same flows.
    let rows = s.backends(listen);
    for (tag, n) in &got {
        let name = tag.split(':').next().unwrap();
        let target = format!("{}:{PORT}", s.c(name).addr);
        let row = rows
            .iter()
            .find(|b| b.target == target)
            .unwrap_or_else(|| panic!("no backend {target} in list: {rows:?}"));
        let counted = row.new_flows - before.get(&target).copied().unwrap_or(0);
        assert_eq!(
            counted, *n as u64,
            "{listen}: list counts {counted} new flows on {target}, {n} reached it: {rows:?}"
        );
        assert!(row.packets >= *n as u64 && row.bytes > 0, "{row:?}");
    }
}

#[test]
fn tcp_flows_spread_over_2_and_over_16_backends() {
    require_root!();
    let (two, sixteen) = (targets(2), targets(16));
    let s = backends("spreadtcp", 16)
        .pool("8080", &refs(&two), &[])
        .pool("8081", &refs(&sixteen), &[])
        .daemon();
    let client = s.lab.client().clone();
    check_spread(&s, "8080/tcp", 2, 600, 20_000, |sport| {
        tcp_backend(&client, sport, host_port(8080))
    });
    check_spread(&s, "8081/tcp", 16, 1_600, 30_000, |sport| {
        tcp_backend(&client, sport, host_port(8081))
    });
}

#[test]
fn udp_flows_spread_over_2_and_over_16_backends() {
    require_root!();
    let (two, sixteen) = (targets(2), targets(16));
    let s = backends("spreadudp", 16)
        .pool("8080/udp", &refs(&two), &[])
        .pool("8081/udp", &refs(&sixteen), &[])
        .daemon();
    let client = s.lab.client().clone();
    check_spread(&s, "8080/udp", 2, 600, 20_000, |sport| {
        Datagrams::open(&client, sport, host_port(8080)).backend(&format!("from {sport}"))
    });
    check_spread(&s, "8081/udp", 16, 1_600, 30_000, |sport| {
        Datagrams::open(&client, sport, host_port(8081)).backend(&format!("from {sport}"))
    });
}

/// Source ports from `from` whose flow `proto` goes to a backend of `before` and, once the
/// set is `after`, would go elsewhere (`moved`) or would not (`kept`): `n` of each.
fn movers(
    before: &[SocketAddr],
    after: &[SocketAddr],
    proto: u8,
    from: u16,
    n: usize,
) -> (Vec<u16>, Vec<u16>) {
    let (mut moved, mut kept) = (Vec::new(), Vec::new());
    for sport in from.. {
        if moved.len() == n && kept.len() == n {
            break;
        }
        let (a, b) = (
            predicted(before, proto, sport, host_port(8080)),
            predicted(after, proto, sport, host_port(8080)),
        );
        let list = if a == b { &mut kept } else { &mut moved };
        if list.len() < n {
            list.push(sport);
        }
    }
    (moved, kept)
}

/// The tag a backend at `addr` answers with.
fn tag_of(s: &Scenario, addr: SocketAddr) -> String {
    let c = s
        .lab
        .containers()
        .iter()
        .find(|c| SocketAddr::from((c.addr, PORT)) == addr)
        .unwrap_or_else(|| panic!("no container at {addr}"));
    format!("{}:{PORT}", c.name)
}

/// One TCP connection carrying many messages, and one UDP flow (one source port) of many
/// datagrams, each answered by the same backend from the first to the last, while a reload
/// adds a fourth backend in the middle. The flows are picked (by [`predicted`]) among those
/// that the four-backend table sends elsewhere, and as many that it does not: a datapath that
/// hashed every packet, or forgot its flows on reload, would move the former. New flows after
/// the reload do reach the added backend, so the table did change.
#[test]
fn a_connection_and_a_udp_flow_stay_on_their_backend_while_a_reload_adds_one() {
    require_root!();
    let three = targets(3);
    let s = backends("affinity", 4)
        .pool("8080", &refs(&three), &[])
        .pool("8080/udp", &refs(&three), &[])
        .daemon();
    let (before, after) = (addrs(&s, 3), addrs(&s, 4));
    let client = s.lab.client().clone();

    let (tcp_moved, tcp_kept) = movers(&before, &after, TCP, 41_000, 6);
    let (udp_moved, udp_kept) = movers(&before, &after, UDP, 42_000, 6);
    let mut conns: Vec<(Conn, String)> = Vec::new();
    let mut flows: Vec<(Datagrams, String)> = Vec::new();
    let mut mismatches = Vec::new();
    for sport in tcp_moved.iter().chain(&tcp_kept).copied() {
        let mut conn = Conn::open(&client, sport, host_port(8080), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connection from {sport}: {e}"));
        let tag = pool::backend_of(&conn.request("first").unwrap()).to_owned();
        let expected = tag_of(&s, predicted(&before, TCP, sport, host_port(8080)));
        if tag != expected {
            mismatches.push(format!("tcp {sport}: {tag}, Maglev says {expected}"));
        }
        conns.push((conn, tag));
    }
    for sport in udp_moved.iter().chain(&udp_kept).copied() {
        let flow = Datagrams::open(&client, sport, host_port(8080));
        let tag = flow.backend("first").unwrap();
        let expected = tag_of(&s, predicted(&before, UDP, sport, host_port(8080)));
        if tag != expected {
            mismatches.push(format!("udp {sport}: {tag}, Maglev says {expected}"));
        }
        flows.push((flow, tag));
    }

    // The reload runs while the messages flow.
    let config = std::fs::read_to_string(&s.d.config).unwrap();
    let addr = |n: usize| format!("\"{}:{PORT}\"", s.c(&format!("c{n}")).addr);
    let grown = config.replace(&addr(3), &format!("{}, {}", addr(3), addr(4)));
    assert_ne!(grown, config, "the config lists c3: {config}");
    let next = s.d.config.with_extension("next");
    std::fs::write(&next, &grown).unwrap();
    std::fs::rename(&next, &s.d.config).unwrap();
    let mut failures = Vec::new();
    let mut reload = None;
    let started = Instant::now();
    for round in 0..40 {
        if round == 10 {
            reload = Some(s.d.cli_command(&["reload"]).spawn().unwrap());
        }
        for (conn, tag) in &mut conns {
            match conn.request(&format!("message {round}")) {
                Ok(r) if pool::backend_of(&r) == tag => {}
                Ok(r) => failures.push(format!("tcp {} round {round}: {r}", conn.sport)),
                Err(e) => failures.push(format!("tcp {} round {round}: {e:#}", conn.sport)),
            }
        }
        for (flow, tag) in &flows {
            match flow.request(&format!("datagram {round}")) {
                Ok(r) if pool::backend_of(&r) == tag => {}
                Ok(r) => failures.push(format!("udp round {round}: {r} (was {tag})")),
                Err(e) => failures.push(format!("udp round {round}: {e:#}")),
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = reload.unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "portfwd reload: {out:?}");
    eprintln!(
        "pool e2e: 12 connections and 12 UDP flows, 40 rounds through a reload in {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "flows left their backend: {failures:#?}"
    );
    assert_eq!(
        s.backends("8080/tcp").len(),
        4,
        "{:?}",
        s.backends("8080/tcp")
    );

    // New flows follow the new table: those Maglev now gives c4 reach it.
    let c4 = after[3];
    let fresh: Vec<u16> = (43_000..)
        .filter(|&p| predicted(&after, TCP, p, host_port(8080)) == c4)
        .take(5)
        .collect();
    for sport in fresh {
        let tag = tcp_backend(&client, sport, host_port(8080)).unwrap();
        assert_eq!(tag, "c4:3000", "new flow from {sport} after the reload");
    }
    assert!(
        mismatches.is_empty(),
        "the datapath picked other backends than Maglev over the 5-tuple (as \
         portfwd::balance builds it): {mismatches:#?}"
    );
}
