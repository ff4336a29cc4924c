//! What differs between IPv4 and IPv6 for the model ([`Fam`], with [`V4`] and [`V6`]), and the
//! parsed IP packet ([`Ip`]) both produce.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portfwd_common::{
    maps::{
        Addr, Allow6Key, AllowKey, AllowKeyOf, Flow6Key, Flow6Value, FlowKey, FlowKeyOf, FlowValue,
        FlowValueOf, Forward6Key, Forward6Value, ForwardKey, ForwardKeyOf, ForwardValue,
        ForwardValueOf, Frag6Key, Frag6Value, FragKey, FragKeyOf, FragValue, FragValueOf, Hook,
        Ipv6Words, Range6Key, Range6Value, RangeKey, RangeKeyOf, RangeValue, RangeValueOf,
        ipv6_octets, ipv6_words,
    },
    proto,
    reason::Reason,
};

use crate::checksum::l3_update;
use crate::wire::{
    IP_MF, IP_OFFSET, IPV4_MIN, IPV6_FRAG_LEN, IPV6_LEN, NEXTHDR_FRAGMENT, be16, put16, wire16,
};
use crate::world::{FlowEntry, FragEntry, World};

/// Where the program runs: the ingress interface and the hook.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub(crate) ifindex: u32,
    pub(crate) hook: Hook,
}

/// What differs between IPv4 and IPv6, for the model: the address in map form and on the wire,
/// the header, the map of each kind, and the checksum rules.
pub(crate) trait Fam {
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
    fn local_flow(w: &impl World, k: &FlowKeyOf<Self::A>) -> bool;
    fn entry(k: FlowKeyOf<Self::A>, v: FlowValueOf<Self::A>) -> FlowEntry;
    fn frag(w: &impl World, k: &FragKeyOf<Self::A>) -> Option<FragValueOf<Self::A>>;
    fn frag_entry(k: FragKeyOf<Self::A>, v: FragValueOf<Self::A>) -> FragEntry;
    /// A fragment's IP identification as `PF_FRAGS` keys it: the wire bytes read as a native
    /// integer (IPv4: 16 bits, zero-extended; IPv6: the fragment header's 32 bits).
    fn frag_id(f: &[u8], pkt: &Ip<Self::A>) -> u32;
}

pub(crate) enum V4 {}
pub(crate) enum V6 {}

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
        let fragment = if frag & IP_OFFSET != 0 {
            if !whole {
                return Err(Reason::PassFragment);
            }
            Fragment::Later
        } else if frag & IP_MF != 0 {
            Fragment::First
        } else {
            Fragment::No
        };
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
            fragment,
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
    fn local_flow(w: &impl World, k: &FlowKey) -> bool {
        w.local_flow(k)
    }
    fn entry(k: FlowKey, v: FlowValue) -> FlowEntry {
        FlowEntry::V4(k, v)
    }
    fn frag(w: &impl World, k: &FragKey) -> Option<FragValue> {
        w.frag(k)
    }
    fn frag_entry(k: FragKey, v: FragValue) -> FragEntry {
        FragEntry::V4(k, v)
    }
    fn frag_id(f: &[u8], pkt: &Ip<u32>) -> u32 {
        u32::from(u16::from_ne_bytes([f[pkt.l3 + 4], f[pkt.l3 + 5]]))
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
        let mut fragment = Fragment::No;
        if next == NEXTHDR_FRAGMENT {
            if l4 + IPV6_FRAG_LEN > f.len() || l4 + IPV6_FRAG_LEN > l3_end {
                return Err(Reason::PassMalformed);
            }
            let bits = be16(f, l4 + 2);
            if bits & 0xfff8 != 0 {
                if !whole {
                    return Err(Reason::PassFragment);
                }
                fragment = Fragment::Later;
            } else if bits & 1 != 0 {
                fragment = Fragment::First;
            }
            // Offset 0 without M: an atomic fragment, a whole datagram.
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
            fragment,
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
    fn local_flow(w: &impl World, k: &Flow6Key) -> bool {
        w.local_flow6(k)
    }
    fn entry(k: Flow6Key, v: Flow6Value) -> FlowEntry {
        FlowEntry::V6(k, v)
    }
    fn frag(w: &impl World, k: &Frag6Key) -> Option<Frag6Value> {
        w.frag6(k)
    }
    fn frag_entry(k: Frag6Key, v: Frag6Value) -> FragEntry {
        FragEntry::V6(k, v)
    }
    fn frag_id(f: &[u8], pkt: &Ip<Ipv6Words>) -> u32 {
        // The fragment header follows the fixed header.
        let id = pkt.l3 + IPV6_LEN + 4;
        u32::from_ne_bytes([f[id], f[id + 1], f[id + 2], f[id + 3]])
    }
}

/// A parsed IP packet; addresses in map form (wire bytes as native words), ports in host order
/// (read big-endian here, converted with `to_be` where keys are built).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip<A> {
    /// Offset of the IP header.
    pub(crate) l3: usize,
    /// Offset of the L4 header.
    pub(crate) l4: usize,
    /// End of the datagram (IPv4: `l3 + total length`; IPv6: `l3 + 40 + payload length`).
    pub(crate) end: usize,
    pub(crate) proto: u8,
    /// TOS (IPv4), flow information in wire order (IPv6).
    pub(crate) class: u32,
    pub(crate) ttl: u8,
    pub(crate) saddr: A,
    pub(crate) daddr: A,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) fragment: Fragment,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// A whole datagram (IPv6: also an atomic fragment).
    No,
    /// Offset 0, more fragments: the L4 header, not the whole datagram.
    First,
    /// Offset > 0: data only.
    Later,
}

/// The translated packet: new addresses (map form) and ports (host order).
pub(crate) struct Next<A> {
    pub(crate) saddr: A,
    pub(crate) daddr: A,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

impl<A: Copy> Ip<A> {
    /// The flow key of the packet's own addresses and ports.
    pub(crate) fn key(&self) -> FlowKeyOf<A> {
        FlowKeyOf {
            saddr_be: self.saddr,
            daddr_be: self.daddr,
            sport_be: wire16(self.sport),
            dport_be: wire16(self.dport),
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct IcmpError<A> {
    pub(crate) outer: Ip<A>,
    pub(crate) inner: Ip<A>,
    /// The quoted L4 checksum lies within the outer datagram.
    pub(crate) inner_l4_csum: bool,
}

/// An address as big-endian 16-bit words (the first `LEN / 2` are meaningful).
pub(crate) fn words<F: Fam>(a: F::A) -> [u16; 8] {
    let o = F::octets(a);
    let mut w = [0u16; 8];
    for (i, pair) in o.chunks(2).enumerate() {
        w[i] = u16::from_be_bytes([pair[0], pair[1]]);
    }
    w
}
