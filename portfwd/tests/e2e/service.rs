//! `config/portfwd.service`: systemd accepts it, its hardening is rated, it agrees with the
//! daemon's defaults, and the daemon really runs with only the capabilities it leaves.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::support::{self, Scenario, host_port};

/// The highest `systemd-analyze security` exposure accepted, in tenths (3.0 = "OK").
const MAX_EXPOSURE_TENTHS: u32 = 30;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/portfwd.service")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).unwrap()
}

/// Every value of `key=` in the unit, in order.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// True when systemd-analyze can be run; under `CI=true` its absence fails the test.
fn have_systemd_analyze() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("systemd-analyze is missing (Debian package systemd; `cargo xtask setup`)");
    }
    eprintln!("SKIPPED: systemd-analyze is missing");
    false
}

/// The unit with ExecStart pointing at the binary under test (systemd checks it exists), in a
/// directory of its own.
fn unit_copy(tag: &str, edit: impl Fn(String) -> String) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("portfwd-unit-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = unit_text().replace(
        "/usr/local/bin/portfwd",
        support::portfwd_bin().to_str().unwrap(),
    );
    let path = dir.join("portfwd.service");
    std::fs::write(&path, edit(text)).unwrap();
    (dir, path)
}

fn verify(path: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn the_unit_verifies_cleanly() {
    if !have_systemd_analyze() {
        return;
    }
    let (dir, path) = unit_copy("verify", |t| t);
    let out = verify(&path);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {out:?}"
    );
    // The check can fail: a broken copy is reported.
    let (bad_dir, bad) = unit_copy("verify-bad", |t| t.replace("Type=notify", "Type=notfy"));
    let out = verify(&bad);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notfy"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(bad_dir);
}

#[test]
fn the_units_exposure_is_rated_ok() {
    if !have_systemd_analyze() {
        return;
    }
    let (dir, path) = unit_copy("security", |t| t);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE_TENTHS}"))
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default();
    eprintln!("{overall}");
    assert!(
        out.status.success(),
        "exposure above {}.{}: {overall}\n{text}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_unit_agrees_with_the_daemon() {
    let text = unit_text();
    assert_eq!(values(&text, "Type"), ["notify"], "READY=1 is sent");
    assert!(
        values(&text, "ExecReload")
            .iter()
            .any(|v| v.contains("-HUP") || v.contains("reload")),
        "reload goes through SIGHUP"
    );
    // The control socket's directory and the config's.
    let socket_dir = Path::new(portfwd::api::DEFAULT_SOCKET).parent().unwrap();
    assert_eq!(
        Path::new("/run").join(&values(&text, "RuntimeDirectory")[0]),
        socket_dir
    );
    let writable = values(&text, "ReadWritePaths").join(" ");
    let config_dir = Path::new(portfwd::config::DEFAULT_PATH).parent().unwrap();
    let pin_parent = Path::new(portfwd::config::DEFAULT_PIN_DIR)
        .parent()
        .unwrap();
    for dir in [config_dir, pin_parent] {
        assert!(
            writable.split_whitespace().any(|w| Path::new(w) == dir),
            "{} must be writable: {writable}",
            dir.display()
        );
    }
    let exec = values(&text, "ExecStart").join(" ");
    assert!(exec.contains(portfwd::config::DEFAULT_PATH), "{exec}");
    // The host's network: the daemon attaches to its interfaces.
    assert!(values(&text, "PrivateNetwork").is_empty());
    let families = values(&text, "RestrictAddressFamilies").join(" ");
    for f in ["AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"] {
        assert!(families.contains(f), "{families}");
    }
    assert_eq!(values(&text, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&text, "ProtectSystem"), ["strict"]);
}

/// `setpriv --bounding-set` for the unit's CapabilityBoundingSet.
fn unit_bounding_set() -> String {
    let caps = values(&unit_text(), "CapabilityBoundingSet").join(" ");
    let mut arg = String::from("-all");
    for cap in caps.split_whitespace() {
        arg.push_str(",+");
        arg.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    arg
}

#[test]
fn the_daemon_runs_with_only_the_units_capabilities() {
    require_root!();
    let s = Scenario::new("caps")
        .containers(1)
        .tcp_server("c1", 3000)
        .yaml("socket_group: nogroup")
        .yaml("metrics: \"127.0.0.1:9369\"")
        .forward("8080", "c1:3000")
        .wrapper(&[
            "setpriv".to_owned(),
            format!("--bounding-set={}", unit_bounding_set()),
            "--inh-caps=-all".to_owned(),
        ])
        .daemon();
    // It really runs without the rest: CapBnd of the daemon is the unit's set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.d.pid())).unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_PTRACE: u64 = 19;
    assert_eq!(
        bnd & (1 << CAP_SYS_PTRACE),
        0,
        "bounding set applied: {bnd:x}"
    );

    let reply = s.client_tcp(host_port(8080), "capped").unwrap();
    assert!(reply.ends_with("capped"), "{reply}");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(
        std::fs::metadata(&s.d.socket).unwrap().gid(),
        65534,
        "chown to socket_group"
    );
    let out = s.cli(&["add", "8081", &format!("{}:3000", s.c("c1").addr)]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let metrics = s
        .lab
        .sh(
            s.lab.host(),
            "curl -sS --max-time 5 http://127.0.0.1:9369/metrics",
        )
        .unwrap();
    assert!(
        metrics.contains("portfwd_forward_packets_total"),
        "{metrics}"
    );
}
