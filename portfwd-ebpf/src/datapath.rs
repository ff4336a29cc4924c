//! The dispatcher, shared by every hook: what a packet is, and which translation it gets.
//!
//! A packet is one of:
//! - for a published port, but a reply to a flow of the host's own (a local socket owns it, or
//!   it left the host from that port): passed to the stack ([`local::owner`]);
//! - for a published port (destination is one of the host's addresses, arriving on an exposed
//!   interface, and a forward or port range matches): dropped if the forward has a source
//!   allowlist and the source is outside it; otherwise translated to the target
//!   ([`nat::publish`]), for a forward with several backends the one chosen for the flow
//!   ([`pool::choose`]);
//! - a reply of a remembered flow: translated back to what the client used ([`nat::reply`]);
//! - an ICMP error about a translated flow: its quote translated ([`icmp::process`]);
//! - a later fragment: translated as its datagram's first fragment was, if it was
//!   ([`frag::later`]);
//! - anything else: passed untouched.
//!
//! Both address families take this one path, generic over [`Family`](crate::family::Family); the family is chosen
//! once, on the ethertype.
use portfwd_common::{
    maps::{IFACE_BRIDGE_PORT, IFACE_EXPOSE},
    pool::FWD_POOL,
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::Family,
    family::{Ipv4, Ipv6},
    flow, frag, icmp,
    local::{self, Local},
    maps::{self, IFACES, Lookup as _},
    nat,
    parse::{self, ETH_P_IPV4_BE, ETH_P_IPV6_BE},
    pool::{self, NO_BACKEND, Pool},
    service,
    types::{IcmpError, IpL4, Outcome, PackedOutcome, Parsed},
    xmit,
};

#[inline(always)]
pub fn process<C: Ctx>(ctx: &C) -> Outcome {
    if ctx.vlan_stripped() {
        return Outcome::untouched(Reason::PassNotIp);
    }
    // One lookup of the ingress interface serves both what follows and MAC learning (tc only:
    // under XDP, the same frame reaches tc next). 0: an interface portfwd does not manage.
    let iface = IFACES.copied(ctx.ingress_ifindex()).unwrap_or(0);
    if C::PEER_REDIRECT && iface & IFACE_BRIDGE_PORT != 0 {
        xmit::learn(ctx);
    }
    let exposed = iface & IFACE_EXPOSE != 0;
    match parse::ethertype(ctx) {
        Ok(ETH_P_IPV4_BE) => process_family::<C, Ipv4>(ctx, exposed),
        Ok(ETH_P_IPV6_BE) => process_family::<C, Ipv6>(ctx, exposed),
        Ok(_) => Outcome::untouched(Reason::PassNotIp),
        Err(reason) => Outcome::untouched(reason),
    }
}

/// A packet of family `F`: the outcome of its translation, or of leaving it untouched.
///
/// Stack: the BPF stack is 512 bytes for the program, summed over the frames of the functions
/// being called. Inlined into one function, parsing and every translation path share one frame,
/// and their register spills add up to nearly all of it. So the parse and each path are BPF
/// functions of their own, called one after the other from here: the deepest chain is this
/// small frame plus the largest one of them, not their sum. The parse result passes between
/// them in the per-CPU scratch (`maps::packet_scratch`), never on the stack.
#[inline(always)]
fn process_family<C: Ctx, F: Local + Pool>(ctx: &C, exposed: bool) -> Outcome {
    let parsed = parse_into::<C, F>(ctx);
    let Some(slot) = maps::packet_scratch::<IcmpError<F::Addr>>() else {
        return Outcome::untouched(Reason::PassMalformed);
    };
    // `parse_into` wrote this CPU's slot just above for the three codes matched (the packet in
    // `outer`; for an ICMP error, all of it), and nothing else runs on this CPU in between.
    let slot = slot.as_ptr();
    let packed = match parsed {
        // SAFETY: `outer` was written (above).
        PARSED_L4 => l4::<C, F>(ctx, unsafe { &(*slot).outer }, exposed),
        // SAFETY: all of it was written (above).
        PARSED_ICMP_ERROR => icmp_error::<C, F>(ctx, unsafe { &*slot }, exposed),
        // SAFETY: `outer` was written (above).
        PARSED_FRAGMENT => later_fragment::<C, F>(ctx, unsafe { &(*slot).outer }),
        reason => {
            // SAFETY: any other code is a `Reason`'s discriminant (`parse_into`), and `Reason`
            // is `repr(u32)`.
            let reason = unsafe { core::mem::transmute::<u32, Reason>(reason) };
            return Outcome::untouched(reason);
        }
    };
    packed.unpack()
}

/// What [`parse_into`] found, past the reasons' own codes: a TCP/UDP packet, an ICMP error, a
/// later fragment.
const PARSED_L4: u32 = Reason::COUNT;
const PARSED_ICMP_ERROR: u32 = Reason::COUNT + 1;
const PARSED_FRAGMENT: u32 = Reason::COUNT + 2;

/// Parses the packet into this CPU's scratch: a `PARSED_*` code, the packet in the scratch's
/// `outer` (and the quote in `inner` for an ICMP error); or the reason to pass it untouched, as
/// `Reason as u32`. Each arm writes only defined values: a whole `Result<Parsed, _>` written at
/// once would store the fields an `Err` leaves undefined, which the verifier refuses to read.
#[inline(never)]
fn parse_into<C: Ctx, F: Family>(ctx: &C) -> u32 {
    let Some(slot) = maps::packet_scratch::<IcmpError<F::Addr>>() else {
        return Reason::PassMalformed as u32;
    };
    let slot = slot.as_mut_ptr();
    match parse::parse::<C, F>(ctx) {
        Ok(Parsed::L4(pkt)) => {
            // SAFETY: `slot` is this CPU's scratch, valid for an `IcmpError` (`packet_scratch`);
            // the field is written without reading the uninitialized rest.
            unsafe { (&raw mut (*slot).outer).write(pkt) };
            PARSED_L4
        }
        Ok(Parsed::Fragment(pkt)) => {
            // SAFETY: as above.
            unsafe { (&raw mut (*slot).outer).write(pkt) };
            PARSED_FRAGMENT
        }
        Ok(Parsed::IcmpError(err)) => {
            // SAFETY: as above, all of it.
            unsafe { slot.write(err) };
            PARSED_ICMP_ERROR
        }
        Err(reason) => reason as u32,
    }
}

/// An ICMP error quoting a TCP/UDP packet.
#[inline(never)]
fn icmp_error<C: Ctx, F: Pool>(ctx: &C, err: &IcmpError<F::Addr>, exposed: bool) -> PackedOutcome {
    let for_host = exposed && service::is_host_addr::<F>(err.outer.daddr);
    icmp::process::<C, F>(ctx, err, for_host)
        .unwrap_or_else(Outcome::untouched)
        .pack()
}

/// A later fragment of a TCP/UDP datagram.
#[inline(never)]
fn later_fragment<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> PackedOutcome {
    frag::later::<C, F>(ctx, pkt)
        .unwrap_or_else(Outcome::untouched)
        .pack()
}

/// A TCP or UDP packet: for a published port, a reply of a remembered flow, or neither.
#[inline(never)]
fn l4<C: Ctx, F: Local + Pool>(ctx: &C, pkt: &IpL4<F::Addr>, exposed: bool) -> PackedOutcome {
    l4_outcome::<C, F>(ctx, pkt, exposed)
        .unwrap_or_else(Outcome::untouched)
        .pack()
}

#[inline(always)]
fn l4_outcome<C: Ctx, F: Local + Pool>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    exposed: bool,
) -> Result<Outcome, Reason> {
    let for_host = exposed && service::is_host_addr::<F>(pkt.daddr);
    if for_host && let Some(fwd) = service::lookup::<F>(pkt.daddr, pkt.dport, pkt.proto) {
        if let Some(reason) = local::owner::<C, F>(ctx, pkt, &fwd) {
            return Err(reason);
        }
        if !service::admits::<F>(&fwd, pkt.saddr) {
            return Err(Reason::DropSourceNotAllowed);
        }
        let mut fwd = fwd;
        let backend = if fwd.flags & FWD_POOL != 0 {
            pool::choose::<C, F>(ctx, pkt, &mut fwd)?
        } else {
            NO_BACKEND
        };
        return nat::publish::<C, F>(ctx, pkt, &fwd, backend);
    }

    if let Some(found) = flow::reply::<C, F>(ctx, pkt) {
        return nat::reply::<C, F>(ctx, pkt, &found);
    }

    frag::not_ours::<C, F>(ctx, pkt);
    Err(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}
