//! The lab's system calls, over `nix`: the one place that talks to the kernel directly. The rest of
//! the crate calls these safe functions.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Pid, geteuid};
use nix::{getsockopt_impl, sockopt_impl};

/// Whether the effective user is root.
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// Sends `sig` to process `pid`. Best effort: a pid out of range or a gone process is ignored.
pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Moves the calling thread into the network namespace `ns` (an open namespace file).
pub(crate) fn enter_netns(ns: impl AsFd) -> nix::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)
}

/// Whether `/sys` is mounted read-only here.
pub(crate) fn sys_is_read_only() -> bool {
    statvfs(c"/sys").is_ok_and(|st| st.flags().contains(FsFlags::ST_RDONLY))
}

/// What `ip netns exec` does before exec: join the network namespace at `path`, then a private
/// mount namespace (slave of the parent's, so later mounts in the root namespace still show) with
/// a fresh sysfs on `/sys` named `sysfs_name`, read-only if `read_only`.
///
/// Runs between fork and exec: only system calls on the borrowed C strings, no allocation.
pub(crate) fn enter_netns_like_ip_netns_exec(
    path: &CStr,
    sysfs_name: &CStr,
    read_only: bool,
) -> nix::Result<()> {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    enter_netns(&fd)?;
    drop(fd);
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        Some(c""),
        c"/",
        Some(c"none"),
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&CStr>,
    )?;
    // Like ip: a failing umount of /sys is not fatal (there may be none).
    let _ = umount2(c"/sys", MntFlags::MNT_DETACH);
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        Some(sysfs_name),
        c"/sys",
        Some(c"sysfs"),
        flags,
        None::<&CStr>,
    )
}

sockopt_impl!(
    /// `SO_NETNS_COOKIE`: the cookie of the socket's network namespace, as
    /// `bpf_get_netns_cookie` reports it.
    NetnsCookie,
    GetOnly,
    libc::SOL_SOCKET,
    libc::SO_NETNS_COOKIE,
    u64
);

/// The cookie of the network namespace `sock` belongs to.
pub(crate) fn netns_cookie(sock: &impl AsFd) -> nix::Result<u64> {
    nix::sys::socket::getsockopt(sock, NetnsCookie)
}

/// Waits up to `timeout` for `fd` to be readable (or to have an error/hang-up to report).
pub(crate) fn wait_readable(fd: impl AsFd, timeout: Duration) -> bool {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)), Ok(n) if n > 0)
}

/// Detaches the mount at `path` (`umount -l`); what still uses it keeps it until it lets go.
pub(crate) fn umount_detach(path: &std::path::Path) -> nix::Result<()> {
    umount2(path, MntFlags::MNT_DETACH)
}
