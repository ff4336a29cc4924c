//! Header parsing. Every bound is checked once here; later stages work on the offsets and
//! values in [`IpL4`] and never touch packet memory directly.
//!
//! The Ethernet header is read once, by [`ethertype`], which picks the address family; the IP
//! header is the family's part ([`Family::header`]); TCP, UDP and ICMP errors are parsed here
//! for both families.
use core::mem::size_of;

use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr};
use portfwd_common::{proto, reason::Reason};

use crate::{family::Family, packet::Packet};

pub const L3_OFF: usize = EthHdr::LEN;
/// Longest header chain we read: Ethernet + IPv4 with options + TCP without options (IPv6 with
/// a fragment header + TCP is shorter).
pub const MAX_HEADERS: usize = EthHdr::LEN + 60 + TcpHdr::LEN;
/// Longest ICMP error chain we read: Ethernet + IPv4 (options) + ICMP + quoted IPv4 (options)
/// + the first 20 bytes of the quoted L4 header (the IPv6 chain is shorter).
const MAX_ICMP_HEADERS: usize = EthHdr::LEN + 60 + ICMP_HDR_LEN + 60 + TcpHdr::LEN;
/// ICMP and ICMPv6 headers are both 8 bytes: type, code, checksum, 4 bytes of type data.
const ICMP_HDR_LEN: usize = 8;

pub const ETH_P_IPV4_BE: u16 = 0x0800u16.to_be();
pub const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram.
    No,
    /// The first fragment: it has the L4 header but not the whole datagram.
    First,
}

/// What the datapath may act on.
pub enum Parsed<A> {
    /// A TCP or UDP packet.
    L4(IpL4<A>),
    /// An ICMP(v6) error quoting the start of a TCP or UDP packet.
    IcmpError(IcmpError<A>),
}

/// An ICMP(v6) error quoting a TCP/UDP packet. `outer` describes the carrying IP header (its
/// `l4_off` is the ICMP header, ports are 0); `inner` the quoted packet, whose offsets are
/// absolute in the frame.
#[derive(Clone, Copy)]
pub struct IcmpError<A> {
    pub outer: IpL4<A>,
    pub inner: IpL4<A>,
    /// The quoted L4 checksum is within the quoted bytes (UDP always; TCP when >= 18 bytes of
    /// it are quoted) and must be kept consistent.
    pub inner_l4_csum: bool,
}

impl<A> IcmpError<A> {
    /// Offset of the ICMP checksum.
    #[inline(always)]
    pub fn icmp_csum_off(&self) -> usize {
        self.outer.l4_off + 2
    }
}

/// An IP TCP or UDP packet. Addresses and ports are as on the wire (network byte order).
#[derive(Clone, Copy)]
pub struct IpL4<A> {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the L4 header (after any IPv4 options or IPv6 fragment header).
    pub l4_off: usize,
    /// End of the datagram (after any Ethernet padding is excluded).
    pub l3_end: usize,
    pub proto: u8,
    /// What the FIB lookup takes as the packet's class: the IPv4 TOS byte, or the IPv6 flow
    /// information (traffic class and flow label, wire order).
    pub class: u32,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    /// IPv4: the raw 16-bit word holding TTL and protocol, for the checksum update of a TTL
    /// change. IPv6: 0 (no header checksum).
    pub ttl_proto_word: u16,
    pub fragment: Fragment,
}

impl<A> IpL4<A> {
    /// Offset of the L4 checksum field.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == proto::TCP {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }
}

#[inline(always)]
pub fn ptr_at<P: Packet, T>(p: &P, off: usize) -> Option<*const T> {
    let start = p.data();
    if start + off + size_of::<T>() > p.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// The frame's ethertype (wire order), after making the headers readable.
#[inline(always)]
pub fn ethertype<P: Packet>(p: &P) -> Result<u16, Reason> {
    p.make_readable(MAX_HEADERS);
    let eth: *const EthHdr = ptr_at(p, 0).ok_or(Reason::PassMalformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies within the packet.
    Ok(unsafe { (*eth).ether_type })
}

/// Parses IP (of family `F`, the ethertype already checked) + TCP/UDP, or an ICMP error quoting
/// TCP/UDP. Returns the reason to pass the packet untouched when it is neither, or cannot be
/// parsed safely.
#[inline(always)]
pub fn parse<P: Packet, F: Family>(p: &P) -> Result<Parsed<F::Addr>, Reason> {
    let outer = parse_ip::<P, F>(p, L3_OFF, p.frame_len(), true)?;
    if outer.proto != F::ICMP {
        return Ok(Parsed::L4(outer));
    }
    if outer.fragment != Fragment::No {
        // A fragmented ICMP error is not worth reassembling: pass it.
        return Err(Reason::PassFragment);
    }
    p.make_readable(MAX_ICMP_HEADERS);
    let icmp_off = outer.l4_off;
    let icmp: *const [u8; ICMP_HDR_LEN] = ptr_at(p, icmp_off).ok_or(Reason::PassMalformed)?;
    // SAFETY: `ptr_at` checked that the 8-byte ICMP header lies within the packet.
    let icmp_type = unsafe { (*icmp)[0] };
    if !F::is_icmp_error(icmp_type) {
        return Err(Reason::PassNotTcpUdp);
    }
    // The quoted packet ends where the outer datagram ends.
    let outer_end = outer.l3_end;
    let inner = match parse_ip::<P, F>(p, icmp_off + ICMP_HDR_LEN, outer_end, false) {
        Ok(inner) if inner.proto == proto::TCP || inner.proto == proto::UDP => inner,
        Ok(_) => return Err(Reason::PassNotTcpUdp),
        Err(Reason::PassNotTcpUdp) => return Err(Reason::PassNotTcpUdp),
        Err(_) => return Err(Reason::PassMalformed),
    };
    let inner_l4_csum = inner.l4_csum_off() + 2 <= outer_end;
    Ok(Parsed::IcmpError(IcmpError {
        outer,
        inner,
        inner_l4_csum,
    }))
}

/// Parses an IP header at `l3_off` and the first bytes of its TCP/UDP header. `end` is where
/// the bytes belonging to this packet end (the frame, or the outer datagram for a quoted
/// packet). A `whole` packet must be complete; a quoted one (in an ICMP error) is truncated by
/// design: only its first 8 L4 bytes are required.
#[inline(always)]
fn parse_ip<P: Packet, F: Family>(
    p: &P,
    l3_off: usize,
    end: usize,
    whole: bool,
) -> Result<IpL4<F::Addr>, Reason> {
    let common = F::header(p, l3_off, end, whole)?;
    let proto = common.proto;
    let l4_off = common.l4_off;
    if whole && proto == F::ICMP {
        return Ok(common);
    }
    if proto != proto::TCP && proto != proto::UDP {
        return Err(Reason::PassNotTcpUdp);
    }
    if !whole {
        // A quoted packet: its ports (the first 4 bytes) must be within the outer datagram.
        let ports: *const [u8; 4] = ptr_at(p, l4_off).ok_or(Reason::PassMalformed)?;
        if l4_off + 8 > end {
            return Err(Reason::PassMalformed);
        }
        // SAFETY: `ptr_at` checked that the 4 port bytes lie within the packet.
        let ports = unsafe { *ports };
        return Ok(IpL4 {
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            ..common
        });
    }
    let fragment = common.fragment;
    let l4_len = common.l3_end - l4_off;
    let (sport, dport) = if proto == proto::TCP {
        if l4_len < TcpHdr::LEN {
            return Err(Reason::PassMalformed);
        }
        let tcp: *const TcpHdr = ptr_at(p, l4_off).ok_or(Reason::PassMalformed)?;
        // SAFETY: `ptr_at` checked that the whole TCP header lies within the packet.
        let tcp = unsafe { &*tcp };
        // SAFETY: the TCP header is 20 bytes, so byte 12 (data offset) is in it.
        let doff_byte = unsafe { *(tcp as *const TcpHdr as *const u8).add(12) };
        let doff = ((doff_byte >> 4) as usize) * 4;
        if doff < TcpHdr::LEN || (fragment == Fragment::No && l4_len < doff) {
            return Err(Reason::PassMalformed);
        }
        (u16::from_ne_bytes(tcp.source), u16::from_ne_bytes(tcp.dest))
    } else {
        if l4_len < UdpHdr::LEN {
            return Err(Reason::PassMalformed);
        }
        let udp: *const UdpHdr = ptr_at(p, l4_off).ok_or(Reason::PassMalformed)?;
        // SAFETY: `ptr_at` checked that the whole UDP header lies within the packet.
        let udp = unsafe { &*udp };
        let len = u16::from_be_bytes(udp.len) as usize;
        // A first fragment carries only part of the datagram, so its UDP length is larger.
        if len < UdpHdr::LEN || (fragment == Fragment::No && len != l4_len) {
            return Err(Reason::PassMalformed);
        }
        // Over IPv6 the UDP checksum is mandatory (RFC 8200 8.1): 0 is invalid, not "none".
        if F::UDP_CSUM_REQUIRED && udp.check == [0, 0] {
            return Err(Reason::PassMalformed);
        }
        (u16::from_ne_bytes(udp.src), u16::from_ne_bytes(udp.dst))
    };

    Ok(IpL4 {
        sport,
        dport,
        ..common
    })
}
