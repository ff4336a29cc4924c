//! Commands and processes run inside a namespace: [`Children`], the processes a lab spawned
//! and still holds, and [`exec_timeout`], a command bounded by a time limit. The
//! [`Lab`](super::Lab) methods (`spawn`, `kill`, `exec`, `sh`, ...) are thin wrappers over them.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::ns::Ns;
use crate::{proc, sys};

/// How long [`Lab::exec`](super::Lab::exec) and [`Lab::sh`](super::Lab::sh) let a command run
/// before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes spawned into a lab's namespaces, by pid. The owner kills what is left with
/// [`Children::kill_all`] before it deletes the namespaces.
#[derive(Debug, Default)]
pub(crate) struct Children(HashMap<u32, Child>);

impl Children {
    /// Spawns `cmd` inside `ns` the way `ip netns exec NS` enters it, keeps its [`Child`], and
    /// returns its pid (see [`Lab::spawn`](super::Lab::spawn)).
    pub(crate) fn spawn(&mut self, ns: &Ns, cmd: &mut Command) -> Result<u32> {
        let path = CString::new(ns.path().into_os_string().into_encoded_bytes())
            .context("namespace path contains a NUL byte")?;
        let sysfs_name = CString::new(ns.name.clone()).context("namespace name with a NUL")?;
        let read_only = sys::sys_is_read_only();
        // SAFETY: the hook runs in the forked child before exec and only makes system calls
        // (open, setns, close, unshare, mount, umount2) on data prepared before the fork; it does not
        // allocate, lock or touch the parent's state.
        unsafe {
            cmd.pre_exec(move || {
                sys::enter_netns_like_ip_netns_exec(&path, &sysfs_name, read_only)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in namespace {}", cmd.get_program(), ns))?;
        let pid = child.id();
        self.0.insert(pid, child);
        Ok(pid)
    }

    /// The pids still held.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.keys().copied().collect()
    }

    /// The [`Child`] of `pid`, left held.
    pub(crate) fn get_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.0.get_mut(&pid)
    }

    /// The [`Child`] of `pid`, no longer held (so no longer killed by [`Children::kill_all`]).
    pub(crate) fn take(&mut self, pid: u32) -> Option<Child> {
        self.0.remove(&pid)
    }

    /// Kills (SIGKILL) `pid` and reaps it.
    pub(crate) fn kill(&mut self, pid: u32) -> Result<ExitStatus> {
        proc::kill_and_reap(&mut self.held(pid)?)
    }

    /// SIGTERM to `pid`, then SIGKILL if it has not exited within `grace`; reaps it.
    pub(crate) fn stop(&mut self, pid: u32, grace: Duration) -> Result<ExitStatus> {
        proc::terminate(&mut self.held(pid)?, grace)
    }

    /// Kills and reaps every process still held, ignoring failures (for teardown).
    pub(crate) fn kill_all(&mut self) {
        for (_, mut child) in self.0.drain() {
            let _ = proc::kill_and_reap(&mut child);
        }
    }

    /// Takes out the [`Child`] of `pid`, which must be held.
    fn held(&mut self, pid: u32) -> Result<Child> {
        self.take(pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this lab (or was taken)"))
    }
}

/// Runs `ip netns exec NS args…` for at most `timeout` and returns its output; fails, quoting
/// stderr, if it cannot start, exits non-zero or times out.
pub(crate) fn exec_timeout(ns: &Ns, args: &[&str], timeout: Duration) -> Result<Output> {
    let Some(program) = args.first() else {
        bail!("exec in namespace {ns}: no command given");
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).args(args);
    let what = format!("`{}` in namespace {ns}", args.join(" "));
    let out = proc::output_with_timeout(&mut cmd, timeout)
        .with_context(|| format!("running {what} ({program})"))?;
    proc::check_status(&what, out)
}

/// `02:00:00:00:00:01` as six bytes; `None` if it is not a MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("36:67:20:20:2b:c0"),
            Some([0x36, 0x67, 0x20, 0x20, 0x2b, 0xc0])
        );
        assert_eq!(parse_mac("36:67:20"), None);
        assert_eq!(parse_mac("zz:67:20:20:2b:c0"), None);
    }
}
