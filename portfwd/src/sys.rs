//! The system calls portfwd needs beyond `std`, made through `nix`: mounting bpffs and cgroup2,
//! the file-creation mask, the effective user, entering a network namespace, interface names
//! and addresses, and a socket's network namespace cookie. The raw system calls left are the
//! `bpf(2)` commands neither aya nor nix offers, in `datapath::count` and `datapath::link`.
use std::{fs::File, net::IpAddr, os::fd::AsFd, path::Path};

use nix::{
    mount::MsFlags,
    sched::CloneFlags,
    sys::{
        socket::GetSockOpt as _,
        stat::Mode,
        statfs::{BPF_FS_MAGIC, statfs},
    },
};

/// A file system to mount, by type (its source is named after it, as `mount -t TYPE TYPE`).
#[derive(Clone, Copy, Debug)]
pub enum FsType {
    /// bpffs, where maps and links are pinned.
    Bpf,
    /// cgroup v2, where the socket hooks are attached (mounted nosuid, nodev, noexec).
    Cgroup2,
}

/// Mounts a file system of type `fs` at `at`.
pub fn mount(fs: FsType, at: &Path) -> nix::Result<()> {
    let (name, flags) = match fs {
        FsType::Bpf => ("bpf", MsFlags::empty()),
        FsType::Cgroup2 => (
            "cgroup2",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
    };
    nix::mount::mount(Some(name), at, Some(name), flags, None::<&str>)
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Runs `f` with the process's file-creation mask set to `mask`, then restores the mask.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    let result = f();
    nix::sys::stat::umask(old);
    result
}

/// The effective user id.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Moves the calling thread into the network namespace `ns` (an open `/proc/PID/ns/net` or
/// `/run/netns/NAME`).
pub fn enter_netns(ns: &File) -> nix::Result<()> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
}

/// The name of interface `index` in the calling thread's namespace; `None` if it is gone.
pub fn interface_name(index: u32) -> Option<String> {
    nix::net::if_::if_indextoname(index)
        .ok()
        .map(|n| n.to_string_lossy().into_owned())
}

/// An address of an interface, as `getifaddrs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceAddr {
    Ip(IpAddr),
    /// The link-layer address, as long as the device's addresses are (empty for L3 devices).
    Link(Vec<u8>),
}

/// Every (interface name, address) of the calling thread's network namespace (`getifaddrs`
/// talks netlink in the thread's namespace). Interfaces without an address are listed with
/// `None`.
pub fn interface_addrs() -> nix::Result<Vec<(String, Option<InterfaceAddr>)>> {
    Ok(nix::ifaddrs::getifaddrs()?
        .map(|ifa| {
            let addr = ifa.address.and_then(|a| {
                if let Some(sin) = a.as_sockaddr_in() {
                    Some(InterfaceAddr::Ip(sin.ip().into()))
                } else if let Some(sin6) = a.as_sockaddr_in6() {
                    Some(InterfaceAddr::Ip(sin6.ip().into()))
                } else if let Some(ll) = a.as_link_addr() {
                    let mac = ll.addr().unwrap_or_default();
                    Some(InterfaceAddr::Link(
                        mac[..ll.halen().min(mac.len())].to_vec(),
                    ))
                } else {
                    None
                }
            });
            (ifa.interface_name, addr)
        })
        .collect())
}

// The macro nix defines its own socket options with; it expands to their `getsockopt` call.
use nix::{getsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// `SO_NETNS_COOKIE`: the cookie of the socket's network namespace, as
    /// `bpf_get_netns_cookie` reports it to the socket hooks.
    NetnsCookie,
    GetOnly,
    libc::SOL_SOCKET,
    libc::SO_NETNS_COOKIE,
    u64
);

/// The cookie of the network namespace `sock` belongs to.
pub fn netns_cookie(sock: &impl AsFd) -> nix::Result<u64> {
    NetnsCookie.get(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_namespace_has_a_cookie_and_loopback() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_ne!(netns_cookie(&sock).unwrap(), 0);
        let addrs = interface_addrs().unwrap();
        assert!(
            addrs
                .iter()
                .any(|(n, a)| n == "lo" && *a == Some(InterfaceAddr::Ip([127, 0, 0, 1].into()))),
            "{addrs:?}"
        );
        assert_eq!(interface_name(1).as_deref(), Some("lo"));
    }
}
