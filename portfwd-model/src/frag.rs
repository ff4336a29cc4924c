//! Later fragments (`portfwd-ebpf`'s `frag`): translated as their first fragment was (its entry
//! in the fragment table, `frag_table`: addresses only, with the IPv4 header checksum; no L4
//! header), passed as it was, or passed as come before their first fragment when there is no
//! entry.

use portfwd_common::{
    maps::{FRAG_NOT_OURS, FRAG_TO_CLIENT},
    reason::Reason,
};

use crate::checksum::l3_update;
use crate::family::{At, Fam, Ip, Next, words};
use crate::frag_table::key;
use crate::outcome::{Count, Direction, Outcome};
use crate::translate::{check_and_route, router_hop};
use crate::wire::{be16, put16};
use crate::world::World;

/// A later fragment.
pub(crate) fn later<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    pkt: &Ip<F::A>,
) -> Outcome {
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
        reason: route.reason(Reason::FragmentTranslated),
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
