//! Commands and processes run inside the lab's namespaces: [`Lab::spawn`] (kept, and killed at
//! drop), [`Lab::exec`] and [`Lab::sh`] (bounded by a timeout).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::Lab;
use crate::ns::Ns;
use crate::proc;

/// How long [`Lab::exec`] and [`Lab::sh`] let a command run before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

impl Lab {
    /// Spawns `cmd` inside `ns`, entering it the way `ip netns exec NS` does (network namespace,
    /// then a private mount namespace with a fresh `/sys` showing `ns`'s interfaces), while keeping
    /// everything set on `cmd` (arguments, environment, directory, stdio). The [`Child`] is kept and
    /// killed at drop; returns its pid (the pid of `cmd` itself).
    ///
    /// Use [`Lab::kill`], [`Lab::stop`], [`Lab::take_child`] or [`Lab::child_mut`] to end it early or
    /// get at it (e.g. to read piped output, or to kill -9 and restart a daemon).
    ///
    /// This adds a `pre_exec` hook to `cmd`: reuse `cmd` for another spawn only into the same
    /// namespace.
    pub fn spawn(&mut self, ns: &Ns, cmd: &mut Command) -> Result<u32> {
        let path = CString::new(ns.path().into_os_string().into_encoded_bytes())
            .context("namespace path contains a NUL byte")?;
        let sysfs_name = CString::new(ns.name.clone()).context("namespace name with a NUL")?;
        let sys_flags = if sys_is_read_only() {
            libc::MS_RDONLY
        } else {
            0
        };
        // SAFETY: the hook runs in the forked child before exec and only makes raw system calls
        // (open, setns, close, unshare, mount, umount2) on data prepared before the fork; it does not
        // allocate, lock or touch the parent's state.
        unsafe {
            cmd.pre_exec(move || {
                proc::enter_netns_like_ip_netns_exec(&path, &sysfs_name, sys_flags)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in namespace {}", cmd.get_program(), ns))?;
        let pid = child.id();
        self.children.insert(pid, child);
        Ok(pid)
    }

    /// The pids of the processes started with [`Lab::spawn`] and still held by the lab.
    pub fn children(&self) -> Vec<u32> {
        self.children.keys().copied().collect()
    }

    /// The [`Child`] of a process started with [`Lab::spawn`], left in the lab's hands.
    pub fn child_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.get_mut(&pid)
    }

    /// Takes the [`Child`] of a process started with [`Lab::spawn`] out of the lab: the lab no longer
    /// kills it at drop (but still kills whatever is left in its namespaces when deleting them).
    pub fn take_child(&mut self, pid: u32) -> Option<Child> {
        self.children.remove(&pid)
    }

    /// Kills (SIGKILL) a process started with [`Lab::spawn`] and reaps it; returns its exit status.
    pub fn kill(&mut self, pid: u32) -> Result<ExitStatus> {
        let mut child = self
            .children
            .remove(&pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this lab (or was taken)"))?;
        proc::kill_and_reap(&mut child)
    }

    /// Stops a process started with [`Lab::spawn`] gracefully: SIGTERM, then SIGKILL if it has not
    /// exited within `grace`. Returns its exit status.
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Result<ExitStatus> {
        let mut child = self
            .children
            .remove(&pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this lab (or was taken)"))?;
        proc::terminate(&mut child, grace)
    }

    /// Runs `ip netns exec NS args…` (at most [`EXEC_TIMEOUT`]) and returns its output; fails,
    /// quoting stderr, if it cannot start, exits non-zero or times out.
    pub fn exec(&self, ns: &Ns, args: &[&str]) -> Result<Output> {
        self.exec_timeout(ns, args, EXEC_TIMEOUT)
    }

    /// [`Lab::exec`] with an explicit time limit.
    pub fn exec_timeout(&self, ns: &Ns, args: &[&str], timeout: Duration) -> Result<Output> {
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

    /// Runs `ip netns exec NS sh -c SCRIPT` (at most [`EXEC_TIMEOUT`]) and returns its stdout; fails,
    /// quoting stderr, if the script exits non-zero.
    pub fn sh(&self, ns: &Ns, script: &str) -> Result<String> {
        let out = self.exec(ns, &["sh", "-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MAC address of interface `dev` in `ns`.
    pub fn mac(&self, ns: &Ns, dev: &str) -> Result<[u8; 6]> {
        let out = self.sh(ns, &format!("cat /sys/class/net/{dev}/address"))?;
        parse_mac(out.trim()).with_context(|| format!("bad MAC address {out:?} of {dev} in {ns}"))
    }
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

/// Whether `/sys` is mounted read-only here (then `ip netns exec` mounts the new sysfs read-only too).
fn sys_is_read_only() -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: the path is a NUL-terminated literal and `st` is valid for writes of a statvfs.
    let rc = unsafe { libc::statvfs(c"/sys".as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statvfs succeeded (rc == 0), so it initialised `st`; otherwise we don't read it.
    rc == 0 && unsafe { st.assume_init() }.f_flag & libc::ST_RDONLY != 0
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
