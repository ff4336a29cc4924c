//! Shared pieces of the end-to-end tests: the root check, the daemon under test, and asserts.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    fs,
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use xtask::lab::Lab;

/// True when the test can run. Under `CI=true` a test that cannot run fails instead of skipping.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "this end-to-end test needs root (network namespaces, eBPF); under CI=true it must run, not skip"
        );
    }
    eprintln!("SKIPPED: this end-to-end test needs root (network namespaces, eBPF)");
    false
}

pub fn portfwd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portfwd"))
}

/// Polls `f` for up to 5 s.
pub fn eventually(mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("condition not met within 5 s".into())
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A `portfwd daemon` running in the lab's host namespace with its own config and socket.
/// Killed (SIGKILL) when dropped if still running.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    host_ns: String,
    log: PathBuf,
}

impl Daemon {
    fn prepare(config_text: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "portfwd-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("portfwd.yaml");
        fs::write(&config, config_text).unwrap();
        (
            dir.clone(),
            config,
            dir.join("portfwd.sock"),
            dir.join("daemon.log"),
        )
    }

    fn command(host_ns: &str, config: &PathBuf, socket: &PathBuf) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", host_ns])
            .arg(portfwd_bin())
            .arg("daemon")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the daemon and waits until it answers on its socket.
    ///
    /// With `PORTFWD_E2E_MODE=xdp` (as `cargo xtask test`'s second pass sets) the daemon runs
    /// with `--mode xdp`, exposing only the lab's client-facing `eth0` (a bridge has no native
    /// XDP, which xdp mode refuses) unless the config names interfaces itself.
    pub fn start(lab: &mut Lab, config_text: &str) -> Daemon {
        let mode = e2e_mode();
        let text = if mode.as_deref() == Some("xdp") && !config_text.contains("interfaces:") {
            format!("interfaces: [eth0]\n{config_text}")
        } else {
            config_text.to_owned()
        };
        Self::start_with(lab, &text, mode.as_deref())
    }

    /// Starts the daemon with an explicit `--mode` (or none), and waits until it answers.
    pub fn start_with(lab: &mut Lab, config_text: &str, mode: Option<&str>) -> Daemon {
        let (dir, config, socket, log) = Self::prepare(config_text);
        let host_ns = lab.host().name.clone();
        let logfile = fs::File::create(&log).unwrap();
        let mut cmd = Self::command(&host_ns, &config, &socket);
        if let Some(mode) = mode {
            cmd.args(["--mode", mode]);
        }
        let child = cmd
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir,
            config,
            socket,
            host_ns,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited early ({status}):\n{}", d.log_text());
            }
            if d.cli_raw(&["list", "--json"]).status.success() {
                return d;
            }
            if Instant::now() > deadline {
                panic!("the daemon did not answer within 20 s:\n{}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the daemon expecting it to exit by itself (e.g. on an invalid config), within 20 s.
    pub fn run_to_exit(lab: &mut Lab, config_text: &str, extra_args: &[&str]) -> Output {
        let (_dir, config, socket, _log) = Self::prepare(config_text);
        let mut child = Self::command(&lab.host().name, &config, &socket)
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    /// The daemon's process id (`ip netns exec` execs into it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn cli_raw(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.host_ns])
            .arg(portfwd_bin())
            .args(args)
            .env("PORTFWD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the real CLI in the host namespace against this daemon.
    pub fn cli(&self, _lab: &Lab, args: &[&str]) -> Output {
        self.cli_raw(args)
    }

    /// `portfwd list --json`, parsed.
    pub fn list_json(&self, lab: &Lab) -> Vec<serde_json::Value> {
        let out = self.cli(lab, &["list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// SIGTERM, then waits up to 10 s for the exit status.
    pub fn stop(&mut self, _lab: &mut Lab) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon ignored SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The attach mode the end-to-end tests run the daemon in (`PORTFWD_E2E_MODE`), if set.
pub fn e2e_mode() -> Option<String> {
    std::env::var("PORTFWD_E2E_MODE")
        .ok()
        .filter(|m| !m.is_empty())
}

/// Netfilter must not be doing the work: no NAT rule in iptables or nftables in the host.
pub fn assert_no_netfilter_nat(lab: &Lab) {
    let ipt = lab.sh(lab.host(), "iptables-save -t nat").unwrap();
    assert!(
        !ipt.contains("DNAT") && !ipt.contains("MASQUERADE") && !ipt.contains("SNAT"),
        "iptables has NAT rules: {ipt}"
    );
    let nft = lab.sh(lab.host(), "nft list ruleset").unwrap();
    assert!(
        !nft.contains("dnat") && !nft.contains("snat") && !nft.contains("masquerade"),
        "nftables has NAT rules: {nft}"
    );
}

/// The processes whose network namespace is `ns` (by the namespace file's inode).
pub fn processes_in(ns: &xtask::lab::Ns) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let want = fs::metadata(ns.path()).unwrap().ino();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want) {
            pids.push(pid);
        }
    }
    pids
}
