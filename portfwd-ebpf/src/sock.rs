//! The socket hooks: host-local access to published ports without translating packets.
//!
//! cgroup `sock_addr` programs run when a socket connects, sends to an address, receives with a
//! source address, or asks for its peer. Attached to the cgroup v2 root they see every socket of
//! the machine, so each one first checks that the socket lives in the daemon's network namespace
//! ([`SOCK_NETNS`]): a container's own `127.0.0.1:8080` is never touched.
//!
//! A destination is local when it is loopback (127.0.0.0/8, ::1) or one of the host's addresses
//! (`PF_HOST_ADDRS`, `PF_HOST_ADDRS6`); it is published when [`service::lookup`] finds it among
//! the forwards the packet path uses. `connect()` and `sendmsg()` then rewrite the
//! socket's destination to the target and remember the published address per socket
//! (`PF_SOCK_REVNAT`, `PF_SOCK_REVNAT6`); `recvmsg()` and `getpeername()` restore it, so the
//! application only ever sees the address it used. A forward with several backends gives each
//! socket one of them (`pool::for_socket`); one that has none leaves the socket alone. A forward bound to 127.0.0.1 or ::1 is
//! reachable here and nowhere else: the packet path drops every frame addressed to loopback.
//!
//! The logic is written once over [`CallAddr`], which says where a hook finds the address:
//! - [`V4`]: the IPv4 hooks (`connect4`, ...), `user_ip4`;
//! - [`V6`]: the IPv6 hooks (`connect6`, ...), `user_ip6`;
//! - [`V4Mapped`]: the IPv6 hooks called with an IPv4-mapped address (`::ffff:a.b.c.d`), which
//!   is how a dual-stack IPv6 socket talks IPv4: looked up in the IPv4 forwards, written back
//!   mapped.
use aya_ebpf::programs::SockAddrContext;
use portfwd_common::{
    maps::Ipv6Words,
    pool::FWD_POOL,
    proto,
    sock::{SockRev6Key, SockRevKey, SockRevValueOf, SockVerdict},
};

use crate::{
    ctx::sock::{
        netns_cookie, protocol as sock_protocol, set_user_ip4, set_user_ip6, set_user_port,
        socket_cookie, user_ip4, user_ip6, user_ip6_last_word, user_port,
    },
    family::{Family, Ipv4, Ipv6},
    maps::{Lookup as _, SOCK_NETNS, SOCK_REVNAT, SOCK_REVNAT6},
    pool::{self, Pool},
    service, stats,
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
pub trait SockMaps: Pool {
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
pub trait CallAddr {
    type F: SockMaps;

    /// The call's address (destination of `connect`/`sendmsg`, source of `recvmsg`, peer of
    /// `getpeername`).
    fn load(ctx: &SockAddrContext) -> <Self::F as Family>::Addr;
    fn store(ctx: &SockAddrContext, addr: <Self::F as Family>::Addr);
}

pub enum V4 {}
pub enum V6 {}
pub enum V4Mapped {}

/// The first three words of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as on the wire.
const MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

impl SockMaps for Ipv4 {
    #[inline(always)]
    fn is_loopback(addr_be: u32) -> bool {
        addr_be.to_ne_bytes()[0] == 127
    }
    #[inline(always)]
    fn revnat_get(cookie: u64, target: u32, port: u16, proto: u8) -> Option<SockRevValueOf<u32>> {
        SOCK_REVNAT.copied(rev_key(cookie, target, port, proto))
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
        SOCK_REVNAT6.copied(rev6_key(cookie, target, port, proto))
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

impl CallAddr for V4 {
    type F = Ipv4;

    #[inline(always)]
    fn load(ctx: &SockAddrContext) -> u32 {
        user_ip4(ctx)
    }
    #[inline(always)]
    fn store(ctx: &SockAddrContext, addr: u32) {
        set_user_ip4(ctx, addr);
    }
}

impl CallAddr for V4Mapped {
    type F = Ipv4;

    #[inline(always)]
    fn load(ctx: &SockAddrContext) -> u32 {
        user_ip6_last_word(ctx)
    }
    #[inline(always)]
    fn store(ctx: &SockAddrContext, addr: u32) {
        set_user_ip6(
            ctx,
            [MAPPED_PREFIX[0], MAPPED_PREFIX[1], MAPPED_PREFIX[2], addr],
        );
    }
}

impl CallAddr for V6 {
    type F = Ipv6;

    #[inline(always)]
    fn load(ctx: &SockAddrContext) -> Ipv6Words {
        user_ip6(ctx)
    }
    #[inline(always)]
    fn store(ctx: &SockAddrContext, addr: Ipv6Words) {
        set_user_ip6(ctx, addr);
    }
}

/// Whether an IPv6 hook's call carries an IPv4-mapped address (a dual-stack socket).
#[inline(always)]
pub fn is_v4_mapped(ctx: &SockAddrContext) -> bool {
    let w = user_ip6(ctx);
    w[0] == MAPPED_PREFIX[0] && w[1] == MAPPED_PREFIX[1] && w[2] == MAPPED_PREFIX[2]
}

/// `connect()` and `sendmsg()`: a published destination becomes the forward's target.
#[inline(always)]
pub fn translate<S: CallAddr>(ctx: &SockAddrContext, call: Call) -> i32 {
    let verdict = translate_inner::<S>(ctx, call);
    stats::count_sock_verdict(verdict);
    ALLOW
}

/// `recvmsg()` and `getpeername()`: a target's address becomes the published one again.
#[inline(always)]
pub fn restore<S: CallAddr>(ctx: &SockAddrContext, verdict_if_restored: SockVerdict) -> i32 {
    stats::count_sock_verdict(restore_inner::<S>(ctx, verdict_if_restored));
    ALLOW
}

#[inline(always)]
fn restore_inner<S: CallAddr>(
    ctx: &SockAddrContext,
    verdict_if_restored: SockVerdict,
) -> SockVerdict {
    if !in_host_netns(ctx) {
        return SockVerdict::PassOtherNetns;
    }
    let Some(proto) = protocol(ctx) else {
        return SockVerdict::PassNotTcpUdp;
    };
    let addr = S::load(ctx);
    let port = user_port(ctx);
    let Some(orig) = S::F::revnat_get(socket_cookie(ctx), addr, port, proto) else {
        return SockVerdict::PassNotTranslated;
    };
    S::store(ctx, orig.orig_addr_be);
    set_user_port(ctx, orig.orig_port_be);
    verdict_if_restored
}

#[inline(always)]
fn translate_inner<S: CallAddr>(ctx: &SockAddrContext, call: Call) -> SockVerdict {
    if !in_host_netns(ctx) {
        return SockVerdict::PassOtherNetns;
    }
    let Some(proto) = protocol(ctx) else {
        return SockVerdict::PassNotTcpUdp;
    };
    let addr = S::load(ctx);
    let port = user_port(ctx);
    if !S::F::is_loopback(addr) && !service::is_host_addr::<S::F>(addr) {
        return SockVerdict::PassNotLocal;
    }
    let Some(mut fwd) = service::lookup::<S::F>(addr, port, proto) else {
        return SockVerdict::PassNoForward;
    };
    // Several backends: one per socket, its cookie hashed into the pool's row.
    if fwd.flags & FWD_POOL != 0 && !pool::for_socket::<S::F>(socket_cookie(ctx), &mut fwd) {
        return SockVerdict::PassPoolNoBackend;
    }
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
    S::store(ctx, fwd.target_addr_be);
    set_user_port(ctx, fwd.target_port_be);
    match (stored, call) {
        (false, _) => SockVerdict::RevnatFailed,
        (true, Call::Connect) => SockVerdict::ConnectTranslated,
        (true, Call::Sendmsg) => SockVerdict::SendmsgTranslated,
    }
}

/// Whether the socket is in the daemon's network namespace. Unset (0) matches nothing.
#[inline(always)]
fn in_host_netns(ctx: &SockAddrContext) -> bool {
    let Some(want) = SOCK_NETNS.get(0) else {
        return false;
    };
    *want != 0 && *want == netns_cookie(ctx)
}

/// The socket's protocol, if TCP or UDP.
#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> Option<u8> {
    let p = sock_protocol(ctx);
    if p == proto::TCP as u32 || p == proto::UDP as u32 {
        Some(p as u8)
    } else {
        None
    }
}
