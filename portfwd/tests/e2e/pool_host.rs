//! A forward with several backends seen from the host (#16): connections of the host's own
//! processes go through the socket hooks, which pick a backend per socket; and `portfwd check`
//! probes each backend and says which one fails.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, TcpStream},
};

use crate::check::{check_json, forward_report, kinds};
use crate::support::{Scenario, T, at, sock_verdict, verdict};

#[test]
fn host_connections_to_a_pool_are_spread_over_its_backends_by_the_socket_hooks() {
    require_root!();
    let s = Scenario::new("plhost")
        .containers(2)
        .tcp_server("c1", 3000)
        .tcp_server("c2", 3000)
        .pool("8080", &["c1:3000", "c2:3000"], &[])
        .daemon();
    let to = at(Ipv4Addr::LOCALHOST, 8080);
    let mut answered = BTreeSet::new();
    for i in 0..24 {
        let reply = s.lab.host().run(|| {
            let c = TcpStream::connect_timeout(&to, T)
                .unwrap_or_else(|e| panic!("host connect {i} to {to}: {e}"));
            c.set_read_timeout(Some(T)).unwrap();
            assert_eq!(
                c.peer_addr().unwrap(),
                to,
                "getpeername: the address connected to"
            );
            (&c).write_all(b"from the host\n").unwrap();
            let mut line = String::new();
            BufReader::new(&c).read_line(&mut line).unwrap();
            line
        });
        let backend = reply.split(" from ").next().unwrap_or_default().to_owned();
        answered.insert(backend);
    }
    // A socket's backend is its cookie's hash into the table: 24 sockets over 2 backends all
    // land on one with probability 2^-23.
    assert_eq!(
        answered,
        BTreeSet::from(["c1:3000".to_owned(), "c2:3000".to_owned()]),
        "24 host connections"
    );
    let st = s.status_json();
    assert!(sock_verdict(&st, "connect_translated") >= 24, "{st}");
    // The sockets talk to the backends directly: no packet was translated for them.
    assert_eq!(verdict(&st, "forwarded"), 0, "{st}");
}

#[test]
fn check_probes_each_backend_and_names_the_one_that_fails() {
    require_root!();
    let s = Scenario::new("plcheck")
        .containers(2)
        .tcp_server("c1", 3000)
        .pool("8080", &["c1:3000", "c2:3000"], &[])
        .daemon();
    let (c1, c2) = (s.c("c1"), s.c("c2"));
    let (code, report) = check_json(&s, &["8080"]);
    assert_ne!(
        code, 0,
        "a backend that refuses makes check fail: {report:#}"
    );
    let f = forward_report(&report, "8080/tcp");
    assert_eq!(
        f["to"],
        format!("{}:3000,{}:3000", c1.addr, c2.addr),
        "{f:#}"
    );
    assert_eq!(f["verdict"], "fail", "{f:#}");
    let k = kinds(f);
    assert!(k.contains(&"healthy".to_owned()), "{k:?}");
    assert!(k.contains(&"nothing_listens".to_owned()), "{k:?}");
    let reasons: Vec<&str> = f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    // Each finding names its backend.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&c1.addr.to_string()) && r.contains("accepted")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains(&c2.addr.to_string())),
        "{reasons:?}"
    );
}
