//! Fragmented datagrams (`portfwd-ebpf`'s `frag`): a first fragment's translation is written to
//! `PF_FRAGS` / `PF_FRAGS6` under (source, destination, IP identification, protocol), as is a
//! first fragment left to the host; a later fragment is translated as its first fragment was
//! (addresses only, with the IPv4 header checksum; it has no L4 header), passed as it was, or
//! passed as come before its first fragment when there is no entry.

use portfwd_common::{
    maps::{FRAG_NOT_OURS, FRAG_TO_CLIENT, FragKeyOf, FragValueOf},
    reason::Reason,
};

use crate::checksum::l3_update;
use crate::family::{At, Fam, Fragment, Ip, words};
use crate::outcome::{Count, Direction, Outcome};
use crate::translate::{Next, check_and_route, router_hop};
use crate::wire::{be16, put16, wire16};
use crate::world::{FragEntry, World};

fn key<F: Fam>(f: &[u8], pkt: &Ip<F::A>) -> FragKeyOf<F::A> {
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

/// A later fragment.
pub(crate) fn later<F: Fam>(f: &mut [u8], at: At, world: &impl World, pkt: &Ip<F::A>) -> Outcome {
    let Some(v) = F::frag(world, &key::<F>(f, pkt)) else {
        return Outcome::untouched(Reason::PassFragmentBeforeFirst);
    };
    if v.flags & FRAG_NOT_OURS != 0 {
        return Outcome::untouched(Reason::PassFragment);
    }
    let next = Next {
        saddr: v.saddr_be,
        daddr: v.daddr_be,
        sport: u16::from_be(v.sport_be),
        dport: u16::from_be(v.dport_be),
    };
    let route = match check_and_route::<F>(f, at, world, pkt, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    if next.saddr != pkt.saddr {
        set_addr::<F>(f, at, pkt.l3, pkt.l3 + F::SADDR, pkt.saddr, next.saddr);
    }
    if next.daddr != pkt.daddr {
        set_addr::<F>(f, at, pkt.l3, pkt.l3 + F::DADDR, pkt.daddr, next.daddr);
    }
    let action = router_hop::<F>(f, at.hook, pkt, &route);
    Outcome {
        reason: Reason::FragmentTranslated,
        action,
        flow: None,
        frag: None,
        count: Some(Count {
            slot: v.stats_slot,
            direction: if v.flags & FRAG_TO_CLIENT != 0 {
                Direction::ToClient
            } else {
                Direction::ToTarget
            },
            bytes: f.len() as u64,
            new_flow: false,
        }),
    }
}

/// An address replaced in a packet without an L4 header: only the IPv4 header checksum follows.
fn set_addr<F: Fam>(f: &mut [u8], at: At, l3: usize, off: usize, old: F::A, new: F::A) {
    if F::IP_CSUM {
        let n = F::LEN / 2;
        let (o, w) = (words::<F>(old), words::<F>(new));
        let c = l3_update(at.hook, be16(f, l3 + 10), &o[..n], &w[..n]);
        put16(f, l3 + 10, c);
    }
    f[off..off + F::LEN].copy_from_slice(&F::octets(new)[..F::LEN]);
}
