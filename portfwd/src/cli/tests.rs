//! The command line of pools: `add` with several targets and a health check, `del` of one
//! target, `drain`, and the backends under their forward in `list`; the JSON each request
//! sends. And `daemon --max-flows`, checked as the config's `max_flows`.

use clap::Parser as _;

use super::{Cli, Command, list};
use crate::api::{BackendState, BackendStatus, ForwardEntry, Request};

fn request(args: &[&str]) -> Result<Request, String> {
    let cli = Cli::try_parse_from(std::iter::once("portfwd").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    match cli.command {
        Command::Add(a) => a.request(),
        Command::Del(a) => a.request(),
        Command::Drain(a) => a.request(),
        other => panic!("{other:?}"),
    }
}

fn json(args: &[&str]) -> String {
    let req = request(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    serde_json::to_string(&req).unwrap()
}

fn err(args: &[&str]) -> String {
    match request(args) {
        Ok(r) => panic!("{args:?} gave {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn add_sends_one_target_as_before_and_several_as_a_list() {
    assert_eq!(
        json(&["add", "8080", "172.17.0.2:3000"]),
        r#"{"op":"add","listen":"8080/tcp","to":"172.17.0.2:3000"}"#
    );
    assert_eq!(
        json(&["add", "8080", "web:3000", "--allow", "10.0.0.0/8"]),
        r#"{"op":"add","listen":"8080/tcp","to":"web:3000","allow":["10.0.0.0/8"]}"#
    );
    assert_eq!(
        json(&[
            "add",
            "8080",
            "172.17.0.2:3000",
            "172.17.0.3:3000*2",
            "--health",
            "/healthz",
            "--interval",
            "2s",
            "--fall",
            "3",
            "--all-down",
            "refuse",
            "--grace",
            "10s"
        ]),
        r#"{"op":"add","listen":"8080/tcp","to":["172.17.0.2:3000","172.17.0.3:3000*2"],"health":{"http":"/healthz","interval":"2s","fall":3},"all_down":"refuse","grace":"10s"}"#
    );
    // Commas work as in the config's string form; one target with a check is a pool of one.
    assert_eq!(
        json(&["add", "8080", "172.17.0.2:3000,172.17.0.3:3000"]),
        r#"{"op":"add","listen":"8080/tcp","to":["172.17.0.2:3000","172.17.0.3:3000"]}"#
    );
    assert_eq!(
        json(&["add", "8080", "172.17.0.2:3000", "--health", "tcp"]),
        r#"{"op":"add","listen":"8080/tcp","to":"172.17.0.2:3000","health":{}}"#
    );
}

#[test]
fn add_refuses_bad_arguments_clearly() {
    for (args, message) in [
        (
            &["add", "8080", "172.17.0.2:3000", "--interval", "1s"][..],
            "--interval sets the health check's timing: add --health tcp (or --health /PATH)",
        ),
        (
            &["add", "8080", "172.17.0.2:3000", "--health", "http"],
            "--health http: expected tcp or an HTTP path such as /healthz",
        ),
        (
            &[
                "add",
                "8080",
                "172.17.0.2:3000",
                "--health",
                "tcp",
                "--timeout",
                "2s",
            ],
            "health: health check timeout 2s is longer than its interval 1s",
        ),
        (
            &[
                "add",
                "8080",
                "172.17.0.2:3000",
                "172.17.0.3:3000",
                "--grace",
                "later",
            ],
            "grace: 'later' is not a duration (e.g. 1s or 500ms): expected number at 0",
        ),
        (
            &[
                "add",
                "8080",
                "172.17.0.2:3000",
                "172.17.0.3:3000",
                "--all-down",
                "drop",
            ],
            "unknown all_down policy 'drop' (expected serve or refuse)",
        ),
        (
            &["add", "8080", "172.17.0.2:3000", "--all-down", "refuse"],
            "all_down applies to a forward with several targets or a health check only",
        ),
        (
            &["add", "8080", "172.17.0.2:3000", "web:3000"],
            "'web:3000' is a container name; a forward with several targets takes IP:PORT targets only (publish the container by name as a forward of its own)",
        ),
        (
            &[
                "add",
                "8000-8001",
                "172.17.0.2:9000-9001",
                "172.17.0.3:9000-9001",
            ],
            "8000-8001/tcp -> 172.17.0.2:9000-9001,172.17.0.3:9000-9001: a forward with several targets or a health check publishes single ports; publish a port range with one target, or one forward per port",
        ),
        (
            &["add", "8080", "172.17.0.2:3000*0"],
            "every target has weight 0 (drained): at least one must take new flows",
        ),
    ] {
        assert_eq!(err(args), message, "{args:?}");
    }
    assert!(err(&["add", "8080"]).contains("required"));
}

#[test]
fn del_of_one_target_and_drain() {
    assert_eq!(
        json(&["del", "8080"]),
        r#"{"op":"del","listen":"8080/tcp"}"#
    );
    assert_eq!(
        json(&["del", "8080", "172.17.0.3:3000"]),
        r#"{"op":"del","listen":"8080/tcp","target":"172.17.0.3:3000"}"#
    );
    assert_eq!(
        json(&["drain", "8080", "172.17.0.3:3000"]),
        r#"{"op":"drain","listen":"8080/tcp","target":"172.17.0.3:3000"}"#
    );
    assert_eq!(
        json(&["drain", "[::]:53/udp", "[fd00::3]:53", "--undo"]),
        r#"{"op":"drain","listen":"[::]:53/udp","target":"[fd00::3]:53","undo":true}"#
    );
    assert_eq!(
        err(&["del", "8080", "172.17.0.3"]),
        "'172.17.0.3' needs a port: IP:PORT"
    );
    assert_eq!(
        err(&["drain", "8080", "web:3000"]),
        "'web' is not an IP address"
    );
    assert!(err(&["drain", "8080"]).contains("required"));
    assert!(
        err(&["del", "8080", "172.17.0.3:3000", "--owner", "cni:x/y"])
            .contains("cannot be used with")
    );
}

#[test]
fn older_clients_and_daemons_understand_each_other() {
    // An older client's add: `to` one string, no pool fields.
    let old: Request =
        serde_json::from_str(r#"{"op":"add","listen":"8080/tcp","to":"172.17.0.2:3000"}"#).unwrap();
    let Request::Add { to, health, .. } = old else {
        panic!()
    };
    assert_eq!(
        (to.to_vec(), health),
        (vec!["172.17.0.2:3000".to_owned()], None)
    );
    let old: Request = serde_json::from_str(r#"{"op":"del","listen":"8080/tcp"}"#).unwrap();
    assert!(matches!(
        old,
        Request::Del {
            target: None,
            owner: None,
            ..
        }
    ));
    let drain: Request =
        serde_json::from_str(r#"{"op":"drain","listen":"8080","target":"172.17.0.3:3000"}"#)
            .unwrap();
    assert!(matches!(drain, Request::Drain { undo: false, .. }));
}

fn entry(backends: Vec<BackendStatus>) -> ForwardEntry {
    ForwardEntry {
        listen: "8080/tcp".into(),
        protocol: "tcp".into(),
        to: "172.17.0.2:3000".into(),
        allow: vec![],
        packets_to_target: 30,
        bytes_to_target: 3000,
        packets_to_client: 20,
        bytes_to_client: 2000,
        new_flows: 3,
        origin: "config".into(),
        container: None,
        inactive: None,
        backends,
    }
}

#[test]
fn list_shows_each_backend_under_its_forward() {
    let backends = vec![
        BackendStatus {
            target: "172.17.0.2:3000".into(),
            weight: 1,
            state: BackendState::Up,
            packets: 10,
            bytes: 1000,
            new_flows: 1,
            live_flows: 1,
        },
        BackendStatus {
            target: "172.17.0.3:3000".into(),
            weight: 0,
            state: BackendState::Draining,
            packets: 20,
            bytes: 2000,
            new_flows: 2,
            live_flows: 0,
        },
    ];
    let single = entry(vec![]);
    assert!(
        !serde_json::to_string(&single).unwrap().contains("backends"),
        "a forward to one target prints as before"
    );
    let pool = entry(backends);
    let text = list::table(&[pool.clone(), single]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[1].starts_with("8080/tcp"), "{text}");
    assert_eq!(
        lines[2],
        "  -> 172.17.0.2:3000        weight 1    up        pkts 10 bytes 1000 new flows 1 live flows 1"
    );
    assert_eq!(
        lines[3],
        "  -> 172.17.0.3:3000        weight 0    draining  pkts 20 bytes 2000 new flows 2 live flows 0"
    );
    assert!(lines[4].starts_with("8080/tcp"), "{text}");
    let json = serde_json::to_value(&pool).unwrap();
    assert_eq!(
        json["backends"][1],
        serde_json::json!({"target": "172.17.0.3:3000", "weight": 0, "state": "draining",
            "packets": 20, "bytes": 2000, "new_flows": 2, "live_flows": 0})
    );
    assert_eq!(serde_json::from_value::<ForwardEntry>(json).unwrap(), pool);
}

#[test]
fn daemon_max_flows_is_checked_like_the_config_key() {
    let max_flows = |args: &[&str]| -> Result<Option<u32>, String> {
        let argv = ["portfwd", "daemon"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Daemon { max_flows, .. } => Ok(max_flows),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(max_flows(&[]), Ok(None));
    assert_eq!(
        max_flows(&["--max-flows", "1_000_000"]),
        Ok(Some(1_000_000))
    );
    let e = max_flows(&["--max-flows", "100"]).unwrap_err();
    assert!(e.contains("100 flows is too few: at least 1024"), "{e}");
    let e = max_flows(&["--max-flows", "lots"]).unwrap_err();
    assert!(e.contains("'lots' is not a number of flows"), "{e}");
}
