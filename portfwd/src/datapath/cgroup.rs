//! The socket hooks' attachment: host-local access to published ports.
//!
//! The eight cgroup `sock_addr` programs (connect, sendmsg, recvmsg and getpeername, for IPv4
//! and IPv6; see `portfwd-ebpf/src/sock.rs`) are attached with bpf links to the root of the
//! cgroup v2 hierarchy, so they run for every socket of the machine. Before attaching, the
//! daemon's own network namespace cookie is written to `PF_SOCK_NETNS` (a pinned map): the
//! programs act on sockets of that namespace only.
//!
//! With a pin directory the links are pinned (`sock/PROGRAM`), so the hooks stay attached while
//! no daemon runs (`kill -9`, a crash, an upgrade). A starting daemon takes each pinned link
//! over: it checks that the link is a cgroup link at the same hook of the same cgroup and swaps
//! its own program into it (`BPF_LINK_UPDATE`, see `super::link`), so a socket never finds
//! the hook missing nor runs it twice. A pin that cannot be taken over is removed and the hook
//! attached afresh.
//!
//! Finding cgroup v2: the first cgroup2 mount in `/proc/self/mountinfo` whose directory is the
//! hierarchy's root cgroup (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
//! hybrid one). The root is told by its inode, 1 (the root cgroup's id), not by the mount's ROOT
//! field: in a cgroup namespace (a container's, e.g. the Kubernetes DaemonSet's pod, which
//! mounts the node's /sys/fs/cgroup at /host/sys/fs/cgroup) the container's own cgroup2 mount
//! shows ROOT `/` though it is the container's cgroup, and the node's hierarchy shows `/../..`.
//! A daemon started with `ip netns exec` sees a fresh `/sys` without it; then cgroup2 is
//! mounted at [`PRIVATE_CGROUP2`], which in such a private mount namespace is seen by nobody
//! else. Either way it is the same hierarchy, whose root has the same id.
use std::{
    fs, io,
    net::{IpAddr, SocketAddr},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Pod,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use portfwd_common::{
    maps::{Program, ipv6_words},
    sock::{
        SOCK_NETNS, SOCK_REVNAT, SOCK_REVNAT6, SOCK_VERDICTS, SockRev6Key, SockRev6Value,
        SockRevKey, SockRevValue, SockVerdict,
    },
};

use super::{Datapath, Handle, link, maps, pin};
use crate::{
    error::{Cause, Error, LoadError},
    sys,
};

/// Where cgroup2 is mounted when no cgroup2 mount is visible.
pub const PRIVATE_CGROUP2: &str = "/run/portfwd/cgroup2";

/// The attached socket hooks. Detached by [`SocketHooks::detach`]; pinned ones stay attached
/// when the daemon exits without detaching them, process-local ones do not.
pub struct SocketHooks {
    cgroup: PathBuf,
    netns_cookie: u64,
    links: Vec<Handle>,
    /// How many of the links were pinned by a previous daemon and taken over.
    taken_over: usize,
    verdicts: PerCpuArray<MapData, u64>,
}

/// Why a pinned socket hook link could not be taken over (logged; the hook is then attached
/// afresh).
#[derive(Debug, thiserror::Error)]
enum TakeOverError {
    #[error("opening it")]
    Open(#[source] io::Error),
    #[error(
        "it is not the link wanted (link type {}, attach type {}, cgroup {}; wanted {}, {}, {})",
        have.0, have.1, have.2, want.0, want.1, want.2
    )]
    Elsewhere {
        have: (u32, u32, u64),
        want: (u32, u32, u64),
    },
    #[error("swapping the program in")]
    Update(#[source] io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("holding it")]
    Hold(#[source] aya::programs::links::LinkError),
}

impl SocketHooks {
    /// Loads the socket programs, scopes them to the daemon's network namespace and attaches
    /// them to the cgroup v2 root (`cgroup`, or the one found or mounted as described above),
    /// taking over the links a previous daemon pinned.
    pub fn attach(dp: &mut Datapath, cgroup: Option<&Path>) -> Result<Self, Error> {
        let cgroup = match cgroup {
            Some(p) => p.to_owned(),
            None => cgroup2_root()?,
        };
        let cgroup_error = |source| Error::Cgroup {
            path: cgroup.clone(),
            source,
        };
        let cgroup_id = fs::metadata(&cgroup)
            .map_err(|e| cgroup_error(e.into()))?
            .ino();
        let netns_cookie = own_netns_cookie()?;
        let mut netns: Array<&mut MapData, u64> = dp
            .ebpf
            .map_mut(SOCK_NETNS)
            .ok_or(LoadError::MissingMap(SOCK_NETNS))?
            .try_into()
            .map_err(|e| LoadError::Map(SOCK_NETNS, e))?;
        // Before any program is swapped in: a replaced (upgraded) map starts at 0, which
        // matches no namespace.
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

        let pinned = match dp.pin_dir.clone() {
            Some(dir) => unpin_unknown(&dir),
            None => Vec::new(),
        };
        let mut hooks = SocketHooks {
            cgroup,
            netns_cookie,
            links: Vec::new(),
            taken_over: 0,
            verdicts,
        };
        for program in Program::SOCKET_HOOKS {
            let taken = pinned
                .iter()
                .find(|(_, p)| *p == program)
                .and_then(|(path, _)| take_over_or_unpin(dp, program, path, cgroup_id));
            let handle = match taken {
                Some(handle) => {
                    hooks.taken_over += 1;
                    Ok(handle)
                }
                None => attach_one(dp, program, &hooks.cgroup),
            };
            match handle {
                Ok(handle) => hooks.links.push(handle),
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

    /// How many hooks were taken over from the links a previous daemon pinned (the others
    /// were attached afresh).
    pub fn taken_over(&self) -> usize {
        self.taken_over
    }

    /// Detaches every program (a pinned link loses its pin). Errors are logged: the link may
    /// already be gone.
    pub fn detach(&mut self, dp: &mut Datapath) {
        for handle in self.links.drain(..) {
            dp.release(handle);
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

impl Datapath {
    /// Whether the socket hooks translated the socket `cookie` to `target` (`connect()` or
    /// `sendmsg()` to a published address that led there): its entry in `PF_SOCK_REVNAT`
    /// (`PF_SOCK_REVNAT6`). A socket that talks to `target` directly has none.
    pub fn translated_by_hooks(&self, cookie: u64, target: SocketAddr, proto: u8) -> bool {
        let port = target.port().to_be();
        match target.ip() {
            IpAddr::V4(a) => self.sock_revnat_has::<_, SockRevValue>(
                SOCK_REVNAT,
                SockRevKey {
                    cookie,
                    target_addr_be: maps::ipv4_be(a),
                    target_port_be: port,
                    proto,
                    _pad: 0,
                },
            ),
            IpAddr::V6(a) => self.sock_revnat_has::<_, SockRev6Value>(
                SOCK_REVNAT6,
                SockRev6Key {
                    cookie,
                    target_addr_be: ipv6_words(a.octets()),
                    target_port_be: port,
                    proto,
                    _pad: 0,
                    _pad2: 0,
                },
            ),
        }
    }

    fn sock_revnat_has<K: Pod, V: Pod>(&self, name: &'static str, key: K) -> bool {
        let Some(map) = self.ebpf.map(name) else {
            return false;
        };
        let Ok(map) = HashMap::<&MapData, K, V>::try_from(map) else {
            return false;
        };
        map.get(&key, 0).is_ok()
    }
}

/// The pinned hook links in `dir` for programs this binary has; pins of programs it does not
/// have (an older or newer version's) are removed, which detaches them.
fn unpin_unknown(dir: &Path) -> Vec<(PathBuf, Program)> {
    let mut known = Vec::new();
    for (path, program) in pin::pinned_hooks(dir) {
        match program {
            Some(program) => known.push((path, program)),
            None => {
                tracing::warn!(path = %path.display(), "removing a pinned socket hook this version does not have");
                let _ = fs::remove_file(&path);
            }
        }
    }
    known
}

/// Takes over the pinned link at `path` for `program`; if that fails, says why and removes
/// the pin (detaching whatever it held) so that the hook is attached afresh, never twice.
fn take_over_or_unpin(
    dp: &mut Datapath,
    program: Program,
    path: &Path,
    cgroup_id: u64,
) -> Option<Handle> {
    match take_over(dp, program, path, cgroup_id) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(
                %program,
                path = %path.display(),
                "not taking over the pinned socket hook: {}",
                crate::error::chain(&e)
            );
            let _ = fs::remove_file(path);
            None
        }
    }
}

/// Swaps this daemon's `program` into the link pinned at `path`, after checking that the link
/// is `program`'s hook on the cgroup `cgroup_id`.
fn take_over(
    dp: &mut Datapath,
    program: Program,
    path: &Path,
    cgroup_id: u64,
) -> Result<Handle, TakeOverError> {
    let prog = dp.socket_hook(program)?;
    let prog_fd = prog.fd().map_err(|e| LoadError::Program(program, e))?;
    let link = link::open_pinned(path).map_err(TakeOverError::Open)?;
    let info = link::info(link.as_fd()).map_err(TakeOverError::Open)?;
    let have = (info.link_type, info.attach_type, info.cgroup_id);
    let want = (link::LINK_TYPE_CGROUP, attach_type(program), cgroup_id);
    if have != want {
        return Err(TakeOverError::Elsewhere { have, want });
    }
    link::update(link.as_fd(), prog_fd.as_fd()).map_err(TakeOverError::Update)?;
    // Held through aya like the interfaces' links, so that detaching is the same for both.
    let held = PinnedLink::from_pin(path).map_err(TakeOverError::Hold)?;
    Ok(Handle::Pinned {
        link: FdLink::from(held),
        path: path.to_owned(),
    })
}

/// `enum bpf_attach_type` of each socket hook, as `portfwd-ebpf` declares it.
fn attach_type(program: Program) -> u32 {
    match program {
        Program::Connect4 => 10,     // BPF_CGROUP_INET4_CONNECT
        Program::Connect6 => 11,     // BPF_CGROUP_INET6_CONNECT
        Program::Sendmsg4 => 14,     // BPF_CGROUP_UDP4_SENDMSG
        Program::Sendmsg6 => 15,     // BPF_CGROUP_UDP6_SENDMSG
        Program::Recvmsg4 => 19,     // BPF_CGROUP_UDP4_RECVMSG
        Program::Recvmsg6 => 20,     // BPF_CGROUP_UDP6_RECVMSG
        Program::Getpeername4 => 29, // BPF_CGROUP_INET4_GETPEERNAME
        Program::Getpeername6 => 30, // BPF_CGROUP_INET6_GETPEERNAME
        // Not a socket hook: matches no link.
        Program::TcIngress | Program::TcEgress | Program::Xdp => u32::MAX,
    }
}

/// Attaches `program` to `cgroup` with a new link, pinned when there is a pin directory.
fn attach_one(dp: &mut Datapath, program: Program, cgroup: &Path) -> Result<Handle, Error> {
    let pin_path = dp.pin_dir.as_deref().map(|d| pin::hook_path(d, program));
    let cgroup_error = |source| Error::Cgroup {
        path: cgroup.to_owned(),
        source,
    };
    let dir = fs::File::open(cgroup).map_err(|e| cgroup_error(Cause::Os(e)))?;
    let prog = dp.socket_hook(program)?;
    // A bpf link: always multi-attach, so other programs on the root cgroup keep running.
    let attach = |prog: &mut CgroupSockAddr| {
        prog.attach(&dir, CgroupAttachMode::Single)
            .map_err(|source| cgroup_error(Cause::Attach { program, source }))
    };
    let id = attach(prog)?;
    let Some(path) = pin_path else {
        return Ok(Handle::Cgroup(program, id));
    };
    let taken = prog
        .take_link(id)
        .map_err(|source| cgroup_error(Cause::Attach { program, source }))?;
    match FdLink::try_from(taken) {
        Ok(fd) => super::pin_link_at(path, "socket hook", fd).map_err(|e| Error::Pin {
            path: dp.pin_dir.clone().unwrap_or_default(),
            source: Cause::Io {
                action: format!("pinning {program}'s link"),
                source: io::Error::other(e),
            },
        }),
        Err(e) => {
            // Before Linux 5.7 a cgroup attachment is no bpf_link and cannot be pinned;
            // converting consumed it, so attach again, process-local.
            tracing::warn!(%program, "socket hook cannot be pinned ({e}): a daemon crash will detach it");
            Ok(Handle::Cgroup(program, attach(prog)?))
        }
    }
}

/// The root of a visible cgroup v2 hierarchy, mounting one at [`PRIVATE_CGROUP2`] if none is.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    let err = |path: &Path, source: Cause| Error::Cgroup {
        path: path.to_owned(),
        source,
    };
    let mountinfo = Path::new("/proc/self/mountinfo");
    let mountinfo = fs::read_to_string(mountinfo).map_err(|e| err(mountinfo, e.into()))?;
    if let Some(p) = find_cgroup2(&mountinfo, is_root_cgroup) {
        return Ok(p);
    }
    let path = Path::new(PRIVATE_CGROUP2);
    fs::create_dir_all(path).map_err(|e| err(path, e.into()))?;
    sys::mount(sys::FsType::Cgroup2, path)
        .map_err(|e| err(path, Cause::io("mounting cgroup2")(e.into())))?;
    if is_root_cgroup(path) {
        tracing::info!(path = PRIVATE_CGROUP2, "mounted cgroup2 (none was visible)");
    } else {
        tracing::warn!(
            path = PRIVATE_CGROUP2,
            "mounted cgroup2, but in a cgroup namespace: the socket hooks serve this namespace's processes only (mount the host's cgroup2 hierarchy into the container for host-local access)"
        );
    }
    Ok(path.to_owned())
}

/// Whether `dir` is the root cgroup of its cgroup2 hierarchy: its inode is the root cgroup's
/// id, 1 (kernfs numbers the root first).
fn is_root_cgroup(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| m.ino() == ROOT_CGROUP_INO)
}

/// The inode (and cgroup id) of a cgroup2 hierarchy's root directory.
const ROOT_CGROUP_INO: u64 = 1;

/// The mount point of the first cgroup2 mount in `mountinfo` whose directory `is_root` (proc(5):
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`).
fn find_cgroup2(mountinfo: &str, is_root: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = PathBuf::from(unescape_mount_path(mount.split_whitespace().nth(4)?));
        is_root(&point).then_some(point)
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
        // The roots, as their inodes would tell.
        let roots = |p: &Path| {
            [
                "/sys/fs/cgroup/unified",
                "/mnt/my cg",
                "/host/sys/fs/cgroup",
            ]
            .iter()
            .any(|r| p == Path::new(r))
        };
        assert_eq!(
            find_cgroup2(hybrid, roots),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v1_only = "33 30 0:28 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(find_cgroup2(v1_only, roots), None);
        let spaced = "40 30 0:27 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2(spaced, roots),
            Some(PathBuf::from("/mnt/my cg"))
        );
        // A pod in a cgroup namespace: its own /sys/fs/cgroup shows ROOT "/" but is its own
        // cgroup; the node's hierarchy, mounted by the DaemonSet, shows "/../../..".
        let pod = "\
1201 1190 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1210 1190 0:30 /../../.. /host/sys/fs/cgroup ro,relatime master:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2(pod, roots),
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
    }

    #[test]
    fn this_machines_cgroup2_root_has_the_root_inode() {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        if let Some(root) = find_cgroup2(&mountinfo, is_root_cgroup) {
            // Its processes are listed at the root: it really is the hierarchy's root (the
            // root cgroup has no cgroup.events, every other cgroup has one).
            assert!(root.join("cgroup.procs").exists(), "{}", root.display());
            assert!(!root.join("cgroup.events").exists(), "{}", root.display());
        }
    }
}
