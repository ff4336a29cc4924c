//! What the model reads: the maps and the routing table ([`World`]), and what it writes back
//! (a [`FlowEntry`]).

use core::net::IpAddr;

use portfwd_common::maps::{
    Allow6Key, AllowKey, Flow6Key, Flow6Value, FlowKey, FlowValue, Forward6Key, Forward6Value,
    ForwardKey, ForwardValue, Frag6Key, Frag6Value, FragKey, FragValue, Ipv6Words, Range6Key,
    Range6Value, RangeKey, RangeValue,
};

/// The maps and the routing table, as the datapath sees them. Each IPv4 map has an IPv6 twin
/// (`..6`), with keys and values in map form (wire bytes as native words).
pub trait World {
    /// `PF_IFACES`: flags of an interface, if known.
    fn iface_flags(&self, ifindex: u32) -> Option<u32>;
    /// `PF_HOST_ADDRS`: whether `addr_be` (wire order) is one of the host's addresses.
    fn is_host_addr(&self, addr_be: u32) -> bool;
    /// `PF_GEN`: the active generation of the forwarding tables (0 or 1). Forward, range and
    /// allowlist keys carry it; entries of the other generation are never found.
    fn generation(&self) -> u8;
    /// `PF_FORWARDS`.
    fn forward(&self, key: &ForwardKey) -> Option<ForwardValue>;
    /// `PF_RANGES`, looked up with every bit of `key` (the entry with the longest matching
    /// prefix).
    fn range(&self, key: &RangeKey) -> Option<RangeValue>;
    /// `PF_ALLOW`, looked up with every bit of `key`: whether some prefix in the trie matches.
    fn allowed(&self, key: &AllowKey) -> bool;
    /// `PF_FLOWS`.
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// `PF_LOCAL_FLOWS`: whether a flow that left the host from a published port has replies
    /// keyed `key`.
    fn local_flow(&self, key: &FlowKey) -> bool;
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
    /// `PF_FRAGS`.
    fn frag(&self, key: &FragKey) -> Option<FragValue>;
    /// `PF_FRAGS6`.
    fn frag6(&self, key: &Frag6Key) -> Option<Frag6Value>;
    /// `PF_LOCAL_FLOWS6`.
    fn local_flow6(&self, key: &Flow6Key) -> bool;
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

/// A flow entry, in the flow map of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEntry {
    /// `PF_FLOWS`.
    V4(FlowKey, FlowValue),
    /// `PF_FLOWS6`.
    V6(Flow6Key, Flow6Value),
}

/// A fragment table entry, in the fragment map of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragEntry {
    /// `PF_FRAGS`.
    V4(FragKey, FragValue),
    /// `PF_FRAGS6`.
    V6(Frag6Key, Frag6Value),
}
