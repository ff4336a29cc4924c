//! The socket hooks' attachment: host-local access to published ports.
//!
//! The eight cgroup `sock_addr` programs (connect, sendmsg, recvmsg and getpeername, for IPv4
//! and IPv6; see `portfwd-ebpf/src/sock.rs`) are attached with bpf links to the root of the
//! cgroup v2 hierarchy, so they run for every socket of the machine. Before attaching, the daemon's own
//! network namespace cookie is written to `PF_SOCK_NETNS`: the programs act on sockets of that
//! namespace only.
//!
//! Finding cgroup v2: the first cgroup2 mount in `/proc/self/mountinfo` (`/sys/fs/cgroup` on a
//! unified host, `/sys/fs/cgroup/unified` on a hybrid one). A daemon started with
//! `ip netns exec` sees a fresh `/sys` without it; then cgroup2 is mounted at
//! [`PRIVATE_CGROUP2`], which in such a private mount namespace is seen by nobody else.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSockAddr, cgroup_sock_addr::CgroupSockAddrLinkId},
};
use portfwd_common::{
    maps::Program,
    sock::{SOCK_NETNS, SOCK_VERDICTS, SockVerdict},
};

use super::Datapath;
use crate::{
    error::{Cause, Error, LoadError},
    sys,
};

/// Where cgroup2 is mounted when no cgroup2 mount is visible.
pub const PRIVATE_CGROUP2: &str = "/run/portfwd/cgroup2";

/// The attached socket hooks. Detached by [`SocketHooks::detach`], or when the daemon exits
/// (the links are not pinned, so the kernel detaches them when their file descriptors close).
pub struct SocketHooks {
    cgroup: PathBuf,
    netns_cookie: u64,
    links: Vec<(Program, CgroupSockAddrLinkId)>,
    verdicts: PerCpuArray<MapData, u64>,
}

impl SocketHooks {
    /// Loads the socket programs, scopes them to the daemon's network namespace and attaches
    /// them to the cgroup v2 root (`cgroup`, or the one found or mounted as described above).
    pub fn attach(dp: &mut Datapath, cgroup: Option<&Path>) -> Result<Self, Error> {
        let cgroup = match cgroup {
            Some(p) => p.to_owned(),
            None => cgroup2_root()?,
        };
        let netns_cookie = own_netns_cookie()?;
        let mut netns: Array<&mut MapData, u64> = dp
            .ebpf
            .map_mut(SOCK_NETNS)
            .ok_or(LoadError::MissingMap(SOCK_NETNS))?
            .try_into()
            .map_err(|e| LoadError::Map(SOCK_NETNS, e))?;
        netns.set(0, netns_cookie, 0).map_err(|source| Error::Map {
            what: "socket hooks' namespace",
            source,
        })?;
        let verdicts = dp
            .ebpf
            .take_map(SOCK_VERDICTS)
            .ok_or(LoadError::MissingMap(SOCK_VERDICTS))?
            .try_into()
            .map_err(|e| LoadError::Map(SOCK_VERDICTS, e))?;

        let mut hooks = SocketHooks {
            cgroup,
            netns_cookie,
            links: Vec::new(),
            verdicts,
        };
        for program in Program::SOCKET_HOOKS {
            match attach_one(dp, program, &hooks.cgroup) {
                Ok(link) => hooks.links.push((program, link)),
                Err(e) => {
                    // All or nothing: half the hooks would translate connect() but not show
                    // the published address back.
                    hooks.detach(dp);
                    return Err(e);
                }
            }
        }
        Ok(hooks)
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The network namespace cookie the programs act on.
    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }

    /// Detaches every program. Errors are logged: the link may already be gone.
    pub fn detach(&mut self, dp: &mut Datapath) {
        for (program, link) in self.links.drain(..) {
            if let Ok(prog) = super::program_mut::<CgroupSockAddr>(&mut dp.ebpf, program)
                && let Err(e) = prog.detach(link)
            {
                tracing::debug!(%program, "socket hook detach: {e}");
            }
        }
    }

    /// Every socket verdict counter, summed over CPUs.
    pub fn verdicts(&self) -> Result<Vec<(SockVerdict, u64)>, Error> {
        SockVerdict::ALL
            .iter()
            .map(|v| {
                let per_cpu = self
                    .verdicts
                    .get(&(*v as u32), 0)
                    .map_err(|source| Error::Map {
                        what: "socket verdict counters",
                        source,
                    })?;
                Ok((*v, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn attach_one(
    dp: &mut Datapath,
    program: Program,
    cgroup: &Path,
) -> Result<CgroupSockAddrLinkId, Error> {
    let prog = dp.socket_hook(program)?;
    let cgroup_error = |source| Error::Cgroup {
        path: cgroup.to_owned(),
        source,
    };
    let dir = fs::File::open(cgroup).map_err(|e| cgroup_error(Cause::Os(e)))?;
    // A bpf link: always multi-attach, so other programs on the root cgroup keep running.
    prog.attach(&dir, CgroupAttachMode::Single)
        .map_err(|source| cgroup_error(Cause::Attach { program, source }))
}

/// The root of a visible cgroup v2 hierarchy, mounting one at [`PRIVATE_CGROUP2`] if none is.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    let err = |path: &Path, source: Cause| Error::Cgroup {
        path: path.to_owned(),
        source,
    };
    let mountinfo = Path::new("/proc/self/mountinfo");
    let mountinfo = fs::read_to_string(mountinfo).map_err(|e| err(mountinfo, e.into()))?;
    if let Some(p) = find_cgroup2(&mountinfo) {
        return Ok(p);
    }
    let path = Path::new(PRIVATE_CGROUP2);
    fs::create_dir_all(path).map_err(|e| err(path, e.into()))?;
    sys::mount(sys::FsType::Cgroup2, path)
        .map_err(|e| err(path, Cause::io("mounting cgroup2")(e.into())))?;
    tracing::info!(path = PRIVATE_CGROUP2, "mounted cgroup2 (none was visible)");
    Ok(path.to_owned())
}

/// The mount point of the first cgroup2 mount of its hierarchy's root in `mountinfo`
/// (proc(5): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`).
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (root == "/").then(|| PathBuf::from(unescape_mount_path(point)))
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The daemon's network namespace cookie, as `bpf_get_netns_cookie` reports it for its sockets.
fn own_netns_cookie() -> Result<u64, Error> {
    let load = |e: std::io::Error| Error::from(LoadError::NetnsCookie(e));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(load)?;
    sys::netns_cookie(&sock).map_err(|e| load(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_root_mount() {
        let hybrid = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 /sub /srv/cg rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            find_cgroup2(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v1_only = "33 30 0:28 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(find_cgroup2(v1_only), None);
        let spaced = "40 30 0:27 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2(spaced), Some(PathBuf::from("/mnt/my cg")));
    }
}
