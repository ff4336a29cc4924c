//! Replies on published ports are never taken for new connections (issue #19, item 1).
//!
//! Today: the daemon keeps the published ports out of the kernel's ephemeral port choice, so the
//! host does not connect out from one of them by itself.

use crate::support::Scenario;

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

#[test]
fn published_ports_are_reserved_and_given_back() {
    require_root!();
    let s = Scenario::new("resv")
        .containers(1)
        .tcp_server("c1", 3000)
        .forward("8080", "c1:3000")
        .daemon();
    // One read(2) of a large buffer: the sysctl answers only a read at offset 0, so
    // `read_to_string` (which starts small) would see the list cut after 32 bytes.
    let read = || {
        s.lab.host().run(|| {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            let n = std::fs::File::open(RESERVED_PORTS)
                .and_then(|mut f| f.read(&mut buf))
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).trim().to_owned()
        })
    };
    // The lab's host namespace starts with none reserved.
    assert_eq!(read(), "8080", "the forward of the config");

    let out = s.cli(&[
        "add",
        "20000-20999/udp",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999");
    assert_eq!(s.status_json()["reserved_ports"], "8080,20000-20999");

    // A list longer than the 32 bytes a first small read gets: the sysctl answers only one read.
    let out = s.cli(&[
        "add",
        "30000-30999",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&[
        "add",
        "40000-40999/udp",
        &format!("{}:3000-3999", s.c("c1").addr),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999,30000-30999,40000-40999");
    let out = s.cli(&["del", "30000-30999"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080,20000-20999,40000-40999");
    assert_eq!(
        s.status_json()["reserved_ports"],
        "8080,20000-20999,40000-40999"
    );
    let out = s.cli(&["del", "40000-40999/udp"]);
    assert!(out.status.success(), "{out:?}");

    let out = s.cli(&["del", "20000-20999/udp"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "8080", "the range's ports are given back");

    let out = s.cli(&["del", "8080"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "", "what the namespace had before the daemon");
}
