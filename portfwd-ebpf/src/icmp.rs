//! ICMP errors about translated flows, so that path-MTU discovery and "port unreachable" work
//! through portfwd.
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
//! Checksums: the quoted IPv4 header's address change is balanced by its own checksum change,
//! so the ICMP checksum (which covers the quote, without a pseudo-header) only needs the port
//! change and, when quoted, the L4 checksum change.
use portfwd_common::{
    maps::{FlowKey, FlowValue},
    proto,
    reason::Reason,
};

use crate::{
    forward::{self, Verdict},
    maps::FLOWS,
    packet::Packet,
    parse::{IcmpError, L3_OFF},
    route::Tuple,
    stats::{self, Direction},
};

const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;

#[inline(always)]
pub fn process<P: Packet>(p: &P, err: &IcmpError, for_host: bool) -> Verdict {
    let q = &err.inner;
    // Towards the client: the quote is client -> target, i.e. the reverse of a reply's key.
    let key = FlowKey {
        saddr_be: q.daddr,
        daddr_be: q.saddr,
        sport_be: q.dport,
        dport_be: q.sport,
        proto: q.proto,
        _pad: [0; 3],
    };
    if let Some(flow) = FLOWS.get_ptr(key) {
        // SAFETY: pointer from a successful lookup; plain integers, copied at once.
        let flow = unsafe { *flow };
        // A hairpin to itself stays inside one container: the error is the container's own
        // business and quotes an address pair this translation does not restore. Passed.
        if flow.client_addr_be == 0 {
            return to_client(p, err, &key, &flow);
        }
    }
    // Towards the target: the quote is host:port -> client, a reply we translated.
    if for_host && let Some(fwd) = forward::lookup_forward(q.saddr, q.sport, q.proto) {
        let key = FlowKey {
            saddr_be: fwd.target_addr_be,
            daddr_be: q.daddr,
            sport_be: fwd.target_port_be,
            dport_be: q.dport,
            proto: q.proto,
            _pad: [0; 3],
        };
        // Only for a flow we really translated: never forge errors into a target.
        if let Some(flow) = FLOWS.get_ptr(key) {
            // SAFETY: pointer from a successful lookup; plain integers, copied at once.
            let flow = unsafe { *flow };
            if flow.orig_addr_be == q.saddr && flow.orig_port_be == q.sport {
                return to_target(p, err, &key, &flow);
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
fn to_client<P: Packet>(p: &P, err: &IcmpError, key: &FlowKey, flow: &FlowValue) -> Verdict {
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
    let hop = match forward::check_and_route(p, outer, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };
    let rewritten = rewrite_quote(
        p,
        err,
        Quoted::Destination,
        flow.orig_addr_be,
        flow.orig_port_be,
    )
    .and_then(|()| {
        if new_src != outer.saddr {
            outer_addr(p, IP_SADDR, outer.saddr, new_src)
        } else {
            Ok(())
        }
    });
    if rewritten.is_err() {
        return Verdict::untouched(Reason::DropRewriteFailed);
    }
    let verdict = forward::send_rewritten(p, outer, hop, Reason::IcmpErrorTranslated);
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
fn to_target<P: Packet>(p: &P, err: &IcmpError, key: &FlowKey, flow: &FlowValue) -> Verdict {
    let outer = &err.outer;
    let next = Tuple {
        saddr: outer.saddr,
        daddr: key.saddr_be,
        sport: 0,
        dport: 0,
    };
    let hop = match forward::check_and_route(p, outer, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };
    let rewritten = rewrite_quote(p, err, Quoted::Source, key.saddr_be, key.sport_be)
        .and_then(|()| outer_addr(p, IP_DADDR, outer.daddr, key.saddr_be));
    if rewritten.is_err() {
        return Verdict::untouched(Reason::DropRewriteFailed);
    }
    let verdict = forward::send_rewritten(p, outer, hop, Reason::IcmpErrorTranslated);
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

/// Rewrites one end of the quoted packet, keeping its IPv4 checksum, its L4 checksum (when
/// quoted) and the ICMP checksum right.
#[inline(always)]
fn rewrite_quote<P: Packet>(
    p: &P,
    err: &IcmpError,
    end: Quoted,
    new_addr: u32,
    new_port: u16,
) -> Result<(), i64> {
    let q = &err.inner;
    let l3 = err.inner_l3_off();
    let (addr_off, port_off, old_addr, old_port) = match end {
        Quoted::Source => (l3 + IP_SADDR, q.l4_off, q.saddr, q.sport),
        Quoted::Destination => (l3 + IP_DADDR, q.l4_off + 2, q.daddr, q.dport),
    };
    let icmp_csum = err.icmp_csum_off();

    if err.inner_l4_csum {
        // The quoted L4 checksum changes like the real one did (pseudo-header address and
        // port); the ICMP checksum must absorb that change, so read it before and after.
        let l4_csum_off = q.l4_csum_off();
        let before: u16 = p.load(l4_csum_off)?;
        let udp_zero = q.proto == proto::UDP && before == 0;
        if !udp_zero {
            let after = quoted_l4_csum(before, old_addr, new_addr, old_port, new_port, q.proto);
            p.l4_csum_replace(icmp_csum, before as u64, after as u64, 2)?;
            p.store(l4_csum_off, &after)?;
        }
    }
    p.l4_csum_replace(icmp_csum, old_port as u64, new_port as u64, 2)?;
    p.store(port_off, &new_port)?;
    // Address and quoted IPv4 checksum: their changes cancel in the ICMP checksum.
    p.l3_csum_replace(l3 + IP_CSUM, old_addr as u64, new_addr as u64, 4)?;
    p.store(addr_off, &new_addr)?;
    Ok(())
}

/// The quoted L4 checksum after an address and port change (RFC 1624), as the sender's stack
/// would have computed it for the untranslated packet.
#[inline(always)]
fn quoted_l4_csum(
    csum: u16,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
    proto: u8,
) -> u16 {
    use portfwd_common::checksum::{replace16, replace32, udp_replace16, udp_replace32};
    if proto == proto::UDP {
        udp_replace16(udp_replace32(csum, old_addr, new_addr), old_port, new_port)
    } else {
        replace16(replace32(csum, old_addr, new_addr), old_port, new_port)
    }
}

/// Rewrites an outer IPv4 address (ICMP has no pseudo-header, so only the IPv4 checksum).
#[inline(always)]
fn outer_addr<P: Packet>(p: &P, field: usize, old: u32, new: u32) -> Result<(), i64> {
    p.l3_csum_replace(L3_OFF + IP_CSUM, old as u64, new as u64, 4)?;
    p.store(L3_OFF + field, &new)
}
