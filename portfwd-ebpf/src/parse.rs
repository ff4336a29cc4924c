//! Header parsing. Every bound is checked once here; later stages work on the offsets and
//! values in [`Ipv4L4`] and never touch packet memory directly.
use core::mem::size_of;

use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};
use portfwd_common::{proto, reason::Reason};

use crate::packet::Packet;

pub const L3_OFF: usize = EthHdr::LEN;
/// Longest header chain we read: Ethernet + IPv4 with options + TCP without options.
const MAX_HEADERS: usize = EthHdr::LEN + 60 + TcpHdr::LEN;

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

/// An IPv4 TCP or UDP packet. Addresses and ports are as on the wire (network byte order).
#[derive(Clone, Copy)]
pub struct Ipv4L4 {
    pub l4_off: usize,
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

/// Parses Ethernet + IPv4 + TCP/UDP. Returns the reason to pass the packet untouched when it is
/// not an IPv4 TCP/UDP packet that can be parsed safely.
#[inline(always)]
pub fn parse<P: Packet>(p: &P) -> Result<Ipv4L4, Reason> {
    p.make_readable(MAX_HEADERS);

    let eth: *const EthHdr = ptr_at(p, 0).ok_or(Reason::PassMalformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies within the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IPV4_BE {
        return Err(Reason::PassNotIpv4);
    }

    let ip: *const Ipv4Hdr = ptr_at(p, L3_OFF).ok_or(Reason::PassMalformed)?;
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
    if tot_len < ihl_bytes || L3_OFF + tot_len > p.frame_len() {
        return Err(Reason::PassMalformed);
    }
    let daddr = u32::from_ne_bytes(ip.dst_addr);
    if ip.dst_addr[0] == 127 {
        return Err(Reason::DropLoopbackDst);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let fragment = if frags & IP_OFFSET_MASK != 0 {
        return Err(Reason::PassFragment);
    } else if frags & IP_MF != 0 {
        Fragment::First
    } else {
        Fragment::No
    };
    let proto = ip.proto;
    if proto != proto::TCP && proto != proto::UDP {
        return Err(Reason::PassNotTcpUdp);
    }
    let saddr = u32::from_ne_bytes(ip.src_addr);
    let ttl = ip.ttl;
    let tos = ip.tos;
    let ttl_proto_word = u16::from_ne_bytes([ip.ttl, ip.proto]);

    let l4_off = L3_OFF + ihl_bytes;
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
        l4_off,
        proto,
        tos,
        ttl,
        saddr,
        daddr,
        sport,
        dport,
        ttl_proto_word,
        fragment,
    })
}
