//! A TCP/UDP packet through the datapath: the service lookup (forwards, then ranges), the
//! allowlist, the flow lookup for replies, the checks before rewriting, the rewrite itself and
//! the router hop.

use portfwd_common::{
    maps::{
        AllowKeyOf, FWD_ALLOWLIST, FlowKeyOf, FlowValueOf, ForwardKeyOf, ForwardValueOf, Hook,
        RangeKeyOf,
    },
    proto,
    reason::Reason,
};

use crate::checksum::{l3_update, l4_update};
use crate::family::{At, Fam, Ip, words};
use crate::outcome::{Action, Count, Direction, Outcome};
use crate::pmtu;
use crate::wire::{ETH_LEN, be16, put16, wire16};
use crate::world::{Route, RouteQuery, World};

pub(crate) fn forward_of<F: Fam>(
    world: &impl World,
    daddr: F::A,
    dport: u16,
    proto: u8,
) -> Option<ForwardValueOf<F::A>> {
    let mut key = ForwardKeyOf {
        addr_be: daddr,
        port_be: wire16(dport),
        proto,
        _pad: 0,
    };
    let single = F::forward(world, &key).or_else(|| {
        key.addr_be = F::A::default();
        F::forward(world, &key)
    });
    if single.is_some() {
        return single;
    }
    let mut key = RangeKeyOf {
        proto,
        _pad: [0; 3],
        addr_be: daddr,
        port_be: wire16(dport),
        _pad2: [0; 2],
    };
    let range = F::range(world, &key).or_else(|| {
        key.addr_be = F::A::default();
        F::range(world, &key)
    })?;
    // Port by port: the n-th port of the range goes to the n-th port of the target range
    // (16-bit arithmetic, as the datapath does it).
    let offset = dport.wrapping_sub(u16::from_be(range.start_port_be));
    Some(ForwardValueOf {
        target_addr_be: range.target_addr_be,
        target_port_be: wire16(u16::from_be(range.target_port_be).wrapping_add(offset)),
        _pad: 0,
        stats_slot: range.stats_slot,
        flags: range.flags,
    })
}

pub(crate) fn l4<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    exposed: bool,
    pkt: &Ip<F::A>,
) -> Outcome {
    let for_host = exposed && F::host(world, pkt.daddr);
    if for_host && let Some(fwd) = forward_of::<F>(world, pkt.daddr, pkt.dport, pkt.proto) {
        if fwd.flags & FWD_ALLOWLIST != 0
            && !F::allowed(
                world,
                &AllowKeyOf {
                    slot: fwd.stats_slot,
                    saddr_be: pkt.saddr,
                },
            )
        {
            return Outcome::untouched(Reason::DropSourceNotAllowed);
        }
        return to_target::<F>(f, at, world, pkt, &fwd);
    }
    let key = FlowKeyOf {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        sport_be: wire16(pkt.sport),
        dport_be: wire16(pkt.dport),
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(flow) = F::flow(world, &key) {
        return to_client::<F>(f, at, world, pkt, &flow);
    }
    Outcome::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

/// The translated packet: new addresses (map form) and ports (host order).
pub(crate) struct Next<A> {
    pub(crate) saddr: A,
    pub(crate) daddr: A,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

/// Where a checked packet goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Sent on by the datapath, as the FIB lookup said.
    Route(Route),
    /// Handed to the kernel after translation, which forwards (and fragments) it: the packet is
    /// too big for its egress and may be fragmented ([`pmtu`]).
    Stack,
}

impl Via {
    /// The reason counted for a packet translated and sent this way, `done` when the datapath
    /// sends it.
    pub(crate) fn reason(self, done: Reason) -> Reason {
        match self {
            Via::Route(_) => done,
            Via::Stack => Reason::ForwardedViaStack,
        }
    }
}

/// Fragment, TTL, route and size checks, before anything is written. A packet too big for its
/// egress may be answered instead ([`pmtu`]): `f` is then the answer.
pub(crate) fn check_and_route<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    pkt: &Ip<F::A>,
    next: &Next<F::A>,
) -> Result<Via, Reason> {
    if pkt.first_fragment {
        return Err(Reason::DropFragment);
    }
    if pkt.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let route = world.route(&RouteQuery {
        ingress_ifindex: at.ifindex,
        proto: pkt.proto,
        class: pkt.class,
        saddr: F::ip(next.saddr),
        daddr: F::ip(next.daddr),
        sport_be: wire16(next.sport),
        dport_be: wire16(next.dport),
    });
    let mtu = match route {
        Route::Unroutable => return Err(Reason::DropNoRoute),
        Route::Neighbour { mtu, .. } | Route::NoNeighbour { mtu, .. } => mtu,
    };
    // Both hooks compare the frame without its Ethernet header with the egress MTU, whatever
    // the neighbour (XDP: the FIB lookup; tc: the kernel's MTU check of the skb).
    let via = if f.len() - ETH_LEN > mtu as usize {
        // The address the sender talked to: a client's destination; what a reply's source
        // becomes.
        let from = if pkt.saddr == next.saddr {
            pkt.daddr
        } else {
            next.saddr
        };
        pmtu::too_big::<F>(f, (at, world), pkt, from, mtu)?;
        Via::Stack
    } else {
        Via::Route(route)
    };
    match (at.hook, via) {
        (Hook::Tc, v) => Ok(v),
        (Hook::Xdp, v @ Via::Route(Route::Neighbour { ifindex, .. }))
            if world.xdp_egress(ifindex) =>
        {
            Ok(v)
        }
        (Hook::Xdp, _) => Err(Reason::PassToTc),
    }
}

fn to_target<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    pkt: &Ip<F::A>,
    fwd: &ForwardValueOf<F::A>,
) -> Outcome {
    // Hairpin to itself: the client is the target; it is shown the published address instead.
    let hairpin = pkt.saddr == fwd.target_addr_be;
    let next = Next {
        saddr: if hairpin { pkt.daddr } else { pkt.saddr },
        daddr: fwd.target_addr_be,
        sport: pkt.sport,
        dport: u16::from_be(fwd.target_port_be),
    };
    let route = match check_and_route::<F>(f, at, world, pkt, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    // Replies come from the target to the client.
    let key = FlowKeyOf {
        saddr_be: next.daddr,
        daddr_be: next.saddr,
        sport_be: wire16(next.dport),
        dport_be: wire16(next.sport),
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let value = FlowValueOf {
        orig_addr_be: pkt.daddr,
        orig_port_be: wire16(pkt.dport),
        _pad: 0,
        stats_slot: fwd.stats_slot,
        client_addr_be: if hairpin { pkt.saddr } else { F::A::default() },
    };
    let known = F::flow(world, &key) == Some(value);
    if hairpin {
        rewrite_l4::<F>(f, at.hook, pkt, End::Source, next.saddr, next.sport);
    }
    rewrite_l4::<F>(f, at.hook, pkt, End::Destination, next.daddr, next.dport);
    let action = router_hop::<F>(f, at.hook, pkt, &route);
    Outcome {
        reason: route.reason(if hairpin {
            Reason::Hairpinned
        } else {
            Reason::Forwarded
        }),
        action,
        flow: (!known).then_some(F::entry(key, value)),
        count: Some(Count {
            slot: fwd.stats_slot,
            direction: Direction::ToTarget,
            bytes: f.len() as u64,
            new_flow: !known,
        }),
    }
}

fn to_client<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    pkt: &Ip<F::A>,
    flow: &FlowValueOf<F::A>,
) -> Outcome {
    // A hairpin to itself: the reply goes back to the caller's own address.
    let hairpin = flow.client_addr_be != F::A::default();
    let next = Next {
        saddr: flow.orig_addr_be,
        daddr: if hairpin {
            flow.client_addr_be
        } else {
            pkt.daddr
        },
        sport: u16::from_be(flow.orig_port_be),
        dport: pkt.dport,
    };
    let route = match check_and_route::<F>(f, at, world, pkt, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    if hairpin {
        rewrite_l4::<F>(f, at.hook, pkt, End::Destination, next.daddr, next.dport);
    }
    rewrite_l4::<F>(f, at.hook, pkt, End::Source, next.saddr, next.sport);
    let action = router_hop::<F>(f, at.hook, pkt, &route);
    Outcome {
        reason: route.reason(if hairpin {
            Reason::HairpinReplied
        } else {
            Reason::Replied
        }),
        action,
        flow: None,
        count: Some(Count {
            slot: flow.stats_slot,
            direction: Direction::ToClient,
            bytes: f.len() as u64,
            new_flow: false,
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Source,
    Destination,
}

/// Replaces one end's address and port of a TCP/UDP packet, updating the L4 checksum
/// (pseudo-header, one helper call per 32-bit word of the address, and port) and the IPv4
/// header checksum.
fn rewrite_l4<F: Fam>(
    f: &mut [u8],
    hook: Hook,
    pkt: &Ip<F::A>,
    end: End,
    new_addr: F::A,
    new_port: u16,
) {
    let (addr_off, port_off, old_addr, old_port) = match end {
        End::Source => (pkt.l3 + F::SADDR, pkt.l4, pkt.saddr, pkt.sport),
        End::Destination => (pkt.l3 + F::DADDR, pkt.l4 + 2, pkt.daddr, pkt.dport),
    };
    let l4_csum = if pkt.proto == proto::TCP {
        pkt.l4 + 16
    } else {
        pkt.l4 + 6
    };
    let udp = pkt.proto == proto::UDP;
    let (old, new) = (words::<F>(old_addr), words::<F>(new_addr));
    let n = F::LEN / 2;
    let mut c = be16(f, l4_csum);
    for (o, w) in old[..n].chunks(2).zip(new[..n].chunks(2)) {
        c = l4_update(hook, c, o, w, udp);
    }
    put16(f, l4_csum, c);
    if F::IP_CSUM {
        let ip_csum = pkt.l3 + 10;
        let c = l3_update(hook, be16(f, ip_csum), &old[..n], &new[..n]);
        put16(f, ip_csum, c);
    }
    f[addr_off..addr_off + F::LEN].copy_from_slice(&F::octets(new_addr)[..F::LEN]);
    let c = l4_update(hook, be16(f, l4_csum), &[old_port], &[new_port], udp);
    put16(f, l4_csum, c);
    put16(f, port_off, new_port);
}

/// TTL or hop limit - 1 (with the IPv4 checksum) and, when the neighbour is known, its MACs;
/// nothing when the kernel forwards the packet.
pub(crate) fn router_hop<F: Fam>(f: &mut [u8], hook: Hook, pkt: &Ip<F::A>, via: &Via) -> Action {
    let Via::Route(route) = via else {
        return Action::Pass;
    };
    F::hop(f, hook, pkt);
    match *route {
        Route::Neighbour {
            ifindex,
            smac,
            dmac,
            ..
        } => {
            f[0..6].copy_from_slice(&dmac);
            f[6..12].copy_from_slice(&smac);
            Action::Redirect { ifindex }
        }
        Route::NoNeighbour { ifindex, .. } => Action::Redirect { ifindex },
        // check_and_route turned this into a drop.
        Route::Unroutable => unreachable!("unroutable packets are not rewritten"),
    }
}
