//! The translation decision, shared by every hook.
//!
//! A packet is one of:
//! - for a published port (destination is one of the host's addresses, arriving on an exposed
//!   interface, and a forward or port range matches): dropped if the forward has a source
//!   allowlist and the source is outside it; otherwise destination NAT to the target, remember
//!   the flow, send on;
//! - a reply of a remembered flow: source translated back to what the client used, send on;
//! - anything else: passed untouched.
//!
//! Both address families take this one path, generic over [`Family`]; the family is chosen
//! once, on the ethertype.
use aya_ebpf::maps::lpm_trie::Key;
use portfwd_common::{
    maps::{
        Addr, AllowKeyOf, FWD_ALLOWLIST, FlowKeyOf, FlowValueOf, ForwardKeyOf, ForwardValueOf,
        IFACE_EXPOSE, RangeKeyOf,
    },
    reason::Reason,
};

use crate::{
    bridge,
    family::{Family, Ipv4, Ipv6},
    icmp,
    maps::IFACES,
    packet::Packet,
    parse::{self, ETH_P_IPV4_BE, ETH_P_IPV6_BE, Fragment, IpL4, Parsed},
    rewrite::{self, End},
    route::{self, NextHop, Tuple},
    stats::{self, Direction},
};

/// What the hook should do with the packet.
#[derive(Clone, Copy)]
pub enum Action {
    Pass,
    Drop,
    /// The packet was redirected; the value is the hook's return code from the redirect helper.
    Redirect(u32),
}

#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: Action,
    pub reason: Reason,
}

impl Verdict {
    /// A verdict taken without touching the packet.
    #[inline(always)]
    pub const fn untouched(reason: Reason) -> Self {
        let action = if reason.is_drop() {
            Action::Drop
        } else {
            Action::Pass
        };
        Self { action, reason }
    }
}

#[inline(always)]
pub fn process<P: Packet>(p: &P) -> Verdict {
    if p.vlan_stripped() {
        return Verdict::untouched(Reason::PassNotIp);
    }
    match parse::ethertype(p) {
        Ok(ETH_P_IPV4_BE) => process_family::<P, Ipv4>(p),
        Ok(ETH_P_IPV6_BE) => process_family::<P, Ipv6>(p),
        Ok(_) => Verdict::untouched(Reason::PassNotIp),
        Err(reason) => Verdict::untouched(reason),
    }
}

#[inline(always)]
fn process_family<P: Packet, F: Family>(p: &P) -> Verdict {
    let pkt = match parse::parse::<P, F>(p) {
        Ok(Parsed::L4(pkt)) => pkt,
        Ok(Parsed::IcmpError(err)) => {
            let for_host = is_exposed(p.ingress_ifindex()) && is_host_addr::<F>(err.outer.daddr);
            return icmp::process::<P, F>(p, &err, for_host);
        }
        Err(reason) => return Verdict::untouched(reason),
    };

    let exposed = is_exposed(p.ingress_ifindex());
    let for_host = exposed && is_host_addr::<F>(pkt.daddr);
    if for_host && let Some(fwd) = lookup_forward::<F>(pkt.daddr, pkt.dport, pkt.proto) {
        if fwd.flags & FWD_ALLOWLIST != 0 && !source_allowed::<F>(fwd.stats_slot, pkt.saddr) {
            return Verdict::untouched(Reason::DropSourceNotAllowed);
        }
        return to_target::<P, F>(p, &pkt, &fwd);
    }

    let key = FlowKeyOf {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        sport_be: pkt.sport,
        dport_be: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(flow) = F::flows().get_ptr(key) {
        // SAFETY: the pointer comes from a successful lookup and the value is plain integers;
        // it is copied out at once, so a concurrent update can only make it stale, not invalid.
        let flow = unsafe { *flow };
        return to_client::<P, F>(p, &pkt, &flow);
    }

    Verdict::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

#[inline(always)]
fn is_exposed(ifindex: u32) -> bool {
    match IFACES.get_ptr(ifindex) {
        // SAFETY: pointer from a successful lookup of a plain u32 value.
        Some(flags) => (unsafe { *flags }) & IFACE_EXPOSE != 0,
        None => false,
    }
}

#[inline(always)]
fn is_host_addr<F: Family>(addr: F::Addr) -> bool {
    F::host_addrs().get_ptr(addr).is_some()
}

/// The forward published at `addr:port` (wire order). Forwards bound to the exact address win
/// over ones published on every address. Single ports come from the exact-match table; only on
/// a miss are port ranges looked up (at most four lookups in all).
#[inline(always)]
pub fn lookup_forward<F: Family>(
    addr: F::Addr,
    port: u16,
    proto: u8,
) -> Option<ForwardValueOf<F::Addr>> {
    let mut key = ForwardKeyOf {
        addr_be: addr,
        port_be: port,
        proto,
        _pad: 0,
    };
    let found = match F::forwards().get_ptr(key) {
        Some(v) => Some(v),
        None => {
            key.addr_be = F::Addr::default();
            F::forwards().get_ptr(key)
        }
    };
    if let Some(v) = found {
        // SAFETY: pointer from a successful lookup; the value is plain integers, copied at once.
        return Some(unsafe { *v });
    }
    lookup_range::<F>(addr, port, proto)
}

/// The port range published at `addr:port` (wire order), as the forward for that one port.
#[inline(always)]
fn lookup_range<F: Family>(addr: F::Addr, port: u16, proto: u8) -> Option<ForwardValueOf<F::Addr>> {
    let mut key = Key::new(
        RangeKeyOf::<F::Addr>::LOOKUP_BITS,
        RangeKeyOf {
            proto,
            _pad: [0; 3],
            addr_be: addr,
            port_be: port,
            _pad2: [0; 2],
        },
    );
    let found = match F::ranges().get(&key) {
        Some(v) => Some(v),
        None => {
            key.data.addr_be = F::Addr::default();
            F::ranges().get(&key)
        }
    };
    found.map(|v| v.forward_for(port))
}

/// Whether `saddr` (wire order) is in the allowlist of the forward counting into `slot`.
#[inline(always)]
fn source_allowed<F: Family>(slot: u32, saddr: F::Addr) -> bool {
    let key = Key::new(
        AllowKeyOf::<F::Addr>::FIXED_BITS + F::Addr::BITS,
        AllowKeyOf {
            slot,
            saddr_be: saddr,
        },
    );
    F::allow().get(&key).is_some()
}

/// Client -> host:port becomes client -> target.
///
/// Hairpin to itself (the client *is* the target: a container calling its own published port
/// through the host) also translates the source to the published address. Without it the
/// target would receive a packet from one of its own addresses, which the kernel drops as a
/// martian, and would answer itself directly instead of through the host. A hairpin between two
/// containers needs no source translation: the reply enters the host at the target's bridge port,
/// where this program translates it like any other.
#[inline(always)]
fn to_target<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    fwd: &ForwardValueOf<F::Addr>,
) -> Verdict {
    let hairpin = pkt.saddr == fwd.target_addr_be;
    let next = Tuple {
        saddr: if hairpin { pkt.daddr } else { pkt.saddr },
        daddr: fwd.target_addr_be,
        sport: pkt.sport,
        dport: fwd.target_port_be,
    };
    let hop = match check_and_route::<P, F>(p, pkt, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };

    // Remember how to translate the replies: they come from the target to the (translated)
    // client.
    let key = FlowKeyOf {
        saddr_be: next.daddr,
        daddr_be: next.saddr,
        sport_be: next.dport,
        dport_be: next.sport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let value = FlowValueOf {
        orig_addr_be: pkt.daddr,
        orig_port_be: pkt.dport,
        _pad: 0,
        stats_slot: fwd.stats_slot,
        client_addr_be: if hairpin {
            pkt.saddr
        } else {
            F::Addr::default()
        },
    };
    let known = match F::flows().get_ptr(key) {
        // SAFETY: pointer from a successful lookup; plain integers, read once.
        Some(v) => (unsafe { *v }) == value,
        None => false,
    };
    if !known {
        // An LRU map makes room by evicting the least recently used flow, so this only fails
        // under memory pressure; the packet is still forwarded and its replies will pass
        // untranslated, which the client sees as a dropped connection attempt.
        let _ = F::flows().insert(key, value, 0);
    }

    let ok = if hairpin {
        if rewrite::addr_port::<P, F>(p, pkt, End::Source, next.saddr, next.sport).is_err() {
            return Verdict::untouched(Reason::DropRewriteFailed);
        }
        Reason::Hairpinned
    } else {
        Reason::Forwarded
    };
    let verdict = send::<P, F>(p, pkt, End::Destination, &next, hop, ok);
    if verdict.reason == ok {
        stats::count_forward(
            fwd.stats_slot,
            Direction::ToTarget,
            p.frame_len() as u64,
            !known,
        );
    }
    verdict
}

/// Target -> client becomes host:port -> client (and, for a hairpin to itself, the destination
/// becomes the target's own address again).
#[inline(always)]
fn to_client<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    flow: &FlowValueOf<F::Addr>,
) -> Verdict {
    let hairpin = flow.client_addr_be != F::Addr::default();
    let next = Tuple {
        saddr: flow.orig_addr_be,
        daddr: if hairpin {
            flow.client_addr_be
        } else {
            pkt.daddr
        },
        sport: flow.orig_port_be,
        dport: pkt.dport,
    };
    let hop = match check_and_route::<P, F>(p, pkt, &next) {
        Ok(hop) => hop,
        Err(reason) => return Verdict::untouched(reason),
    };
    let ok = if hairpin {
        if rewrite::addr_port::<P, F>(p, pkt, End::Destination, next.daddr, next.dport).is_err() {
            return Verdict::untouched(Reason::DropRewriteFailed);
        }
        Reason::HairpinReplied
    } else {
        Reason::Replied
    };
    let verdict = send::<P, F>(p, pkt, End::Source, &next, hop, ok);
    if verdict.reason == ok {
        stats::count_forward(
            flow.stats_slot,
            Direction::ToClient,
            p.frame_len() as u64,
            false,
        );
    }
    verdict
}

/// Checks a matched packet can be forwarded at all, and finds its next hop, before anything is
/// written.
#[inline(always)]
pub fn check_and_route<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
) -> Result<NextHop, Reason> {
    if pkt.fragment == Fragment::First {
        return Err(Reason::DropFragment);
    }
    if pkt.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let hop = route::lookup::<P, F>(p, pkt, next)?;
    if !p.can_send(&hop) {
        return Err(Reason::PassToTc);
    }
    Ok(hop)
}

#[inline(always)]
fn send<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    end: End,
    next: &Tuple<F::Addr>,
    hop: NextHop,
    ok: Reason,
) -> Verdict {
    let (addr, port) = match end {
        End::Source => (next.saddr, next.sport),
        End::Destination => (next.daddr, next.dport),
    };
    if rewrite::addr_port::<P, F>(p, pkt, end, addr, port).is_err() {
        return Verdict::untouched(Reason::DropRewriteFailed);
    }
    send_rewritten::<P, F>(p, pkt, hop, ok)
}

/// Does the router's part (TTL, MACs) for a packet whose addresses are already rewritten, and
/// sends it to its next hop.
#[inline(always)]
pub fn send_rewritten<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    hop: NextHop,
    ok: Reason,
) -> Verdict {
    let code = match hop {
        NextHop::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            if rewrite::hop::<P, F>(p, pkt, Some((&smac, &dmac))).is_err() {
                return Verdict::untouched(Reason::DropRewriteFailed);
            }
            // Past the bridge straight into the container when its port is known.
            let direct = if P::PEER_REDIRECT {
                bridge::port_behind(ifindex, &dmac).and_then(|port| p.redirect_into_peer(port))
            } else {
                None
            };
            Some(direct.unwrap_or_else(|| p.redirect(ifindex)))
        }
        NextHop::Unresolved { ifindex } => {
            if rewrite::hop::<P, F>(p, pkt, None).is_err() {
                return Verdict::untouched(Reason::DropRewriteFailed);
            }
            p.redirect_resolving_neighbour(ifindex)
        }
    };
    match code {
        Some(code) => Verdict {
            action: Action::Redirect(code),
            reason: ok,
        },
        None => Verdict::untouched(Reason::DropNoRoute),
    }
}
