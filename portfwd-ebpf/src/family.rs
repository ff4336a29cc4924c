//! The address families. The datapath (`parse`, `service`, `flow`, `rewrite`, `xmit`, `nat`,
//! `icmp`) is written once, generic over [`Family`]; what differs between IPv4 and IPv6 is here:
//!
//! | | [`Ipv4`] | [`Ipv6`] |
//! |---|---|---|
//! | address | `u32` | [`Ipv6Words`] (16 wire bytes as four `u32`) |
//! | maps | `PF_FORWARDS`, ... | `PF_FORWARDS6`, ... |
//! | header | IHL, options, total length, fragment bits | fixed 40 bytes, payload length, a fragment header at most |
//! | fragment identification | 16 bits in the header | 32 bits in the fragment header |
//! | later fragment's address rewrite | header checksum | no checksum (`skb->csum` kept, tc) |
//! | address rewrite | IP header checksum + L4 pseudo-header | L4 pseudo-header only, word by word |
//! | router's part | TTL - 1 with the header checksum | hop limit - 1, no checksum |
//! | loopback | 127.0.0.0/8 | ::1 |
//! | errors | ICMP (no pseudo-header) | ICMPv6 (pseudo-header) |
//! | FIB lookup | `AF_INET`, TOS | `AF_INET6`, flow information |
//!
//! The family is chosen once per packet, on the ethertype (`datapath::process`).
use aya_ebpf::{
    bindings::bpf_fib_lookup,
    maps::{HashMap, LpmTrie, LruHashMap},
};
use network_types::ip::Ipv4Hdr;
use portfwd_common::{
    checksum,
    maps::{
        Addr, AllowKeyOf, FlowKeyOf, FlowTable, FlowValueOf, ForwardKeyOf, ForwardValueOf,
        FragKeyOf, FragValueOf, Ipv6Words, RangeKeyOf, RangeValueOf,
    },
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    maps::{
        ALLOW, ALLOW6, FLOWS, FLOWS_EST, FLOWS6, FLOWS6_EST, FORWARDS, FORWARDS6, FRAGS, FRAGS6,
        HOST_ADDRS, HOST_ADDRS6, RANGES, RANGES6,
    },
    types::{Fragment, IpL4, Tuple},
};

/// An address family: its address type, maps, header layout and checksum rules.
pub trait Family {
    type Addr: Addr;
    /// The protocol number of its ICMP.
    const ICMP: u8;
    /// Whether the IP header has a checksum (IPv4). Without one (IPv6), the ICMP checksum covers
    /// a pseudo-header instead, and a UDP checksum of 0 is invalid.
    const IP_CSUM: bool;
    /// A UDP checksum of 0 is invalid (IPv6) rather than "no checksum" (IPv4).
    const UDP_CSUM_REQUIRED: bool = !Self::IP_CSUM;
    /// Offsets of the source and destination addresses in the IP header.
    const SADDR: usize;
    const DADDR: usize;
    /// Its two flow tables, as `PF_FLOW_INSERTS` counts them: new flows, established ones.
    const FLOW_TABLES: [FlowTable; 2];

    fn forwards() -> &'static HashMap<ForwardKeyOf<Self::Addr>, ForwardValueOf<Self::Addr>>;
    fn ranges() -> &'static LpmTrie<RangeKeyOf<Self::Addr>, RangeValueOf<Self::Addr>>;
    fn allow() -> &'static LpmTrie<AllowKeyOf<Self::Addr>, u32>;
    fn flows() -> &'static LruHashMap<FlowKeyOf<Self::Addr>, FlowValueOf<Self::Addr>>;
    fn flows_est() -> &'static LruHashMap<FlowKeyOf<Self::Addr>, FlowValueOf<Self::Addr>>;
    fn host_addrs() -> &'static HashMap<Self::Addr, u32>;
    fn frags() -> &'static LruHashMap<FragKeyOf<Self::Addr>, FragValueOf<Self::Addr>>;

    /// ICMP types that quote the packet they are about (errors).
    fn is_icmp_error(icmp_type: u8) -> bool;

    /// Parses the IP header at `l3_off` (see `parse` for `end` and `whole`): every
    /// field of [`IpL4`] but the ports (0).
    fn header<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        end: usize,
        whole: bool,
    ) -> Result<IpL4<Self::Addr>, Reason>;

    /// Replaces the address at `off` (in the IP header at `l3_off`) from `old` to `new`,
    /// keeping the IP header checksum (IPv4) right and, when given, updating the checksum at
    /// `csum.0` with `l4_csum_replace` flags `csum.1` (size excluded) for the change.
    fn set_addr<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        off: usize,
        old: Self::Addr,
        new: Self::Addr,
        csum: Option<(usize, u64)>,
    ) -> Result<(), i64>;

    /// The IP identification of a fragment (`pkt.fragment` is not `No`), as [`FragKeyOf`] keeps
    /// it. `None` only if it cannot be read, which parsing has already ruled out.
    fn frag_id<C: Ctx>(ctx: &C, pkt: &IpL4<Self::Addr>) -> Option<u32>;

    /// Replaces the address at `off` from `old` to `new` in a packet without an L4 header (a
    /// later fragment): the IPv4 header checksum compensates it; over IPv6 nothing does.
    fn set_addr_only<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        off: usize,
        old: Self::Addr,
        new: Self::Addr,
    ) -> Result<(), i64>;

    /// The router's part on the IP header: TTL or hop limit - 1 (checked above 1 by the caller).
    fn hop<C: Ctx>(ctx: &C, pkt: &IpL4<Self::Addr>) -> Result<(), i64>;

    /// Fills the family's fields of a FIB lookup for `pkt` translated to `t`.
    fn fib(params: &mut bpf_fib_lookup, pkt: &IpL4<Self::Addr>, t: &Tuple<Self::Addr>);

    /// A checksum after an address change, in software (RFC 1624), for checksums no helper
    /// updates (the L4 checksum of a packet quoted in an ICMP error). `udp`: 0 stays 0, a result
    /// of 0 is 0xffff.
    fn csum_replace_addr(csum: u16, old: Self::Addr, new: Self::Addr, udp: bool) -> u16;
}

pub enum Ipv4 {}
pub enum Ipv6 {}

const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The map accessors of a family, over its own maps (one set of maps per family).
macro_rules! family_maps {
    (
        $addr:ty, $forwards:ident, $ranges:ident, $allow:ident, $flows:ident, $flows_est:ident,
        $hosts:ident, $frags:ident
    ) => {
        #[inline(always)]
        fn forwards() -> &'static HashMap<ForwardKeyOf<$addr>, ForwardValueOf<$addr>> {
            &$forwards
        }
        #[inline(always)]
        fn ranges() -> &'static LpmTrie<RangeKeyOf<$addr>, RangeValueOf<$addr>> {
            &$ranges
        }
        #[inline(always)]
        fn allow() -> &'static LpmTrie<AllowKeyOf<$addr>, u32> {
            &$allow
        }
        #[inline(always)]
        fn flows() -> &'static LruHashMap<FlowKeyOf<$addr>, FlowValueOf<$addr>> {
            &$flows
        }
        #[inline(always)]
        fn flows_est() -> &'static LruHashMap<FlowKeyOf<$addr>, FlowValueOf<$addr>> {
            &$flows_est
        }
        #[inline(always)]
        fn host_addrs() -> &'static HashMap<$addr, u32> {
            &$hosts
        }
        #[inline(always)]
        fn frags() -> &'static LruHashMap<FragKeyOf<$addr>, FragValueOf<$addr>> {
            &$frags
        }
    };
}

impl Family for Ipv4 {
    type Addr = u32;
    const ICMP: u8 = 1;
    const IP_CSUM: bool = true;
    const SADDR: usize = 12;
    const DADDR: usize = 16;
    const FLOW_TABLES: [FlowTable; 2] = [FlowTable::New, FlowTable::Est];

    family_maps!(
        u32, FORWARDS, RANGES, ALLOW, FLOWS, FLOWS_EST, HOST_ADDRS, FRAGS
    );

    #[inline(always)]
    fn is_icmp_error(icmp_type: u8) -> bool {
        // Destination unreachable, time exceeded, parameter problem.
        icmp_type == 3 || icmp_type == 11 || icmp_type == 12
    }

    #[inline(always)]
    fn header<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        end: usize,
        whole: bool,
    ) -> Result<IpL4<u32>, Reason> {
        let ip: Ipv4Hdr = ctx.read(l3_off).ok_or(Reason::PassMalformed)?;
        if ip.vihl >> 4 != 4 {
            return Err(Reason::PassMalformed);
        }
        let ihl_bytes = ((ip.vihl & 0x0f) as usize) * 4;
        if ihl_bytes < Ipv4Hdr::LEN {
            return Err(Reason::PassMalformed);
        }
        let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
        if tot_len < ihl_bytes || (whole && l3_off + tot_len > end) {
            return Err(Reason::PassMalformed);
        }
        if whole && ip.dst_addr[0] == 127 {
            return Err(Reason::DropLoopbackDst);
        }
        let frags = u16::from_be_bytes(ip.frags);
        // One test for a whole datagram; which fragment it is only when it is one.
        let fragment = if frags & (IP_MF | IP_OFFSET_MASK) == 0 {
            Fragment::No
        } else if frags & IP_OFFSET_MASK == 0 {
            Fragment::First
        } else if whole {
            Fragment::Later
        } else {
            // A quoted later fragment carries no ports.
            return Err(Reason::PassFragment);
        };
        Ok(IpL4 {
            l3_off,
            l4_off: l3_off + ihl_bytes,
            l3_end: l3_off + tot_len,
            proto: ip.proto,
            class: ip.tos as u32,
            ttl: ip.ttl,
            saddr: u32::from_ne_bytes(ip.src_addr),
            daddr: u32::from_ne_bytes(ip.dst_addr),
            sport: 0,
            dport: 0,
            ttl_proto_word: u16::from_ne_bytes([ip.ttl, ip.proto]),
            fragment,
        })
    }

    #[inline(always)]
    fn set_addr<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        off: usize,
        old: u32,
        new: u32,
        csum: Option<(usize, u64)>,
    ) -> Result<(), i64> {
        if let Some((csum_off, flags)) = csum {
            ctx.l4_csum_replace(csum_off, old as u64, new as u64, flags | 4)?;
        }
        ctx.l3_csum_replace(l3_off + IPV4_CSUM, old as u64, new as u64, 4)?;
        ctx.store(off, &new)
    }

    #[inline(always)]
    fn frag_id<C: Ctx>(ctx: &C, pkt: &IpL4<u32>) -> Option<u32> {
        let id: u16 = ctx.read(pkt.l3_off + IPV4_ID)?;
        Some(id as u32)
    }

    #[inline(always)]
    fn set_addr_only<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        off: usize,
        old: u32,
        new: u32,
    ) -> Result<(), i64> {
        Self::set_addr(ctx, l3_off, off, old, new, None)
    }

    #[inline(always)]
    fn hop<C: Ctx>(ctx: &C, pkt: &IpL4<u32>) -> Result<(), i64> {
        let ttl = pkt.ttl - 1;
        let new_word = u16::from_ne_bytes([ttl, pkt.proto]);
        ctx.l3_csum_replace(
            pkt.l3_off + IPV4_CSUM,
            pkt.ttl_proto_word as u64,
            new_word as u64,
            2,
        )?;
        ctx.store(pkt.l3_off + IPV4_TTL, &ttl)
    }

    #[inline(always)]
    fn fib(params: &mut bpf_fib_lookup, pkt: &IpL4<u32>, t: &Tuple<u32>) {
        params.family = AF_INET;
        params.__bindgen_anon_2.tos = pkt.class as u8;
        params.__bindgen_anon_3.ipv4_src = t.saddr;
        params.__bindgen_anon_4.ipv4_dst = t.daddr;
    }

    #[inline(always)]
    fn csum_replace_addr(csum: u16, old: u32, new: u32, udp: bool) -> u16 {
        if udp {
            checksum::udp_replace32(csum, old, new)
        } else {
            checksum::replace32(csum, old, new)
        }
    }
}

const IPV4_ID: usize = 4;
const IPV4_CSUM: usize = 10;
const IPV4_TTL: usize = 8;
const AF_INET: u8 = 2;

const IPV6_HDR_LEN: usize = 40;
const IPV6_HOP_LIMIT: usize = 7;
const IPV6_FRAG_HDR_LEN: usize = 8;
/// Offset of the identification in the fragment header.
const IPV6_FRAG_ID: usize = 4;
const NEXTHDR_FRAGMENT: u8 = 44;
/// Fragment header: offset (13 bits, 8-byte units) then 2 reserved bits and the M flag.
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
const IPV6_FRAG_MORE: u16 = 0x0001;
/// Traffic class and flow label: the low 28 bits of the header's first word (wire order).
const IPV6_FLOWINFO_MASK: u32 = u32::from_ne_bytes([0x0f, 0xff, 0xff, 0xff]);
const AF_INET6: u8 = 10;
/// ::1 in map form.
const IPV6_LOOPBACK: Ipv6Words = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// Extension headers (RFC 8200 4, IANA "IPv6 Extension Header Types") other than the fragment
/// header: hop-by-hop options, routing, destination options, authentication, mobility, HIP,
/// shim6, and the two experimental values.
#[inline(always)]
fn is_ipv6_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 60 | 51 | 135 | 139 | 140 | 253 | 254)
}

impl Family for Ipv6 {
    type Addr = Ipv6Words;
    const ICMP: u8 = 58;
    const IP_CSUM: bool = false;
    const SADDR: usize = 8;
    const DADDR: usize = 24;
    const FLOW_TABLES: [FlowTable; 2] = [FlowTable::New6, FlowTable::Est6];

    family_maps!(
        Ipv6Words,
        FORWARDS6,
        RANGES6,
        ALLOW6,
        FLOWS6,
        FLOWS6_EST,
        HOST_ADDRS6,
        FRAGS6
    );

    #[inline(always)]
    fn is_icmp_error(icmp_type: u8) -> bool {
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        (1..=4).contains(&icmp_type)
    }

    #[inline(always)]
    fn header<C: Ctx>(
        ctx: &C,
        l3_off: usize,
        end: usize,
        whole: bool,
    ) -> Result<IpL4<Ipv6Words>, Reason> {
        let ip: [u32; IPV6_HDR_LEN / 4] = ctx.read(l3_off).ok_or(Reason::PassMalformed)?;
        let [b0, _, _, _] = ip[0].to_ne_bytes();
        if b0 >> 4 != 6 {
            return Err(Reason::PassMalformed);
        }
        let [len_hi, len_lo, mut next, hop_limit] = ip[1].to_ne_bytes();
        let l3_end = l3_off + IPV6_HDR_LEN + u16::from_be_bytes([len_hi, len_lo]) as usize;
        if whole && l3_end > end {
            return Err(Reason::PassMalformed);
        }
        let saddr = [ip[2], ip[3], ip[4], ip[5]];
        let daddr = [ip[6], ip[7], ip[8], ip[9]];
        if whole && daddr == IPV6_LOOPBACK {
            return Err(Reason::DropLoopbackDst);
        }
        let mut l4_off = l3_off + IPV6_HDR_LEN;
        let mut fragment = Fragment::No;
        if next == NEXTHDR_FRAGMENT {
            let frag: [u8; IPV6_FRAG_HDR_LEN] = ctx.read(l4_off).ok_or(Reason::PassMalformed)?;
            if l4_off + IPV6_FRAG_HDR_LEN > l3_end {
                return Err(Reason::PassMalformed);
            }
            let bits = u16::from_be_bytes([frag[2], frag[3]]);
            if bits & IPV6_FRAG_OFFSET != 0 {
                if !whole {
                    // A quoted later fragment carries no ports.
                    return Err(Reason::PassFragment);
                }
                fragment = Fragment::Later;
            } else if bits & IPV6_FRAG_MORE != 0 {
                fragment = Fragment::First;
            }
            // Offset 0 without M is an atomic fragment (RFC 6946): a whole datagram.
            next = frag[0];
            l4_off += IPV6_FRAG_HDR_LEN;
        }
        if is_ipv6_ext_header(next) || next == NEXTHDR_FRAGMENT {
            return Err(Reason::PassIpv6ExtHeader);
        }
        Ok(IpL4 {
            l3_off,
            l4_off,
            l3_end,
            proto: next,
            class: ip[0] & IPV6_FLOWINFO_MASK,
            ttl: hop_limit,
            saddr,
            daddr,
            sport: 0,
            dport: 0,
            ttl_proto_word: 0,
            fragment,
        })
    }

    #[inline(always)]
    fn set_addr<C: Ctx>(
        ctx: &C,
        _l3_off: usize,
        off: usize,
        old: Ipv6Words,
        new: Ipv6Words,
        csum: Option<(usize, u64)>,
    ) -> Result<(), i64> {
        if let Some((csum_off, flags)) = csum {
            for i in 0..4 {
                ctx.l4_csum_replace(csum_off, old[i] as u64, new[i] as u64, flags | 4)?;
            }
        }
        ctx.store(off, &new)
    }

    #[inline(always)]
    fn frag_id<C: Ctx>(ctx: &C, pkt: &IpL4<Ipv6Words>) -> Option<u32> {
        // The fragment header, when there is one, follows the fixed header (`header`).
        let id: [u8; 4] = ctx.read(pkt.l3_off + IPV6_HDR_LEN + IPV6_FRAG_ID)?;
        Some(u32::from_ne_bytes(id))
    }

    #[inline(always)]
    fn set_addr_only<C: Ctx>(
        ctx: &C,
        _l3_off: usize,
        off: usize,
        _old: Ipv6Words,
        new: Ipv6Words,
    ) -> Result<(), i64> {
        // No checksum in the packet covers it: tc also updates `skb->csum`, which reassembly
        // sums up over the fragments.
        ctx.store_unbalanced(off, &new)
    }

    #[inline(always)]
    fn hop<C: Ctx>(ctx: &C, pkt: &IpL4<Ipv6Words>) -> Result<(), i64> {
        // No header checksum compensates the change.
        ctx.store_unbalanced(pkt.l3_off + IPV6_HOP_LIMIT, &(pkt.ttl - 1))
    }

    #[inline(always)]
    fn fib(params: &mut bpf_fib_lookup, pkt: &IpL4<Ipv6Words>, t: &Tuple<Ipv6Words>) {
        params.family = AF_INET6;
        params.__bindgen_anon_2.flowinfo = pkt.class;
        params.__bindgen_anon_3.ipv6_src = t.saddr;
        params.__bindgen_anon_4.ipv6_dst = t.daddr;
    }

    #[inline(always)]
    fn csum_replace_addr(csum: u16, old: Ipv6Words, new: Ipv6Words, udp: bool) -> u16 {
        if udp {
            checksum::udp_replace128(csum, old, new)
        } else {
            checksum::replace128(csum, old, new)
        }
    }
}
