//! What the demo creates, and its teardown: the lab (namespaces and the processes in them), the
//! daemon, with `--docker` a real dockerd in the lab's host namespace (its containers, its own
//! containerd, mounts and directory `/tmp/pfdk-LAB`, see `portfwd_lab::Docker`), and the demo's
//! private directory (config copy, control socket, logs, web roots and the
//! bpffs pin directory). Teardown runs from `Drop`, so it happens on success, on an error and
//! after SIGINT/SIGTERM/SIGHUP (the handler only raises a flag; the walkthrough checks it between
//! steps, each of which is bounded in time, and unwinds through the same `Drop`).
//!
//! Children are spawned in their own process group (a terminal's Ctrl-C reaches the demo only,
//! which then stops the daemon gracefully) and with a parent-death signal (SIGTERM), so that even
//! a SIGKILLed demo leaves no daemon or server running. The namespaces
//! of a SIGKILLed demo are deleted by the next lab anyone builds (`portfwd-lab` cleans up labs
//! whose creator is gone).

use std::{
    fmt, fs,
    io::ErrorKind,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::mount::{MntFlags, umount2};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use portfwd_lab::{Docker, Lab, Ns};

/// Set by the signal handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long the daemon gets to stop after SIGTERM before SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(5);

/// The demo was interrupted by a signal; `main` exits with 130 for it.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted: the demo stopped early and tore its lab down")
    }
}

impl std::error::Error for Interrupted {}

/// Installs the SIGINT/SIGTERM/SIGHUP handler: it only sets a flag that [`check_interrupt`] and
/// [`pause`] look at.
pub fn install_signal_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ndemo: interrupted; tearing the lab down");
        }
    })
    .context("installing the SIGINT/SIGTERM handler")
}

/// Fails with [`Interrupted`] once a signal came.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with [`Interrupted`]) on a signal.
pub fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    check_interrupt()
}

/// The directory of the demo run by process `pid`: everything the demo writes outside the lab.
pub fn demo_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/run/portfwd-demo-{pid}"))
}

/// The lab, the daemon, dockerd (with `--docker`) and the demo's directory, torn down on drop.
pub struct Session {
    lab: Option<Lab>,
    daemon: Option<u32>,
    /// Torn down after the daemon and before the lab: its containers live in namespaces of
    /// dockerd's own, which the lab does not know.
    docker: Option<Docker>,
    dir: PathBuf,
}

impl Session {
    /// Creates the demo's directory (`/run/portfwd-demo-PID`, emptied if a previous process with
    /// this pid left one) and an empty lab tagged `demo`.
    pub fn new() -> Result<Session> {
        let dir = demo_dir(std::process::id());
        remove_dir(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut session = Session {
            lab: None,
            daemon: None,
            docker: None,
            dir,
        };
        // On error the session is dropped and removes the directory again.
        session.lab = Some(Lab::new("demo")?);
        Ok(session)
    }

    pub fn lab(&self) -> &Lab {
        self.lab
            .as_ref()
            .expect("the lab lives as long as the session")
    }

    pub fn lab_mut(&mut self) -> &mut Lab {
        self.lab
            .as_mut()
            .expect("the lab lives as long as the session")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a real dockerd in the lab's host namespace (see `portfwd_lab::Docker::start`); it
    /// is torn down with the session.
    pub fn start_docker(&mut self) -> Result<&mut Docker> {
        let docker = Docker::start(self.lab())?;
        Ok(self.docker.insert(docker))
    }

    pub fn docker(&self) -> Option<&Docker> {
        self.docker.as_ref()
    }

    /// Where the daemon pins its programs, links and maps: private to this run, never
    /// `/sys/fs/bpf/portfwd`.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// Spawns `cmd` inside `ns` (see [`Lab::spawn`]) in a process group of its own, with SIGTERM
    /// as its parent-death signal.
    pub fn spawn(&mut self, ns: &Ns, cmd: &mut Command) -> Result<u32> {
        cmd.process_group(0);
        // SAFETY: runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| Ok(set_pdeathsig(Signal::SIGTERM)?));
        }
        let ns = ns.clone();
        self.lab_mut().spawn(&ns, cmd)
    }

    /// Records the daemon's pid, so that teardown stops it gracefully before the lab goes.
    pub fn set_daemon(&mut self, pid: u32) {
        self.daemon = Some(pid);
    }

    pub fn daemon(&self) -> Option<u32> {
        self.daemon
    }

    /// Stops a process spawned with [`Session::spawn`] (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Result<()> {
        self.lab_mut().stop(pid, grace).map(drop)
    }

    /// Stops the daemon, tears dockerd down, deletes the lab (killing what runs in it) and
    /// removes the demo's directory (unmounting what is mounted below it); says what it did.
    fn teardown(&mut self) {
        if let Some(pid) = self.daemon.take() {
            match self.lab_mut().stop(pid, DAEMON_GRACE) {
                Ok(status) => println!("    stopped the portfwd daemon (pid {pid}, {status})"),
                Err(e) => eprintln!("    could not stop the daemon (pid {pid}): {e:#}"),
            }
        }
        if let Some(docker) = self.docker.take() {
            let pid = docker.pid().unwrap_or(0);
            let dir = docker.dir().to_owned();
            match docker.shutdown() {
                Ok(took) => println!(
                    "    removed Docker's containers, stopped dockerd (pid {pid}) and its \
                     containerd, removed {} ({took:.1?})",
                    dir.display()
                ),
                Err(e) => eprintln!("    could not tear dockerd down (pid {pid}): {e:#}"),
            }
        }
        if let Some(lab) = self.lab.take() {
            let names = lab
                .namespaces()
                .iter()
                .map(|n| n.name.clone())
                .collect::<Vec<_>>();
            drop(lab);
            let left: Vec<&String> = names
                .iter()
                .filter(|n| Ns::new(n.as_str()).path().exists())
                .collect();
            if left.is_empty() {
                println!(
                    "    deleted the network namespaces {} (their veths, bridge and the programs \
                     attached there went with them)",
                    names.join(", ")
                );
            } else {
                eprintln!("    could not delete the network namespaces {left:?}");
            }
        }
        remove_dir(&self.dir);
        if self.dir.exists() {
            eprintln!("    could not remove {}", self.dir.display());
        } else {
            println!(
                "    removed {} (config, socket, logs, pin directory)",
                self.dir.display()
            );
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes `dir` and everything below it: first whatever is mounted there (a bpffs the daemon
/// mounted for its pins: its pinned objects are unlinked, then it is unmounted), deepest first.
/// Best effort: what is already gone is fine.
fn remove_dir(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        remove_contents(m);
        if let Err(e) = umount2(m.as_path(), MntFlags::MNT_DETACH) {
            eprintln!("    could not unmount {}: {}", m.display(), e);
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => eprintln!("    could not remove {}: {e}", dir.display()),
    }
}

fn remove_contents(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Mount points at or below `dir` in this process's mount namespace (`/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}
