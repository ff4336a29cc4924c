//! The daemon under test: `portfwd daemon` in a lab's host namespace with a config, a control
//! socket and a bpffs of its own, stopped, killed and restarted by the tests.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use portfwd_lab::Lab;

use super::{
    cli::{Cli, portfwd_bin},
    e2e_mode,
};

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
    cli: Cli,
}

/// A directory of the test's own, with the config written and a fresh bpffs mounted at `bpf`
/// (one per daemon: tests run concurrently). Removed (bpffs unmounted) on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(config_text: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!(
            "portfwd-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bpf")).unwrap();
        fs::write(dir.join("portfwd.yaml"), config_text).unwrap();
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.join("bpf"))
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting bpffs in {dir:?}: {out:?}");
        TestDir(dir)
    }

    fn config(&self) -> PathBuf {
        self.0.join("portfwd.yaml")
    }

    fn socket(&self) -> PathBuf {
        self.0.join("portfwd.sock")
    }

    /// Hands the directory over: the caller removes it with [`remove_test_dir`].
    fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        remove_test_dir(&self.0);
    }
}

/// Unmounts the test's bpffs (dropping its pins) and removes the test directory.
fn remove_test_dir(dir: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(dir.join("bpf"))
        .output();
    let _ = fs::remove_dir_all(dir);
}

/// `ip netns exec NS [WRAPPER...] portfwd daemon --config C --socket S --pin-dir P`
fn daemon_command(host_ns: &str, config: &Path, socket: &Path, wrapper: &[String]) -> Command {
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

impl Daemon {
    /// Starts the daemon and waits until it answers on its socket.
    ///
    /// With `PORTFWD_E2E_MODE=xdp` (as `cargo xtask test`'s second pass sets) the daemon runs
    /// with `--mode xdp`, exposing only the lab's client-facing `eth0` (a bridge has no native
    /// XDP, which xdp mode refuses) unless the config names interfaces itself.
    pub fn start(lab: &mut Lab, config_text: &str) -> Daemon {
        Self::start_in_e2e_mode(lab, config_text, &[])
    }

    /// Like [`Daemon::start`], with the daemon run through `wrapper` (e.g. `setpriv ...`).
    pub fn start_in_e2e_mode(lab: &mut Lab, config_text: &str, wrapper: &[String]) -> Daemon {
        let mode = e2e_mode();
        let text = if mode.as_deref() == Some("xdp") && !config_text.contains("interfaces:") {
            format!("interfaces: [eth0]\n{config_text}")
        } else {
            config_text.to_owned()
        };
        Self::start_wrapped(lab, &text, mode.as_deref(), wrapper)
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
        let dir = TestDir::new(config_text);
        let (config, socket) = (dir.config(), dir.socket());
        let dir = dir.keep();
        let host_ns = lab.host().name.clone();
        let mut d = Daemon {
            child: None,
            pin_dir: dir.join("bpf"),
            log: dir.join("daemon.log"),
            dir,
            cli: Cli::new(&host_ns, &socket),
            config,
            socket,
            host_ns,
            mode: mode.map(str::to_owned),
            wrapper: wrapper.to_vec(),
        };
        d.spawn();
        d
    }

    /// Runs the daemon expecting it to exit by itself (e.g. on an invalid config), within 20 s.
    pub fn run_to_exit(lab: &mut Lab, config_text: &str, extra_args: &[&str]) -> Output {
        let dir = TestDir::new(config_text);
        let mut child = daemon_command(&lab.host().name, &dir.config(), &dir.socket(), &[])
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

    /// Starts the daemon process (again) with this daemon's config, socket and pin directory,
    /// appending to its log, and waits until it answers on its socket.
    fn spawn(&mut self) {
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = daemon_command(&self.host_ns, &self.config, &self.socket, &self.wrapper);
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
            if self.cli.run(&["list", "--json"]).status.success() {
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

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Runs `portfwd daemon --cleanup` against this daemon's pin directory.
    pub fn cleanup(&self) -> Output {
        let pin_dir = self.pin_dir.to_str().expect("UTF-8 test path");
        // The daemon's socket comes from PORTFWD_SOCKET, as for every CLI call.
        self.cli.run(&["daemon", "--cleanup", "--pin-dir", pin_dir])
    }

    /// The daemon's process id (`ip netns exec` execs into it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Everything the daemon has logged so far (all its runs).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the real CLI in the host namespace against this daemon.
    pub fn cli(&self, _lab: &Lab, args: &[&str]) -> Output {
        self.cli.run(args)
    }

    /// The CLI command against this daemon, to spawn (see [`Cli::command`]).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        self.cli.command(args)
    }

    /// Runs the CLI against this daemon as another user (see [`Cli::run_as`]).
    pub fn cli_as(&self, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
        self.cli.run_as(uid, gid, groups, args)
    }

    /// `portfwd status --json`, parsed.
    pub fn status_json(&self, _lab: &Lab) -> serde_json::Value {
        self.cli.json(&["status", "--json"])
    }

    /// `portfwd list --json`, parsed.
    pub fn list_json(&self, _lab: &Lab) -> Vec<serde_json::Value> {
        self.cli.json(&["list", "--json"])
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
