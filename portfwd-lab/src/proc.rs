//! Processes of the lab: entering a namespace before exec, running commands with a time limit,
//! killing what is left inside a namespace.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use nix::sys::signal::Signal;

use crate::ns::Ns;
use crate::sys;

pub use crate::sys::is_root;

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured) for at most `timeout`; kills it
/// when the time is up.
pub(crate) fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    output_with_input(cmd, None, timeout)
}

/// [`output_with_timeout`] with `input` written to the command's stdin (then closed), or
/// stdin from /dev/null when `None`.
pub(crate) fn output_with_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits without reading its input closes the pipe: not an error here,
        // its status tells.
        let _ = std::io::Write::write_all(&mut stdin, input);
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = kill_and_reap(&mut child);
            bail!("timed out after {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The pipes close when the command exits, unless a background process it started keeps them.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(500));
    let pipe_err = || {
        anyhow::anyhow!(
            "the command exited ({status}) but a process it left in the background keeps its \
             stdout/stderr open: redirect that process's output, or use Lab::spawn"
        )
    };
    let stdout = stdout.recv_timeout(remaining).map_err(|_| pipe_err())?;
    let stderr = stderr
        .recv_timeout(Duration::from_millis(500))
        .map_err(|_| pipe_err())?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads `pipe` to its end on a thread; the bytes arrive on the channel.
fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    match pipe {
        Some(mut pipe) => {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        None => {
            let _ = tx.send(Vec::new());
        }
    }
    rx
}

/// `out` if its status is success, otherwise an error quoting its stderr (and stdout).
pub(crate) fn check_status(what: &str, out: Output) -> Result<Output> {
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut msg = format!("{what} failed ({})", out.status);
    if !stderr.trim().is_empty() {
        msg += &format!(": {}", stderr.trim());
    }
    if !stdout.trim().is_empty() {
        msg += &format!(" [stdout: {}]", stdout.trim());
    }
    bail!(msg)
}

/// SIGKILL and reap.
pub(crate) fn kill_and_reap(child: &mut Child) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // Fails only if it already exited (and is a zombie until reaped below).
    let _ = child.kill();
    Ok(child.wait()?)
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; reaps.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // `child` is not reaped yet, so its pid cannot have been reused by another process.
    sys::signal(child.id(), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_and_reap(child)
}

/// SIGKILLs every process whose network namespace is `ns` (as `ip netns pids` lists them) and waits
/// up to 2 s for them to disappear. Never our own process. Best effort: errors are ignored.
pub(crate) fn kill_processes_in(ns: &Ns) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = pids_in(ns);
        let pids: Vec<u32> = pids.into_iter().filter(|&p| p != me && p > 1).collect();
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for &pid in &pids {
            sys::signal(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ip netns pids NS`, parsed (empty on any error).
fn pids_in(ns: &Ns) -> Vec<u32> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", &ns.name]);
    match output_with_timeout(&mut cmd, Duration::from_secs(10)) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// SIGKILLs every process (but our own) whose command line contains `needle`, e.g. the containerd
/// and shims of a dockerd killed before it could stop them, found by its private directory.
/// Best effort: processes that are gone or not readable are skipped.
pub(crate) fn kill_by_cmdline(needle: &str) {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || pid <= 1 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            sys::signal(pid, Signal::SIGKILL);
        }
    }
}
