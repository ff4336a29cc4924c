//! Replies to the host's own flows on published ports: a packet addressed to a published port
//! is not always a new inbound connection. The host may have connected out from that port
//! (an explicit `bind()`, or an ephemeral port inside a published range), or a container's
//! connection may have been masqueraded by netfilter onto it (MASQUERADE keeps the source port
//! when it is free). netfilter's DNAT only translates new connections, so their replies reach
//! the host; forwarding them to the target would break the host's connection.
//!
//! So before a packet to a published port is forwarded, [`owner`] asks what the host knows:
//! - [`LOCAL_FLOWS`]: the flows the tc egress program ([`record`]) saw leaving an exposed
//!   interface from a host address and a published port, after netfilter's SNAT/MASQUERADE
//!   (tc egress sees the packet as it goes on the wire). This is what covers masqueraded flows
//!   (no local socket owns them) and unconnected UDP sockets. Each entry holds when the flow was
//!   last seen leaving, and counts only within conntrack's timeouts from then
//!   ([`portfwd_common::maps::local_flow_timeout`]), so that a stale entry does not hold a
//!   published port's traffic for ever. An LRU map: a flow silent for long enough to be evicted
//!   is recorded again by its next packet out; a reply arriving in between falls back to the
//!   socket lookup, and a masqueraded one is forwarded.
//! - the kernel's sockets (`bpf_skc_lookup_tcp`, `bpf_sk_lookup_udp`): a TCP socket that owns
//!   the exact addresses and ports and is not listening, or a connected UDP socket. A listener
//!   on the published port never counts: it would disable the forward.
//!
//! The lookups are skipped where the answer cannot be "a reply": a TCP SYN without ACK opens a
//! connection, and a packet of a flow portfwd already forwards (its reply key is in the flow
//! table) stays forwarded.
use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_TCP_ESTABLISHED, BPF_TCP_LISTEN, bpf_sock, bpf_sock_tuple,
    },
    helpers::generated::{bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    maps::LruHashMap,
};
use portfwd_common::{
    maps::{FlowKeyOf, ForwardValueOf, IFACE_EXPOSE, Ipv6Words, local_flow_timeout},
    pool::FWD_POOL,
    proto,
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::{Family, Ipv4, Ipv6},
    flow,
    maps::{IFACES, LOCAL_FLOWS, LOCAL_FLOWS6, Lookup as _, SOCK_TUPLE},
    nat,
    parse::{self, ETH_P_IPV4_BE, ETH_P_IPV6_BE},
    pool::Pool,
    service,
    types::{IpL4, Parsed, Tuple},
};

/// The monotonic clock in seconds, as the local flows' values hold it.
#[inline(always)]
fn now_secs() -> u32 {
    // SAFETY: plain helper call without arguments.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}

/// What a family adds for this module: its local flow map, and its socket lookup tuple.
pub trait Local: Family {
    fn local_flows() -> &'static LruHashMap<FlowKeyOf<Self::Addr>, u32>;
    /// Fills `tuple` with `t` (as the packet carries it); returns the tuple's size.
    fn sock_tuple(t: &Tuple<Self::Addr>, tuple: &mut bpf_sock_tuple) -> u32;
}

impl Local for Ipv4 {
    #[inline(always)]
    fn local_flows() -> &'static LruHashMap<FlowKeyOf<u32>, u32> {
        &LOCAL_FLOWS
    }

    #[inline(always)]
    fn sock_tuple(t: &Tuple<u32>, tuple: &mut bpf_sock_tuple) -> u32 {
        // SAFETY: writing a union member of plain integers; the lookup reads the same member,
        // told by the size.
        let v4 = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
        v4.saddr = t.saddr;
        v4.daddr = t.daddr;
        v4.sport = t.sport;
        v4.dport = t.dport;
        12
    }
}

impl Local for Ipv6 {
    #[inline(always)]
    fn local_flows() -> &'static LruHashMap<FlowKeyOf<Ipv6Words>, u32> {
        &LOCAL_FLOWS6
    }

    #[inline(always)]
    fn sock_tuple(t: &Tuple<Ipv6Words>, tuple: &mut bpf_sock_tuple) -> u32 {
        // SAFETY: as for IPv4.
        let v6 = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
        v6.saddr = t.saddr;
        v6.daddr = t.daddr;
        v6.sport = t.sport;
        v6.dport = t.dport;
        36
    }
}

/// Why `pkt`, addressed to the published port of `fwd`, belongs to the host rather than to the
/// forward, if it does.
#[inline(always)]
pub fn owner<C: Ctx, F: Local + Pool>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    fwd: &ForwardValueOf<F::Addr>,
) -> Option<Reason> {
    if flow::opens_connection(ctx, pkt) {
        return None;
    }
    if forwarded::<F>(pkt, fwd) {
        return None;
    }
    if let Some(seen) = F::local_flows().copied(flow::key(&pkt.tuple(), pkt.proto))
        && now_secs().wrapping_sub(seen) <= local_flow_timeout(pkt.proto)
    {
        return Some(Reason::PassLocalFlow);
    }
    if socket_owns::<C, F>(ctx, pkt) {
        return Some(Reason::PassLocalSocket);
    }
    None
}

/// Whether `pkt`, a client's packet to `fwd`'s published port, belongs to a flow portfwd
/// forwards: its target's reply flow is remembered, or for a pool (whose target is chosen per
/// flow), the client's tuple has an affinity entry.
#[inline(always)]
fn forwarded<F: Pool>(pkt: &IpL4<F::Addr>, fwd: &ForwardValueOf<F::Addr>) -> bool {
    if fwd.flags & FWD_POOL != 0 {
        return F::affinity()
            .get_ptr(flow::key(&pkt.tuple(), pkt.proto))
            .is_some();
    }
    let (next, _) = nat::target_tuple::<F>(pkt, fwd);
    flow::find::<F>(flow::reply_key(&next, pkt.proto)).is_some()
}

/// Whether a local socket owns `pkt`'s exact addresses and ports and takes no new connections:
/// TCP in any state but LISTEN (a SYN-ACK finds its socket in SYN_SENT), UDP connected.
#[inline(always)]
fn socket_owns<C: Ctx, F: Local>(ctx: &C, pkt: &IpL4<F::Addr>) -> bool {
    let Some(tuple) = SOCK_TUPLE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
    let size = F::sock_tuple(&pkt.tuple(), unsafe { &mut *tuple });
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: `tuple` points to a map value of `size` valid bytes; the context pointer is the
    // program's own. A socket returned is released below, on every path.
    let sk: *mut bpf_sock = unsafe {
        if pkt.proto == proto::TCP {
            bpf_skc_lookup_tcp(ctx.ctx_ptr(), tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.ctx_ptr(), tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a non-null socket from the lookup, readable until released; `state` is readable
    // on both the full and the common socket the lookups return.
    let state = unsafe { (*sk).state };
    // SAFETY: `sk` came from a lookup and is released once.
    unsafe { bpf_sk_release(sk as *mut _) };
    if pkt.proto == proto::TCP {
        state != BPF_TCP_LISTEN
    } else {
        state == BPF_TCP_ESTABLISHED
    }
}

/// tc egress: remembers a flow leaving an exposed interface from a host address and a published
/// port, unless it is a reply portfwd translated (its target's flow is in the flow table).
#[inline(always)]
pub fn record<C: Ctx>(ctx: &C) {
    let iface = IFACES.copied(ctx.ingress_ifindex()).unwrap_or(0);
    if iface & IFACE_EXPOSE == 0 {
        return;
    }
    match parse::ethertype(ctx) {
        Ok(ETH_P_IPV4_BE) => record_family::<C, Ipv4>(ctx),
        Ok(ETH_P_IPV6_BE) => record_family::<C, Ipv6>(ctx),
        _ => {}
    }
}

#[inline(always)]
fn record_family<C: Ctx, F: Local + Pool>(ctx: &C) {
    let Ok(Parsed::L4(pkt)) = parse::parse::<C, F>(ctx) else {
        return;
    };
    if !service::is_host_addr::<F>(pkt.saddr) {
        return;
    }
    let Some(fwd) = service::lookup::<F>(pkt.saddr, pkt.sport, pkt.proto) else {
        return;
    };
    // A reply portfwd translated for a pool leaves as host:port -> client: the client's
    // packets, the other way, have an affinity entry.
    if fwd.flags & FWD_POOL != 0
        && F::affinity()
            .get_ptr(flow::reply_key(&pkt.tuple(), pkt.proto))
            .is_some()
    {
        return;
    }
    // A reply portfwd translated leaves as host:port -> client; before translation it was
    // target -> client, the key of its flow (for a hairpin to itself, the client is the target
    // and its flow was keyed target -> published address).
    let hairpin = pkt.daddr == fwd.target_addr_be;
    let translated = Tuple {
        saddr: fwd.target_addr_be,
        daddr: if hairpin { pkt.saddr } else { pkt.daddr },
        sport: fwd.target_port_be,
        dport: pkt.dport,
    };
    if flow::find::<F>(flow::key(&translated, pkt.proto)).is_some() {
        return;
    }
    let key = flow::reply_key(&pkt.tuple(), pkt.proto);
    let now = now_secs();
    match F::local_flows().get_ptr_mut(key) {
        // SAFETY: a value of this map, a plain `u32`; a concurrent writer can only store
        // another recent time.
        Some(seen) => unsafe {
            if *seen != now {
                *seen = now;
            }
        },
        // LRU: makes room by forgetting the least recently seen flow.
        None => {
            let _ = F::local_flows().insert(key, now, 0);
        }
    }
}
