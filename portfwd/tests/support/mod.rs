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

use portfwd_lab::Lab;

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
    /// A bpffs of the test's own (mounted in the root mount namespace, so pins outlive the
    /// daemon's `ip netns exec` mount namespace), passed as `--pin-dir`.
    pub pin_dir: PathBuf,
    host_ns: String,
    log: PathBuf,
    mode: Option<String>,
    /// Run before the daemon inside the namespace (e.g. `setpriv ...`).
    wrapper: Vec<String>,
}

/// Mounts a fresh bpffs at `dir` (one per daemon: tests run concurrently).
fn mount_bpffs(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mounting bpffs at {}: {out:?}",
        dir.display()
    );
}

/// Unmounts the test's bpffs (dropping its pins) and removes the test directory.
fn remove_test_dir(dir: &std::path::Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(dir.join("bpf"))
        .output();
    let _ = fs::remove_dir_all(dir);
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
        mount_bpffs(&dir.join("bpf"));
        (
            dir.clone(),
            config,
            dir.join("portfwd.sock"),
            dir.join("daemon.log"),
        )
    }

    fn command(host_ns: &str, config: &PathBuf, socket: &PathBuf) -> Command {
        Self::wrapped_command(host_ns, config, socket, &[])
    }

    /// `ip netns exec NS [WRAPPER...] portfwd daemon ...`
    fn wrapped_command(
        host_ns: &str,
        config: &PathBuf,
        socket: &PathBuf,
        wrapper: &[String],
    ) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", host_ns])
            .args(wrapper)
            .arg(portfwd_bin())
            .arg("daemon")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .arg("--pin-dir")
            .arg(socket.with_file_name("bpf"))
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
        Self::start_wrapped(lab, config_text, mode, &[])
    }

    /// Like [`Daemon::start_with`], with the daemon run through `wrapper` (e.g. `setpriv ...`).
    pub fn start_wrapped(
        lab: &mut Lab,
        config_text: &str,
        mode: Option<&str>,
        wrapper: &[String],
    ) -> Daemon {
        let (dir, config, socket, log) = Self::prepare(config_text);
        let mut d = Daemon {
            child: None,
            pin_dir: dir.join("bpf"),
            dir,
            config,
            socket,
            host_ns: lab.host().name.clone(),
            log,
            mode: mode.map(str::to_owned),
            wrapper: wrapper.to_vec(),
        };
        d.spawn();
        d
    }

    /// Starts the daemon process (again) with this daemon's config, socket and pin directory,
    /// appending to its log, and waits until it answers on its socket.
    fn spawn(&mut self) {
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd =
            Self::wrapped_command(&self.host_ns, &self.config, &self.socket, &self.wrapper);
        if let Some(mode) = &self.mode {
            cmd.args(["--mode", mode]);
        }
        let child = cmd
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited early ({status}):\n{}", self.log_text());
            }
            if self.cli_raw(&["list", "--json"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the daemon did not answer within 60 s:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the daemon again after [`Daemon::kill9`] or [`Daemon::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// Runs `portfwd daemon --cleanup` against this daemon's pin directory.
    pub fn cleanup(&self) -> Output {
        let pin_dir = self.pin_dir.to_str().expect("UTF-8 test path");
        // The daemon's socket comes from PORTFWD_SOCKET, as for every CLI call.
        self.cli_raw(&["daemon", "--cleanup", "--pin-dir", pin_dir])
    }

    /// Runs the daemon expecting it to exit by itself (e.g. on an invalid config), within 20 s.
    pub fn run_to_exit(lab: &mut Lab, config_text: &str, extra_args: &[&str]) -> Output {
        let (dir, config, socket, _log) = Self::prepare(config_text);
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
                remove_test_dir(&dir);
                panic!("the daemon did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        remove_test_dir(&dir);
        out
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

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Runs the CLI against this daemon as another user: `setpriv` with `uid`, `gid` and the
    /// supplementary `groups` (none when empty). The socket is a filesystem socket, so no
    /// namespace is needed.
    pub fn cli_as(&self, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
        let groups = if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            format!(
                "--groups={}",
                groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg(groups)
            .arg(portfwd_bin())
            .args(args)
            .env("PORTFWD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `portfwd status --json`, parsed.
    pub fn status_json(&self, lab: &Lab) -> serde_json::Value {
        let out = self.cli(lab, &["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
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
        remove_test_dir(&self.dir);
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
pub fn processes_in(ns: &portfwd_lab::Ns) -> Vec<u32> {
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
