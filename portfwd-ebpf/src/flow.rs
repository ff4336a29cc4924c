//! Connection tracking: the flows a forward translated, keyed by their replies as they arrive
//! from the target (`PF_FLOWS`, `PF_FLOWS6`), so that a reply and an ICMP error about the flow
//! find how to translate them back.
//!
//! Keys are only built here, from a [`Tuple`]:
//! - [`key`]: a packet's own addresses and ports (a reply as it arrives, or one rebuilt from a
//!   forward and an ICMP error's quote);
//! - [`reply_key`]: the key the replies to a packet sent with these addresses and ports carry.
use portfwd_common::maps::{FlowKeyOf, FlowValueOf};

use crate::{family::Family, maps::Lookup as _, types::Tuple};

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

/// The flow at `key`, if remembered.
#[inline(always)]
pub fn find<F: Family>(key: FlowKeyOf<F::Addr>) -> Option<FlowValueOf<F::Addr>> {
    F::flows().copied(key)
}

/// Remembers `value` at `key`. Returns whether that was new (the flow was unknown, or known with
/// another value); an unchanged flow is not written again.
#[inline(always)]
pub fn remember<F: Family>(key: FlowKeyOf<F::Addr>, value: FlowValueOf<F::Addr>) -> bool {
    // Compared as values, not as `Option`s: that comparison keeps both in memory, and the
    // programs are within a few bytes of the 512-byte stack limit.
    let known = match find::<F>(key) {
        Some(v) => v == value,
        None => false,
    };
    if known {
        return false;
    }
    // An LRU map makes room by evicting the least recently used flow, so this only fails under
    // memory pressure; the packet is still forwarded and its replies will pass untranslated,
    // which the client sees as a dropped connection attempt.
    let _ = F::flows().insert(key, value, 0);
    true
}
