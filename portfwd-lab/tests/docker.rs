//! A real dockerd in a lab (root and docker.io + busybox-static needed): it starts, runs a
//! container, and leaves nothing behind, whether shut down, dropped by a panicking test, or left
//! by a killed one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portfwd_lab::{Docker, Lab, http_get, is_root};

/// Root and docker.io are needed: under CI=true their absence is a failure, elsewhere the test
/// is skipped loudly.
fn can_run() -> bool {
    let why = if !is_root() {
        "needs root (the lab creates namespaces)"
    } else if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/usr/bin/busybox").exists() {
        "needs docker.io and busybox-static (`cargo xtask setup`)"
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the docker lab test {why}, and CI=true");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
    false
}

/// What a dockerd leaves behind if its teardown failed: its process, its directory, mounts under
/// it, processes (containerd, shims) naming it.
fn leftovers(pid: u32, dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(&format!("/proc/{pid}")).exists() {
        left.push(format!("dockerd {pid}"));
    }
    if dir.exists() {
        left.push(format!("{}", dir.display()));
    }
    let needle = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned),
    );
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            left.push(format!("process {:?}", entry.file_name()));
        }
    }
    left
}

fn started(lab: &Lab) -> (Docker, u32, PathBuf) {
    let mut docker = Docker::start(lab).unwrap();
    let pid = docker.pid().unwrap();
    let dir = docker.dir().to_owned();
    docker.run("web", &["-p", "8080:3000"]).unwrap();
    (docker, pid, dir)
}

#[test]
fn dockerd_serves_and_shuts_down_clean() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("dklab").unwrap();
    let (docker, pid, dir) = started(&lab);
    let to = std::net::SocketAddr::from((Lab::HOST_ADDR, 8080));
    let mut reply = Err(anyhow::anyhow!("not tried"));
    for _ in 0..200 {
        reply = http_get(lab.client(), to, Duration::from_secs(1));
        if reply.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let reply = reply.unwrap();
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
        "{reply}"
    );
    assert!(reply.ends_with(Docker::PAGE), "{reply}");
    // The lab's own bridge keeps its address: dockerd has a bridge of its own.
    let addrs = lab.sh(lab.host(), "ip -4 -br addr show docker0").unwrap();
    assert!(addrs.contains("172.17.0.1/16"), "{addrs}");
    docker.shutdown().unwrap();
    assert_eq!(leftovers(pid, &dir), Vec::<String>::new());
    let links = lab.sh(lab.host(), "ip -br link").unwrap();
    assert!(!links.contains(Docker::BRIDGE), "{links}");
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    // What a test killed with SIGKILL left: a dockerd directory named for a process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = std::env::temp_dir().join(format!("pfdk-pf{}x0-stale", gone.id()));
    std::fs::create_dir_all(stale.join("data")).unwrap();
    let lab = Lab::new("dkpanic").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (docker, pid, dir) = started(&lab);
        tx.send((pid, dir)).unwrap();
        let _keep = docker;
        panic!("a test failing with a container running");
    }));
    assert!(result.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert_eq!(leftovers(pid, &dir), Vec::<String>::new());
    assert!(!stale.exists(), "{} was not cleaned up", stale.display());
}
