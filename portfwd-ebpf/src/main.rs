//! portfwd's kernel programs: thin entry points over one datapath.
//!
//! The packet hooks (tc, XDP) hand their context to [`datapath::process`], which holds the one
//! translation path shared by every hook and both address families; they count its verdict and
//! turn it into the hook's return code. The socket hooks are in `sock`.
//!
//! Module map, bottom to top (each uses only those above it):
//! - `types`: the plain data types (parsed headers, tuples, next hops, outcomes);
//! - `maps`: the BPF maps, a copying lookup and per-CPU counter updates (all map unsafe);
//! - `ctx`: the packet context a hook provides (`ctx/tc.rs`, `ctx/xdp.rs`): bounds-checked reads,
//!   writes, checksums, redirects (all packet context unsafe);
//! - `stats`: verdict and per-forward counters;
//! - `family`: what differs between IPv4 and IPv6 (maps, header, checksums, hop, FIB fields);
//! - `parse`: Ethernet/IP/TCP/UDP/ICMP-error parsing with every bound checked once;
//! - `service`: the published forwards, port ranges and source allowlists;
//! - `flow`: connection tracking, and the flow keys;
//! - `rewrite`: address/port/TTL/hop limit/MAC rewriting with incremental checksums;
//! - `pmtu`: a packet too big for its egress: the ICMP "too big" answer, built in its place and
//!   rate-limited, or the kernel's fragmentation (IPv4 without DF);
//! - `xmit`: FIB lookup, bridge shortcut, redirect, and the tail every translation ends with;
//! - `frag`: fragmented datagrams: the first fragment's translation remembered, later fragments
//!   translated the same way;
//! - `pool`: forwards with several backends: the backend of a flow (affinity, Maglev row),
//!   refusal when all are down, per-backend counters;
//! - `nat`: publish (DNAT) and reply translation, hairpin included;
//! - `icmp`: ICMP and ICMPv6 errors about translated flows (path MTU discovery, unreachables);
//! - `local`: replies to the host's own flows on published ports (socket lookup, and the flows
//!   tc egress saw leaving from a published port);
//! - `datapath`: the dispatcher;
//! - `sock`: the socket hooks (cgroup `sock_addr`) for host-local access to published ports.
#![no_std]
#![no_main]

mod ctx;
mod datapath;
mod family;
mod flow;
mod frag;
mod icmp;
mod local;
mod maps;
mod nat;
mod parse;
mod pmtu;
mod pool;
mod rewrite;
mod service;
mod sock;
mod stats;
mod types;
mod xmit;

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use portfwd_common::sock::SockVerdict;

use crate::{
    ctx::Ctx,
    sock::{Call, V4, V4Mapped, V6},
    types::Action,
};

/// tc ingress on every interface portfwd manages.
///
/// Packets that are not ours return `TC_ACT_UNSPEC`, which lets any other tc program attached
/// after us run, and otherwise lets the packet continue up the stack untouched.
#[classifier]
pub fn portfwd_tc_ingress(ctx: TcContext) -> i32 {
    let outcome = datapath::process(&ctx);
    stats::count_verdict(TcContext::HOOK, outcome.reason);
    match outcome.action {
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT,
        Action::Redirect(code) => code as i32,
        // `Ctx::bounce` asked for the redirect to the ingress interface.
        Action::Bounce => TC_ACT_REDIRECT,
    }
}

/// tc egress on every interface portfwd manages: remembers flows leaving from a published port
/// (`local`), so that their replies are not taken for new connections. Never changes a packet.
#[classifier]
pub fn portfwd_tc_egress(ctx: TcContext) -> i32 {
    local::record(&ctx);
    TC_ACT_UNSPEC
}

/// XDP on interfaces with native XDP support, in front of the tc program. It finishes a
/// translation only when the next hop takes XDP frames; everything else passes to tc untouched.
#[xdp]
pub fn portfwd_xdp(ctx: XdpContext) -> u32 {
    let outcome = datapath::process(&ctx);
    stats::count_verdict(XdpContext::HOOK, outcome.reason);
    match outcome.action {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
        Action::Redirect(code) => code,
        Action::Bounce => xdp_action::XDP_TX,
    }
}

/// `connect()` of a TCP or UDP socket in the daemon's namespace to a published port on loopback
/// or a host address: the socket connects to the target instead.
#[cgroup_sock_addr(connect4)]
pub fn portfwd_connect4(ctx: SockAddrContext) -> i32 {
    sock::translate::<V4>(&ctx, Call::Connect)
}

/// `sendto()`/`sendmsg()` of an unconnected UDP socket to a published port: sent to the target.
#[cgroup_sock_addr(sendmsg4)]
pub fn portfwd_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::translate::<V4>(&ctx, Call::Sendmsg)
}

/// `recvfrom()`/`recvmsg()` of a UDP socket: a translated target's reply shows the published
/// address as its source.
#[cgroup_sock_addr(recvmsg4)]
pub fn portfwd_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::restore::<V4>(&ctx, SockVerdict::RecvmsgRestored)
}

/// `getpeername()` of a translated socket: the published address.
#[cgroup_sock_addr(getpeername4)]
pub fn portfwd_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::restore::<V4>(&ctx, SockVerdict::GetpeernameRestored)
}

/// The IPv6 twins of the four above. An IPv4-mapped address (a dual-stack socket talking IPv4)
/// is looked up among the IPv4 forwards.
#[cgroup_sock_addr(connect6)]
pub fn portfwd_connect6(ctx: SockAddrContext) -> i32 {
    if sock::is_v4_mapped(&ctx) {
        sock::translate::<V4Mapped>(&ctx, Call::Connect)
    } else {
        sock::translate::<V6>(&ctx, Call::Connect)
    }
}

#[cgroup_sock_addr(sendmsg6)]
pub fn portfwd_sendmsg6(ctx: SockAddrContext) -> i32 {
    if sock::is_v4_mapped(&ctx) {
        sock::translate::<V4Mapped>(&ctx, Call::Sendmsg)
    } else {
        sock::translate::<V6>(&ctx, Call::Sendmsg)
    }
}

#[cgroup_sock_addr(recvmsg6)]
pub fn portfwd_recvmsg6(ctx: SockAddrContext) -> i32 {
    if sock::is_v4_mapped(&ctx) {
        sock::restore::<V4Mapped>(&ctx, SockVerdict::RecvmsgRestored)
    } else {
        sock::restore::<V6>(&ctx, SockVerdict::RecvmsgRestored)
    }
}

#[cgroup_sock_addr(getpeername6)]
pub fn portfwd_getpeername6(ctx: SockAddrContext) -> i32 {
    if sock::is_v4_mapped(&ctx) {
        sock::restore::<V4Mapped>(&ctx, SockVerdict::GetpeernameRestored)
    } else {
        sock::restore::<V6>(&ctx, SockVerdict::GetpeernameRestored)
    }
}

// The panic handler is the library's.
use portfwd_ebpf as _;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
