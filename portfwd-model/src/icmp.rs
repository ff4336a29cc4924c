//! ICMP and ICMPv6 errors quoting a packet of a remembered flow: the quote is translated back,
//! the outer header follows, and the error is sent on to the client or to the target.

use portfwd_common::{
    maps::{FlowKeyOf, FlowValueOf, Hook},
    proto,
    reason::Reason,
};

use crate::checksum::{l3_update, l4_update, software_update};
use crate::family::{At, Fam, IcmpError, words};
use crate::outcome::{Count, Direction, Outcome};
use crate::translate::{End, Next, check_and_route, forward_of, router_hop};
use crate::wire::{be16, put16, wire16};
use crate::world::World;

pub(crate) fn icmp_error<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    exposed: bool,
    err: &IcmpError<F::A>,
) -> Outcome {
    let q = &err.inner;
    let for_host = exposed && F::host(world, err.outer.daddr);
    // Towards the client: the quote is client -> target, the reverse of a reply's key.
    let key = FlowKeyOf {
        saddr_be: q.daddr,
        daddr_be: q.saddr,
        sport_be: wire16(q.dport),
        dport_be: wire16(q.sport),
        proto: q.proto,
        _pad: [0; 3],
    };
    // A hairpin to itself is the container's own business: its errors are not translated
    // towards the client (they quote an address pair that translation would not restore) and
    // go on to the next case.
    if let Some(flow) = F::flow(world, &key)
        && flow.client_addr_be == F::A::default()
    {
        return icmp_to_client::<F>(f, at, world, err, &flow);
    }
    // Towards the target: the quote is host:port -> client, a reply that was translated.
    if for_host && let Some(fwd) = forward_of::<F>(world, q.saddr, q.sport, q.proto) {
        let key = FlowKeyOf {
            saddr_be: fwd.target_addr_be,
            daddr_be: q.daddr,
            sport_be: fwd.target_port_be,
            dport_be: wire16(q.dport),
            proto: q.proto,
            _pad: [0; 3],
        };
        if let Some(flow) = F::flow(world, &key)
            && flow.orig_addr_be == q.saddr
            && flow.orig_port_be == wire16(q.sport)
        {
            return icmp_to_target::<F>(f, at, world, err, &key, &flow);
        }
    }
    Outcome::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

fn icmp_to_client<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    err: &IcmpError<F::A>,
    flow: &FlowValueOf<F::A>,
) -> Outcome {
    let outer = &err.outer;
    let orig_addr = flow.orig_addr_be;
    // Only an error the target itself sent has the target as its source.
    let new_src = if outer.saddr == err.inner.daddr {
        orig_addr
    } else {
        outer.saddr
    };
    let next = Next {
        saddr: new_src,
        daddr: outer.daddr,
        sport: 0,
        dport: 0,
    };
    let route = match check_and_route::<F>(f, at, world, outer, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    rewrite_quote::<F>(
        f,
        at.hook,
        err,
        End::Destination,
        orig_addr,
        u16::from_be(flow.orig_port_be),
    );
    if new_src != outer.saddr {
        rewrite_outer_addr::<F>(f, at.hook, err, End::Source, new_src);
    }
    let action = router_hop::<F>(f, at.hook, outer, &route);
    Outcome {
        reason: route.reason(Reason::IcmpErrorTranslated),
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

fn icmp_to_target<F: Fam>(
    f: &mut Vec<u8>,
    at: At,
    world: &impl World,
    err: &IcmpError<F::A>,
    key: &FlowKeyOf<F::A>,
    flow: &FlowValueOf<F::A>,
) -> Outcome {
    let outer = &err.outer;
    let target = key.saddr_be;
    let next = Next {
        saddr: outer.saddr,
        daddr: target,
        sport: 0,
        dport: 0,
    };
    let route = match check_and_route::<F>(f, at, world, outer, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    rewrite_quote::<F>(
        f,
        at.hook,
        err,
        End::Source,
        target,
        u16::from_be(key.sport_be),
    );
    rewrite_outer_addr::<F>(f, at.hook, err, End::Destination, target);
    let action = router_hop::<F>(f, at.hook, outer, &route);
    Outcome {
        reason: route.reason(Reason::IcmpErrorTranslated),
        action,
        flow: None,
        count: Some(Count {
            slot: flow.stats_slot,
            direction: Direction::ToTarget,
            bytes: f.len() as u64,
            new_flow: false,
        }),
    }
}

/// Rewrites one end of an ICMP error's quoted packet. The quoted L4 checksum (when quoted, and
/// not a UDP "no checksum") is updated as the sender computed it for the untranslated packet,
/// with the ICMP checksum absorbing that change; the port change goes into the ICMP checksum.
/// IPv4: the address change is balanced by the quoted IPv4 checksum, so the ICMP checksum does
/// not see it. IPv6: no header checksum, the ICMPv6 checksum takes the address change too (one
/// helper call per 32-bit word).
fn rewrite_quote<F: Fam>(
    f: &mut [u8],
    hook: Hook,
    err: &IcmpError<F::A>,
    end: End,
    new_addr: F::A,
    new_port: u16,
) {
    let q = &err.inner;
    let (addr_off, port_off, old_addr, old_port) = match end {
        End::Source => (q.l3 + F::SADDR, q.l4, q.saddr, q.sport),
        End::Destination => (q.l3 + F::DADDR, q.l4 + 2, q.daddr, q.dport),
    };
    let (old, new) = (words::<F>(old_addr), words::<F>(new_addr));
    let n = F::LEN / 2;
    let icmp_csum = err.outer.l4 + 2;
    if err.inner_l4_csum {
        let l4_csum = if q.proto == proto::TCP {
            q.l4 + 16
        } else {
            q.l4 + 6
        };
        let before = be16(f, l4_csum);
        if !(q.proto == proto::UDP && before == 0) {
            let udp = q.proto == proto::UDP;
            let after = software_update(
                software_update(before, &old[..n], &new[..n], udp),
                &[old_port],
                &[new_port],
                udp,
            );
            let c = l4_update(hook, be16(f, icmp_csum), &[before], &[after], false);
            put16(f, icmp_csum, c);
            put16(f, l4_csum, after);
        }
    }
    let c = l4_update(hook, be16(f, icmp_csum), &[old_port], &[new_port], false);
    put16(f, icmp_csum, c);
    put16(f, port_off, new_port);
    if F::IP_CSUM {
        let ip_csum = q.l3 + 10;
        let c = l3_update(hook, be16(f, ip_csum), &old[..n], &new[..n]);
        put16(f, ip_csum, c);
    } else {
        let mut c = be16(f, icmp_csum);
        for (o, w) in old[..n].chunks(2).zip(new[..n].chunks(2)) {
            c = l4_update(hook, c, o, w, false);
        }
        put16(f, icmp_csum, c);
    }
    f[addr_off..addr_off + F::LEN].copy_from_slice(&F::octets(new_addr)[..F::LEN]);
}

/// Rewrites an address of the outer IP header of an ICMP error: IPv4 (no pseudo-header in
/// ICMP) only changes the IPv4 checksum; IPv6 changes the ICMPv6 checksum, whose pseudo-header
/// holds the address.
fn rewrite_outer_addr<F: Fam>(
    f: &mut [u8],
    hook: Hook,
    err: &IcmpError<F::A>,
    end: End,
    new: F::A,
) {
    let outer = &err.outer;
    let (off, old) = match end {
        End::Source => (outer.l3 + F::SADDR, outer.saddr),
        End::Destination => (outer.l3 + F::DADDR, outer.daddr),
    };
    let (ow, nw) = (words::<F>(old), words::<F>(new));
    let n = F::LEN / 2;
    if F::IP_CSUM {
        let ip_csum = outer.l3 + 10;
        let c = l3_update(hook, be16(f, ip_csum), &ow[..n], &nw[..n]);
        put16(f, ip_csum, c);
    } else {
        let icmp_csum = outer.l4 + 2;
        let mut c = be16(f, icmp_csum);
        for (o, w) in ow[..n].chunks(2).zip(nw[..n].chunks(2)) {
            c = l4_update(hook, c, o, w, false);
        }
        put16(f, icmp_csum, c);
    }
    f[off..off + F::LEN].copy_from_slice(&F::octets(new)[..F::LEN]);
}
