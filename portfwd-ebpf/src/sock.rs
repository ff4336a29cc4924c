//! The socket hooks: host-local access to published ports without translating packets.
//!
//! cgroup `sock_addr` programs run when a socket connects, sends to an address, receives with a
//! source address, or asks for its peer. Attached to the cgroup v2 root they see every socket of
//! the machine, so each one first checks that the socket lives in the daemon's network namespace
//! ([`SOCK_NETNS`]): a container's own `127.0.0.1:8080` is never touched.
//!
//! A destination is local when it is in 127.0.0.0/8 or one of the host's addresses
//! ([`HOST_ADDRS`]); it is published when [`forward::lookup_forward`] finds it in the one
//! forwarding table the packet path uses. `connect()` and `sendmsg()` then rewrite the socket's
//! destination to the target and remember the published address per socket in
//! [`SOCK_REVNAT`]; `recvmsg()` and `getpeername()` restore it, so the application only ever sees
//! the address it used. A forward bound to 127.0.0.1 is reachable here and nowhere else: the
//! packet path drops every frame addressed to 127.0.0.0/8.
use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use portfwd_common::{
    proto,
    sock::{SockRevKey, SockRevValue, SockVerdict},
};

use crate::{
    family::Ipv4,
    forward::lookup_forward,
    maps::{HOST_ADDRS, SOCK_NETNS, SOCK_REVNAT, SOCK_VERDICTS},
};

/// What the kernel expects from a `sock_addr` program to let the call go on.
pub const ALLOW: i32 = 1;

/// Which call a hook runs for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Connect,
    Sendmsg,
}

/// `connect()` and `sendmsg()`: a published destination becomes the forward's target.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext, call: Call) -> i32 {
    let verdict = translate_inner(ctx, call);
    count(verdict);
    ALLOW
}

/// `recvmsg()` and `getpeername()`: a target's address becomes the published one again.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext, verdict_if_restored: SockVerdict) -> i32 {
    if !in_host_netns(ctx) {
        count(SockVerdict::PassOtherNetns);
        return ALLOW;
    }
    let Some(proto) = protocol(ctx) else {
        count(SockVerdict::PassNotTcpUdp);
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the program's context pointer, valid for the whole invocation;
    // `user_ip4` and `user_port` are readable (and writable) fields for these attach types.
    let (addr, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    let key = SockRevKey {
        // SAFETY: plain helper call on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        target_addr_be: addr,
        target_port_be: port,
        proto,
        _pad: 0,
    };
    let Some(orig) = SOCK_REVNAT.get_ptr(key) else {
        count(SockVerdict::PassNotTranslated);
        return ALLOW;
    };
    // SAFETY: pointer from a successful lookup; plain integers, copied at once.
    let orig = unsafe { *orig };
    // SAFETY: as above; writes of the user address and port are allowed for these attach types.
    unsafe {
        (*sa).user_ip4 = orig.orig_addr_be;
        (*sa).user_port = orig.orig_port_be as u32;
    }
    count(verdict_if_restored);
    ALLOW
}

#[inline(always)]
fn translate_inner(ctx: &SockAddrContext, call: Call) -> SockVerdict {
    if !in_host_netns(ctx) {
        return SockVerdict::PassOtherNetns;
    }
    let Some(proto) = protocol(ctx) else {
        return SockVerdict::PassNotTcpUdp;
    };
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the program's context pointer; `user_ip4`/`user_port` are readable fields
    // for connect4 and sendmsg4. The port is in network byte order in the low 16 bits.
    let (addr, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    if !is_loopback(addr) && HOST_ADDRS.get_ptr(addr).is_none() {
        return SockVerdict::PassNotLocal;
    }
    let Some(fwd) = lookup_forward::<Ipv4>(addr, port, proto) else {
        return SockVerdict::PassNoForward;
    };
    let key = SockRevKey {
        // SAFETY: plain helper call on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        target_addr_be: fwd.target_addr_be,
        target_port_be: fwd.target_port_be,
        proto,
        _pad: 0,
    };
    let value = SockRevValue {
        orig_addr_be: addr,
        orig_port_be: port,
        _pad: 0,
    };
    let stored = SOCK_REVNAT.insert(key, value, 0).is_ok();
    // SAFETY: writes of the user address and port are allowed for connect4 and sendmsg4.
    unsafe {
        (*sa).user_ip4 = fwd.target_addr_be;
        (*sa).user_port = fwd.target_port_be as u32;
    }
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

/// 127.0.0.0/8, with the address as on the wire.
#[inline(always)]
fn is_loopback(addr_be: u32) -> bool {
    addr_be.to_ne_bytes()[0] == 127
}

#[inline(always)]
fn count(v: SockVerdict) {
    if let Some(c) = SOCK_VERDICTS.get_ptr_mut(v as u32) {
        // SAFETY: per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *c += 1 };
    }
}
