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
//!   the target.
//!
//! Checksums, IPv4: the quoted IPv4 header's address change is balanced by its own checksum
//! change, so the ICMP checksum (which covers the quote, without a pseudo-header) only needs the
//! port change and, when quoted, the L4 checksum change; an outer address change only touches
//! the outer header checksum. IPv6 has no header checksum: the ICMPv6 checksum absorbs the
//! quoted address change too, and covers a pseudo-header, so an outer address change updates it
//! as it would a TCP/UDP checksum.
use aya_ebpf::bindings::BPF_F_PSEUDO_HDR;
use portfwd_common::{
    maps::{FlowKeyOf, FlowValueOf},
    proto,
    reason::Reason,
};

use crate::{
    family::Family,
    forward::{self, Verdict},
    packet::Packet,
    parse::{IcmpError, L3_OFF},
    route::Tuple,
    stats::{self, Direction},
};

#[inline(always)]
pub fn process<P: Packet, F: Family>(p: &P, err: &IcmpError<F::Addr>, for_host: bool) -> Verdict {
    let q = &err.inner;
    // Towards the client: the quote is client -> target, i.e. the reverse of a reply's key.
    let key = FlowKeyOf {
        saddr_be: q.daddr,
        daddr_be: q.saddr,
        sport_be: q.dport,
        dport_be: q.sport,
        proto: q.proto,
        _pad: [0; 3],
    };
    if let Some(flow) = F::flows().get_ptr(key) {
        // SAFETY: pointer from a successful lookup; plain integers, copied at once.
        let flow = unsafe { *flow };
        // A hairpin to itself stays inside one container: the error is the container's own
        // business and quotes an address pair this translation does not restore. Passed.
        if flow.client_addr_be == F::Addr::default() {
            return to_client::<P, F>(p, err, &key, &flow);
        }
    }
    // Towards the target: the quote is host:port -> client, a reply we translated.
    if for_host && let Some(fwd) = forward::lookup_forward::<F>(q.saddr, q.sport, q.proto) {
        let key = FlowKeyOf {
            saddr_be: fwd.target_addr_be,
            daddr_be: q.daddr,
            sport_be: fwd.target_port_be,
            dport_be: q.dport,
            proto: q.proto,
            _pad: [0; 3],
        };
        // Only for a flow we really translated: never forge errors into a target.
        if let Some(flow) = F::flows().get_ptr(key) {
            // SAFETY: pointer from a successful lookup; plain integers, copied at once.
            let flow = unsafe { *flow };
            if flow.orig_addr_be == q.saddr && flow.orig_port_be == q.sport {
                return to_target::<P, F>(p, err, &key, &flow);
            }
        }
    }
    Verdict::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

/// The quote's destination (target) becomes the published address again.
#[inline(always)]
fn to_client<P: Packet, F: Family>(
    p: &P,
    err: &IcmpError<F::Addr>,
    key: &FlowKeyOf<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Verdict {
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
    let hop = match forward::check_and_route::<P, F>(p, outer, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };
    let rewritten = rewrite_quote::<P, F>(
        p,
        err,
        Quoted::Destination,
        flow.orig_addr_be,
        flow.orig_port_be,
    )
    .and_then(|()| {
        if new_src != outer.saddr {
            outer_addr::<P, F>(p, err, F::SADDR, outer.saddr, new_src)
        } else {
            Ok(())
        }
    });
    if rewritten.is_err() {
        return Verdict::untouched(Reason::DropRewriteFailed);
    }
    let verdict = forward::send_rewritten::<P, F>(p, outer, hop, Reason::IcmpErrorTranslated);
    if verdict.reason == Reason::IcmpErrorTranslated {
        stats::count_forward(
            flow.stats_slot,
            Direction::ToClient,
            p.frame_len() as u64,
            false,
        );
    }
    verdict
}

/// The quote's source (the published address) becomes the target, and the error goes to it.
#[inline(always)]
fn to_target<P: Packet, F: Family>(
    p: &P,
    err: &IcmpError<F::Addr>,
    key: &FlowKeyOf<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Verdict {
    let outer = &err.outer;
    let next = Tuple {
        saddr: outer.saddr,
        daddr: key.saddr_be,
        sport: 0,
        dport: 0,
    };
    let hop = match forward::check_and_route::<P, F>(p, outer, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };
    let rewritten = rewrite_quote::<P, F>(p, err, Quoted::Source, key.saddr_be, key.sport_be)
        .and_then(|()| outer_addr::<P, F>(p, err, F::DADDR, outer.daddr, key.saddr_be));
    if rewritten.is_err() {
        return Verdict::untouched(Reason::DropRewriteFailed);
    }
    let verdict = forward::send_rewritten::<P, F>(p, outer, hop, Reason::IcmpErrorTranslated);
    if verdict.reason == Reason::IcmpErrorTranslated {
        stats::count_forward(
            flow.stats_slot,
            Direction::ToTarget,
            p.frame_len() as u64,
            false,
        );
    }
    verdict
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoted {
    Source,
    Destination,
}

/// Rewrites one end of the quoted packet, keeping its IPv4 checksum (IPv4), its L4 checksum
/// (when quoted) and the ICMP checksum right.
#[inline(always)]
fn rewrite_quote<P: Packet, F: Family>(
    p: &P,
    err: &IcmpError<F::Addr>,
    end: Quoted,
    new_addr: F::Addr,
    new_port: u16,
) -> Result<(), i64> {
    let q = &err.inner;
    let (addr_off, port_off, old_addr, old_port) = match end {
        Quoted::Source => (q.l3_off + F::SADDR, q.l4_off, q.saddr, q.sport),
        Quoted::Destination => (q.l3_off + F::DADDR, q.l4_off + 2, q.daddr, q.dport),
    };
    let icmp_csum = err.icmp_csum_off();

    if err.inner_l4_csum {
        // The quoted L4 checksum changes like the real one did (pseudo-header address and
        // port); the ICMP checksum must absorb that change, so read it before and after.
        let l4_csum_off = q.l4_csum_off();
        let before: u16 = p.load(l4_csum_off)?;
        let udp = q.proto == proto::UDP;
        if !(udp && before == 0) {
            let after = F::csum_replace_addr(before, old_addr, new_addr, udp);
            let after = if udp {
                portfwd_common::checksum::udp_replace16(after, old_port, new_port)
            } else {
                portfwd_common::checksum::replace16(after, old_port, new_port)
            };
            p.l4_csum_replace(icmp_csum, before as u64, after as u64, 2)?;
            p.store(l4_csum_off, &after)?;
        }
    }
    p.l4_csum_replace(icmp_csum, old_port as u64, new_port as u64, 2)?;
    p.store(port_off, &new_port)?;
    // IPv4: the address and quoted header checksum changes cancel in the ICMP checksum. IPv6:
    // no header checksum, the ICMPv6 checksum takes the address change (no pseudo-header: the
    // quote is payload).
    let icmp = if F::IP_CSUM {
        None
    } else {
        Some((icmp_csum, 0))
    };
    F::set_addr(p, q.l3_off, addr_off, old_addr, new_addr, icmp)
}

/// Rewrites an outer address at `field`: the IPv4 header checksum (ICMP has no pseudo-header),
/// or the ICMPv6 checksum's pseudo-header.
#[inline(always)]
fn outer_addr<P: Packet, F: Family>(
    p: &P,
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
    F::set_addr(p, L3_OFF, L3_OFF + field, old, new, icmp)
}
