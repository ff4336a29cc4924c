//! Sending a translated packet on: where it goes (a FIB lookup, done before the packet is
//! touched, so that a packet we cannot send on is left unchanged), the router's part (TTL, MACs),
//! and the redirect, with a shortcut past the bridge.
//!
//! Every translation ends the same way: [`route`] before anything is written, then the caller's
//! address rewrite, then [`finish`] (the router's part, send, count). A packet too big for its
//! egress is `pmtu`'s, from [`route`].
//!
//! The bridge shortcut: a container hangs off a bridge (docker0) through a veth pair. After
//! translation the FIB lookup names the bridge as egress; redirecting there makes the packet
//! cross the bridge and the veth queue, which costs as much as plain routing. Instead, when the
//! next hop's MAC was seen arriving on one of the bridge's veth ports, the packet goes straight
//! into that veth's peer, the container's interface (`bpf_redirect_peer`, tc only). MACs are
//! learned from the frames the containers send ([`learn`]), as the bridge itself learns them
//! (and with the same trust: a container that sends with another's MAC takes its traffic, on the
//! bridge as here). Only veth ports are listed in `PF_BRIDGE_PORTS` by userspace.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
};
use portfwd_common::{
    maps::{MacKey, PortEntry},
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::Family,
    maps::{self, BRIDGE_PORTS, Lookup as _, PORT_MACS},
    parse::L3_OFF,
    pmtu, rewrite,
    stats::{self, Tally},
    types::{Action, HopKind, IpL4, NextHop, Outcome, Tuple},
};

/// Offset of the source MAC in the Ethernet header.
const SRC_MAC_OFF: usize = 6;

/// Checks that a matched packet can be forwarded at all, and finds its next hop once it carries
/// `next`, before anything is written.
#[inline(always)]
pub fn route<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
) -> Result<NextHop, Reason> {
    if pkt.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let mut mtu = 0;
    let hop = match fib_lookup::<C, F>(ctx, pkt, next, &mut mtu) {
        Ok(hop) => hop,
        Err(Reason::DropFragNeeded) => pmtu::too_big::<C, F>(ctx, pkt, next, mtu)?,
        Err(reason) => return Err(reason),
    };
    if !ctx.can_send(&hop) {
        return Err(Reason::PassToTc);
    }
    Ok(hop)
}

/// The tail of every translation, once [`route`]d to `hop` and its addresses `rewritten`: drop it
/// if that failed, else do the router's part, send it, and count it for its forward when sent.
/// `done` is the reason counted for a packet sent.
#[inline(always)]
pub fn finish<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    hop: NextHop,
    rewritten: Result<(), i64>,
    done: Reason,
    tally: Tally,
) -> Outcome {
    if rewritten.is_err() {
        return Outcome::untouched(Reason::DropRewriteFailed);
    }
    let outcome = send::<C, F>(ctx, pkt, hop, done);
    if outcome.reason == done || outcome.reason == Reason::ForwardedViaStack {
        stats::count_forward(tally, ctx.frame_len() as u64);
    }
    outcome
}

/// Does the router's part (TTL, MACs) for a packet whose addresses are already rewritten, and
/// sends it to its next hop.
#[inline(always)]
fn send<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>, hop: NextHop, done: Reason) -> Outcome {
    let ifindex = hop.ifindex;
    let code = match hop.kind {
        HopKind::Resolved => {
            let (smac, dmac) = (hop.smac, hop.dmac);
            if rewrite::hop::<C, F>(ctx, pkt, Some((&smac, &dmac))).is_err() {
                return Outcome::untouched(Reason::DropRewriteFailed);
            }
            // Past the bridge straight into the container when its port is known.
            let direct = if C::PEER_REDIRECT {
                port_behind(ifindex, &dmac).and_then(|port| ctx.redirect_into_peer(port))
            } else {
                None
            };
            Some(direct.unwrap_or_else(|| ctx.redirect(ifindex)))
        }
        HopKind::Unresolved => {
            if rewrite::hop::<C, F>(ctx, pkt, None).is_err() {
                return Outcome::untouched(Reason::DropRewriteFailed);
            }
            ctx.redirect_resolving_neighbour(ifindex)
        }
        // The kernel does the router's part.
        HopKind::Stack => {
            return Outcome {
                action: Action::Pass,
                reason: Reason::ForwardedViaStack,
            };
        }
    };
    match code {
        Some(code) => Outcome {
            action: Action::Redirect(code),
            reason: done,
        },
        None => Outcome::untouched(Reason::DropNoRoute),
    }
}

/// The FIB lookup towards `t`, the addresses and ports `pkt` will carry. A packet that does not
/// fit the egress MTU is `Err(DropFragNeeded)`, with that MTU in `too_big` (for `pmtu`).
#[inline(always)]
fn fib_lookup<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    t: &Tuple<F::Addr>,
    too_big: &mut u32,
) -> Result<NextHop, Reason> {
    let params = maps::fib_scratch().ok_or(Reason::DropNoRoute)?;
    F::fib(params, pkt, t);
    params.l4_protocol = pkt.proto;
    params.sport = t.sport;
    params.dport = t.dport;
    params.ifindex = ctx.ingress_ifindex();
    if !ctx.fib_checks_packet_mtu() {
        // XDP: let the lookup compare the IP length (IPv4 total length, IPv6 header + payload)
        // with the egress MTU.
        let frame = ctx.frame_len() - L3_OFF;
        params.__bindgen_anon_1.tot_len = frame as u16;
    }
    let rc = ctx.fib_lookup(params);
    if rc < 0 {
        return Err(Reason::DropNoRoute);
    }
    // SAFETY: both members of the union are a u16; the lookup leaves in it the egress MTU (tc:
    // the device's, also on success; XDP: the route's, when the packet does not fit it).
    let mtu = unsafe { params.__bindgen_anon_1.mtu_result } as u32;
    *too_big = mtu;
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let hop = NextHop::resolved(params.ifindex, params.smac, params.dmac);
            // tc's lookup lets through frames a VLAN tag over the MTU, and GSO skbs, so the
            // kernel is asked again: the one compare the path MTU costs a packet that fits
            // (XDP's lookup compared the IP length exactly: nothing).
            if ctx.fib_checks_packet_mtu()
                && ctx.frame_len() - L3_OFF > mtu as usize
                && let Some(mtu) = ctx.exceeds_mtu(params.ifindex)
            {
                *too_big = mtu;
                return Err(Reason::DropFragNeeded);
            }
            Ok(hop)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            // tc's lookup checks no size without a neighbour (XDP's compared the IP length).
            if ctx.fib_checks_packet_mtu()
                && let Some(mtu) = ctx.exceeds_mtu(params.ifindex)
            {
                *too_big = mtu;
                return Err(Reason::DropFragNeeded);
            }
            Ok(NextHop::unresolved(HopKind::Unresolved, params.ifindex))
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Reason::DropFragNeeded),
        _ => Err(Reason::DropNoRoute),
    }
}

/// Records the source MAC of a frame arriving on a veth bridge port (the caller checked the
/// port's `IFACE_BRIDGE_PORT` flag), for the bridge shortcut.
///
/// A BPF function of its own: its keys and values would otherwise sit in the hook's frame,
/// which every translation path's frame adds to (`datapath`).
#[inline(never)]
pub fn learn<C: Ctx>(ctx: &C) {
    let port = ctx.ingress_ifindex();
    let Some(bridge) = BRIDGE_PORTS.copied(port) else {
        return;
    };
    let Ok(mac) = ctx.load::<[u8; 6]>(SRC_MAC_OFF) else {
        return;
    };
    let key = MacKey { mac, _pad: [0; 2] };
    let entry = PortEntry { port, bridge };
    if PORT_MACS.copied(key) != Some(entry) {
        let _ = PORT_MACS.insert(key, entry, 0);
    }
}

/// The veth port of `bridge` behind which `mac` was last seen, if any.
#[inline(always)]
fn port_behind(bridge: u32, mac: &[u8; 6]) -> Option<u32> {
    let key = MacKey {
        mac: *mac,
        _pad: [0; 2],
    };
    let entry = PORT_MACS.copied(key)?;
    // The port must still be a port of that bridge (a container restarted with the same MAC
    // gets a new veth; until it sends, the learned port is stale and the bridge decides).
    let current = BRIDGE_PORTS.copied(entry.port)?;
    (entry.bridge == bridge && current == bridge).then_some(entry.port)
}
