//! ICMP and ICMPv6 errors about translated flows, so that path-MTU discovery and "port
//! unreachable" work through portfwd.
//!
//! An ICMP error quotes the start of the packet that caused it. For a flow portfwd translated,
//! the quoted packet carries the translated addresses, which neither end knows about:
//! - towards the client (the target, or a router before it, complains about a client packet):
//!   the quote reads client -> target:port and is turned back into client -> host:port; when the
//!   target itself sent the error, its source becomes the host address too;
//! - towards the target (the client, or a router before it, complains about a reply): the quote
//!   reads host:port -> client and becomes target:port -> client, and the error is sent on to
//!   the target. For a forward with several backends, the target is the flow's backend, as its
//!   affinity entry names it.
//!
//! Checksums, IPv4: the quoted IPv4 header's address change is balanced by its own checksum
//! change, so the ICMP checksum (which covers the quote, without a pseudo-header) only needs the
//! port change and, when quoted, the L4 checksum change; an outer address change only touches
//! the outer header checksum. IPv6 has no header checksum: the ICMPv6 checksum absorbs the
//! quoted address change too, and covers a pseudo-header, so an outer address change updates it
//! as it would a TCP/UDP checksum.
use aya_ebpf::bindings::BPF_F_PSEUDO_HDR;
use portfwd_common::{
    checksum,
    maps::{FlowKeyOf, FlowValueOf},
    pool::FWD_POOL,
    proto,
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::Family,
    flow,
    parse::L3_OFF,
    pool::{self, NO_BACKEND, Pool},
    service,
    stats::Tally,
    types::{Direction, End, IcmpError, Outcome, Tuple},
    xmit,
};

/// Translates an ICMP error about a translated flow, in whichever direction it goes. `for_host`:
/// the error is addressed to one of the host's addresses, on an exposed interface. Returns the
/// reason to leave the packet untouched as an error.
#[inline(always)]
pub fn process<C: Ctx, F: Pool>(
    ctx: &C,
    err: &IcmpError<F::Addr>,
    for_host: bool,
) -> Result<Outcome, Reason> {
    let q = &err.inner;
    // Towards the client: the quote is client -> target, a packet we sent; the flow is keyed by
    // its replies.
    let key = flow::reply_key(&q.tuple(), q.proto);
    if let Some(found) = flow::find::<F>(key) {
        // A hairpin to itself stays inside one container: the error is the container's own
        // business and quotes an address pair this translation does not restore. Passed.
        if found.client_addr_be == F::Addr::default() {
            return to_client::<C, F>(ctx, err, &key, &found);
        }
    }
    // Towards the target: the quote is host:port -> client, a reply we translated; untranslated,
    // it came from target:port.
    if for_host && let Some(mut fwd) = service::lookup::<F>(q.saddr, q.sport, q.proto) {
        // A pool's forward has no target of its own: the flow's backend is the one its client's
        // packets went to (the affinity entry, keyed by the client's tuple: the quote's ends
        // swapped).
        if fwd.flags & FWD_POOL != 0
            && !pool::flow_target::<F>(flow::reply_key(&q.tuple(), q.proto), &mut fwd)
        {
            return Err(Reason::PassNoForward);
        }
        let from_target = Tuple {
            saddr: fwd.target_addr_be,
            daddr: q.daddr,
            sport: fwd.target_port_be,
            dport: q.dport,
        };
        let key = flow::key(&from_target, q.proto);
        // Only for a flow we really translated: never forge errors into a target.
        if let Some(found) = flow::find::<F>(key)
            && found.orig_addr_be == q.saddr
            && found.orig_port_be == q.sport
        {
            return to_target::<C, F>(ctx, err, &key, &found);
        }
    }
    Err(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

/// The quote's destination (target) becomes the published address again.
#[inline(always)]
fn to_client<C: Ctx, F: Family>(
    ctx: &C,
    err: &IcmpError<F::Addr>,
    key: &FlowKeyOf<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Result<Outcome, Reason> {
    let outer = &err.outer;
    // Only an error sent by the target itself has the target as its source.
    let new_src = if outer.saddr == key.saddr_be {
        flow.orig_addr_be
    } else {
        outer.saddr
    };
    let next = Tuple {
        saddr: new_src,
        daddr: outer.daddr,
        sport: 0,
        dport: 0,
    };
    let hop = xmit::route::<C, F>(ctx, outer, &next)?;
    let tally = Tally {
        slot: flow.stats_slot,
        dir: Direction::ToClient,
        new_flow: false,
        backend: NO_BACKEND,
    };
    let rewritten = rewrite_quote::<C, F>(
        ctx,
        err,
        End::Destination,
        flow.orig_addr_be,
        flow.orig_port_be,
    )
    .and_then(|()| {
        if new_src != outer.saddr {
            outer_addr::<C, F>(ctx, err, F::SADDR, outer.saddr, new_src)
        } else {
            Ok(())
        }
    });
    Ok(xmit::finish::<C, F>(
        ctx,
        outer,
        hop,
        rewritten,
        Reason::IcmpErrorTranslated,
        tally,
    ))
}

/// The quote's source (the published address) becomes the target, and the error goes to it.
#[inline(always)]
fn to_target<C: Ctx, F: Family>(
    ctx: &C,
    err: &IcmpError<F::Addr>,
    key: &FlowKeyOf<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Result<Outcome, Reason> {
    let outer = &err.outer;
    let next = Tuple {
        saddr: outer.saddr,
        daddr: key.saddr_be,
        sport: 0,
        dport: 0,
    };
    let hop = xmit::route::<C, F>(ctx, outer, &next)?;
    let tally = Tally {
        slot: flow.stats_slot,
        dir: Direction::ToTarget,
        new_flow: false,
        backend: NO_BACKEND,
    };
    let rewritten = rewrite_quote::<C, F>(ctx, err, End::Source, key.saddr_be, key.sport_be)
        .and_then(|()| outer_addr::<C, F>(ctx, err, F::DADDR, outer.daddr, key.saddr_be));
    Ok(xmit::finish::<C, F>(
        ctx,
        outer,
        hop,
        rewritten,
        Reason::IcmpErrorTranslated,
        tally,
    ))
}

/// Rewrites one end of the quoted packet, keeping its IPv4 checksum (IPv4), its L4 checksum
/// (when quoted) and the ICMP checksum right.
#[inline(always)]
fn rewrite_quote<C: Ctx, F: Family>(
    ctx: &C,
    err: &IcmpError<F::Addr>,
    end: End,
    new_addr: F::Addr,
    new_port: u16,
) -> Result<(), i64> {
    let q = &err.inner;
    let (addr_off, port_off, old_addr, old_port) = q.end(end, F::SADDR, F::DADDR);
    let icmp_csum = err.icmp_csum_off();

    if err.inner_l4_csum {
        // The quoted L4 checksum changes like the real one did (pseudo-header address and
        // port); the ICMP checksum must absorb that change, so read it before and after.
        let l4_csum_off = q.l4_csum_off();
        let before: u16 = ctx.load(l4_csum_off)?;
        let udp = q.proto == proto::UDP;
        if !(udp && before == 0) {
            let after = F::csum_replace_addr(before, old_addr, new_addr, udp);
            let after = if udp {
                checksum::udp_replace16(after, old_port, new_port)
            } else {
                checksum::replace16(after, old_port, new_port)
            };
            ctx.l4_csum_replace(icmp_csum, before as u64, after as u64, 2)?;
            ctx.store(l4_csum_off, &after)?;
        }
    }
    ctx.l4_csum_replace(icmp_csum, old_port as u64, new_port as u64, 2)?;
    ctx.store(port_off, &new_port)?;
    // IPv4: the address and quoted header checksum changes cancel in the ICMP checksum. IPv6:
    // no header checksum, the ICMPv6 checksum takes the address change (no pseudo-header: the
    // quote is payload).
    let icmp = if F::IP_CSUM {
        None
    } else {
        Some((icmp_csum, 0))
    };
    F::set_addr(ctx, q.l3_off, addr_off, old_addr, new_addr, icmp)
}

/// Rewrites an outer address at `field`: the IPv4 header checksum (ICMP has no pseudo-header),
/// or the ICMPv6 checksum's pseudo-header.
#[inline(always)]
fn outer_addr<C: Ctx, F: Family>(
    ctx: &C,
    err: &IcmpError<F::Addr>,
    field: usize,
    old: F::Addr,
    new: F::Addr,
) -> Result<(), i64> {
    let icmp = if F::IP_CSUM {
        None
    } else {
        Some((err.icmp_csum_off(), BPF_F_PSEUDO_HDR as u64))
    };
    F::set_addr(ctx, L3_OFF, L3_OFF + field, old, new, icmp)
}
