//! Forwards with several targets in the config file: `to` as a list, `health`, `all_down` and
//! `grace`, and every error located.

use std::time::Duration;

use crate::{
    config::{
        render,
        tests::{FILE, error, fwd, parse},
    },
    health::{Check, Params},
    publish::{AllDown, DEFAULT_GRACE, HealthSpec},
};

#[test]
fn a_list_of_targets_with_health_and_policies() {
    let text = "forwards:
  - listen: \"8080\"
    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000*2\"]   # two backends
    health: { interval: \"2s\", timeout: 500ms, fall: 3, rise: 1, http: \"/healthz\" }
    all_down: refuse
    grace: 1m 30s
  - listen: \"9090\"
    to: \"172.17.0.2:4000, 172.17.0.3:4000*0\"
  - listen: \"7070\"
    to:
      - 172.17.0.2:5000
    health: {}
";
    let c = parse(text);
    let pool = c.forwards[0].pool.as_deref().unwrap();
    assert_eq!(
        c.forwards[0].to_string(),
        "8080/tcp -> 172.17.0.2:3000,172.17.0.3:3000*2"
    );
    assert_eq!(
        pool.health,
        Some(HealthSpec {
            check: Check::Http {
                path: "/healthz".into()
            },
            params: Params {
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 3,
            },
        })
    );
    assert_eq!(
        (pool.all_down, pool.grace),
        (AllDown::Refuse, Duration::from_secs(90))
    );
    assert_eq!(
        c.forwards[1],
        fwd("9090 -> 172.17.0.2:4000,172.17.0.3:4000*0")
    );
    let one = c.forwards[2].pool.as_deref().unwrap();
    assert_eq!(one.targets.len(), 1);
    assert_eq!(
        one.health,
        Some(HealthSpec {
            check: Check::Tcp,
            params: Params::default()
        })
    );
    assert_eq!((one.all_down, one.grace), (AllDown::Serve, DEFAULT_GRACE));
    // A list of one without health is a forward as it always was.
    let plain = parse("forwards:\n  - listen: \"8080\"\n    to: [\"172.17.0.2:3000\"]\n");
    assert_eq!(plain.forwards, [fwd("8080 -> 172.17.0.2:3000")]);
    assert!(plain.forwards[0].pool.is_none());
    assert_eq!(
        render(Some(text), &c),
        text,
        "saving what was loaded changes nothing"
    );
    let fresh = render(None, &c);
    assert_eq!(parse(&fresh), c, "{fresh}");
}

#[test]
fn pool_errors_are_located() {
    let at = |line: u32, column: u32, field: &str, message: &str| {
        format!("{FILE}:{line}:{column}: forwards[0].{field}: {message}")
    };
    let one = |rest: &str| format!("forwards:\n  - listen: \"8080\"\n{rest}");
    let mut wrong = Vec::new();
    for (text, expected) in [
        (
            one("    to: [\"172.17.0.2:3000\", \"web:3000\"]\n"),
            at(
                3,
                29,
                "to[1]",
                "'web:3000' is a container name; a forward with several targets takes IP:PORT targets only (publish the container by name as a forward of its own)",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000\", \"172.17.0.2:3000*2\"]\n"),
            at(
                3,
                29,
                "to[1]",
                "172.17.0.2:3000 is already listed as to[0] (line 3)",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000*x\"]\n"),
            at(
                3,
                29,
                "to[1]",
                "'x' is not a weight: write TARGET*WEIGHT with WEIGHT a number 0-1000, e.g. 172.17.0.3:3000*2",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000\", 80]\n"),
            at(3, 29, "to[1]", "'80' needs an address: IP:PORT"),
        ),
        (
            one("    to: [\"172.17.0.2:3000\", [1]]\n"),
            at(3, 29, "to[1]", "expected IP:PORT[*WEIGHT], found a list"),
        ),
        (
            one("    to: \"172.17.0.2:3000, web:3000*2\"\n"),
            at(
                3,
                9,
                "to",
                "'web:3000*2' is a container name; a forward with several targets takes IP:PORT targets only (publish the container by name as a forward of its own)",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000,172.17.0.3:3000\"]\n"),
            at(
                3,
                10,
                "to[0]",
                "'172.17.0.2:3000,172.17.0.3:3000': write one IP:PORT[*WEIGHT] per item of the list",
            ),
        ),
        (
            one("    to: []\n"),
            at(
                3,
                9,
                "to",
                "expected IP:PORT[-END], CONTAINER:PORT[-END] or a list of IP:PORT[*WEIGHT], found an empty list",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000*0\", \"172.17.0.3:3000*0\"]\n"),
            at(
                3,
                9,
                "to",
                "every target has weight 0 (drained): at least one must take new flows",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    all_down: refuse\n"),
            at(
                4,
                15,
                "all_down",
                "all_down applies to a forward with several targets or a health check only",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    grace: 10s\n"),
            at(
                4,
                12,
                "grace",
                "grace applies to a forward with several targets or a health check only",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000,172.17.0.3:3000\"\n    all_down: drop\n"),
            at(
                4,
                15,
                "all_down",
                "unknown all_down policy 'drop' (expected serve or refuse)",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000,172.17.0.3:3000\"\n    grace: soon\n"),
            at(
                4,
                12,
                "grace",
                "'soon' is not a duration (e.g. 1s or 500ms): expected number at 0",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: { interval: 1s, timeout: 2s }\n"),
            at(
                4,
                13,
                "health",
                "health check timeout 2s is longer than its interval 1s",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: { fall: 0 }\n"),
            at(
                4,
                13,
                "health",
                "health check rise and fall must be at least 1",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: { rise: -1 }\n"),
            at(
                4,
                21,
                "health.rise",
                "'-1' is not a number of probes (1 or more)",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: { http: healthz }\n"),
            at(
                4,
                21,
                "health.http",
                "HTTP check path \"healthz\" must start with '/'",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: { port: 80 }\n"),
            at(
                4,
                15,
                "health.port",
                "unknown key (expected interval, timeout, rise, fall or http)",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    health: tcp\n"),
            at(
                4,
                13,
                "health",
                "expected a mapping (e.g. {} or {interval: 1s, http: /healthz}), found a string",
            ),
        ),
        (
            one("    to: [\"172.17.0.2:3000\", \"172.17.0.3:3000-3001\"]\n"),
            at(
                3,
                9,
                "to",
                "8080/tcp -> 172.17.0.2:3000,172.17.0.3:3000-3001: a forward with several targets or a health check publishes single ports; publish a port range with one target, or one forward per port",
            ),
        ),
        (
            one("    to: \"web:3000\"\n    health: {}\n"),
            at(
                4,
                13,
                "health",
                "health needs a list of IP:PORT targets; a forward to a container by name has none",
            ),
        ),
        (
            one("    to: \"172.17.0.2:3000\"\n    weight: 2\n"),
            at(
                4,
                5,
                "weight",
                "unknown key (expected listen, protocol, to, allow, health, all_down or grace)",
            ),
        ),
    ] {
        let got = error(&text);
        if got != expected {
            wrong.push(format!("{text}\n  got:      {got}\n  expected: {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
