//! Connection tracking: the flows a forward translated, keyed by their replies as they arrive
//! from the target, so that a reply and an ICMP error about the flow find how to translate them
//! back.
//!
//! Two tables per family, both LRU hashes with a list per CPU:
//! - new flows (`PF_FLOWS`, `PF_FLOWS6`): every flow starts here, on its client's first packet;
//! - established flows (`PF_FLOWS_EST`, `PF_FLOWS6_EST`): a flow moves here on the target's
//!   first TCP segment after the handshake (ACK set, neither SYN nor RST), or on its second
//!   answer for UDP ([`FLOW_REPLIED`] marks the first; tc counts answers, not XDP). A flood of new flows (spoofed sources,
//!   SYNs, datagrams answered once or not at all) never gets that far, so however many new
//!   flows it makes, it evicts only new flows: what conntrack's "assured" flows and early drop
//!   give netfilter. The new table's entry is left to age out (nothing deletes flows, which is
//!   what keeps the inserts counted in `PF_FLOW_INSERTS` an exact fill level, see
//!   `portfwd_common::maps::FlowTable`).
//!
//! Lookups try the established table first: a long-lived flow costs one lookup per packet, as
//! before; a new one, and a packet of no flow at all, two.
//!
//! Keys are only built here, from a [`Tuple`]:
//! - [`key`]: a packet's own addresses and ports (a reply as it arrives, or one rebuilt from a
//!   forward and an ICMP error's quote);
//! - [`reply_key`]: the key the replies to a packet sent with these addresses and ports carry.
use aya_ebpf::maps::LruHashMap;
use portfwd_common::{
    maps::{FLOW_REPLIED, FlowKeyOf, FlowTable, FlowValueOf, Hook},
    proto,
};

use crate::{
    ctx::Ctx,
    family::Family,
    maps::{self, FLOW_INSERTS, Lookup as _},
    types::{IpL4, Tuple},
};

/// TCP header: the flags byte, and its bits that matter here.
const TCP_FLAGS: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Whether `pkt` opens a TCP connection: a SYN without ACK.
#[inline(always)]
pub fn opens_connection<C: Ctx, A: Copy>(ctx: &C, pkt: &IpL4<A>) -> bool {
    pkt.proto == portfwd_common::proto::TCP
        && ctx
            .read::<u8>(pkt.l4_off + TCP_FLAGS)
            .is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// The flow key of a packet carrying `t`.
#[inline(always)]
pub fn key<A: Copy>(t: &Tuple<A>, proto: u8) -> FlowKeyOf<A> {
    FlowKeyOf {
        saddr_be: t.saddr,
        daddr_be: t.daddr,
        sport_be: t.sport,
        dport_be: t.dport,
        proto,
        _pad: [0; 3],
    }
}

/// The flow key of the replies to a packet sent carrying `sent`: its ends swapped.
#[inline(always)]
pub fn reply_key<A: Copy>(sent: &Tuple<A>, proto: u8) -> FlowKeyOf<A> {
    FlowKeyOf {
        saddr_be: sent.daddr,
        daddr_be: sent.saddr,
        sport_be: sent.dport,
        dport_be: sent.sport,
        proto,
        _pad: [0; 3],
    }
}

/// The flow at `key`, if remembered: established, or new.
#[inline(always)]
pub fn find<F: Family>(key: FlowKeyOf<F::Addr>) -> Option<FlowValueOf<F::Addr>> {
    if let Some(v) = F::flows_est().copied(key) {
        return Some(v);
    }
    F::flows().copied(key)
}

/// The flow `pkt`, a packet from a target, replies to, if remembered. A reply that establishes
/// its flow moves it to the established table (see the module's documentation).
#[inline(always)]
pub fn reply<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> Option<FlowValueOf<F::Addr>> {
    let key = key(&pkt.tuple(), pkt.proto);
    if let Some(v) = F::flows_est().copied(key) {
        return Some(v);
    }
    let slot = F::flows().get_ptr_mut(key)?;
    // SAFETY: the pointer comes from a successful lookup, and the entry stays allocated while
    // the program runs (RCU); copied out at once, a concurrent update can only make it stale.
    let found = unsafe { *slot };
    if pkt.proto == proto::TCP {
        if establishes_tcp(ctx, pkt) {
            insert(
                F::flows_est(),
                F::FLOW_TABLES[1],
                key,
                FlowValueOf { flags: 0, ..found },
            );
        }
    } else if C::HOOK as u32 == Hook::Tc as u32 {
        // Answers are counted by tc only: XDP hands some replies on to tc, which would count
        // them a second time. (A UDP flow whose answers XDP finishes itself stays new.)
        if found.flags & FLOW_REPLIED != 0 {
            insert(
                F::flows_est(),
                F::FLOW_TABLES[1],
                key,
                FlowValueOf { flags: 0, ..found },
            );
        } else {
            // SAFETY: as above; a racing writer can only lose the flag, which the flow's next
            // answer sets again.
            unsafe { (*slot).flags |= FLOW_REPLIED };
        }
    }
    Some(found)
}

/// Whether a TCP reply makes its flow established: any segment with ACK and without SYN or RST
/// (not a SYN-ACK, nor the target refusing).
#[inline(always)]
fn establishes_tcp<C: Ctx, A>(ctx: &C, pkt: &IpL4<A>) -> bool {
    match ctx.read::<u8>(pkt.l4_off + TCP_FLAGS) {
        Some(bits) => bits & TCP_ACK != 0 && bits & (TCP_SYN | TCP_RST) == 0,
        None => false,
    }
}

/// Remembers `value` at `key`. Returns whether that was new (the flow was unknown, or known with
/// another translation); a known flow is not written again.
#[inline(always)]
pub fn remember<F: Family>(key: FlowKeyOf<F::Addr>, value: FlowValueOf<F::Addr>) -> bool {
    // Compared as values, not as `Option`s: that comparison keeps both in memory, and the
    // programs are within a few bytes of the 512-byte stack limit.
    let est = match F::flows_est().copied(key) {
        Some(v) => v.translates_as(&value) as u8 + 1,
        None => 0,
    };
    if est == 2 {
        return false;
    }
    if est == 1 {
        // Established with another translation (its forward changed): replaced where it is.
        insert(F::flows_est(), F::FLOW_TABLES[1], key, value);
        return true;
    }
    let known = match F::flows().copied(key) {
        Some(v) => v.translates_as(&value),
        None => false,
    };
    if known {
        return false;
    }
    insert(F::flows(), F::FLOW_TABLES[0], key, value);
    true
}

/// Inserts into a flow table, counting the insert in `PF_FLOW_INSERTS`.
#[inline(always)]
fn insert<K, V>(map: &LruHashMap<K, V>, table: FlowTable, key: K, value: V) {
    // An LRU map makes room by evicting the least recently used flow, so this only fails under
    // memory pressure; the packet is still forwarded and its replies will pass untranslated,
    // which the client sees as a dropped connection attempt.
    if map.insert(key, value, 0).is_ok() {
        maps::bump(&FLOW_INSERTS, table as u32);
    }
}
