//! The two translations of a TCP or UDP packet:
//! - [`publish`]: client -> host:port becomes client -> target (destination NAT), and the flow
//!   is remembered;
//! - [`reply`]: target -> client, a reply of a remembered flow, becomes host:port -> client.
//!
//! Hairpin to itself (the client *is* the target: a container calling its own published port
//! through the host) also translates the source to the published address. Without it the
//! target would receive a packet from one of its own addresses, which the kernel drops as a
//! martian, and would answer itself directly instead of through the host. A hairpin between two
//! containers needs no source translation: the reply enters the host at the target's bridge port,
//! where this program translates it like any other.
//!
//! A first fragment's translation is also remembered for the datagram's later fragments
//! (`frag`). Both return the reason to leave the packet untouched as an error.
use portfwd_common::{
    maps::{FlowValueOf, ForwardValueOf},
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::Family,
    flow, frag,
    pool::NO_BACKEND,
    rewrite,
    stats::Tally,
    types::{Direction, End, IpL4, Outcome, Tuple},
    xmit,
};

/// Client -> host:port becomes client -> target (and, for a hairpin to itself, the source
/// becomes the published address). `backend`: the pool's backend `fwd`'s target was chosen
/// from (`pool`), or `pool::NO_BACKEND`.
#[inline(always)]
pub fn publish<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    fwd: &ForwardValueOf<F::Addr>,
    backend: u32,
) -> Result<Outcome, Reason> {
    let (next, hairpin) = target_tuple::<F>(pkt, fwd);
    let hop = xmit::route::<C, F>(ctx, pkt, &next)?;
    frag::remember::<C, F>(ctx, pkt, &next, fwd.stats_slot, Direction::ToTarget)?;

    // Remember how to translate the replies: they come from the target to the (translated)
    // client.
    let value = FlowValueOf {
        orig_addr_be: pkt.daddr,
        orig_port_be: pkt.dport,
        flags: 0,
        stats_slot: fwd.stats_slot,
        client_addr_be: if hairpin {
            pkt.saddr
        } else {
            F::Addr::default()
        },
    };
    let new_flow = flow::remember::<F>(flow::reply_key(&next, pkt.proto), value);

    let done = if hairpin {
        Reason::Hairpinned
    } else {
        Reason::Forwarded
    };
    let tally = Tally {
        slot: fwd.stats_slot,
        dir: Direction::ToTarget,
        new_flow,
        backend,
    };
    let rewritten = rewrite_ends::<C, F>(ctx, pkt, &next, End::Destination, hairpin);
    Ok(xmit::finish::<C, F>(ctx, pkt, hop, rewritten, done, tally))
}

/// What `pkt` carries once published to `fwd`'s target, and whether that is a hairpin to
/// itself.
#[inline(always)]
pub fn target_tuple<F: Family>(
    pkt: &IpL4<F::Addr>,
    fwd: &ForwardValueOf<F::Addr>,
) -> (Tuple<F::Addr>, bool) {
    let hairpin = pkt.saddr == fwd.target_addr_be;
    let next = Tuple {
        saddr: if hairpin { pkt.daddr } else { pkt.saddr },
        daddr: fwd.target_addr_be,
        sport: pkt.sport,
        dport: fwd.target_port_be,
    };
    (next, hairpin)
}

/// Target -> client becomes host:port -> client (and, for a hairpin to itself, the destination
/// becomes the target's own address again).
#[inline(always)]
pub fn reply<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Result<Outcome, Reason> {
    let hairpin = flow.client_addr_be != F::Addr::default();
    let next = Tuple {
        saddr: flow.orig_addr_be,
        daddr: if hairpin {
            flow.client_addr_be
        } else {
            pkt.daddr
        },
        sport: flow.orig_port_be,
        dport: pkt.dport,
    };
    let hop = xmit::route::<C, F>(ctx, pkt, &next)?;
    frag::remember::<C, F>(ctx, pkt, &next, flow.stats_slot, Direction::ToClient)?;
    let done = if hairpin {
        Reason::HairpinReplied
    } else {
        Reason::Replied
    };
    let tally = Tally {
        slot: flow.stats_slot,
        dir: Direction::ToClient,
        new_flow: false,
        backend: NO_BACKEND,
    };
    let rewritten = rewrite_ends::<C, F>(ctx, pkt, &next, End::Source, hairpin);
    Ok(xmit::finish::<C, F>(ctx, pkt, hop, rewritten, done, tally))
}

/// Rewrites `pkt` to carry `next` at the `translated` end, and for a `hairpin` to itself at the
/// other end too (first).
#[inline(always)]
fn rewrite_ends<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
    translated: End,
    hairpin: bool,
) -> Result<(), i64> {
    if hairpin {
        let other = match translated {
            End::Source => End::Destination,
            End::Destination => End::Source,
        };
        let (addr, port) = next.at(other);
        rewrite::addr_port::<C, F>(ctx, pkt, other, addr, port)?;
    }
    let (addr, port) = next.at(translated);
    rewrite::addr_port::<C, F>(ctx, pkt, translated, addr, port)
}
