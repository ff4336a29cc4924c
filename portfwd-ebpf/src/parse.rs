//! Header parsing. Every bound is checked once here; later stages work on the offsets and
//! values in [`Ipv4L4`] and never touch packet memory directly.
use core::mem::size_of;

use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};
use portfwd_common::{proto, reason::Reason};

use crate::packet::Packet;

pub const L3_OFF: usize = EthHdr::LEN;
/// Longest header chain we read: Ethernet + IPv4 with options + TCP without options.
const MAX_HEADERS: usize = EthHdr::LEN + 60 + TcpHdr::LEN;
/// Longest ICMP error chain we read: Ethernet + IPv4 (options) + ICMP + quoted IPv4 (options)
/// + the first 20 bytes of the quoted L4 header.
const MAX_ICMP_HEADERS: usize = EthHdr::LEN + 60 + ICMP_HDR_LEN + 60 + TcpHdr::LEN;
const ICMP_HDR_LEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;

const ETH_P_IPV4_BE: u16 = 0x0800u16.to_be();
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram.
    No,
    /// The first fragment: it has the L4 header but not the whole datagram.
    First,
}

/// What the datapath may act on.
pub enum Parsed {
    /// A TCP or UDP packet.
    L4(Ipv4L4),
    /// An ICMP error (destination unreachable, time exceeded, parameter problem) quoting the
    /// start of a TCP or UDP packet.
    IcmpError(IcmpError),
}

/// An ICMP error quoting a TCP/UDP packet. `outer` describes the carrying IPv4 header (its
/// `l4_off` is the ICMP header, ports are 0); `inner` the quoted packet, whose offsets are
/// absolute in the frame.
#[derive(Clone, Copy)]
pub struct IcmpError {
    pub outer: Ipv4L4,
    pub inner: Ipv4L4,
    /// The quoted L4 checksum is within the quoted bytes (UDP always; TCP when >= 18 bytes of
    /// it are quoted) and must be kept consistent.
    pub inner_l4_csum: bool,
}

impl IcmpError {
    /// Offset of the ICMP checksum.
    #[inline(always)]
    pub fn icmp_csum_off(&self) -> usize {
        self.outer.l4_off + 2
    }

    /// Offset of the quoted IPv4 header.
    #[inline(always)]
    pub fn inner_l3_off(&self) -> usize {
        self.outer.l4_off + ICMP_HDR_LEN
    }
}

/// An IPv4 TCP or UDP packet. Addresses and ports are as on the wire (network byte order).
#[derive(Clone, Copy)]
pub struct Ipv4L4 {
    pub l4_off: usize,
    /// End of the IPv4 datagram (after any Ethernet padding is excluded).
    pub l3_end: usize,
    pub proto: u8,
    pub tos: u8,
    pub ttl: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// The raw 16-bit word holding TTL and protocol, for the checksum update of a TTL change.
    pub ttl_proto_word: u16,
    pub fragment: Fragment,
}

impl Ipv4L4 {
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
fn ptr_at<P: Packet, T>(p: &P, off: usize) -> Option<*const T> {
    let start = p.data();
    if start + off + size_of::<T>() > p.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// Parses Ethernet + IPv4 + TCP/UDP, or an ICMP error quoting TCP/UDP. Returns the reason to
/// pass the packet untouched when it is neither, or cannot be parsed safely.
#[inline(always)]
pub fn parse<P: Packet>(p: &P) -> Result<Parsed, Reason> {
    p.make_readable(MAX_HEADERS);
    let outer = parse_ipv4(p, L3_OFF, p.frame_len(), true)?;
    if outer.proto != proto::ICMP {
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
    if icmp_type != ICMP_DEST_UNREACH
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROB
    {
        return Err(Reason::PassNotTcpUdp);
    }
    // The quoted packet ends where the outer datagram ends.
    let outer_end = outer.l3_end;
    let inner = match parse_ipv4(p, icmp_off + ICMP_HDR_LEN, outer_end, false) {
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

/// Parses an IPv4 header at `l3_off` and the first bytes of its TCP/UDP header. `end` is where
/// the bytes belonging to this packet end (the frame, or the outer datagram for a quoted
/// packet). A `whole` packet must be complete; a quoted one (in an ICMP error) is truncated by
/// design: only its first 8 L4 bytes are required.
#[inline(always)]
fn parse_ipv4<P: Packet>(p: &P, l3_off: usize, end: usize, whole: bool) -> Result<Ipv4L4, Reason> {
    if whole {
        let eth: *const EthHdr = ptr_at(p, 0).ok_or(Reason::PassMalformed)?;
        // SAFETY: `ptr_at` checked that the whole header lies within the packet.
        if unsafe { (*eth).ether_type } != ETH_P_IPV4_BE {
            return Err(Reason::PassNotIpv4);
        }
    }

    let ip: *const Ipv4Hdr = ptr_at(p, l3_off).ok_or(Reason::PassMalformed)?;
    // SAFETY: `ptr_at` checked that the whole fixed header lies within the packet.
    let ip = unsafe { &*ip };
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
    let daddr = u32::from_ne_bytes(ip.dst_addr);
    if whole && ip.dst_addr[0] == 127 {
        return Err(Reason::DropLoopbackDst);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let fragment = if frags & IP_OFFSET_MASK != 0 {
        // A later fragment carries no ports (nor does a quoted one).
        return Err(Reason::PassFragment);
    } else if frags & IP_MF != 0 {
        Fragment::First
    } else {
        Fragment::No
    };
    let proto = ip.proto;
    let l4_off = l3_off + ihl_bytes;
    let ttl_proto_word = u16::from_ne_bytes([ip.ttl, ip.proto]);
    let common = Ipv4L4 {
        l4_off,
        l3_end: l3_off + tot_len,
        proto,
        tos: ip.tos,
        ttl: ip.ttl,
        saddr: u32::from_ne_bytes(ip.src_addr),
        daddr,
        sport: 0,
        dport: 0,
        ttl_proto_word,
        fragment,
    };
    if whole && proto == proto::ICMP {
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
        return Ok(Ipv4L4 {
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            ..common
        });
    }
    let l4_len = tot_len - ihl_bytes;
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
        (u16::from_ne_bytes(udp.src), u16::from_ne_bytes(udp.dst))
    };

    Ok(Ipv4L4 {
        sport,
        dport,
        ..common
    })
}
