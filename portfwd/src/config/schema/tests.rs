//! The schema check: what parses, and every error with its file, line, column and field.

use std::net::Ipv4Addr;

use crate::{
    config::{
        Config, render,
        tests::{FILE, error, fwd, parse},
    },
    publish::Forward,
};

#[test]
fn dual_stack_forwards() {
    let text = "forwards:
  - listen: \"8080\"
    to: \"172.17.0.2:80\"
    allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]
  - listen: \"8080\"
    to: \"[fd00:17::2]:80\"
    allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]
  - listen: \"[::1]:9000-9001/udp\"
    to: \"[fd00:17::2]:9000-9001\"
";
    let c = parse(text);
    assert_eq!(
        c.forwards,
        [
            fwd("8080 -> 172.17.0.2:80 allow 10.0.0.0/8,2001:db8::/32"),
            fwd("[::]:8080 -> [fd00:17::2]:80 allow 10.0.0.0/8,2001:db8::/32"),
            fwd("[::1]:9000-9001/udp -> [fd00:17::2]:9000-9001"),
        ]
    );
    assert_eq!(
        render(Some(text), &c),
        text,
        "saving what was loaded changes nothing"
    );
    let fresh = render(None, &c);
    assert_eq!(parse(&fresh), c, "{fresh}");
    assert!(fresh.contains("\"[::]:8080/tcp\""), "{fresh}");
}

#[test]
fn example_files() {
    let installed = include_str!("../../../../config/portfwd.yaml");
    assert_eq!(parse(installed), Config::default());
    let demo = parse(include_str!("../../../../config/demo.yaml"));
    assert_eq!(
        demo,
        Config {
            interfaces: vec![],
            forwards: vec![fwd("8080/tcp -> 172.17.0.2:3000")],
            ..Config::default()
        }
    );
    assert_eq!(demo.forwards[0].to.addr, Ipv4Addr::new(172, 17, 0, 2));
}

#[test]
fn empty_documents() {
    for text in [
        "",
        "\n",
        "# only a comment\n",
        "---\n",
        "~\n",
        "{}\n",
        "interfaces:\nforwards:\n",
        "forwards: []\n",
    ] {
        assert_eq!(parse(text), Config::default(), "{text:?}");
    }
}

#[test]
fn full_document() {
    let config = parse(
        r#"# top
interfaces: [eth0, "ens3"]   # two
forwards:
  - listen: "8080"
    protocol: tcp
    to: "172.17.0.2:3000"
  - listen: 10.0.0.1:53/UDP
    to: 172.17.0.3:53
  - listen: 5353
    protocol: UDP
    to: 172.17.0.3:53
  - {listen: "0.0.0.0:9000", to: "172.17.0.4:9000"}
  - listen: "10.0.0.1:8080"
    protocol: udp
    to: '172.17.0.5:80'
"#,
    );
    assert_eq!(config.interfaces, ["eth0", "ens3"]);
    let want: Vec<Forward> = [
        "8080/tcp -> 172.17.0.2:3000",
        "10.0.0.1:53/udp -> 172.17.0.3:53",
        "5353/udp -> 172.17.0.3:53",
        "9000/tcp -> 172.17.0.4:9000",
        "10.0.0.1:8080/udp -> 172.17.0.5:80",
    ]
    .into_iter()
    .map(fwd)
    .collect();
    assert_eq!(config.forwards, want);
}

#[test]
fn plain_scalars_are_taken_as_written() {
    // YAML reads these as numbers or booleans; the config wants their text.
    let config = parse("interfaces: [123, yes]\nforwards:\n  - listen: 8080\n    to: 1.2.3.4:80\n");
    assert_eq!(config.interfaces, ["123", "yes"]);
    assert_eq!(config.forwards[0].listen.port, 8080);
    assert_eq!(
        error("forwards:\n  - listen: 0x1F90\n    to: 1.2.3.4:80\n"),
        format!("{FILE}:2:13: forwards[0].listen: '0x1F90' is not a port number")
    );
    assert_eq!(
        error("forwards:\n  - listen: 8080.0\n    to: 1.2.3.4:80\n"),
        format!("{FILE}:2:13: forwards[0].listen: '8080.0' is not a port number")
    );
}

#[test]
fn bad_values_are_located() {
    let cases: &[(&str, &str)] = &[
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"172.17.0.2:3000\"\n  - listen: \"8081\"\n    to: \"172.17.0.2\"\n",
            "5:9: forwards[1].to: '172.17.0.2' needs a port: IP:PORT",
        ),
        (
            "forwards:\n  - listen: \"0\"\n    to: \"172.17.0.2:3000\"\n",
            "2:13: forwards[0].listen: port 0 is outside 1-65535",
        ),
        (
            "forwards:\n  - listen: \"70000/udp\"\n    to: \"172.17.0.2:3000\"\n",
            "2:13: forwards[0].listen: port 70000 is outside 1-65535",
        ),
        (
            "forwards:\n  - listen: abc\n    to: \"172.17.0.2:3000\"\n",
            "2:13: forwards[0].listen: 'abc' is not a port number",
        ),
        (
            "forwards:\n  - listen: \"300.1.1.1:80\"\n    to: \"172.17.0.2:3000\"\n",
            "2:13: forwards[0].listen: '300.1.1.1' is not an IP address",
        ),
        (
            "forwards:\n  - listen: \"80/icmp\"\n    to: \"172.17.0.2:3000\"\n",
            "2:13: forwards[0].listen: unknown protocol 'icmp' (expected tcp or udp)",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    protocol: sctp\n    to: \"172.17.0.2:3000\"\n",
            "3:15: forwards[0].protocol: sctp is not supported yet: portfwd forwards tcp and udp",
        ),
        (
            "forwards:\n  - listen: \"80/udp\"\n    protocol: tcp\n    to: \"172.17.0.2:3000\"\n",
            "3:15: forwards[0].protocol: '80/udp' says udp but the protocol is given as tcp",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    to: \"0.0.0.0:80\"\n",
            "3:9: forwards[0].to: target address 0.0.0.0 is unspecified (0.0.0.0); give the container's address",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    to: \"224.0.0.1:80\"\n",
            "3:9: forwards[0].to: target address 224.0.0.1 is multicast; give the container's unicast address",
        ),
        (
            "forwards:\n  - listen: \"255.255.255.255:80\"\n    to: \"1.2.3.4:80\"\n",
            "2:13: forwards[0].listen: listen address 255.255.255.255 is the broadcast address; a host address must be unicast",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), format!("{FILE}:{want}"), "{text}");
    }
}

#[test]
fn structure_errors_are_located() {
    let cases: &[(&str, &str)] = &[
        (
            "- 1\n",
            "1:1: top level: expected a mapping with interfaces and forwards, found a list",
        ),
        (
            "forward: []\n",
            "1:1: forward: unknown key (expected interfaces, forwards, mode, pin_dir, max_flows, metrics, socket_group or docker)",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    to: \"1.2.3.4:80\"\n    proto: tcp\n",
            "4:5: forwards[0].proto: unknown key (expected listen, protocol, to, allow, health, all_down or grace)",
        ),
        (
            "forwards: \"8080\"\n",
            "1:11: forwards: expected a list of forwards, found a string",
        ),
        (
            "forwards: {listen: \"80\"}\n",
            "1:11: forwards: expected a mapping... ",
        ),
        (
            "forwards:\n  - \"8080\"\n",
            "2:5: forwards[0]: expected a mapping with listen and to, found a string",
        ),
        (
            "forwards:\n  - listen: [80]\n    to: \"1.2.3.4:80\"\n",
            "2:13: forwards[0].listen: expected [HOST_IP:]HOST_PORT[-END][/PROTO], found a list",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    to:\n",
            "3:7: forwards[0].to: expected IP:PORT[-END], CONTAINER:PORT[-END] or a list of IP:PORT[*WEIGHT], found null",
        ),
        (
            "forwards:\n  - listen: \"80\"\n    protocol: [tcp]\n    to: \"1.2.3.4:80\"\n",
            "3:15: forwards[0].protocol: expected tcp or udp, found a list",
        ),
        (
            "forwards:\n  - listen: \"80\"\n",
            "2:5: forwards[0].to: missing (expected IP:PORT[-END])",
        ),
        (
            "forwards:\n  - to: \"1.2.3.4:80\"\n",
            "2:5: forwards[0].listen: missing (expected [HOST_IP:]HOST_PORT[-END][/PROTO])",
        ),
        (
            "interfaces: eth0\n",
            "1:13: interfaces: expected a list of interface names, found a string",
        ),
        (
            "interfaces: [[eth0]]\n",
            "1:14: interfaces[0]: expected an interface name, found a list",
        ),
        (
            "? [a]\n: 1\n",
            "1:3: top level: keys must be strings, found a list",
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        if let Some(prefix) = want.strip_suffix("mapping... ") {
            // A flow mapping where a list belongs.
            assert!(got.starts_with(&format!("{FILE}:{prefix}")), "{got}");
            assert!(got.ends_with("found a mapping"), "{got}");
        } else {
            assert_eq!(got, format!("{FILE}:{want}"), "{text}");
        }
    }
}

#[test]
fn messages_stay_on_one_line() {
    assert_eq!(
        error("forwards:\n  - listen: |\n      8080\n    to: 1.2.3.4:80\n"),
        format!("{FILE}:3:7: forwards[0].listen: '8080\\n' is not a port number")
    );
    assert_eq!(
        error("\"a\\nb\": 1\n"),
        format!(
            "{FILE}:1:1: a\\nb: unknown key (expected interfaces, forwards, mode, pin_dir, max_flows, metrics, socket_group or docker)"
        )
    );
    assert_eq!(
        error("interfaces: [\"eth\\t0\"]\n"),
        format!(
            "{FILE}:1:14: interfaces[0]: 'eth\\t0' is not a valid interface name: contains whitespace"
        )
    );
}

#[test]
fn duplicate_keys() {
    assert_eq!(
        error("interfaces: []\nforwards: []\ninterfaces: []\n"),
        format!("{FILE}:3:1: interfaces: duplicate key (first at line 1)")
    );
    assert_eq!(
        error("forwards:\n  - listen: \"80\"\n    to: \"1.2.3.4:80\"\n    to: \"1.2.3.4:81\"\n"),
        format!("{FILE}:4:5: forwards[0].to: duplicate key (first at line 3)")
    );
}

#[test]
fn ranges_and_allowlists() {
    let text = "\
forwards:
  - listen: \"8000-8010\"
    to: \"172.17.0.2:9000-9010\"
    allow: [\"10.0.0.0/8\", \"192.0.2.7\"]
  - listen: 9000-9001
    protocol: udp
    to: 172.17.0.3:53-54
";
    let c = parse(text);
    assert_eq!(
        c.forwards[0].to_string(),
        "8000-8010/tcp -> 172.17.0.2:9000-9010 allow 10.0.0.0/8,192.0.2.7/32"
    );
    assert_eq!(
        c.forwards[1].to_string(),
        "9000-9001/udp -> 172.17.0.3:53-54"
    );
    // Saved unchanged, then regenerated in canonical form: both parse back the same.
    assert_eq!(render(Some(text), &c), text);
    assert_eq!(parse(&render(None, &c)), c);
    let mut more = c.clone();
    more.forwards
        .push(fwd("7000-7001 -> 1.2.3.4:7000-7001 allow 198.51.100.0/24"));
    let saved = render(Some(text), &more);
    assert!(
            saved.ends_with(
                "  - listen: \"7000-7001/tcp\"\n    to: \"1.2.3.4:7000-7001\"\n    allow: [\"198.51.100.0/24\"]\n"
            ),
            "{saved}"
        );
    assert_eq!(parse(&saved), more);

    for (text, message) in [
        (
            "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:9000-9005\"\n",
            "3:9: forwards[0].to: 8000-8010/tcp covers 11 ports but 1.2.3.4:9000-9005 covers 6; a range maps port by port, so both sides must be the same length",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: [\"10.0.0.1/8\"]\n",
            "4:13: forwards[0].allow[0]: '10.0.0.1/8' has bits set past /8: write the network, 10.0.0.0/8",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: [\"2001:db8::/32\"]\n",
            "4:12: forwards[0].allow: no prefix of this allowlist is IPv4, so it would drop every client of this IPv4 forward; add an IPv4 prefix or remove the allowlist",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow:\n      - 10.0.0.0/8\n      - \"2001:db8::1/32\"\n",
            "6:9: forwards[0].allow[1]: '2001:db8::1/32' has bits set past /32: write the network, 2001:db8::/32",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: []\n",
            "4:12: forwards[0].allow: an empty allowlist would drop every client; remove it to accept every source address",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: 10.0.0.0/8\n",
            "4:12: forwards[0].allow: expected a list of source prefixes (e.g. [\"10.0.0.0/8\"]), found a string",
        ),
        (
            "forwards:\n  - listen: \"[::1]:8080\"\n    to: \"1.2.3.4:80\"\n",
            "3:9: forwards[0].to: [::1]:8080/tcp is IPv6 but 1.2.3.4:80 is IPv4; portfwd does not translate between IPv4 and IPv6: publish an IPv4 target on an IPv4 host address or a bare port, or give the container's IPv6 address",
        ),
        (
            "forwards:\n  - listen: \"10.0.0.1:8080\"\n    to: \"[fd00::2]:3000\"\n",
            "3:9: forwards[0].to: 10.0.0.1:8080/tcp is IPv4 but [fd00::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
        ),
        (
            "forwards:\n  - listen: \"0.0.0.0:8080\"\n    to: \"[fd00::2]:3000\"\n",
            "3:9: forwards[0].to: 0.0.0.0:8080/tcp is IPv4 but [fd00::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"fd00::2:3000\"\n",
            "3:9: forwards[0].to: 'fd00::2:3000': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
        ),
        (
            "forwards:\n  - listen: \"8080\"\n    to: \"[fd00::2]:80\"\n  - listen: \"[fd00::1]:8080\"\n    to: \"[fd00::3]:80\"\n",
            "4:13: forwards[1].listen: [fd00::1]:8080/tcp overlaps [::]:8080/tcp (every host address), published by forwards[0] (line 2)",
        ),
        (
            "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n  - listen: \"10.0.0.1:8010-8020\"\n    to: \"1.2.3.4:1-11\"\n",
            "4:13: forwards[1].listen: 10.0.0.1:8010-8020/tcp overlaps 8000-8010/tcp (every host address), published by forwards[0] (line 2)",
        ),
        (
            "forwards:\n  - listen: \"8005\"\n    to: \"1.2.3.4:1\"\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n",
            "4:13: forwards[1].listen: 8000-8010/tcp overlaps 8005/tcp, published by forwards[0] (line 2)",
        ),
    ] {
        assert_eq!(error(text), format!("{FILE}:{message}"), "{text}");
    }
    // Different protocols, or different bound addresses, do not overlap.
    parse(
        "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n  - listen: \"8005/udp\"\n    to: \"1.2.3.4:1\"\n  - listen: \"10.0.0.1:7000-7010\"\n    to: \"1.2.3.4:1-11\"\n  - listen: \"10.0.0.2:7005\"\n    to: \"1.2.3.4:1\"\n",
    );
}

#[test]
fn conflicts_name_both_lines() {
    let text = "\
interfaces: []
forwards:
  - listen: \"8080\"
    to: \"172.17.0.2:3000\"
  - listen: \"8080/udp\"
    to: \"172.17.0.2:3000\"
  - listen: \"8080/tcp\"
    to: \"172.17.0.3:3000\"
";
    assert_eq!(
        error(text),
        format!(
            "{FILE}:7:13: forwards[2].listen: 8080/tcp is already published by forwards[0] (line 3)"
        )
    );
    let text = "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:1\"\n  - listen: \"10.0.0.1:8080\"\n    to: \"1.2.3.4:2\"\n";
    assert_eq!(
        error(text),
        format!(
            "{FILE}:4:13: forwards[1].listen: 10.0.0.1:8080/tcp overlaps 8080/tcp (every host address), published by forwards[0] (line 2)"
        )
    );
    let text = "forwards:\n  - listen: \"10.0.0.1:8080\"\n    to: \"1.2.3.4:1\"\n  - listen: \"0.0.0.0:8080\"\n    to: \"1.2.3.4:2\"\n";
    assert_eq!(
        error(text),
        format!(
            "{FILE}:4:13: forwards[1].listen: 8080/tcp (every host address) overlaps 10.0.0.1:8080/tcp, published by forwards[0] (line 2)"
        )
    );
    // Different addresses, or protocols, do not conflict.
    parse(
        "forwards:\n  - {listen: \"10.0.0.1:80\", to: \"1.2.3.4:1\"}\n  - {listen: \"10.0.0.2:80\", to: \"1.2.3.4:1\"}\n  - {listen: \"80/udp\", to: \"1.2.3.4:1\"}\n",
    );
}

#[test]
fn interface_names() {
    let cases: &[(&str, &str)] = &[
        (
            "interfaces:\n  - eth0\n  - ens3\n  - eth0\n",
            "4:5: interfaces[2]: 'eth0' is already listed as interfaces[0] (line 2)",
        ),
        (
            "interfaces: [abcdefghijklmnop]\n",
            "1:14: interfaces[0]: 'abcdefghijklmnop' is not a valid interface name: longer than 15 bytes",
        ),
        (
            "interfaces: [eth/0]\n",
            "1:14: interfaces[0]: 'eth/0' is not a valid interface name: contains '/'",
        ),
        (
            "interfaces: [\"eth 0\"]\n",
            "1:14: interfaces[0]: 'eth 0' is not a valid interface name: contains whitespace",
        ),
        (
            "interfaces: [\"\"]\n",
            "1:14: interfaces[0]: '' is not a valid interface name: it is empty",
        ),
        (
            "interfaces: [\"eth0:1\"]\n",
            "1:14: interfaces[0]: 'eth0:1' is not a valid interface name: contains ':'",
        ),
        (
            "interfaces: [~]\n",
            "1:14: interfaces[0]: expected an interface name, found null",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), format!("{FILE}:{want}"), "{text}");
    }
    assert_eq!(
        parse("interfaces: [abcdefghijklmno]\n").interfaces,
        ["abcdefghijklmno"]
    );
}

#[test]
fn syntax_errors_are_located() {
    assert_eq!(
        error("forwards: [\n"),
        format!("{FILE}:1:11: unclosed bracket '['")
    );
    let e = error("a: 1\n---\nb: 2\n");
    assert!(e.starts_with(&format!("{FILE}:3:1: ")), "{e}");
    let e = error("forwards:\n  - listen: \"80\"\n   to: \"1.2.3.4:80\"\n");
    assert!(e.starts_with(&format!("{FILE}:3:")), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn the_docker_section() {
    let c = parse("docker: {}\n");
    assert_eq!(c.docker, Some(crate::config::DockerConfig::default()));
    let c = parse("docker:\n  socket: /run/dk/docker.sock\n");
    assert_eq!(
        c.docker.unwrap().socket,
        std::path::PathBuf::from("/run/dk/docker.sock")
    );
    assert_eq!(parse("docker: null\n").docker, None);
    assert_eq!(
        error("docker:\n  socket: run/docker.sock\n"),
        format!("{FILE}:2:11: docker.socket: 'run/docker.sock' is not an absolute path")
    );
    assert_eq!(
        error("docker:\n  sock: /x\n"),
        format!("{FILE}:2:3: docker.sock: unknown key (expected socket or allow)")
    );
    assert_eq!(
        error("docker: yes\n"),
        format!(
            "{FILE}:1:9: docker: expected a mapping (e.g. {{}} or {{socket: /var/run/docker.sock}}) or null, found a boolean"
        )
    );
}

#[test]
fn forwards_to_containers_by_name() {
    let c = parse(
        "docker: {}\nforwards:\n  - listen: 8080\n    to: web:3000\n  - listen: 8081\n    to: 172.17.0.2:3000\n",
    );
    assert_eq!(c.named.len(), 1);
    assert_eq!(c.named[0].to_string(), "8080/tcp -> web:3000");
    assert_eq!(c.forwards.len(), 1);
    // A name needs the docker: section, wherever it is in the file.
    assert_eq!(
        error("forwards:\n  - listen: 8080\n    to: web:3000\n"),
        format!(
            "{FILE}:3:9: forwards[0].to: 'web' is a container name, which needs the docker: section (e.g. docker: {{}}) to be resolved"
        )
    );
    // Names and addresses share the listen sides: no overlap between them.
    assert_eq!(
        error(
            "docker: {}\nforwards:\n  - listen: 8080\n    to: web:3000\n  - listen: 8080\n    to: 172.17.0.2:3000\n"
        ),
        format!(
            "{FILE}:5:13: forwards[1].listen: 8080/tcp is already published by forwards[0] (line 3)"
        )
    );
    // Saved and read back the same, with the forwards' file order kept.
    let text = render(None, &c);
    assert_eq!(parse(&text), c);
}

#[test]
fn docker_example_file() {
    let c = parse(include_str!("../../../../config/portfwd.docker.yaml"));
    assert_eq!(c.docker, Some(crate::config::DockerConfig::default()));
    assert!(c.forwards.is_empty(), "{:?}", c.forwards);
    assert_eq!(c.named.len(), 1, "{:?}", c.named);
    assert_eq!(c.named[0].to_string(), "9090/tcp -> web:3000");
}

#[test]
fn dockers_allowlist() {
    let c = parse("docker:\n  allow: [\"10.0.0.0/8\", \"fd00::/8\"]\n");
    let allow: Vec<String> = c
        .docker
        .unwrap()
        .allow
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(allow, ["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(
        error("docker:\n  allow: [\"10.0.0.0/33\"]\n"),
        format!(
            "{FILE}:2:11: docker.allow[0]: {}",
            "10.0.0.0/33"
                .parse::<crate::publish::AllowPrefix>()
                .unwrap_err()
        )
    );
    let c = parse("docker:\n  socket: /run/d.sock\n  allow: [\"10.0.0.0/8\"]\n");
    assert_eq!(parse(&render(None, &c)), c);
}

#[test]
fn max_flows_is_read_checked_and_written_back() {
    // Absent or null: the built-in sizes.
    assert_eq!(parse("forwards: []\n").max_flows, None);
    assert_eq!(parse("max_flows:\nforwards: []\n").max_flows, None);
    for (text, n) in [
        ("max_flows: 1000000\n", 1_000_000),
        ("max_flows: 1_000_000\n", 1_000_000),
        ("max_flows: \"2048\"\n", 2048),
        ("max_flows: 1024\n", 1024),
        ("max_flows: 100000000\n", 100_000_000),
    ] {
        assert_eq!(parse(text).max_flows, Some(n), "{text}");
    }
    // Written back (after pin_dir) only when set, and read back the same.
    let c = parse("interfaces: []\nmax_flows: 1_000_000\nforwards: []\n");
    let fresh = render(None, &c);
    assert!(fresh.contains("\nmax_flows: 1000000\n"), "{fresh}");
    assert_eq!(parse(&fresh), c);
    assert!(!render(None, &Config::default()).contains("max_flows"));
    // A file whose max_flows changes is rewritten with the new value.
    let text = "# mine\ninterfaces: []\nmax_flows: 4096\nforwards: []\n";
    let bigger = Config {
        max_flows: Some(8192),
        ..parse(text)
    };
    let out = render(Some(text), &bigger);
    assert_eq!(parse(&out), bigger, "{out}");
    assert!(out.starts_with("# mine\n"), "{out}");
}

#[test]
fn max_flows_errors_are_located_and_say_why() {
    let cases: &[(&str, &str)] = &[
        (
            "interfaces: []\nmax_flows: 1023\n",
            "2:12: max_flows: 1023 flows is too few: at least 1024, or each CPU's share of a flow table would be a handful of flows that evict each other",
        ),
        (
            "max_flows: 0\n",
            "1:12: max_flows: 0 flows is too few: at least 1024, or each CPU's share of a flow table would be a handful of flows that evict each other",
        ),
        (
            "forwards: []\n\nmax_flows: 100000001\n",
            "3:12: max_flows: 100000001 flows is too many: at most 100000000 (100 million), since the kernel allocates every entry up front and the flow tables take about 685 MB per million flows",
        ),
        (
            "max_flows: 99999999999999999999999\n",
            "1:12: max_flows: '99999999999999999999999' is not a number of flows (e.g. 1000000 or 1_000_000)",
        ),
        (
            "max_flows: -5\n",
            "1:12: max_flows: '-5' is not a number of flows (e.g. 1000000 or 1_000_000)",
        ),
        (
            "max_flows: 1.5e6\n",
            "1:12: max_flows: '1.5e6' is not a number of flows (e.g. 1000000 or 1_000_000)",
        ),
        (
            "max_flows: 1M\n",
            "1:12: max_flows: '1M' is not a number of flows (e.g. 1000000 or 1_000_000)",
        ),
        (
            "max_flows: [1024]\n",
            "1:12: max_flows: expected a number of flows, found a list",
        ),
        (
            "max_flows: 2048\nmax_flows: 4096\n",
            "2:1: max_flows: duplicate key (first at line 1)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), format!("{FILE}:{want}"), "{text}");
    }
}

#[test]
fn a_config_built_in_memory_is_held_to_the_same_range() {
    let e = Config {
        max_flows: Some(100),
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "max_flows: 100 flows is too few: at least 1024, or each CPU's share of a flow table would be a handful of flows that evict each other"
    );
    let fine = Config {
        max_flows: Some(1024),
        ..Config::default()
    };
    assert!(fine.validate().is_ok());
}
