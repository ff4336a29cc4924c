//! Parsing a frame into the packet the datapath acts on: a TCP/UDP packet, or an ICMP error
//! quoting one; anything else is a [`Reason`] to pass (or drop) it untouched.

use portfwd_common::{proto, reason::Reason};

use crate::family::{Fam, Fragment, IcmpError, Ip};
use crate::wire::{ETH_LEN, ICMP_LEN, TCP_MIN, UDP_LEN, be16};

pub(crate) enum Parsed<A> {
    L4(Ip<A>),
    IcmpError(IcmpError<A>),
    /// A later fragment of a TCP/UDP datagram: its IP header only.
    Fragment(Ip<A>),
}

pub(crate) fn parse<F: Fam>(f: &[u8]) -> Result<Parsed<F::A>, Reason> {
    let outer = parse_ip::<F>(f, ETH_LEN, f.len(), true)?;
    if outer.fragment == Fragment::Later {
        return Ok(Parsed::Fragment(outer));
    }
    if outer.proto != F::ICMP {
        return Ok(Parsed::L4(outer));
    }
    if outer.fragment == Fragment::First {
        // A fragmented ICMP error is not reassembled.
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
pub(crate) fn parse_ip<F: Fam>(
    f: &[u8],
    l3: usize,
    end: usize,
    whole: bool,
) -> Result<Ip<F::A>, Reason> {
    let mut ip = F::header(f, l3, end, whole)?;
    if ip.fragment == Fragment::Later {
        // No L4 header; only TCP and UDP datagrams are translated.
        if ip.proto != proto::TCP && ip.proto != proto::UDP {
            return Err(Reason::PassFragment);
        }
        return Ok(ip);
    }
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
        if doff < TCP_MIN || (ip.fragment == Fragment::No && l4_len < doff) {
            return Err(Reason::PassMalformed);
        }
    } else {
        if l4_len < UDP_LEN || ip.l4 + UDP_LEN > f.len() {
            return Err(Reason::PassMalformed);
        }
        let len = usize::from(be16(f, ip.l4 + 4));
        // A first fragment's UDP length is the whole datagram's.
        if len < UDP_LEN || (ip.fragment == Fragment::No && len != l4_len) {
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
