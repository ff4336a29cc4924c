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
//! 1. **Parse** Ethernet, IPv4 or IPv6, and TCP/UDP, or an ICMP/ICMPv6 error quoting TCP/UDP.
//!    Anything else is passed untouched with a reason: not IP (ARP, a VLAN tag in the frame),
//!    not TCP/UDP, a later fragment (no ports), an IPv6 extension header other than a fragment
//!    header (`pass_ipv6_ext_header`), or malformed (truncated, IHL < 5, total or payload
//!    length beyond the frame, TCP data offset < 5, UDP length not the IP payload length, UDP
//!    checksum 0 over IPv6). A destination in 127.0.0.0/8 or ::1 is dropped whatever the rest
//!    is. IPv4 and IPv6 follow the same steps below, each with its own maps (`PF_FORWARDS6`,
//!    ...); the stats slots are shared.
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
//!    tag, the kernel's `is_skb_forwardable`; for XDP the IP part of the frame must fit the
//!    egress MTU, checked by the FIB lookup whatever the neighbour). XDP then hands the packet
//!    to tc untouched (`pass_to_tc`) unless the neighbour is known and the egress interface is
//!    in `PF_XDP_EGRESS`.
//! 4. **Translate**: destination (to the target) or source (to the client) address and port,
//!    with the IPv4 and L4 checksums updated incrementally (an IPv6 address as four 32-bit
//!    words, one helper call each), so a wrong checksum stays exactly as wrong; a UDP checksum
//!    of 0 ("none", IPv4) stays 0 and an updated one that comes out 0 is sent as 0xffff. Then
//!    what a router does: TTL or hop limit - 1, and the next hop's MACs when the neighbour is
//!    known (otherwise the kernel resolves it on redirect).
//!
//! ICMP errors (destination unreachable, time exceeded, parameter problem) and ICMPv6 errors
//! (destination unreachable, packet too big, time exceeded, parameter problem) quoting a packet
//! of a remembered flow get the quote translated back and are sent on, see [`Outcome`].
//!
//! # Checksum arithmetic
//!
//! All updates follow RFC 1624 (`HC' = ~(~HC + ~m + m')`) in end-around-carry arithmetic. The
//! kernel's checksum helpers (tc) never produce a sum of 0 (their accumulator starts from a
//! 32-bit value with the high half set), so their result is never 0xffff; the software update
//! (XDP, and quoted L4 checksums on both hooks) can (when `HC = 0xffff, m = 0xffff, m' = 0`).
//! Both are modelled exactly.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    maps::{
        Addr, Allow6Key, AllowKey, AllowKeyOf, FWD_ALLOWLIST, Flow6Key, Flow6Value, FlowKey,
        FlowKeyOf, FlowValue, FlowValueOf, Forward6Key, Forward6Value, ForwardKey, ForwardKeyOf,
        ForwardValue, ForwardValueOf, Hook, IFACE_EXPOSE, Ipv6Words, Range6Key, Range6Value,
        RangeKey, RangeKeyOf, RangeValue, RangeValueOf, ipv6_octets, ipv6_words,
    },
    proto,
    reason::Reason,
};

const ETH_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;
const IPV6_FRAG_LEN: usize = 8;
const NEXTHDR_FRAGMENT: u8 = 44;
const TCP_MIN: usize = 20;
const UDP_LEN: usize = 8;
const ICMP_LEN: usize = 8;
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// Ethernet header plus one VLAN tag: the slack the kernel allows over the egress MTU for a
/// frame a tc program redirects (`is_skb_forwardable`).
const TC_MTU_SLACK: usize = 14 + 4;

/// The maps and the routing table, as the datapath sees them. Each IPv4 map has an IPv6 twin
/// (`..6`), with keys and values in map form (wire bytes as native words).
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
    /// `PF_HOST_ADDRS6`.
    fn is_host_addr6(&self, addr: Ipv6Words) -> bool;
    /// `PF_FORWARDS6`.
    fn forward6(&self, key: &Forward6Key) -> Option<Forward6Value>;
    /// `PF_RANGES6` (as [`World::range`]).
    fn range6(&self, key: &Range6Key) -> Option<Range6Value>;
    /// `PF_ALLOW6` (as [`World::allowed`]).
    fn allowed6(&self, key: &Allow6Key) -> bool;
    /// `PF_FLOWS6`.
    fn flow6(&self, key: &Flow6Key) -> Option<Flow6Value>;
    /// The FIB lookup (`bpf_fib_lookup`) the datapath makes before translating.
    fn route(&self, query: &RouteQuery) -> Route;
    /// `PF_XDP_EGRESS`: whether XDP may redirect to `ifindex` itself.
    fn xdp_egress(&self, ifindex: u32) -> bool;
}

/// A FIB lookup: the translated packet's addresses and ports, from the ingress interface.
/// Ports are in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteQuery {
    pub ingress_ifindex: u32,
    pub proto: u8,
    /// The TOS byte (IPv4) or the flow information (IPv6, wire order).
    pub class: u32,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
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

/// A flow entry, in the flow map of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEntry {
    /// `PF_FLOWS`.
    V4(FlowKey, FlowValue),
    /// `PF_FLOWS6`.
    V6(Flow6Key, Flow6Value),
}

/// The model's verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict counter that is incremented (`PF_VERDICTS`).
    pub reason: Reason,
    pub action: Action,
    /// A flow entry written (inserted, or replacing a different value).
    pub flow: Option<FlowEntry>,
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
    if frame.len() < ETH_LEN {
        return Outcome::untouched(Reason::PassMalformed);
    }
    match be16(frame, 12) {
        ETH_P_IPV4 => process_family::<V4>(frame, ingress_ifindex, hook, world),
        ETH_P_IPV6 => process_family::<V6>(frame, ingress_ifindex, hook, world),
        _ => Outcome::untouched(Reason::PassNotIp),
    }
}

fn process_family<F: Fam>(
    frame: &mut [u8],
    ingress_ifindex: u32,
    hook: Hook,
    world: &impl World,
) -> Outcome {
    let parsed = match parse::<F>(frame) {
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
        Parsed::L4(pkt) => l4::<F>(frame, at, world, exposed, &pkt),
        Parsed::IcmpError(err) => icmp_error::<F>(frame, at, world, exposed, &err),
    }
}

/// Where the program runs: the ingress interface and the hook.
#[derive(Clone, Copy, Debug)]
struct At {
    ifindex: u32,
    hook: Hook,
}

/// What differs between IPv4 and IPv6, for the model: the address in map form and on the wire,
/// the header, the map of each kind, and the checksum rules.
trait Fam {
    /// The address in map form.
    type A: Addr + core::fmt::Debug;
    /// Address length in bytes.
    const LEN: usize;
    const ICMP: u8;
    /// The IP header has a checksum (IPv4); without one (IPv6) the ICMP checksum covers a
    /// pseudo-header and a UDP checksum of 0 is invalid.
    const IP_CSUM: bool;
    const SADDR: usize;
    const DADDR: usize;
    fn from_wire(b: &[u8]) -> Self::A;
    /// The wire bytes (the first [`Fam::LEN`]).
    fn octets(a: Self::A) -> [u8; 16];
    fn ip(a: Self::A) -> IpAddr;
    fn is_icmp_error(t: u8) -> bool;
    fn header(f: &[u8], l3: usize, end: usize, whole: bool) -> Result<Ip<Self::A>, Reason>;
    /// TTL or hop limit - 1, with the IPv4 checksum.
    fn hop(f: &mut [u8], hook: Hook, pkt: &Ip<Self::A>);
    fn host(w: &impl World, a: Self::A) -> bool;
    fn forward(w: &impl World, k: &ForwardKeyOf<Self::A>) -> Option<ForwardValueOf<Self::A>>;
    fn range(w: &impl World, k: &RangeKeyOf<Self::A>) -> Option<RangeValueOf<Self::A>>;
    fn allowed(w: &impl World, k: &AllowKeyOf<Self::A>) -> bool;
    fn flow(w: &impl World, k: &FlowKeyOf<Self::A>) -> Option<FlowValueOf<Self::A>>;
    fn entry(k: FlowKeyOf<Self::A>, v: FlowValueOf<Self::A>) -> FlowEntry;
}

enum V4 {}
enum V6 {}

impl Fam for V4 {
    type A = u32;
    const LEN: usize = 4;
    const ICMP: u8 = proto::ICMP;
    const IP_CSUM: bool = true;
    const SADDR: usize = 12;
    const DADDR: usize = 16;

    fn from_wire(b: &[u8]) -> u32 {
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
    fn octets(a: u32) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a.to_ne_bytes());
        o
    }
    fn ip(a: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()))
    }
    fn is_icmp_error(t: u8) -> bool {
        matches!(t, 3 | 11 | 12)
    }

    fn header(f: &[u8], l3: usize, end: usize, whole: bool) -> Result<Ip<u32>, Reason> {
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
        if whole && f[l3 + 16] == 127 {
            return Err(Reason::DropLoopbackDst);
        }
        let frag = be16(f, l3 + 6);
        if frag & IP_OFFSET != 0 {
            return Err(Reason::PassFragment);
        }
        Ok(Ip {
            l3,
            l4: l3 + ihl,
            end: l3 + tot_len,
            proto: f[l3 + 9],
            class: u32::from(f[l3 + 1]),
            ttl: f[l3 + 8],
            saddr: Self::from_wire(&f[l3 + 12..]),
            daddr: Self::from_wire(&f[l3 + 16..]),
            sport: 0,
            dport: 0,
            first_fragment: frag & IP_MF != 0,
        })
    }

    fn hop(f: &mut [u8], hook: Hook, pkt: &Ip<u32>) {
        let ttl_off = pkt.l3 + 8;
        let old = be16(f, ttl_off);
        let new = u16::from_be_bytes([pkt.ttl - 1, pkt.proto]);
        let ip_csum = pkt.l3 + 10;
        let c = l3_update(hook, be16(f, ip_csum), &[old], &[new]);
        put16(f, ip_csum, c);
        f[ttl_off] = pkt.ttl - 1;
    }

    fn host(w: &impl World, a: u32) -> bool {
        w.is_host_addr(a)
    }
    fn forward(w: &impl World, k: &ForwardKey) -> Option<ForwardValue> {
        w.forward(k)
    }
    fn range(w: &impl World, k: &RangeKey) -> Option<RangeValue> {
        w.range(k)
    }
    fn allowed(w: &impl World, k: &AllowKey) -> bool {
        w.allowed(k)
    }
    fn flow(w: &impl World, k: &FlowKey) -> Option<FlowValue> {
        w.flow(k)
    }
    fn entry(k: FlowKey, v: FlowValue) -> FlowEntry {
        FlowEntry::V4(k, v)
    }
}

/// IPv6 extension headers other than the fragment header (see `portfwd-ebpf`'s `family`).
fn is_ipv6_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 60 | 51 | 135 | 139 | 140 | 253 | 254)
}

impl Fam for V6 {
    type A = Ipv6Words;
    const LEN: usize = 16;
    const ICMP: u8 = 58;
    const IP_CSUM: bool = false;
    const SADDR: usize = 8;
    const DADDR: usize = 24;

    fn from_wire(b: &[u8]) -> Ipv6Words {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        ipv6_words(o)
    }
    fn octets(a: Ipv6Words) -> [u8; 16] {
        ipv6_octets(a)
    }
    fn ip(a: Ipv6Words) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(ipv6_octets(a)))
    }
    fn is_icmp_error(t: u8) -> bool {
        (1..=4).contains(&t)
    }

    fn header(f: &[u8], l3: usize, end: usize, whole: bool) -> Result<Ip<Ipv6Words>, Reason> {
        if l3 + IPV6_LEN > f.len() {
            return Err(Reason::PassMalformed);
        }
        if f[l3] >> 4 != 6 {
            return Err(Reason::PassMalformed);
        }
        let l3_end = l3 + IPV6_LEN + usize::from(be16(f, l3 + 4));
        if whole && l3_end > end {
            return Err(Reason::PassMalformed);
        }
        if whole && Ipv6Addr::from(ipv6_octets(Self::from_wire(&f[l3 + 24..]))).is_loopback() {
            return Err(Reason::DropLoopbackDst);
        }
        let mut next = f[l3 + 6];
        let mut l4 = l3 + IPV6_LEN;
        let mut first_fragment = false;
        if next == NEXTHDR_FRAGMENT {
            if l4 + IPV6_FRAG_LEN > f.len() || l4 + IPV6_FRAG_LEN > l3_end {
                return Err(Reason::PassMalformed);
            }
            let bits = be16(f, l4 + 2);
            if bits & 0xfff8 != 0 {
                return Err(Reason::PassFragment);
            }
            // Offset 0 without M: an atomic fragment, a whole datagram.
            first_fragment = bits & 1 != 0;
            next = f[l4];
            l4 += IPV6_FRAG_LEN;
        }
        if is_ipv6_ext_header(next) || next == NEXTHDR_FRAGMENT {
            return Err(Reason::PassIpv6ExtHeader);
        }
        Ok(Ip {
            l3,
            l4,
            end: l3_end,
            proto: next,
            class: u32::from_ne_bytes([f[l3] & 0x0f, f[l3 + 1], f[l3 + 2], f[l3 + 3]]),
            ttl: f[l3 + 7],
            saddr: Self::from_wire(&f[l3 + 8..]),
            daddr: Self::from_wire(&f[l3 + 24..]),
            sport: 0,
            dport: 0,
            first_fragment,
        })
    }

    fn hop(f: &mut [u8], _hook: Hook, pkt: &Ip<Ipv6Words>) {
        // No header checksum.
        f[pkt.l3 + 7] = pkt.ttl - 1;
    }

    fn host(w: &impl World, a: Ipv6Words) -> bool {
        w.is_host_addr6(a)
    }
    fn forward(w: &impl World, k: &Forward6Key) -> Option<Forward6Value> {
        w.forward6(k)
    }
    fn range(w: &impl World, k: &Range6Key) -> Option<Range6Value> {
        w.range6(k)
    }
    fn allowed(w: &impl World, k: &Allow6Key) -> bool {
        w.allowed6(k)
    }
    fn flow(w: &impl World, k: &Flow6Key) -> Option<Flow6Value> {
        w.flow6(k)
    }
    fn entry(k: Flow6Key, v: Flow6Value) -> FlowEntry {
        FlowEntry::V6(k, v)
    }
}

/// A parsed IP packet; addresses in map form (wire bytes as native words), ports in host order
/// (read big-endian here, converted with `to_be` where keys are built).
#[derive(Clone, Copy, Debug)]
struct Ip<A> {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the L4 header.
    l4: usize,
    /// End of the datagram (IPv4: `l3 + total length`; IPv6: `l3 + 40 + payload length`).
    end: usize,
    proto: u8,
    /// TOS (IPv4), flow information in wire order (IPv6).
    class: u32,
    ttl: u8,
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
    first_fragment: bool,
}

#[derive(Clone, Copy, Debug)]
struct IcmpError<A> {
    outer: Ip<A>,
    inner: Ip<A>,
    /// The quoted L4 checksum lies within the outer datagram.
    inner_l4_csum: bool,
}

enum Parsed<A> {
    L4(Ip<A>),
    IcmpError(IcmpError<A>),
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// A port as the maps keep it: the two wire bytes read as a native `u16`.
fn wire16(port: u16) -> u16 {
    port.to_be()
}

fn parse<F: Fam>(f: &[u8]) -> Result<Parsed<F::A>, Reason> {
    let outer = parse_ip::<F>(f, ETH_LEN, f.len(), true)?;
    if outer.proto != F::ICMP {
        return Ok(Parsed::L4(outer));
    }
    if outer.first_fragment {
        // parse_ip already passed later fragments; a fragmented ICMP error is not reassembled.
        return Err(Reason::PassFragment);
    }
    // The ICMP header is read from the frame (not bounded by the IP datagram's length).
    if outer.l4 + ICMP_LEN > f.len() {
        return Err(Reason::PassMalformed);
    }
    if !F::is_icmp_error(f[outer.l4]) {
        return Err(Reason::PassNotTcpUdp);
    }
    let inner = match parse_ip::<F>(f, outer.l4 + ICMP_LEN, outer.end, false) {
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

/// Parses the IP header at `l3` and what follows. A `whole` packet (the frame's own) must lie
/// within the frame and have a complete TCP/UDP header; a quoted one (inside an ICMP error,
/// ending at `end`) needs only its fixed IP header in the frame and its first 8 L4 bytes before
/// `end`.
fn parse_ip<F: Fam>(f: &[u8], l3: usize, end: usize, whole: bool) -> Result<Ip<F::A>, Reason> {
    let mut ip = F::header(f, l3, end, whole)?;
    if whole && ip.proto == F::ICMP {
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
    let l4_len = ip.end - ip.l4;
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
        // RFC 8200 8.1: over IPv6 a UDP checksum of 0 is invalid.
        if !F::IP_CSUM && be16(f, ip.l4 + 6) == 0 {
            return Err(Reason::PassMalformed);
        }
    }
    ip.sport = be16(f, ip.l4);
    ip.dport = be16(f, ip.l4 + 2);
    Ok(ip)
}

fn forward_of<F: Fam>(
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

fn l4<F: Fam>(f: &mut [u8], at: At, world: &impl World, exposed: bool, pkt: &Ip<F::A>) -> Outcome {
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
struct Next<A> {
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
}

/// Fragment, TTL and route checks, before anything is written.
fn check_and_route<F: Fam>(
    f: &[u8],
    at: At,
    world: &impl World,
    pkt: &Ip<F::A>,
    next: &Next<F::A>,
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
        class: pkt.class,
        saddr: F::ip(next.saddr),
        daddr: F::ip(next.daddr),
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
        // XDP: the IP length it passes to the lookup (the frame minus Ethernet), before the
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

fn to_target<F: Fam>(
    f: &mut [u8],
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
        reason: if hairpin {
            Reason::Hairpinned
        } else {
            Reason::Forwarded
        },
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
    f: &mut [u8],
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
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

/// TTL or hop limit - 1 (with the IPv4 checksum) and, when the neighbour is known, its MACs.
fn router_hop<F: Fam>(f: &mut [u8], hook: Hook, pkt: &Ip<F::A>, route: &Route) -> Action {
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

fn icmp_error<F: Fam>(
    f: &mut [u8],
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
    f: &mut [u8],
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

fn icmp_to_target<F: Fam>(
    f: &mut [u8],
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

/// An address as big-endian 16-bit words (the first `LEN / 2` are meaningful).
fn words<F: Fam>(a: F::A) -> [u16; 8] {
    let o = F::octets(a);
    let mut w = [0u16; 8];
    for (i, pair) in o.chunks(2).enumerate() {
        w[i] = u16::from_be_bytes([pair[0], pair[1]]);
    }
    w
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
