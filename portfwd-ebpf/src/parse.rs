//! Header parsing. Every bound is checked once here (each header is copied out through
//! [`Ctx::read`]); later stages work on the offsets and values in [`IpL4`] and never read packet
//! memory directly.
//!
//! The Ethernet header is read once, by [`ethertype`], which picks the address family; the IP
//! header is the family's part ([`Family::header`]); TCP, UDP and ICMP errors are parsed here
//! for both families.
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr};
use portfwd_common::{proto, reason::Reason};

use crate::{
    ctx::Ctx,
    family::Family,
    types::{Fragment, IcmpError, IpL4, Parsed},
};

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

/// The frame's ethertype (wire order), after making the headers readable.
#[inline(always)]
pub fn ethertype<C: Ctx>(ctx: &C) -> Result<u16, Reason> {
    ctx.make_readable(MAX_HEADERS);
    // The ethertype ends the Ethernet header: reading it checks the whole header's bound.
    ctx.read(EthHdr::LEN - 2).ok_or(Reason::PassMalformed)
}

/// Parses IP (of family `F`, the ethertype already checked) + TCP/UDP, a later fragment of a
/// TCP/UDP datagram (IP header only), or an ICMP error quoting TCP/UDP. Returns the reason to
/// pass the packet untouched when it is neither, or cannot be parsed safely.
#[inline(always)]
pub fn parse<C: Ctx, F: Family>(ctx: &C) -> Result<Parsed<F::Addr>, Reason> {
    let outer = parse_ip::<C, F>(ctx, L3_OFF, ctx.frame_len(), true)?;
    if outer.proto != F::ICMP {
        if outer.fragment == Fragment::Later {
            return Ok(Parsed::Fragment(outer));
        }
        return Ok(Parsed::L4(outer));
    }
    if outer.fragment != Fragment::No {
        // A fragmented ICMP error is not worth reassembling: pass it.
        return Err(Reason::PassFragment);
    }
    ctx.make_readable(MAX_ICMP_HEADERS);
    let icmp_off = outer.l4_off;
    let icmp: [u8; ICMP_HDR_LEN] = ctx.read(icmp_off).ok_or(Reason::PassMalformed)?;
    let icmp_type = icmp[0];
    if !F::is_icmp_error(icmp_type) {
        return Err(Reason::PassNotTcpUdp);
    }
    // The quoted packet ends where the outer datagram ends.
    let outer_end = outer.l3_end;
    let inner = match parse_ip::<C, F>(ctx, icmp_off + ICMP_HDR_LEN, outer_end, false) {
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
fn parse_ip<C: Ctx, F: Family>(
    ctx: &C,
    l3_off: usize,
    end: usize,
    whole: bool,
) -> Result<IpL4<F::Addr>, Reason> {
    let common = F::header(ctx, l3_off, end, whole)?;
    let proto = common.proto;
    let l4_off = common.l4_off;
    if common.fragment == Fragment::Later {
        // No L4 header to read. Only TCP and UDP datagrams are ever translated (`frag`).
        if proto != proto::TCP && proto != proto::UDP {
            return Err(Reason::PassFragment);
        }
        return Ok(common);
    }
    if whole && proto == F::ICMP {
        return Ok(common);
    }
    if proto != proto::TCP && proto != proto::UDP {
        return Err(Reason::PassNotTcpUdp);
    }
    if !whole {
        // A quoted packet: its ports (the first 4 bytes) must be within the outer datagram.
        let ports: [u8; 4] = ctx.read(l4_off).ok_or(Reason::PassMalformed)?;
        if l4_off + 8 > end {
            return Err(Reason::PassMalformed);
        }
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
        let tcp: [u8; TcpHdr::LEN] = ctx.read(l4_off).ok_or(Reason::PassMalformed)?;
        // Data offset: the high nibble of byte 12, in 4-byte words.
        let doff = ((tcp[12] >> 4) as usize) * 4;
        if doff < TcpHdr::LEN || (fragment == Fragment::No && l4_len < doff) {
            return Err(Reason::PassMalformed);
        }
        (
            u16::from_ne_bytes([tcp[0], tcp[1]]),
            u16::from_ne_bytes([tcp[2], tcp[3]]),
        )
    } else {
        if l4_len < UdpHdr::LEN {
            return Err(Reason::PassMalformed);
        }
        let udp: UdpHdr = ctx.read(l4_off).ok_or(Reason::PassMalformed)?;
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
