//! The socket hooks' context (cgroup `sock_addr`): the call's address and port, and the socket
//! making it. All unsafe access to that context is here; `crate::sock` holds the logic.
use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use portfwd_common::maps::Ipv6Words;

/// `user_ip4`: the call's IPv4 address (wire order), for the IPv4 attach types.
#[inline(always)]
pub fn user_ip4(ctx: &SockAddrContext) -> u32 {
    // SAFETY: `sock_addr` is the program's context pointer, valid for the whole invocation;
    // `user_ip4` is readable for the IPv4 attach types.
    unsafe { (*ctx.sock_addr).user_ip4 }
}

#[inline(always)]
pub fn set_user_ip4(ctx: &SockAddrContext, addr: u32) {
    // SAFETY: as in `user_ip4`; `user_ip4` is writable for connect4, sendmsg4, recvmsg4 and
    // getpeername4.
    unsafe { (*ctx.sock_addr).user_ip4 = addr };
}

/// `user_ip6`: the call's IPv6 address (wire order), for the IPv6 attach types. Read word by
/// word: the verifier allows only 4-byte accesses to it.
#[inline(always)]
pub fn user_ip6(ctx: &SockAddrContext) -> Ipv6Words {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        // SAFETY: as in `user_ip4`; `user_ip6[i]` (i < 4) is a readable 4-byte field for the
        // IPv6 attach types.
        *word = unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip6[i]) };
    }
    w
}

/// The last word of `user_ip6`: the IPv4 address of an IPv4-mapped one.
#[inline(always)]
pub fn user_ip6_last_word(ctx: &SockAddrContext) -> u32 {
    // SAFETY: as in `user_ip6`, one word.
    unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip6[3]) }
}

#[inline(always)]
pub fn set_user_ip6(ctx: &SockAddrContext, w: Ipv6Words) {
    for (i, word) in w.iter().enumerate() {
        // SAFETY: as in `user_ip6`; `user_ip6` is writable for connect6, sendmsg6, recvmsg6 and
        // getpeername6.
        unsafe { core::ptr::write_volatile(&mut (*ctx.sock_addr).user_ip6[i], *word) };
    }
}

/// The call's port, in network byte order (the low 16 bits of `user_port`).
#[inline(always)]
pub fn user_port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: as in `user_ip4`; `user_port` is readable for every sock_addr attach type.
    unsafe { (*ctx.sock_addr).user_port as u16 }
}

#[inline(always)]
pub fn set_user_port(ctx: &SockAddrContext, port_be: u16) {
    // SAFETY: as in `user_ip4`; `user_port` is writable for the attach types these programs
    // use.
    unsafe { (*ctx.sock_addr).user_port = port_be as u32 };
}

/// The socket's protocol number.
#[inline(always)]
pub fn protocol(ctx: &SockAddrContext) -> u32 {
    // SAFETY: as in `user_ip4`; `protocol` is readable for every sock_addr attach type.
    unsafe { (*ctx.sock_addr).protocol }
}

/// The socket's cookie, which names it for as long as it lives.
#[inline(always)]
pub fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: plain helper call on the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// The cookie of the socket's network namespace.
#[inline(always)]
pub fn netns_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: plain helper call on the program's own context.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}
