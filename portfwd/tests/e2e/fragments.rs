//! Fragmented datagrams through a published UDP port (issue #19): a 4000-byte request from the
//! client, fragmented on its 1500-byte link, and the container's 8000-byte answer, fragmented by
//! the container's stack, in both families. The same exchange runs once through iptables DNAT as
//! Docker writes it (the reference: conntrack reassembles, NATs, and the output fragments again)
//! and once through portfwd (which translates each fragment); both must deliver the answer
//! intact. XDP mode too, with `PORTFWD_E2E_MODE=xdp`.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::support::{self, Scenario, T, at, host_port, host6};
use portfwd_lab::{Container, Lab, Ns};

const REQUEST: usize = 4000;
const ANSWER: usize = 8000;
/// The published port, and the container's.
const PORT: u16 = 5353;
const TARGET_PORT: u16 = 53;

/// The bytes of a message of `len` bytes numbered `n`: every byte depends on both, so a lost,
/// duplicated or misplaced fragment shows.
fn message(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 / 3) as u8 ^ n).collect()
}

/// A UDP server in a container that answers each [`REQUEST`]-byte request `message(n, ..)` with
/// `message(n, ANSWER)`; anything else gets no answer. Stops on drop.
struct BigAnswers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BigAnswers {
    fn start(ns: &Ns, binds: &[SocketAddr]) -> BigAnswers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &bind in binds {
            let socket = ns.run(move || UdpSocket::bind(bind)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let n = buf[0];
                    if buf[..len] == message(n, REQUEST)[..] {
                        let _ = socket.send_to(&message(n, ANSWER), peer);
                    }
                }
            }));
        }
        BigAnswers { stop, threads }
    }

    /// One server socket per family, on the container's addresses.
    fn in_container(c: &Container) -> BigAnswers {
        let binds = [at(c.addr, TARGET_PORT), at(c.addr6, TARGET_PORT)];
        BigAnswers::start(&c.ns, &binds)
    }
}

impl Drop for BigAnswers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Request `n` from the client to `to`: `Ok` when the whole answer comes back from `to`.
fn exchange(client: &Ns, to: SocketAddr, n: u8) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() {
        at(IpAddr::from([0u8; 4]), 0)
    } else {
        at(IpAddr::from([0u16; 8]), 0)
    };
    let socket = client.run(move || UdpSocket::bind(any)).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    socket
        .send_to(&message(n, REQUEST), to)
        .map_err(|e| format!("sending to {to}: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let (len, from) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer from {to} within {T:?}: {e}"))?;
    if from != to {
        return Err(format!("the answer came from {from}, not {to}"));
    }
    if buf[..len] != message(n, ANSWER)[..] {
        return Err(format!("the answer has {len} bytes, not the {ANSWER} sent"));
    }
    Ok(())
}

/// Both families' exchanges, each request numbered after `first`.
fn exchanges(client: &Ns, first: u8) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, to) in [host_port(PORT), host6(PORT)].into_iter().enumerate() {
        if let Err(e) = exchange(client, to, first + i as u8) {
            failures.push(format!("{to}: {e}"));
        }
    }
    failures
}

/// The rules Docker (iptables backend, with IPv6 enabled) writes for `-p PORT:TARGET_PORT/udp`
/// to a container on docker0, for `cmd` (`iptables-restore`, `ip6tables-restore`).
fn docker_rules(cmd: &str, subnet: &str, target: &str) -> String {
    let bridge = Lab::BRIDGE;
    format!(
        "{cmd} <<'EOF'
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE
-A DOCKER -i {bridge} -j RETURN
-A DOCKER ! -i {bridge} -p udp -m udp --dport {PORT} -j DNAT --to-destination {target}
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o {bridge} -j DOCKER
-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT
-A DOCKER ! -i {bridge} -o {bridge} -p udp -m udp --dport {TARGET_PORT} -j ACCEPT
COMMIT
EOF
"
    )
}

#[test]
fn iptables_dnat_forwards_and_answers_fragmented_datagrams() {
    require_root!();
    let mut lab = Lab::new("fragnf").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let v4 = docker_rules(
        "iptables-restore",
        &format!("{}/{}", Lab::BRIDGE_ADDR, Lab::BRIDGE_PREFIX_LEN),
        &format!("{}:{TARGET_PORT}", c1.addr),
    );
    let v6 = docker_rules(
        "ip6tables-restore",
        &format!("{}/{}", Lab::BRIDGE_ADDR6, Lab::PREFIX6_LEN),
        &format!("[{}]:{TARGET_PORT}", c1.addr6),
    );
    lab.sh(lab.host(), &format!("{v4}{v6}")).unwrap();
    let _server = BigAnswers::in_container(&c1);
    let failures = exchanges(lab.client(), 1);
    assert!(failures.is_empty(), "through iptables DNAT: {failures:?}");
}

#[test]
fn portfwd_forwards_and_answers_fragmented_datagrams() {
    require_root!();
    let s = Scenario::new("frag")
        .containers(1)
        .forward(&format!("{PORT}/udp"), &format!("c1:{TARGET_PORT}"))
        .forward(&format!("{PORT}/udp"), &format!("[c1]:{TARGET_PORT}"))
        .expose_containers_in_xdp()
        .daemon();
    let _server = BigAnswers::in_container(&s.c("c1"));
    support::assert_no_netfilter_nat(&s.lab);
    let failures = exchanges(s.lab.client(), 1);
    assert!(failures.is_empty(), "through portfwd: {failures:?}");

    // portfwd did it, fragment by fragment: per family, the request's 2 later fragments (of 3)
    // and the answer's 5 (of 6) followed their first fragments; none came before it.
    let translated = s.verdict("fragment_translated");
    assert!(
        translated >= 2 * (2 + 5),
        "fragment_translated {translated}"
    );
    assert_eq!(s.verdict("pass_fragment_before_first"), 0);
    let list = s.list_json();
    for f in &list {
        assert!(
            f["packets_to_target"].as_u64().unwrap() >= 3
                && f["packets_to_client"].as_u64().unwrap() >= 6,
            "every fragment counted for its forward: {list:?}"
        );
    }
}
