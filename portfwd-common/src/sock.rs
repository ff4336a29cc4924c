//! The socket hooks (cgroup `sock_addr` programs): host-local access to published ports.
//!
//! A process in the daemon's network namespace that connects or sends to a published port on
//! loopback or on one of the host's addresses has its socket's destination rewritten to the
//! forward's target at `connect()`/`sendmsg()` time, so no packet is ever translated and no proxy
//! process is needed. The original destination is remembered per socket ([`SOCK_REVNAT`]) so that
//! `getpeername()` and `recvfrom()` report the address the application used.
//!
//! The programs are attached to the cgroup v2 root and so run for every socket of the machine;
//! each one first compares the socket's network namespace cookie with the daemon's
//! ([`SOCK_NETNS`]) and leaves every other namespace alone.

/// One-entry array: the daemon's network namespace cookie (`SO_NETNS_COOKIE`). 0 (unset) means
/// "no namespace": the hooks then do nothing.
pub const SOCK_NETNS: &str = "PF_SOCK_NETNS";
/// Per-socket reverse translations: (socket cookie, target) -> published address.
pub const SOCK_REVNAT: &str = "PF_SOCK_REVNAT";
/// The IPv6 twin of [`SOCK_REVNAT`] (same types at [`crate::maps::Ipv6Words`]).
pub const SOCK_REVNAT6: &str = "PF_SOCK_REVNAT6";
/// Counters of the socket hooks' verdicts, indexed by [`SockVerdict`] (per CPU).
pub const SOCK_VERDICTS: &str = "PF_SOCK_VERDICTS";

use crate::maps::Ipv6Words;

pub const MAX_SOCK_REVNAT: u32 = 65_536;

/// Key of [`SOCK_REVNAT`]: a socket and the target it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie`: unique per socket for the life of the machine.
    pub cookie: u64,
    pub target_addr_be: u32,
    pub target_port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of [`SOCK_REVNAT6`]: [`SockRevKey`] with an IPv6 target. Not generic: the 8-byte cookie
/// aligns the key to 8, so the IPv6 key needs explicit tail padding the IPv4 one does not.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRev6Key {
    pub cookie: u64,
    pub target_addr_be: Ipv6Words,
    pub target_port_be: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// Value of [`SOCK_REVNAT`]: the published address the application used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevValueOf<A> {
    pub orig_addr_be: A,
    pub orig_port_be: u16,
    pub _pad: u16,
}

pub type SockRevValue = SockRevValueOf<u32>;
pub type SockRev6Value = SockRevValueOf<Ipv6Words>;

crate::counters! {
    /// What a socket hook did. The discriminant is the index of its counter in [`SOCK_VERDICTS`].
    pub enum SockVerdict {
        /// `connect()` to a published port: the socket now talks to the target.
        ConnectTranslated = 0 => "connect_translated",
        /// `sendto()`/`sendmsg()` with a published port as destination: sent to the target.
        SendmsgTranslated = 1 => "sendmsg_translated",
        /// `recvfrom()`/`recvmsg()` of a target's reply: the source shown is the published address.
        RecvmsgRestored = 2 => "recvmsg_restored",
        /// `getpeername()` of a translated socket: the published address.
        GetpeernameRestored = 3 => "getpeername_restored",
        /// A socket of another network namespace (a container, another host): left alone.
        PassOtherNetns = 4 => "pass_other_netns",
        /// The destination is neither loopback nor a host address: left alone.
        PassNotLocal = 5 => "pass_not_local",
        /// A local destination with no forward on that port: left alone.
        PassNoForward = 6 => "pass_no_forward",
        /// Neither TCP nor UDP: left alone.
        PassNotTcpUdp = 7 => "pass_not_tcp_udp",
        /// Translated, but the reverse entry could not be stored: the application will see the
        /// target's address instead of the published one.
        RevnatFailed = 8 => "revnat_failed",
        /// `recvmsg()`/`getpeername()` of a socket that was not translated, or of an address other
        /// than its target: left alone.
        PassNotTranslated = 9 => "pass_not_translated",
        /// A published port with several backends that has none to give (it refuses new flows,
        /// every backend down, or its slot names no live backend): left alone, so the socket
        /// talks to the published address itself, where nothing listens (`ECONNREFUSED` for
        /// TCP). A `sock_addr` program cannot fail `connect()` with `ECONNREFUSED` itself (it
        /// can only make it `EPERM`).
        PassPoolNoBackend = 10 => "pass_pool_no_backend",
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, integers only, explicit padding: any bit pattern is valid and there
    // are no uninitialised bytes.
    unsafe impl aya::Pod for SockRevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockRev6Key {}
    // SAFETY: as above.
    unsafe impl<A: crate::maps::Addr> aya::Pod for SockRevValueOf<A> {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SockRevKey>(), 16);
        assert_eq!(size_of::<SockRevValue>(), 8);
        assert_eq!(size_of::<SockRev6Key>(), 32);
        assert_eq!(size_of::<SockRev6Value>(), 20);
    }

    #[test]
    fn all_lists_every_verdict_in_index_order() {
        for (i, v) in SockVerdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i, "{}", v.name());
        }
    }
}
