//! Fragmented datagrams: only the first fragment carries the TCP/UDP header, so the ports that
//! decide a translation are known for it alone. As Cilium does, the first fragment's
//! translation is remembered in `PF_FRAGS` / `PF_FRAGS6`, keyed by what every fragment of the
//! datagram carries (source, destination, IP identification, protocol), and each later fragment
//! gets the same addresses (it has no ports; the first fragment's L4 checksum, updated as for a
//! whole datagram, covers the whole datagram's pseudo-header).
//!
//! - [`remember`]: a first fragment being translated (to a target, back to a client, hairpin);
//! - [`not_ours`]: a first fragment left to the host, remembered as such, so that a stale
//!   translation with the same key is never applied to the new datagram's later fragments, and
//!   a later fragment with no entry at all is known to have come before its first one;
//! - [`later`]: a later fragment, translated as its first fragment was, or passed as it was.
//!
//! Fragments are never held back or reassembled here. A later fragment that arrives before its
//! first one is passed untouched to the host (`pass_fragment_before_first`): not knowing its
//! ports, portfwd cannot tell a published port's datagram from one for the host itself, which
//! the host must get. For a published port that datagram is lost (its first fragment goes to the
//! target, the rest to the host, neither can reassemble it), as a datagram with a lost fragment
//! is; the sender's retry normally arrives in order. netfilter reassembles every datagram before
//! NAT (`nf_defrag`), which costs it a copy and a queue per datagram; on the usual paths (one
//! link, one sender) fragments arrive in order, and portfwd forwards them one by one.
//!
//! An unfragmented packet pays the parser's one test of the IP header's fragment bits (as
//! before) and the tests of the `fragment` field it set, in [`remember`] and [`not_ours`]: no
//! map access.
use portfwd_common::{
    maps::{FRAG_NOT_OURS, FRAG_TO_CLIENT, FragKeyOf, FragValueOf},
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::Family,
    maps::Lookup as _,
    pool::NO_BACKEND,
    stats::Tally,
    types::{Direction, Fragment, IpL4, Outcome, Tuple},
    xmit,
};

/// The key of `pkt`'s datagram, for a fragment.
#[inline(always)]
fn key<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> Option<FragKeyOf<F::Addr>> {
    Some(FragKeyOf {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        id_be: F::frag_id(ctx, pkt)?,
        proto: pkt.proto,
        _pad: [0; 3],
    })
}

/// For a first fragment about to be sent carrying `next`: remembers the translation for the
/// datagram's later fragments, counted to forward `slot` in direction `dir`. Nothing for a
/// whole datagram. Fails (`drop_fragment`) when it cannot be remembered: the datagram could not
/// be reassembled at the far end, so its first fragment is not worth sending.
#[inline(always)]
pub fn remember<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
    slot: u32,
    dir: Direction,
) -> Result<(), Reason> {
    if pkt.fragment != Fragment::First {
        return Ok(());
    }
    let key = key::<C, F>(ctx, pkt).ok_or(Reason::DropFragment)?;
    let value = FragValueOf {
        saddr_be: next.saddr,
        daddr_be: next.daddr,
        sport_be: next.sport,
        dport_be: next.dport,
        stats_slot: slot,
        flags: match dir {
            Direction::ToTarget => 0,
            Direction::ToClient => FRAG_TO_CLIENT,
        },
    };
    F::frags()
        .insert(key, value, 0)
        .map_err(|_| Reason::DropFragment)
}

/// For a first fragment passed to the host: its later fragments pass too.
#[inline(always)]
pub fn not_ours<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) {
    if pkt.fragment != Fragment::First {
        return;
    }
    if let Some(key) = key::<C, F>(ctx, pkt) {
        let value = FragValueOf {
            flags: FRAG_NOT_OURS,
            ..FragValueOf::default()
        };
        // Best effort: without the entry a later fragment passes all the same, counted as come
        // before its first one.
        let _ = F::frags().insert(key, value, 0);
    }
}

/// A later fragment (`Fragment::Later`): translated as its datagram's first fragment was, or
/// the reason to pass it untouched.
#[inline(always)]
pub fn later<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> Result<Outcome, Reason> {
    let key = key::<C, F>(ctx, pkt).ok_or(Reason::PassMalformed)?;
    let v = F::frags()
        .copied(key)
        .ok_or(Reason::PassFragmentBeforeFirst)?;
    if v.flags & FRAG_NOT_OURS != 0 {
        return Err(Reason::PassFragment);
    }
    let next = Tuple {
        saddr: v.saddr_be,
        daddr: v.daddr_be,
        sport: v.sport_be,
        dport: v.dport_be,
    };
    let hop = xmit::route::<C, F>(ctx, pkt, &next)?;
    let rewritten = rewrite_addrs::<C, F>(ctx, pkt, &next);
    let tally = Tally {
        slot: v.stats_slot,
        dir: if v.flags & FRAG_TO_CLIENT != 0 {
            Direction::ToClient
        } else {
            Direction::ToTarget
        },
        new_flow: false,
        backend: NO_BACKEND,
    };
    Ok(xmit::finish::<C, F>(
        ctx,
        pkt,
        hop,
        rewritten,
        Reason::FragmentTranslated,
        tally,
    ))
}

/// Gives a later fragment `next`'s addresses (each only when it changes: a translation changes
/// one end, a hairpin both).
#[inline(always)]
fn rewrite_addrs<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
) -> Result<(), i64> {
    if next.saddr != pkt.saddr {
        F::set_addr_only(
            ctx,
            pkt.l3_off,
            pkt.l3_off + F::SADDR,
            pkt.saddr,
            next.saddr,
        )?;
    }
    if next.daddr != pkt.daddr {
        F::set_addr_only(
            ctx,
            pkt.l3_off,
            pkt.l3_off + F::DADDR,
            pkt.daddr,
            next.daddr,
        )?;
    }
    Ok(())
}
