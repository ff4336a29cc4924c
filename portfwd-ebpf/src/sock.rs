//! The socket hooks: host-local access to published ports without translating packets.
//!
//! cgroup `sock_addr` programs run when a socket connects, sends to an address, receives with a
//! source address, or asks for its peer. Attached to the cgroup v2 root they see every socket of
//! the machine, so each one first checks that the socket lives in the daemon's network namespace
//! ([`SOCK_NETNS`]): a container's own `127.0.0.1:8080` is never touched.
//!
//! A destination is local when it is loopback (127.0.0.0/8, ::1) or one of the host's addresses
//! (`PF_HOST_ADDRS`, `PF_HOST_ADDRS6`); it is published when [`forward::lookup_forward`] finds
//! it in the forwarding table the packet path uses. `connect()` and `sendmsg()` then rewrite the
//! socket's destination to the target and remember the published address per socket
//! (`PF_SOCK_REVNAT`, `PF_SOCK_REVNAT6`); `recvmsg()` and `getpeername()` restore it, so the
//! application only ever sees the address it used. A forward bound to 127.0.0.1 or ::1 is
//! reachable here and nowhere else: the packet path drops every frame addressed to loopback.
//!
//! The logic is written once over [`SockFamily`], which says where a hook finds the address:
//! - [`V4`]: the IPv4 hooks (`connect4`, ...), `user_ip4`;
//! - [`V6`]: the IPv6 hooks (`connect6`, ...), `user_ip6`;
//! - [`V4Mapped`]: the IPv6 hooks called with an IPv4-mapped address (`::ffff:a.b.c.d`), which
//!   is how a dual-stack IPv6 socket talks IPv4: looked up in the IPv4 forwards, written back
//!   mapped.
//!
//! [`forward::lookup_forward`]: crate::forward::lookup_forward
use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use portfwd_common::{
    maps::Ipv6Words,
    proto,
    sock::{SockRev6Key, SockRevKey, SockRevValueOf, SockVerdict},
};

use crate::{
    family::{Family, Ipv4, Ipv6},
    forward::lookup_forward,
    maps::{SOCK_NETNS, SOCK_REVNAT, SOCK_REVNAT6, SOCK_VERDICTS},
};

/// What the kernel expects from a `sock_addr` program to let the call go on.
pub const ALLOW: i32 = 1;

/// Which call a hook runs for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Connect,
    Sendmsg,
}

/// What the socket hooks need of an address family beyond [`Family`]: its loopback test and
/// where a translated socket's published address is remembered.
pub trait SockMaps: Family {
    fn is_loopback(addr: Self::Addr) -> bool;
    /// The published address a socket used for `target:port`, if it was translated.
    fn revnat_get(
        cookie: u64,
        target: Self::Addr,
        port: u16,
        proto: u8,
    ) -> Option<SockRevValueOf<Self::Addr>>;
    fn revnat_insert(
        cookie: u64,
        target: Self::Addr,
        port: u16,
        proto: u8,
        orig: &SockRevValueOf<Self::Addr>,
    ) -> bool;
}

/// Where a socket hook finds the call's address.
pub trait SockFamily {
    type F: SockMaps;

    /// The call's address (destination of `connect`/`sendmsg`, source of `recvmsg`, peer of
    /// `getpeername`).
    fn load(sa: *const bpf_sock_addr) -> <Self::F as Family>::Addr;
    fn store(sa: *mut bpf_sock_addr, addr: <Self::F as Family>::Addr);
}

pub enum V4 {}
pub enum V6 {}
pub enum V4Mapped {}

/// The first three words of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as on the wire.
const MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

/// `user_ip6`, word by word: the verifier allows only 4-byte accesses to it.
#[inline(always)]
fn load_ip6(sa: *const bpf_sock_addr) -> Ipv6Words {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        // SAFETY: `sa` is the program's context pointer, valid for the whole invocation;
        // `user_ip6[i]` (i < 4) is a readable 4-byte field for the IPv6 attach types.
        *word = unsafe { core::ptr::read_volatile(&(*sa).user_ip6[i]) };
    }
    w
}

#[inline(always)]
fn store_ip6(sa: *mut bpf_sock_addr, w: Ipv6Words) {
    for (i, word) in w.iter().enumerate() {
        // SAFETY: as in `load_ip6`; `user_ip6` is writable for connect6, sendmsg6, recvmsg6 and
        // getpeername6.
        unsafe { core::ptr::write_volatile(&mut (*sa).user_ip6[i], *word) };
    }
}

impl SockMaps for Ipv4 {
    #[inline(always)]
    fn is_loopback(addr_be: u32) -> bool {
        addr_be.to_ne_bytes()[0] == 127
    }
    #[inline(always)]
    fn revnat_get(cookie: u64, target: u32, port: u16, proto: u8) -> Option<SockRevValueOf<u32>> {
        // SAFETY: pointer from a successful lookup; plain integers, copied at once.
        SOCK_REVNAT
            .get_ptr(rev_key(cookie, target, port, proto))
            .map(|v| unsafe { *v })
    }
    #[inline(always)]
    fn revnat_insert(
        cookie: u64,
        target: u32,
        port: u16,
        proto: u8,
        orig: &SockRevValueOf<u32>,
    ) -> bool {
        SOCK_REVNAT
            .insert(rev_key(cookie, target, port, proto), *orig, 0)
            .is_ok()
    }
}

impl SockMaps for Ipv6 {
    #[inline(always)]
    fn is_loopback(addr: Ipv6Words) -> bool {
        addr == [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
    }
    #[inline(always)]
    fn revnat_get(
        cookie: u64,
        target: Ipv6Words,
        port: u16,
        proto: u8,
    ) -> Option<SockRevValueOf<Ipv6Words>> {
        // SAFETY: pointer from a successful lookup; plain integers, copied at once.
        SOCK_REVNAT6
            .get_ptr(rev6_key(cookie, target, port, proto))
            .map(|v| unsafe { *v })
    }
    #[inline(always)]
    fn revnat_insert(
        cookie: u64,
        target: Ipv6Words,
        port: u16,
        proto: u8,
        orig: &SockRevValueOf<Ipv6Words>,
    ) -> bool {
        SOCK_REVNAT6
            .insert(rev6_key(cookie, target, port, proto), *orig, 0)
            .is_ok()
    }
}

#[inline(always)]
fn rev_key(cookie: u64, target: u32, port: u16, proto: u8) -> SockRevKey {
    SockRevKey {
        cookie,
        target_addr_be: target,
        target_port_be: port,
        proto,
        _pad: 0,
    }
}

#[inline(always)]
fn rev6_key(cookie: u64, target: Ipv6Words, port: u16, proto: u8) -> SockRev6Key {
    SockRev6Key {
        cookie,
        target_addr_be: target,
        target_port_be: port,
        proto,
        _pad: 0,
        _pad2: 0,
    }
}

impl SockFamily for V4 {
    type F = Ipv4;

    #[inline(always)]
    fn load(sa: *const bpf_sock_addr) -> u32 {
        // SAFETY: `sa` is the program's context pointer; `user_ip4` is readable for the IPv4
        // attach types.
        unsafe { (*sa).user_ip4 }
    }
    #[inline(always)]
    fn store(sa: *mut bpf_sock_addr, addr: u32) {
        // SAFETY: as above; `user_ip4` is writable for these attach types.
        unsafe { (*sa).user_ip4 = addr };
    }
}

impl SockFamily for V4Mapped {
    type F = Ipv4;

    #[inline(always)]
    fn load(sa: *const bpf_sock_addr) -> u32 {
        // SAFETY: as in `load_ip6`, one word.
        unsafe { core::ptr::read_volatile(&(*sa).user_ip6[3]) }
    }
    #[inline(always)]
    fn store(sa: *mut bpf_sock_addr, addr: u32) {
        store_ip6(
            sa,
            [MAPPED_PREFIX[0], MAPPED_PREFIX[1], MAPPED_PREFIX[2], addr],
        );
    }
}

impl SockFamily for V6 {
    type F = Ipv6;

    #[inline(always)]
    fn load(sa: *const bpf_sock_addr) -> Ipv6Words {
        load_ip6(sa)
    }
    #[inline(always)]
    fn store(sa: *mut bpf_sock_addr, addr: Ipv6Words) {
        store_ip6(sa, addr);
    }
}

/// Whether an IPv6 hook's call carries an IPv4-mapped address (a dual-stack socket).
#[inline(always)]
pub fn is_v4_mapped(ctx: &SockAddrContext) -> bool {
    let w = load_ip6(ctx.sock_addr);
    w[0] == MAPPED_PREFIX[0] && w[1] == MAPPED_PREFIX[1] && w[2] == MAPPED_PREFIX[2]
}

/// `connect()` and `sendmsg()`: a published destination becomes the forward's target.
#[inline(always)]
pub fn translate<S: SockFamily>(ctx: &SockAddrContext, call: Call) -> i32 {
    let verdict = translate_inner::<S>(ctx, call);
    count(verdict);
    ALLOW
}

/// `recvmsg()` and `getpeername()`: a target's address becomes the published one again.
#[inline(always)]
pub fn restore<S: SockFamily>(ctx: &SockAddrContext, verdict_if_restored: SockVerdict) -> i32 {
    count(restore_inner::<S>(ctx, verdict_if_restored));
    ALLOW
}

#[inline(always)]
fn restore_inner<S: SockFamily>(
    ctx: &SockAddrContext,
    verdict_if_restored: SockVerdict,
) -> SockVerdict {
    if !in_host_netns(ctx) {
        return SockVerdict::PassOtherNetns;
    }
    let Some(proto) = protocol(ctx) else {
        return SockVerdict::PassNotTcpUdp;
    };
    let sa = ctx.sock_addr;
    let addr = S::load(sa);
    let port = user_port(sa);
    let Some(orig) = S::F::revnat_get(socket_cookie(ctx), addr, port, proto) else {
        return SockVerdict::PassNotTranslated;
    };
    S::store(sa, orig.orig_addr_be);
    set_user_port(sa, orig.orig_port_be);
    verdict_if_restored
}

#[inline(always)]
fn translate_inner<S: SockFamily>(ctx: &SockAddrContext, call: Call) -> SockVerdict {
    if !in_host_netns(ctx) {
        return SockVerdict::PassOtherNetns;
    }
    let Some(proto) = protocol(ctx) else {
        return SockVerdict::PassNotTcpUdp;
    };
    let sa = ctx.sock_addr;
    let addr = S::load(sa);
    let port = user_port(sa);
    if !S::F::is_loopback(addr) && S::F::host_addrs().get_ptr(addr).is_none() {
        return SockVerdict::PassNotLocal;
    }
    let Some(fwd) = lookup_forward::<S::F>(addr, port, proto) else {
        return SockVerdict::PassNoForward;
    };
    let orig = SockRevValueOf {
        orig_addr_be: addr,
        orig_port_be: port,
        _pad: 0,
    };
    let stored = S::F::revnat_insert(
        socket_cookie(ctx),
        fwd.target_addr_be,
        fwd.target_port_be,
        proto,
        &orig,
    );
    S::store(sa, fwd.target_addr_be);
    set_user_port(sa, fwd.target_port_be);
    match (stored, call) {
        (false, _) => SockVerdict::RevnatFailed,
        (true, Call::Connect) => SockVerdict::ConnectTranslated,
        (true, Call::Sendmsg) => SockVerdict::SendmsgTranslated,
    }
}

/// The call's port, in network byte order (the low 16 bits of `user_port`).
#[inline(always)]
fn user_port(sa: *const bpf_sock_addr) -> u16 {
    // SAFETY: `sa` is the program's context pointer; `user_port` is readable for every
    // sock_addr attach type.
    unsafe { (*sa).user_port as u16 }
}

#[inline(always)]
fn set_user_port(sa: *mut bpf_sock_addr, port_be: u16) {
    // SAFETY: as above; `user_port` is writable for the attach types these programs use.
    unsafe { (*sa).user_port = port_be as u32 };
}

#[inline(always)]
fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: plain helper call on the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// Whether the socket is in the daemon's network namespace. Unset (0) matches nothing.
#[inline(always)]
fn in_host_netns(ctx: &SockAddrContext) -> bool {
    let Some(want) = SOCK_NETNS.get(0) else {
        return false;
    };
    // SAFETY: plain helper call on the program's own context.
    let have = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    *want != 0 && *want == have
}

/// The socket's protocol, if TCP or UDP.
#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: `protocol` is a readable field of the context for every sock_addr attach type.
    let p = unsafe { (*ctx.sock_addr).protocol };
    if p == proto::TCP as u32 || p == proto::UDP as u32 {
        Some(p as u8)
    } else {
        None
    }
}

#[inline(always)]
fn count(v: SockVerdict) {
    if let Some(c) = SOCK_VERDICTS.get_ptr_mut(v as u32) {
        // SAFETY: per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *c += 1 };
    }
}
