//! A reference model of the datapath: what the tc program does to one frame, written as plain
//! Rust over a byte slice, so that it runs on the host and can be compared with the kernel.
//!
//! The model is the datapath's behaviour spelled out, not its code: it reads the frame with
//! slices and big-endian loads, keeps its own checksum arithmetic (deliberately not
//! [`crate::checksum`], which the XDP program uses), and takes the maps and the routing table
//! through [`World`]. It models both hooks ([`Hook::Tc`], [`Hook::Xdp`]): they share one
//! translation path and differ only where the kernel makes them differ (checksum arithmetic,
//! the MTU check, and what XDP can send itself). `portfwd/tests/datapath.rs` runs it against the real program
//! (BPF_PROG_TEST_RUN) on fixtures and on random and mutated frames; every difference is either
//! a datapath bug or a model bug.
//!
//! # What the datapath does
//!
//! 1. **Parse** Ethernet, IPv4 and TCP/UDP, or an ICMP error quoting TCP/UDP. Anything else is
//!    passed untouched with a reason: not IPv4 (ARP, IPv6, a VLAN tag in the frame), not
//!    TCP/UDP, a later fragment (no ports), or malformed (truncated, IHL < 5, total length
//!    beyond the frame, TCP data offset < 5, UDP length not the IPv4 payload length). A
//!    destination in 127.0.0.0/8 is dropped whatever the rest is.
//! 2. **Decide**: a packet for a published port (destination is a host address, ingress
//!    interface exposed, and a forward matches: looked up in `PF_FORWARDS` bound to that
//!    address, then bound to every address, and only then in the port ranges of `PF_RANGES`,
//!    bound to that address, then to every address) goes to the target; a packet matching a
//!    remembered flow is a reply and goes back to the client; everything else passes. A forward
//!    with a source allowlist drops every packet for it from a source outside the list
//!    (`drop_source_not_allowed`), before any other check; replies and ICMP errors are never
//!    held against an allowlist.
//!
//!    **Hairpin**: when the source of a packet for a published port *is* the forward's target
//!    (a container calling its own published port through the host), its source is also
//!    translated, to the published address it called (`hairpinned`), and the flow remembers the
//!    caller ([`FlowValue::client_addr_be`]); the replies get both ends translated back
//!    (`hairpin_replied`). ICMP errors quoting such a flow are not translated towards the
//!    client. A call to another container's published port is forwarded like any other.
//! 3. **Check** before touching anything: a first fragment is dropped (a datagram is never
//!    translated in part), TTL <= 1 is dropped, and the new destination must be routable (and,
//!    for tc, a frame to a known neighbour must fit the egress MTU + Ethernet header + one VLAN
//!    tag, the kernel's `is_skb_forwardable`; for XDP the IPv4 part of the frame must fit the
//!    egress MTU, checked by the FIB lookup whatever the neighbour). XDP then hands the packet
//!    to tc untouched (`pass_to_tc`) unless the neighbour is known and the egress interface is
//!    in `PF_XDP_EGRESS`.
//! 4. **Translate**: destination (to the target) or source (to the client) address and port,
//!    with the IPv4 and L4 checksums updated incrementally, so a wrong checksum stays exactly as
//!    wrong; a UDP checksum of 0 ("none") stays 0 and an updated one that comes out 0 is sent as
//!    0xffff. Then what a router does: TTL - 1, and the next hop's MACs when the neighbour is
//!    known (otherwise the kernel resolves it on redirect).
//!
//! ICMP errors (destination unreachable, time exceeded, parameter problem) quoting a packet of
//! a remembered flow get the quote translated back and are sent on, see [`Outcome`].
//!
//! # Checksum arithmetic
//!
//! All updates follow RFC 1624 (`HC' = ~(~HC + ~m + m')`) in end-around-carry arithmetic. The
//! kernel's checksum helpers (tc) never produce a sum of 0 (their accumulator starts from a
//! 32-bit value with the high half set), so their result is never 0xffff; the software update
//! (XDP, and quoted L4 checksums on both hooks) can (when `HC = 0xffff, m = 0xffff, m' = 0`).
//! Both are modelled exactly.

use crate::{
    maps::{
        AllowKey, FWD_ALLOWLIST, FlowKey, FlowValue, ForwardKey, ForwardValue, Hook, IFACE_EXPOSE,
        RangeKey, RangeValue,
    },
    proto,
    reason::Reason,
};

const ETH_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPV4_MIN: usize = 20;
const TCP_MIN: usize = 20;
const UDP_LEN: usize = 8;
const ICMP_LEN: usize = 8;
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// Ethernet header plus one VLAN tag: the slack the kernel allows over the egress MTU for a
/// frame a tc program redirects (`is_skb_forwardable`).
const TC_MTU_SLACK: usize = 14 + 4;

/// The maps and the routing table, as the datapath sees them.
pub trait World {
    /// `PF_IFACES`: flags of an interface, if known.
    fn iface_flags(&self, ifindex: u32) -> Option<u32>;
    /// `PF_HOST_ADDRS`: whether `addr_be` (wire order) is one of the host's addresses.
    fn is_host_addr(&self, addr_be: u32) -> bool;
    /// `PF_FORWARDS`.
    fn forward(&self, key: &ForwardKey) -> Option<ForwardValue>;
    /// `PF_RANGES`, looked up with every bit of `key` (the entry with the longest matching
    /// prefix).
    fn range(&self, key: &RangeKey) -> Option<RangeValue>;
    /// `PF_ALLOW`, looked up with every bit of `key`: whether some prefix in the trie matches.
    fn allowed(&self, key: &AllowKey) -> bool;
    /// `PF_FLOWS`.
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// The FIB lookup (`bpf_fib_lookup`) the datapath makes before translating.
    fn route(&self, query: &RouteQuery) -> Route;
    /// `PF_XDP_EGRESS`: whether XDP may redirect to `ifindex` itself.
    fn xdp_egress(&self, ifindex: u32) -> bool;
}

/// A FIB lookup: the translated packet's addresses and ports, from the ingress interface.
/// Addresses and ports are in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteQuery {
    pub ingress_ifindex: u32,
    pub proto: u8,
    pub tos: u8,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
}

/// The answer of a FIB lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Routed out of `ifindex` (MTU `mtu`), to a neighbour whose MAC is known.
    Neighbour {
        ifindex: u32,
        mtu: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Routed out of `ifindex` (MTU `mtu`), neighbour unknown: the kernel resolves it on
    /// redirect.
    NoNeighbour { ifindex: u32, mtu: u32 },
    /// Not forwardable: no route, a local or broadcast destination, forwarding disabled.
    Unroutable,
}

/// What happens to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Passed on untouched (tc: `TC_ACT_UNSPEC`, XDP: `XDP_PASS`).
    Pass,
    /// Dropped untouched (tc: `TC_ACT_SHOT`, XDP: `XDP_DROP`).
    Drop,
    /// Rewritten and redirected out of `ifindex` (tc: `TC_ACT_REDIRECT`, XDP: `XDP_REDIRECT`).
    Redirect { ifindex: u32 },
}

/// Which way a translated packet went, for the per-forward counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToTarget,
    ToClient,
}

/// A per-forward counter update (`PF_FWD_STATS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub slot: u32,
    pub direction: Direction,
    /// The whole frame's length.
    pub bytes: u64,
    /// Whether the packet created (or replaced) its flow entry.
    pub new_flow: bool,
}

/// The model's verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict counter that is incremented (`PF_VERDICTS`).
    pub reason: Reason,
    pub action: Action,
    /// A flow entry written to `PF_FLOWS` (inserted, or replacing a different value).
    pub flow: Option<(FlowKey, FlowValue)>,
    pub count: Option<Count>,
}

impl Outcome {
    fn untouched(reason: Reason) -> Self {
        Outcome {
            reason,
            action: if reason.is_drop() {
                Action::Drop
            } else {
                Action::Pass
            },
            flow: None,
            count: None,
        }
    }
}

/// Runs the model of `hook`'s program on `frame` (Ethernet onwards; all of it is the packet)
/// arriving on `ingress_ifindex`. When the outcome is [`Action::Redirect`] the frame has been
/// rewritten in place as the datapath rewrites it; otherwise it is unchanged. Map updates are
/// returned, not applied: the caller applies [`Outcome::flow`] to its [`World`].
pub fn process(frame: &mut [u8], ingress_ifindex: u32, hook: Hook, world: &impl World) -> Outcome {
    let parsed = match parse(frame) {
        Ok(p) => p,
        Err(reason) => return Outcome::untouched(reason),
    };
    let exposed = world
        .iface_flags(ingress_ifindex)
        .is_some_and(|f| f & IFACE_EXPOSE != 0);
    let at = At {
        ifindex: ingress_ifindex,
        hook,
    };
    match parsed {
        Parsed::L4(pkt) => l4(frame, at, world, exposed, &pkt),
        Parsed::IcmpError(err) => icmp_error(frame, at, world, exposed, &err),
    }
}

/// Where the program runs: the ingress interface and the hook.
#[derive(Clone, Copy, Debug)]
struct At {
    ifindex: u32,
    hook: Hook,
}

/// A parsed IPv4 packet; addresses and ports as they are on the wire (read big-endian here,
/// converted to the maps' wire-order `u32`/`u16` with `to_be` where keys are built).
#[derive(Clone, Copy, Debug)]
struct Ip {
    /// Offset of the IPv4 header.
    l3: usize,
    /// Offset of the L4 header.
    l4: usize,
    /// End of the datagram (`l3 + total length`).
    end: usize,
    proto: u8,
    tos: u8,
    ttl: u8,
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
    first_fragment: bool,
}

#[derive(Clone, Copy, Debug)]
struct IcmpError {
    outer: Ip,
    inner: Ip,
    /// The quoted L4 checksum lies within the outer datagram.
    inner_l4_csum: bool,
}

enum Parsed {
    L4(Ip),
    IcmpError(IcmpError),
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn addr(f: &[u8], off: usize) -> [u8; 4] {
    [f[off], f[off + 1], f[off + 2], f[off + 3]]
}

/// An address as the maps keep it: the four wire bytes read as a native `u32`.
fn wire(a: [u8; 4]) -> u32 {
    u32::from_ne_bytes(a)
}

/// A port as the maps keep it: the two wire bytes read as a native `u16`.
fn wire16(port: u16) -> u16 {
    port.to_be()
}

fn parse(f: &[u8]) -> Result<Parsed, Reason> {
    if f.len() < ETH_LEN {
        return Err(Reason::PassMalformed);
    }
    if be16(f, 12) != ETH_P_IPV4 {
        return Err(Reason::PassNotIpv4);
    }
    let outer = parse_ipv4(f, ETH_LEN, f.len(), true)?;
    if outer.proto != proto::ICMP {
        return Ok(Parsed::L4(outer));
    }
    if outer.first_fragment {
        // parse_ipv4 already passed later fragments; a fragmented ICMP error is not reassembled.
        return Err(Reason::PassFragment);
    }
    // The ICMP header is read from the frame (not bounded by the IPv4 total length).
    if outer.l4 + ICMP_LEN > f.len() {
        return Err(Reason::PassMalformed);
    }
    if !matches!(f[outer.l4], 3 | 11 | 12) {
        return Err(Reason::PassNotTcpUdp);
    }
    let inner = match parse_ipv4(f, outer.l4 + ICMP_LEN, outer.end, false) {
        Ok(inner) => inner,
        Err(Reason::PassNotTcpUdp) => return Err(Reason::PassNotTcpUdp),
        Err(_) => return Err(Reason::PassMalformed),
    };
    let csum_end = inner.l4 + if inner.proto == proto::TCP { 18 } else { 8 };
    Ok(Parsed::IcmpError(IcmpError {
        outer,
        inner,
        inner_l4_csum: csum_end <= outer.end,
    }))
}

/// Parses the IPv4 header at `l3`. A `whole` packet (the frame's own) must lie within the frame
/// and have a complete TCP/UDP header; a quoted one (inside an ICMP error, ending at `end`) needs
/// only its fixed IPv4 header in the frame and its first 8 L4 bytes before `end`.
fn parse_ipv4(f: &[u8], l3: usize, end: usize, whole: bool) -> Result<Ip, Reason> {
    if l3 + IPV4_MIN > f.len() {
        return Err(Reason::PassMalformed);
    }
    if f[l3] >> 4 != 4 {
        return Err(Reason::PassMalformed);
    }
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    if ihl < IPV4_MIN {
        return Err(Reason::PassMalformed);
    }
    let tot_len = usize::from(be16(f, l3 + 2));
    if tot_len < ihl || (whole && l3 + tot_len > end) {
        return Err(Reason::PassMalformed);
    }
    let daddr = addr(f, l3 + 16);
    if whole && daddr[0] == 127 {
        return Err(Reason::DropLoopbackDst);
    }
    let frag = be16(f, l3 + 6);
    if frag & IP_OFFSET != 0 {
        return Err(Reason::PassFragment);
    }
    let mut ip = Ip {
        l3,
        l4: l3 + ihl,
        end: l3 + tot_len,
        proto: f[l3 + 9],
        tos: f[l3 + 1],
        ttl: f[l3 + 8],
        saddr: addr(f, l3 + 12),
        daddr,
        sport: 0,
        dport: 0,
        first_fragment: frag & IP_MF != 0,
    };
    if whole && ip.proto == proto::ICMP {
        return Ok(ip);
    }
    if ip.proto != proto::TCP && ip.proto != proto::UDP {
        return Err(Reason::PassNotTcpUdp);
    }
    if !whole {
        if ip.l4 + 4 > f.len() || ip.l4 + 8 > end {
            return Err(Reason::PassMalformed);
        }
        ip.sport = be16(f, ip.l4);
        ip.dport = be16(f, ip.l4 + 2);
        return Ok(ip);
    }
    let l4_len = tot_len - ihl;
    if ip.proto == proto::TCP {
        if l4_len < TCP_MIN || ip.l4 + TCP_MIN > f.len() {
            return Err(Reason::PassMalformed);
        }
        let doff = usize::from(f[ip.l4 + 12] >> 4) * 4;
        if doff < TCP_MIN || (!ip.first_fragment && l4_len < doff) {
            return Err(Reason::PassMalformed);
        }
    } else {
        if l4_len < UDP_LEN || ip.l4 + UDP_LEN > f.len() {
            return Err(Reason::PassMalformed);
        }
        let len = usize::from(be16(f, ip.l4 + 4));
        // A first fragment's UDP length is the whole datagram's.
        if len < UDP_LEN || (!ip.first_fragment && len != l4_len) {
            return Err(Reason::PassMalformed);
        }
    }
    ip.sport = be16(f, ip.l4);
    ip.dport = be16(f, ip.l4 + 2);
    Ok(ip)
}

fn forward_of(world: &impl World, daddr: [u8; 4], dport: u16, proto: u8) -> Option<ForwardValue> {
    let mut key = ForwardKey {
        addr_be: wire(daddr),
        port_be: wire16(dport),
        proto,
        _pad: 0,
    };
    let single = world.forward(&key).or_else(|| {
        key.addr_be = 0;
        world.forward(&key)
    });
    if single.is_some() {
        return single;
    }
    let mut key = RangeKey {
        proto,
        _pad: [0; 3],
        addr_be: wire(daddr),
        port_be: wire16(dport),
        _pad2: [0; 2],
    };
    let range = world.range(&key).or_else(|| {
        key.addr_be = 0;
        world.range(&key)
    })?;
    // Port by port: the n-th port of the range goes to the n-th port of the target range
    // (16-bit arithmetic, as the datapath does it).
    let offset = dport.wrapping_sub(u16::from_be(range.start_port_be));
    Some(ForwardValue {
        target_addr_be: range.target_addr_be,
        target_port_be: wire16(u16::from_be(range.target_port_be).wrapping_add(offset)),
        _pad: 0,
        stats_slot: range.stats_slot,
        flags: range.flags,
    })
}

fn l4(f: &mut [u8], at: At, world: &impl World, exposed: bool, pkt: &Ip) -> Outcome {
    let for_host = exposed && world.is_host_addr(wire(pkt.daddr));
    if for_host && let Some(fwd) = forward_of(world, pkt.daddr, pkt.dport, pkt.proto) {
        if fwd.flags & FWD_ALLOWLIST != 0
            && !world.allowed(&AllowKey {
                slot: fwd.stats_slot,
                saddr_be: wire(pkt.saddr),
            })
        {
            return Outcome::untouched(Reason::DropSourceNotAllowed);
        }
        return to_target(f, at, world, pkt, &fwd);
    }
    let key = FlowKey {
        saddr_be: wire(pkt.saddr),
        daddr_be: wire(pkt.daddr),
        sport_be: wire16(pkt.sport),
        dport_be: wire16(pkt.dport),
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(flow) = world.flow(&key) {
        return to_client(f, at, world, pkt, &flow);
    }
    Outcome::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

/// The translated packet: new addresses and ports (wire bytes / host-order ports).
struct Next {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
}

/// Fragment, TTL and route checks, before anything is written.
fn check_and_route(
    f: &[u8],
    at: At,
    world: &impl World,
    pkt: &Ip,
    next: &Next,
) -> Result<Route, Reason> {
    if pkt.first_fragment {
        return Err(Reason::DropFragment);
    }
    if pkt.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let route = world.route(&RouteQuery {
        ingress_ifindex: at.ifindex,
        proto: pkt.proto,
        tos: pkt.tos,
        saddr_be: wire(next.saddr),
        daddr_be: wire(next.daddr),
        sport_be: wire16(next.sport),
        dport_be: wire16(next.dport),
    });
    match (at.hook, route) {
        (_, Route::Unroutable) => Err(Reason::DropNoRoute),
        // tc: the skb against the egress device, only once the neighbour is known.
        (Hook::Tc, Route::Neighbour { mtu, .. }) if f.len() > mtu as usize + TC_MTU_SLACK => {
            Err(Reason::DropFragNeeded)
        }
        (Hook::Tc, r) => Ok(r),
        // XDP: the IPv4 length it passes to the lookup (the frame minus Ethernet), before the
        // neighbour is looked at.
        (Hook::Xdp, Route::Neighbour { mtu, .. } | Route::NoNeighbour { mtu, .. })
            if f.len() - ETH_LEN > mtu as usize =>
        {
            Err(Reason::DropFragNeeded)
        }
        (Hook::Xdp, r @ Route::Neighbour { ifindex, .. }) if world.xdp_egress(ifindex) => Ok(r),
        (Hook::Xdp, _) => Err(Reason::PassToTc),
    }
}

fn to_target(f: &mut [u8], at: At, world: &impl World, pkt: &Ip, fwd: &ForwardValue) -> Outcome {
    // Hairpin to itself: the client is the target; it is shown the published address instead.
    let hairpin = wire(pkt.saddr) == fwd.target_addr_be;
    let next = Next {
        saddr: if hairpin { pkt.daddr } else { pkt.saddr },
        daddr: fwd.target_addr_be.to_ne_bytes(),
        sport: pkt.sport,
        dport: u16::from_be(fwd.target_port_be),
    };
    let route = match check_and_route(f, at, world, pkt, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    // Replies come from the target to the client.
    let key = FlowKey {
        saddr_be: wire(next.daddr),
        daddr_be: wire(next.saddr),
        sport_be: wire16(next.dport),
        dport_be: wire16(next.sport),
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let value = FlowValue {
        orig_addr_be: wire(pkt.daddr),
        orig_port_be: wire16(pkt.dport),
        _pad: 0,
        stats_slot: fwd.stats_slot,
        client_addr_be: if hairpin { wire(pkt.saddr) } else { 0 },
    };
    let known = world.flow(&key) == Some(value);
    if hairpin {
        rewrite_l4(
            f,
            at.hook,
            pkt,
            pkt.l3 + 12,
            pkt.l4,
            pkt.saddr,
            next.saddr,
            pkt.sport,
            next.sport,
        );
    }
    rewrite_l4(
        f,
        at.hook,
        pkt,
        pkt.l3 + 16,
        pkt.l4 + 2,
        pkt.daddr,
        next.daddr,
        pkt.dport,
        next.dport,
    );
    let action = router_hop(f, at.hook, pkt, &route);
    Outcome {
        reason: if hairpin {
            Reason::Hairpinned
        } else {
            Reason::Forwarded
        },
        action,
        flow: (!known).then_some((key, value)),
        count: Some(Count {
            slot: fwd.stats_slot,
            direction: Direction::ToTarget,
            bytes: f.len() as u64,
            new_flow: !known,
        }),
    }
}

fn to_client(f: &mut [u8], at: At, world: &impl World, pkt: &Ip, flow: &FlowValue) -> Outcome {
    // A hairpin to itself: the reply goes back to the caller's own address.
    let hairpin = flow.client_addr_be != 0;
    let next = Next {
        saddr: flow.orig_addr_be.to_ne_bytes(),
        daddr: if hairpin {
            flow.client_addr_be.to_ne_bytes()
        } else {
            pkt.daddr
        },
        sport: u16::from_be(flow.orig_port_be),
        dport: pkt.dport,
    };
    let route = match check_and_route(f, at, world, pkt, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    if hairpin {
        rewrite_l4(
            f,
            at.hook,
            pkt,
            pkt.l3 + 16,
            pkt.l4 + 2,
            pkt.daddr,
            next.daddr,
            pkt.dport,
            next.dport,
        );
    }
    rewrite_l4(
        f,
        at.hook,
        pkt,
        pkt.l3 + 12,
        pkt.l4,
        pkt.saddr,
        next.saddr,
        pkt.sport,
        next.sport,
    );
    let action = router_hop(f, at.hook, pkt, &route);
    Outcome {
        reason: if hairpin {
            Reason::HairpinReplied
        } else {
            Reason::Replied
        },
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

/// Replaces one end's address (at `addr_off`) and port (at `port_off`) of a TCP/UDP packet,
/// updating the L4 checksum (pseudo-header and port) and the IPv4 header checksum.
#[expect(
    clippy::too_many_arguments,
    reason = "one field of one end: offsets, old and new values"
)]
fn rewrite_l4(
    f: &mut [u8],
    hook: Hook,
    pkt: &Ip,
    addr_off: usize,
    port_off: usize,
    old_addr: [u8; 4],
    new_addr: [u8; 4],
    old_port: u16,
    new_port: u16,
) {
    let l4_csum = if pkt.proto == proto::TCP {
        pkt.l4 + 16
    } else {
        pkt.l4 + 6
    };
    let udp = pkt.proto == proto::UDP;
    let mut c = be16(f, l4_csum);
    c = l4_update(hook, c, &words(old_addr), &words(new_addr), udp);
    c = l4_update(hook, c, &[old_port], &[new_port], udp);
    put16(f, l4_csum, c);
    let ip_csum = pkt.l3 + 10;
    let c = l3_update(hook, be16(f, ip_csum), &words(old_addr), &words(new_addr));
    put16(f, ip_csum, c);
    f[addr_off..addr_off + 4].copy_from_slice(&new_addr);
    put16(f, port_off, new_port);
}

/// TTL - 1 (with the IPv4 checksum) and, when the neighbour is known, its MACs.
fn router_hop(f: &mut [u8], hook: Hook, pkt: &Ip, route: &Route) -> Action {
    let ttl_off = pkt.l3 + 8;
    let old = be16(f, ttl_off);
    let new = u16::from_be_bytes([pkt.ttl - 1, pkt.proto]);
    let ip_csum = pkt.l3 + 10;
    let c = l3_update(hook, be16(f, ip_csum), &[old], &[new]);
    put16(f, ip_csum, c);
    f[ttl_off] = pkt.ttl - 1;
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

fn icmp_error(f: &mut [u8], at: At, world: &impl World, exposed: bool, err: &IcmpError) -> Outcome {
    let q = &err.inner;
    let for_host = exposed && world.is_host_addr(wire(err.outer.daddr));
    // Towards the client: the quote is client -> target, the reverse of a reply's key.
    let key = FlowKey {
        saddr_be: wire(q.daddr),
        daddr_be: wire(q.saddr),
        sport_be: wire16(q.dport),
        dport_be: wire16(q.sport),
        proto: q.proto,
        _pad: [0; 3],
    };
    // A hairpin to itself is the container's own business: its errors are not translated
    // towards the client (they quote an address pair that translation would not restore) and
    // go on to the next case.
    if let Some(flow) = world.flow(&key)
        && flow.client_addr_be == 0
    {
        return icmp_to_client(f, at, world, err, &flow);
    }
    // Towards the target: the quote is host:port -> client, a reply that was translated.
    if for_host && let Some(fwd) = forward_of(world, q.saddr, q.sport, q.proto) {
        let key = FlowKey {
            saddr_be: fwd.target_addr_be,
            daddr_be: wire(q.daddr),
            sport_be: fwd.target_port_be,
            dport_be: wire16(q.dport),
            proto: q.proto,
            _pad: [0; 3],
        };
        if let Some(flow) = world.flow(&key)
            && flow.orig_addr_be == wire(q.saddr)
            && flow.orig_port_be == wire16(q.sport)
        {
            return icmp_to_target(f, at, world, err, &key, &flow);
        }
    }
    Outcome::untouched(if for_host {
        Reason::PassNoForward
    } else {
        Reason::PassNotForUs
    })
}

fn icmp_to_client(
    f: &mut [u8],
    at: At,
    world: &impl World,
    err: &IcmpError,
    flow: &FlowValue,
) -> Outcome {
    let outer = &err.outer;
    let orig_addr = flow.orig_addr_be.to_ne_bytes();
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
    let route = match check_and_route(f, at, world, outer, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    let q = &err.inner;
    rewrite_quote(
        f,
        at.hook,
        err,
        q.l3 + 16,
        q.l4 + 2,
        q.daddr,
        orig_addr,
        q.dport,
        u16::from_be(flow.orig_port_be),
    );
    if new_src != outer.saddr {
        rewrite_outer_addr(f, at.hook, outer.l3 + 12, outer.saddr, new_src);
    }
    let action = router_hop(f, at.hook, outer, &route);
    Outcome {
        reason: Reason::IcmpErrorTranslated,
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

fn icmp_to_target(
    f: &mut [u8],
    at: At,
    world: &impl World,
    err: &IcmpError,
    key: &FlowKey,
    flow: &FlowValue,
) -> Outcome {
    let outer = &err.outer;
    let target = key.saddr_be.to_ne_bytes();
    let next = Next {
        saddr: outer.saddr,
        daddr: target,
        sport: 0,
        dport: 0,
    };
    let route = match check_and_route(f, at, world, outer, &next) {
        Ok(r) => r,
        Err(reason) => return Outcome::untouched(reason),
    };
    let q = &err.inner;
    rewrite_quote(
        f,
        at.hook,
        err,
        q.l3 + 12,
        q.l4,
        q.saddr,
        target,
        q.sport,
        u16::from_be(key.sport_be),
    );
    rewrite_outer_addr(f, at.hook, outer.l3 + 16, outer.daddr, target);
    let action = router_hop(f, at.hook, outer, &route);
    Outcome {
        reason: Reason::IcmpErrorTranslated,
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
/// with the ICMP checksum absorbing that change; the port change goes into the ICMP checksum;
/// the address change is balanced by the quoted IPv4 checksum, so the ICMP checksum does not
/// see it.
#[expect(
    clippy::too_many_arguments,
    reason = "one field of one end: offsets, old and new values"
)]
fn rewrite_quote(
    f: &mut [u8],
    hook: Hook,
    err: &IcmpError,
    addr_off: usize,
    port_off: usize,
    old_addr: [u8; 4],
    new_addr: [u8; 4],
    old_port: u16,
    new_port: u16,
) {
    let q = &err.inner;
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
                software_update(before, &words(old_addr), &words(new_addr), udp),
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
    let ip_csum = q.l3 + 10;
    let c = l3_update(hook, be16(f, ip_csum), &words(old_addr), &words(new_addr));
    put16(f, ip_csum, c);
    f[addr_off..addr_off + 4].copy_from_slice(&new_addr);
}

/// Rewrites an address of the outer IPv4 header of an ICMP error (no pseudo-header in ICMP:
/// only the IPv4 checksum changes).
fn rewrite_outer_addr(f: &mut [u8], hook: Hook, off: usize, old: [u8; 4], new: [u8; 4]) {
    let ip_csum = ETH_LEN + 10;
    let c = l3_update(hook, be16(f, ip_csum), &words(old), &words(new));
    put16(f, ip_csum, c);
    f[off..off + 4].copy_from_slice(&new);
}

/// An address as two big-endian 16-bit words.
fn words(a: [u8; 4]) -> [u16; 2] {
    [
        u16::from_be_bytes([a[0], a[1]]),
        u16::from_be_bytes([a[2], a[3]]),
    ]
}

/// What `l3_csum_replace` does on `hook`: the kernel helper (tc) or the RFC 1624 software
/// update (XDP).
fn l3_update(hook: Hook, csum: u16, old: &[u16], new: &[u16]) -> u16 {
    match hook {
        Hook::Tc => helper_update(csum, old, new),
        Hook::Xdp => software_update(csum, old, new, false),
    }
}

/// What `l4_csum_replace` does on `hook`, with `BPF_F_MARK_MANGLED_0` when `udp`.
fn l4_update(hook: Hook, csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    match hook {
        Hook::Tc => helper_update_l4(csum, old, new, udp),
        Hook::Xdp => software_update(csum, old, new, udp),
    }
}

/// One's-complement addition with end-around carry.
fn add1(a: u32, b: u32) -> u32 {
    let s = a + b;
    (s & 0xffff) + (s >> 16)
}

/// The kernel checksum helpers (`bpf_l3_csum_replace`, and `bpf_l4_csum_replace` without
/// `BPF_F_MARK_MANGLED_0`) on a field made of `old` words becoming `new` words. Their sum starts
/// from a value that is never 0, so it is in 1..=0xffff and the checksum never 0xffff.
fn helper_update(csum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(!csum);
    for w in old {
        s = add1(s, u32::from(!*w));
    }
    for w in new {
        s = add1(s, u32::from(*w));
    }
    let s = add1(s, 0);
    // A sum of 0 is "negative zero" for the helpers (see above).
    let s = if s == 0 { 0xffff } else { s };
    !(s as u16)
}

/// `bpf_l4_csum_replace`, with `BPF_F_MARK_MANGLED_0` for UDP: a UDP checksum of 0 is left
/// alone, and an update that comes out 0 is written as 0xffff.
fn helper_update_l4(csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    if udp && csum == 0 {
        return 0;
    }
    match helper_update(csum, old, new) {
        0 if udp => 0xffff,
        c => c,
    }
}

/// The software update used for quoted L4 checksums: RFC 1624 eqn. 3 with a 32-bit accumulator
/// folded twice, one 16-bit word after the other (a sum of 0 gives 0xffff, unlike the kernel
/// helpers). For UDP a checksum of 0 stays 0, and a result of 0 becomes 0xffff; that mapping is
/// applied once per field, after all its words.
fn software_update(csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    if udp && csum == 0 {
        return 0;
    }
    let mut c = csum;
    for (o, n) in old.iter().zip(new) {
        let mut s = u32::from(!c) + u32::from(!*o) + u32::from(*n);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        c = !(s as u16);
    }
    match c {
        0 if udp => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 over big-endian words, from scratch.
    fn full(words: &[u16]) -> u16 {
        let mut s: u32 = 0;
        for w in words {
            s = add1(s, u32::from(*w));
        }
        !(s as u16)
    }

    #[test]
    fn helper_update_matches_recomputation() {
        let mut w = [
            0x4500u16, 0x0073, 0, 0x4000, 0x4011, 0, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        w[5] = full(&w);
        assert_eq!(w[5], 0xb861, "the classic example header");
        for (i, new) in [(7usize, 0x1234u16), (9, 0xffff), (6, 0), (4, 0x3f11)] {
            let c = helper_update(w[5], &[w[i]], &[new]);
            w[i] = new;
            w[5] = 0;
            assert_eq!(c, full(&w), "word {i}");
            w[5] = c;
        }
    }

    #[test]
    fn helper_update_never_gives_ffff_and_software_can() {
        assert_eq!(helper_update(0xffff, &[0xffff], &[0]), 0);
        assert_eq!(software_update(0xffff, &[0xffff], &[0], false), 0xffff);
    }

    #[test]
    fn udp_zero_stays_zero_and_zero_result_is_ffff() {
        assert_eq!(helper_update_l4(0, &[1, 2], &[3, 4], true), 0);
        // ~(~c + ~1 + 2) = 0 needs ~c + 1 = 0xffff, c = 1.
        assert_eq!(helper_update(1, &[1], &[2]), 0);
        assert_eq!(helper_update_l4(1, &[1], &[2], true), 0xffff);
        assert_eq!(helper_update_l4(1, &[1], &[2], false), 0);
    }
}
