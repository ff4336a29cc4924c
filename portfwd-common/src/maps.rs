//! Map and program names, map sizes, keys and values.
//!
//! Each type here is a fixed-layout struct shared with the kernel. Padding is explicit and must
//! be zero, so that a key built in userspace hashes the same as one built in the kernel.

/// The forwarding table: published (host address, port, protocol) -> target. Single ports
/// only: the exact-match fast path.
pub const FORWARDS: &str = "PF_FORWARDS";
/// Published port ranges: an LPM trie keyed by (protocol, host address, port prefix), consulted
/// only when [`FORWARDS`] has no entry. A range is stored as the few prefixes that cover it
/// exactly ([`port_prefixes`], at most 30), each valued with where the range starts.
pub const RANGES: &str = "PF_RANGES";
/// Source allowlists: an LPM trie keyed by (forward's stats slot, generation, source prefix).
/// Consulted only for forwards whose value carries [`FWD_ALLOWLIST`].
pub const ALLOW: &str = "PF_ALLOW";
/// The active generation of the forwarding state: a one-element array holding 0 or 1.
///
/// Every key of [`FORWARDS`], [`RANGES`] and [`ALLOW`] (and their IPv6 twins) carries the
/// generation it belongs to, and the datapath reads this array once per packet and looks up
/// only that generation. A reload writes the complete new state under the other generation,
/// then switches this one value, so every packet is translated by the old state or the new
/// one, never a mix (see [`GENERATIONS`]).
pub const GENERATION: &str = "PF_GEN";
/// Reverse translations of live flows, keyed as the target's replies look on the wire. Every flow
/// starts here; what a flood of new flows fills (and an LRU evicts from).
pub const FLOWS: &str = "PF_FLOWS";
/// The established flows, moved here from [`FLOWS`] once answered beyond a handshake (see
/// [`FLOW_REPLIED`]): a flood of new flows, which never gets that far, cannot evict them.
pub const FLOWS_EST: &str = "PF_FLOWS_EST";
/// How many entries the datapath inserted into each flow table, per CPU, indexed by
/// [`FlowTable`]: what the flow tables' fill level and evictions are derived from.
pub const FLOW_INSERTS: &str = "PF_FLOW_INSERTS";
/// The host's own IPv4 addresses; a packet is "for the host" when its destination is here.
pub const HOST_ADDRS: &str = "PF_HOST_ADDRS";
/// Flows that left the host from a published port (its own connections, and containers'
/// connections masqueraded onto such a port), keyed as their replies look on the wire
/// ([`FlowKeyOf`]), valued with when the flow was last seen leaving (monotonic seconds, see
/// [`local_flow_timeout`]). Written by the tc egress program; a packet to a published port found
/// here (and not expired) is a reply, passed to the stack rather than forwarded.
pub const LOCAL_FLOWS: &str = "PF_LOCAL_FLOWS";

/// The IPv6 twins of the maps above. Each address family has its own maps, with the same key
/// and value types instantiated at [`Ipv6Words`] instead of `u32` (see [`Addr`]); the stats
/// slots ([`FORWARD_STATS`]) are shared, so a slot names one forward of either family.
pub const FORWARDS6: &str = "PF_FORWARDS6";
pub const RANGES6: &str = "PF_RANGES6";
pub const ALLOW6: &str = "PF_ALLOW6";
pub const FLOWS6: &str = "PF_FLOWS6";
pub const FLOWS6_EST: &str = "PF_FLOWS6_EST";
pub const LOCAL_FLOWS6: &str = "PF_LOCAL_FLOWS6";
/// The host's own IPv6 addresses (link-local ones excluded: they are scoped to a link).
pub const HOST_ADDRS6: &str = "PF_HOST_ADDRS6";
/// Interfaces on which published ports are exposed (ifindex -> [`IFACE_EXPOSE`] flags).
pub const IFACES: &str = "PF_IFACES";
/// Per-forward counters, indexed by [`ForwardValue::stats_slot`] (per CPU).
pub const FORWARD_STATS: &str = "PF_FWD_STATS";
/// Counters of every verdict the datapath takes, per hook, indexed by
/// `hook * Reason::COUNT + reason` (see [`Hook`]), per CPU.
pub const VERDICTS: &str = "PF_VERDICTS";
/// Egress interfaces that accept XDP_REDIRECT frames (ifindex -> ifindex, a DEVMAP_HASH). XDP
/// finishes a translation only towards these; anything else is passed untouched to tc.
pub const XDP_EGRESS: &str = "PF_XDP_EGRESS";

/// The rate limit of the ICMP "too big" answers the datapath builds (see [`IcmpBudget`]); per
/// CPU, one slot.
pub const ICMP_BUDGET: &str = "PF_ICMP_BUDGET";

/// A token bucket: [`IcmpBudget::BURST`] answers at once, then one more every
/// [`IcmpBudget::REFILL_NS`] (1000 per second), per CPU, as the kernel's own ICMP limits
/// (`icmp_msgs_burst` 50, `icmp_msgs_per_sec` 1000). The all-zero value is a full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcmpBudget {
    /// When `tokens` was last refilled (`bpf_ktime_get_ns`).
    pub stamp_ns: u64,
    /// Answers that may still be sent. Refilled (up to the burst) only while below the burst,
    /// so a test may set it far above to lift the limit.
    pub tokens: u64,
}

impl IcmpBudget {
    pub const BURST: u64 = 50;
    pub const REFILL_NS: u64 = 1_000_000;
}

/// The hooks, for the per-hook verdict counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tc = 0,
    Xdp = 1,
}

impl Hook {
    pub const COUNT: u32 = 2;
    pub const ALL: [Hook; 2] = [Hook::Tc, Hook::Xdp];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::Tc => "tc",
            Hook::Xdp => "xdp",
        }
    }
}

/// The programs in the eBPF object. A program's name is the name of its function in
/// `portfwd-ebpf`, which is how the loader finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// The datapath at tc ingress, on every interface served.
    TcIngress,
    /// The datapath at XDP, in front of tc where the driver supports it natively.
    Xdp,
    /// tc egress, on every interface served: remembers the flows leaving the host from a
    /// published port ([`LOCAL_FLOWS`]).
    TcEgress,
    // The socket hooks (cgroup `sock_addr`): host-local access to published ports.
    Connect4,
    Sendmsg4,
    Recvmsg4,
    Getpeername4,
    Connect6,
    Sendmsg6,
    Recvmsg6,
    Getpeername6,
}

impl Program {
    /// Every program in the object.
    pub const ALL: [Program; 11] = [
        Program::TcIngress,
        Program::Xdp,
        Program::TcEgress,
        Program::Connect4,
        Program::Sendmsg4,
        Program::Recvmsg4,
        Program::Getpeername4,
        Program::Connect6,
        Program::Sendmsg6,
        Program::Recvmsg6,
        Program::Getpeername6,
    ];

    /// The socket hooks, attached together to the cgroup v2 root.
    pub const SOCKET_HOOKS: [Program; 8] = [
        Program::Connect4,
        Program::Sendmsg4,
        Program::Recvmsg4,
        Program::Getpeername4,
        Program::Connect6,
        Program::Sendmsg6,
        Program::Recvmsg6,
        Program::Getpeername6,
    ];

    /// The program's name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Program::TcIngress => "portfwd_tc_ingress",
            Program::Xdp => "portfwd_xdp",
            Program::TcEgress => "portfwd_tc_egress",
            Program::Connect4 => "portfwd_connect4",
            Program::Sendmsg4 => "portfwd_sendmsg4",
            Program::Recvmsg4 => "portfwd_recvmsg4",
            Program::Getpeername4 => "portfwd_getpeername4",
            Program::Connect6 => "portfwd_connect6",
            Program::Sendmsg6 => "portfwd_sendmsg6",
            Program::Recvmsg6 => "portfwd_recvmsg6",
            Program::Getpeername6 => "portfwd_getpeername6",
        }
    }
}

impl core::fmt::Display for Program {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

pub const MAX_FORWARDS: u32 = 16_384;
/// Generations of the forwarding state ([`GENERATION`]): the active one, and the one a reload
/// writes before switching to it. The forwarding tables hold room for both.
pub const GENERATIONS: u32 = 2;
pub const MAX_FLOWS: u32 = 131_072;
/// IPv6 flows take 1.5 times the memory of IPv4 ones (144.8 against 96.8 bytes of kernel
/// memory per entry); half as many are kept. Both are the defaults `max_flows:` overrides.
pub const MAX_FLOWS6: u32 = 65_536;
/// Established flows ([`FLOWS_EST`], [`FLOWS6_EST`]): as many as new ones.
pub const MAX_EST_FLOWS: u32 = MAX_FLOWS;
pub const MAX_EST_FLOWS6: u32 = MAX_FLOWS6;

/// How long, in seconds, an entry of [`LOCAL_FLOWS`] counts after its flow was last seen
/// leaving: netfilter's conntrack timeouts for an established flow (`nf_conntrack_udp_timeout_stream`,
/// `nf_conntrack_tcp_timeout_established`), so that a reply is the host's exactly as long as
/// conntrack would still know its flow. (A new TCP connection is never taken for a reply: a SYN
/// skips the check.) The values are the monotonic clock in seconds (`bpf_ktime_get_ns`,
/// `CLOCK_MONOTONIC`).
pub const fn local_flow_timeout(proto: u8) -> u32 {
    if proto == crate::proto::TCP {
        432_000
    } else {
        120
    }
}

/// Entries of [`LOCAL_FLOWS`] (and of [`LOCAL_FLOWS6`]): the host's own flows from published
/// ports at once, and containers' flows masqueraded onto one. An LRU map: the least recently
/// seen is forgotten first.
pub const MAX_LOCAL_FLOWS: u32 = 16_384;
pub const MAX_HOST_ADDRS: u32 = 1_024;
pub const MAX_IFACES: u32 = 1_024;
/// Port-range prefixes of one generation ([`RANGES`] holds [`GENERATIONS`] times as many). A
/// range takes at most 30.
pub const MAX_RANGE_PREFIXES: u32 = 16_384;
/// Allowlist prefixes over every forward of one generation ([`ALLOW`] holds [`GENERATIONS`]
/// times as many).
pub const MAX_ALLOW_PREFIXES: u32 = 16_384;

/// [`ForwardValue::flags`] / [`RangeValue::flags`]: the forward has a source allowlist in
/// [`ALLOW`]; sources outside it are dropped.
pub const FWD_ALLOWLIST: u32 = 1;

/// `IFACES` flag: published ports are reachable through this interface. Interfaces without it
/// still translate replies of flows that entered elsewhere.
pub const IFACE_EXPOSE: u32 = 1;
/// `IFACES` flag: the interface is a veth bridge port listed in [`BRIDGE_PORTS`], where the
/// datapath learns the MACs behind it. Carried here so that every other interface costs no
/// [`BRIDGE_PORTS`] lookup per packet.
pub const IFACE_BRIDGE_PORT: u32 = 2;

/// An IP address as map keys and values hold it: exactly the bytes on the wire, read as native
/// integers (`u32` for IPv4, four `u32` for IPv6), so the datapath compares and copies them
/// without conversion. Userspace converts at one boundary ([`ipv6_words`], `u32::from_ne_bytes`).
pub trait Addr: Copy + Eq + Default + 'static {
    /// Address length in bits, for the LPM tries.
    const BITS: u32;
}

impl Addr for u32 {
    const BITS: u32 = 32;
}

/// An IPv6 address as map keys hold it: its 16 wire bytes as four native `u32`.
pub type Ipv6Words = [u32; 4];

impl Addr for Ipv6Words {
    const BITS: u32 = 128;
}

/// The map form of an IPv6 address's octets.
pub fn ipv6_words(octets: [u8; 16]) -> Ipv6Words {
    let w = |i: usize| u32::from_ne_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// The octets of an IPv6 address in map form.
pub fn ipv6_octets(words: Ipv6Words) -> [u8; 16] {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    o
}

/// Veth bridge ports (host-side ends of containers' veth pairs): port ifindex -> the ifindex of
/// the bridge it is enslaved to. Written by userspace from netlink.
pub const BRIDGE_PORTS: &str = "PF_BRIDGE_PORTS";
/// MAC addresses seen arriving on a bridge port (as a bridge learns them): [`MacKey`] ->
/// [`PortEntry`]. Lets a translated packet skip the bridge and go straight into the container.
pub const PORT_MACS: &str = "PF_PORT_MACS";
pub const MAX_PORT_MACS: u32 = 8_192;

/// Key of [`PORT_MACS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of [`PORT_MACS`]: the bridge port a MAC was seen on, and that port's bridge.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortEntry {
    pub port: u32,
    pub bridge: u32,
}

/// Key of the forwarding table.
///
/// `addr_be == 0` means "any of the host's addresses" (Docker's `-p 8080:80`); a non-zero address
/// is the host address the forward is bound to (`-p 192.0.2.1:8080:80`). `generation` is
/// the generation the entry belongs to ([`GENERATION`]); it sits where older versions had a zero
/// padding byte, so their pinned entries read as generation 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ForwardKeyOf<A> {
    pub addr_be: A,
    pub port_be: u16,
    pub proto: u8,
    pub generation: u8,
}

pub type ForwardKey = ForwardKeyOf<u32>;
pub type Forward6Key = ForwardKeyOf<Ipv6Words>;

/// Value of the forwarding table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardValueOf<A> {
    pub target_addr_be: A,
    pub target_port_be: u16,
    /// The generation the forward was found in: its allowlist is looked up in the same one.
    pub generation: u8,
    pub _pad: u8,
    /// Index into [`FORWARD_STATS`]; also the forward's identity in [`ALLOW`].
    pub stats_slot: u32,
    /// [`FWD_ALLOWLIST`] or 0.
    pub flags: u32,
}

pub type ForwardValue = ForwardValueOf<u32>;
pub type Forward6Value = ForwardValueOf<Ipv6Words>;

/// The data part of a [`RANGES`] key. The fields are in match order (an LPM trie matches bits
/// from the first byte on): protocol, generation ([`GENERATION`]), padding (always zero), host
/// address (0 = every host address), then the port, big-endian so that its bits come most
/// significant first. The prefix length is [`RangeKey::FIXED_BITS`] plus the number of port
/// bits matched (0-16).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RangeKeyOf<A> {
    pub proto: u8,
    pub generation: u8,
    pub _pad: [u8; 2],
    pub addr_be: A,
    pub port_be: u16,
    pub _pad2: [u8; 2],
}

pub type RangeKey = RangeKeyOf<u32>;
pub type Range6Key = RangeKeyOf<Ipv6Words>;

impl<A: Addr> RangeKeyOf<A> {
    /// Bits before the port: protocol, generation, padding and address, always matched in full.
    pub const FIXED_BITS: u32 = 32 + A::BITS;
    /// A lookup key matches every bit of the port.
    pub const LOOKUP_BITS: u32 = Self::FIXED_BITS + 16;
}

/// Value of [`RANGES`]: one forwarded range, repeated in each of its prefixes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RangeValueOf<A> {
    pub target_addr_be: A,
    /// The target port of the range's first host port.
    pub target_port_be: u16,
    /// The range's first host port.
    pub start_port_be: u16,
    pub stats_slot: u32,
    /// [`FWD_ALLOWLIST`] or 0.
    pub flags: u32,
}

pub type RangeValue = RangeValueOf<u32>;
pub type Range6Value = RangeValueOf<Ipv6Words>;

impl<A: Addr> RangeValueOf<A> {
    /// The forward for host port `port_be` of this range, found in generation `generation`: ports map
    /// one by one, so the target port is `target_port + (port - start_port)`. The arithmetic
    /// needs host order; this is the one place the datapath converts a port, and it converts
    /// back at once.
    #[inline(always)]
    pub fn forward_for(&self, port_be: u16, generation: u8) -> ForwardValueOf<A> {
        let offset = u16::from_be(port_be).wrapping_sub(u16::from_be(self.start_port_be));
        ForwardValueOf {
            target_addr_be: self.target_addr_be,
            target_port_be: u16::from_be(self.target_port_be)
                .wrapping_add(offset)
                .to_be(),
            generation,
            _pad: 0,
            stats_slot: self.stats_slot,
            flags: self.flags,
        }
    }
}

/// The data part of an [`ALLOW`] key: the forward's stats slot and the generation
/// ([`GENERATION`]) its allowlist belongs to (matched in full, so their byte order does not
/// matter; native), then the source address in wire order. The prefix length is 32 plus the
/// source prefix length. The slot is 16 bits ([`MAX_FORWARDS`] fits) and the generation takes
/// the byte after it, where older versions had the zero upper half of a 32-bit slot: their
/// pinned entries read as generation 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowKeyOf<A> {
    pub slot: u16,
    pub generation: u8,
    pub _pad: u8,
    pub saddr_be: A,
}

const _: () = assert!(
    MAX_FORWARDS <= 1 << 16,
    "a stats slot fits an allowlist key"
);

pub type AllowKey = AllowKeyOf<u32>;
pub type Allow6Key = AllowKeyOf<Ipv6Words>;

impl<A> AllowKeyOf<A> {
    /// Bits before the source address.
    pub const FIXED_BITS: u32 = 32;
}

/// The port prefixes that cover `start..=end` exactly, fewest first-to-last: each is
/// `(first port, bits matched)`, covering `2^(16 - bits)` ports. At most 30 for any range.
pub fn port_prefixes(start: u16, end: u16) -> PortPrefixes {
    PortPrefixes {
        next: u32::from(start),
        end: u32::from(end),
    }
}

/// Iterator of [`port_prefixes`].
#[derive(Clone, Debug)]
pub struct PortPrefixes {
    next: u32,
    end: u32,
}

impl Iterator for PortPrefixes {
    type Item = (u16, u8);

    fn next(&mut self) -> Option<(u16, u8)> {
        if self.next > self.end {
            return None;
        }
        let lo = self.next;
        // The largest aligned block starting at `lo` (port 0 starts a block of 65536)...
        let mut size: u32 = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        // ...that does not run past the end.
        while lo + size - 1 > self.end {
            size >>= 1;
        }
        self.next = lo + size;
        Some((lo as u16, 16 - size.trailing_zeros() as u8))
    }
}

/// A flow as the target's replies carry it: source = target, destination = the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKeyOf<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

pub type FlowKey = FlowKeyOf<u32>;
pub type Flow6Key = FlowKeyOf<Ipv6Words>;

/// What a reply's source is translated back to: the address and port the client used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValueOf<A> {
    pub orig_addr_be: A,
    pub orig_port_be: u16,
    /// [`FLOW_REPLIED`], set by the datapath in [`FLOWS`]; 0 where userspace writes a flow.
    pub flags: u16,
    pub stats_slot: u32,
    /// Hairpin to itself: the caller (the target itself) was translated to `orig_addr_be` on the
    /// way in, so replies also get their destination translated back to this address. 0 for
    /// every other flow, whose replies keep their destination.
    pub client_addr_be: A,
}

pub type FlowValue = FlowValueOf<u32>;

impl<A: PartialEq> FlowValueOf<A> {
    /// Whether both translate replies alike (their flags aside).
    pub fn translates_as(&self, other: &Self) -> bool {
        self.orig_addr_be == other.orig_addr_be
            && self.orig_port_be == other.orig_port_be
            && self.stats_slot == other.stats_slot
            && self.client_addr_be == other.client_addr_be
    }
}

/// [`FlowValueOf::flags`]: the target has answered this UDP (or other non-TCP) flow once; its
/// next answer makes it established ([`FLOWS_EST`]). A TCP flow needs no flag: the target's first
/// segment after the handshake (ACK set, neither SYN nor RST) makes it established.
pub const FLOW_REPLIED: u16 = 1;

crate::counters! {
    /// The flow tables, each family's two, as [`FLOW_INSERTS`] indexes them. Each is an LRU
    /// hash with a list per CPU (`BPF_F_NO_COMMON_LRU`): each CPU holds at most its share
    /// (capacity / possible CPUs) of the entries it inserted, and evicts its own least recently
    /// used entry only when its share is full. Nothing else removes flows, so a CPU's inserts,
    /// capped at its share, are its entries, and what it inserted beyond its share was evicted.
    pub enum FlowTable {
        /// IPv4 flows not established yet ([`FLOWS`]).
        New = 0 => "PF_FLOWS",
        /// Established IPv4 flows ([`FLOWS_EST`]).
        Est = 1 => "PF_FLOWS_EST",
        /// IPv6 flows not established yet.
        New6 = 2 => "PF_FLOWS6",
        /// Established IPv6 flows.
        Est6 = 3 => "PF_FLOWS6_EST",
    }
}
pub type Flow6Value = FlowValueOf<Ipv6Words>;

/// The fragmented datagrams portfwd has seen the first fragment of, keyed as their fragments
/// arrive (source, destination, IP identification, protocol): how every later fragment is
/// translated, since only the first fragment carries the ports (as Cilium's `IPV4_FRAG_DATAGRAMS`).
/// A first fragment that was not translated is remembered too ([`FRAG_NOT_OURS`]), so that a
/// later fragment without any entry is known to have arrived before its first one, and so that a
/// stale translation is never applied to a new datagram reusing the identification.
pub const FRAGS: &str = "PF_FRAGS";
pub const FRAGS6: &str = "PF_FRAGS6";
/// Datagrams in flight at once. A datagram's entry is needed only while its fragments arrive
/// (milliseconds); the LRU map recycles the oldest.
pub const MAX_FRAGS: u32 = 8_192;

/// [`FragValueOf::flags`]: the datagram is a reply (target -> client), for the per-forward
/// counters.
pub const FRAG_TO_CLIENT: u32 = 1;
/// [`FragValueOf::flags`]: the first fragment was not translated (not for a published port and
/// not a reply): later fragments pass untouched, as it did.
pub const FRAG_NOT_OURS: u32 = 2;

/// Key of [`FRAGS`]: a datagram's fragments as they arrive. `id_be` is the IP identification as
/// on the wire read as a native `u32` (IPv4: its 16 bits read as a native `u16`, zero-extended;
/// IPv6: the fragment header's 32 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKeyOf<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub id_be: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

pub type FragKey = FragKeyOf<u32>;
pub type Frag6Key = FragKeyOf<Ipv6Words>;

/// Value of [`FRAGS`]: the addresses and ports the first fragment was sent with (later
/// fragments take its addresses; the ports are for their FIB lookup, which must route them as
/// the first one), and its forward.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValueOf<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub stats_slot: u32,
    /// [`FRAG_TO_CLIENT`], [`FRAG_NOT_OURS`] or 0.
    pub flags: u32,
}

pub type FragValue = FragValueOf<u32>;
pub type Frag6Value = FragValueOf<Ipv6Words>;

/// Per-forward counters. `to_target` counts client -> target packets, `to_client` the replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardStats {
    pub to_target_packets: u64,
    pub to_target_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    /// Flows first seen (a TCP SYN, or a UDP packet with no reverse entry yet).
    pub new_flows: u64,
}

impl ForwardStats {
    /// Sum of per-CPU values.
    pub fn add(&mut self, other: &Self) {
        self.to_target_packets += other.to_target_packets;
        self.to_target_bytes += other.to_target_bytes;
        self.to_client_packets += other.to_client_packets;
        self.to_client_bytes += other.to_client_bytes;
        self.new_flows += other.new_flows;
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is `#[repr(C)]`, made only of integers, with explicit padding
    // fields, so any bit pattern is valid and there are no uninitialised bytes.
    // The generic ones are instantiated only at `u32` and `Ipv6Words` (the `Addr` types), both
    // 4-byte aligned, so every field after the address stays aligned with no implicit padding
    // (sizes checked in the tests below).
    unsafe impl<A: Addr> aya::Pod for ForwardKeyOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for ForwardValueOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for FlowKeyOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for FlowValueOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for FragKeyOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for FragValueOf<A> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ForwardStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IcmpBudget {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for RangeKeyOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for RangeValueOf<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for AllowKeyOf<A> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MacKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ForwardKey>(), 8);
        assert_eq!(size_of::<ForwardValue>(), 16);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowValue>(), 16);
        assert_eq!(size_of::<ForwardStats>(), 40);
        assert_eq!(size_of::<RangeKey>(), 12);
        assert_eq!(size_of::<RangeValue>(), 16);
        assert_eq!(size_of::<AllowKey>(), 8);
        assert_eq!(size_of::<Forward6Key>(), 20);
        assert_eq!(size_of::<Forward6Value>(), 28);
        assert_eq!(size_of::<Flow6Key>(), 40);
        assert_eq!(size_of::<Flow6Value>(), 40);
        assert_eq!(size_of::<Range6Key>(), 24);
        assert_eq!(size_of::<Range6Value>(), 28);
        assert_eq!(size_of::<Allow6Key>(), 20);
        assert_eq!(size_of::<FragKey>(), 16);
        assert_eq!(size_of::<FragValue>(), 20);
        assert_eq!(size_of::<Frag6Key>(), 40);
        assert_eq!(size_of::<Frag6Value>(), 44);
        assert_eq!(RangeKey::FIXED_BITS, 64);
        assert_eq!(Range6Key::FIXED_BITS, 160);
    }

    #[test]
    fn ipv6_words_keep_wire_bytes() {
        let o: [u8; 16] = [0xfd, 0, 0, 0x17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let w = ipv6_words(o);
        assert_eq!(ipv6_octets(w), o);
        // The same bytes as the wire: the first word's first byte is the address's first byte.
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0, 0, 0x17]);
    }

    /// Every port of `start..=end` is covered by exactly one prefix, and nothing outside it.
    fn check_cover(start: u16, end: u16) -> usize {
        let prefixes: [(u16, u8); 32] = {
            let mut a = [(0u16, 0u8); 32];
            for (slot, p) in a.iter_mut().zip(port_prefixes(start, end)) {
                *slot = p;
            }
            a
        };
        let n = port_prefixes(start, end).count();
        assert!(n <= 30, "{start}-{end}: {n} prefixes");
        let covers = |port: u16| {
            prefixes[..n]
                .iter()
                .filter(|(p, bits)| {
                    let mask = if *bits == 0 {
                        0
                    } else {
                        u16::MAX << (16 - bits)
                    };
                    port & mask == *p && p & !mask == 0
                })
                .count()
        };
        for port in 0..=u16::MAX {
            let want = usize::from(port >= start && port <= end);
            assert_eq!(covers(port), want, "{start}-{end}: port {port}");
        }
        n
    }

    #[test]
    fn port_prefixes_cover_ranges_exactly() {
        assert_eq!(check_cover(8080, 8080), 1);
        assert_eq!(check_cover(8000, 8010), 3);
        assert_eq!(check_cover(1, 65535), 16);
        assert_eq!(check_cover(0, 65535), 1);
        assert_eq!(check_cover(1, 65534), 30);
        assert_eq!(check_cover(10000, 19999), check_cover(10000, 19999));
        check_cover(65535, 65535);
        check_cover(32767, 32768);
    }

    #[test]
    fn range_values_map_port_by_port() {
        let v = RangeValue {
            target_addr_be: 1,
            target_port_be: 9000u16.to_be(),
            start_port_be: 8000u16.to_be(),
            stats_slot: 7,
            flags: FWD_ALLOWLIST,
        };
        let f = v.forward_for(8005u16.to_be(), 1);
        assert_eq!(u16::from_be(f.target_port_be), 9005);
        assert_eq!(
            (f.target_addr_be, f.stats_slot, f.flags, f.generation),
            (1, 7, FWD_ALLOWLIST, 1)
        );
        let down = RangeValue {
            target_port_be: 100u16.to_be(),
            ..v
        };
        assert_eq!(
            u16::from_be(down.forward_for(8010u16.to_be(), 0).target_port_be),
            110
        );
    }
}
