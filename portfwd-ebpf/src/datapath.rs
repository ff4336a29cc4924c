//! The dispatcher, shared by every hook: what a packet is, and which translation it gets.
//!
//! A packet is one of:
//! - for a published port, but a reply to a flow of the host's own (a local socket owns it, or
//!   it left the host from that port): passed to the stack ([`local::owner`]);
//! - for a published port (destination is one of the host's addresses, arriving on an exposed
//!   interface, and a forward or port range matches): dropped if the forward has a source
//!   allowlist and the source is outside it; otherwise translated to the target
//!   ([`nat::publish`]);
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
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::{Ipv4, Ipv6},
    flow, frag, icmp,
    local::{self, Local},
    maps::{IFACES, Lookup as _},
    nat,
    parse::{self, ETH_P_IPV4_BE, ETH_P_IPV6_BE},
    service,
    types::{Outcome, Parsed},
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
    let outcome = match parse::ethertype(ctx) {
        Ok(ETH_P_IPV4_BE) => process_family::<C, Ipv4>(ctx, exposed),
        Ok(ETH_P_IPV6_BE) => process_family::<C, Ipv6>(ctx, exposed),
        Ok(_) => Err(Reason::PassNotIp),
        Err(reason) => Err(reason),
    };
    outcome.unwrap_or_else(Outcome::untouched)
}

/// A packet of family `F`: the outcome of its translation, or the reason to leave it untouched.
#[inline(always)]
fn process_family<C: Ctx, F: Local>(ctx: &C, exposed: bool) -> Result<Outcome, Reason> {
    let pkt = match parse::parse::<C, F>(ctx)? {
        Parsed::L4(pkt) => pkt,
        Parsed::IcmpError(err) => {
            let for_host = exposed && service::is_host_addr::<F>(err.outer.daddr);
            return icmp::process::<C, F>(ctx, &err, for_host);
        }
        Parsed::Fragment(pkt) => return frag::later::<C, F>(ctx, &pkt),
    };

    let for_host = exposed && service::is_host_addr::<F>(pkt.daddr);
    if for_host && let Some(fwd) = service::lookup::<F>(pkt.daddr, pkt.dport, pkt.proto) {
        if let Some(reason) = local::owner::<C, F>(ctx, &pkt, &fwd) {
            return Err(reason);
        }
        if !service::admits::<F>(&fwd, pkt.saddr) {
            return Err(Reason::DropSourceNotAllowed);
        }
        return nat::publish::<C, F>(ctx, &pkt, &fwd);
    }

    if let Some(found) = flow::reply::<C, F>(ctx, &pkt) {
        return nat::reply::<C, F>(ctx, &pkt, &found);
    }

    frag::not_ours::<C, F>(ctx, &pkt);
    Err(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}
