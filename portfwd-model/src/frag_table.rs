//! The fragment table (`PF_FRAGS` / `PF_FRAGS6`, `portfwd-ebpf`'s `frag`): the entry a first
//! fragment writes, translated (its addresses and ports as sent, and its forward) or left to the
//! host, under (source, destination, IP identification, protocol).

use portfwd_common::maps::{FRAG_NOT_OURS, FRAG_TO_CLIENT, FragKeyOf, FragValueOf};

use crate::family::{Fam, Fragment, Ip, Next};
use crate::outcome::Direction;
use crate::wire::wire16;
use crate::world::FragEntry;

pub(crate) fn key<F: Fam>(f: &[u8], pkt: &Ip<F::A>) -> FragKeyOf<F::A> {
    FragKeyOf {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        id_be: F::frag_id(f, pkt),
        proto: pkt.proto,
        _pad: [0; 3],
    }
}

/// The entry a first fragment sent carrying `next` writes (none for a whole datagram).
pub(crate) fn remembered<F: Fam>(
    f: &[u8],
    pkt: &Ip<F::A>,
    next: &Next<F::A>,
    slot: u32,
    direction: Direction,
) -> Option<FragEntry> {
    (pkt.fragment == Fragment::First).then(|| {
        let value = FragValueOf {
            saddr_be: next.saddr,
            daddr_be: next.daddr,
            sport_be: wire16(next.sport),
            dport_be: wire16(next.dport),
            stats_slot: slot,
            flags: match direction {
                Direction::ToTarget => 0,
                Direction::ToClient => FRAG_TO_CLIENT,
            },
        };
        F::frag_entry(key::<F>(f, pkt), value)
    })
}

/// The entry a first fragment passed to the host writes (none for a whole datagram).
pub(crate) fn not_ours<F: Fam>(f: &[u8], pkt: &Ip<F::A>) -> Option<FragEntry> {
    (pkt.fragment == Fragment::First).then(|| {
        let value = FragValueOf {
            flags: FRAG_NOT_OURS,
            ..FragValueOf::default()
        };
        F::frag_entry(key::<F>(f, pkt), value)
    })
}
