//! Packet rewriting: addresses, ports, TTL/hop limit and MACs, with incremental checksum
//! updates, for both families (what differs is in `family`).
//!
//! All writes go through [`Packet`], so tc keeps the skb's checksum state right and XDP does the
//! arithmetic itself. A failure part-way leaves the packet half-written: callers drop it.
use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use portfwd_common::proto;

use crate::{family::Family, packet::Packet, parse::IpL4};

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Replaces the source or destination address and port.
#[inline(always)]
pub fn addr_port<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    end: End,
    new_addr: F::Addr,
    new_port: u16,
) -> Result<(), i64> {
    let (addr_off, port_off, old_addr, old_port) = match end {
        End::Source => (pkt.l3_off + F::SADDR, pkt.l4_off, pkt.saddr, pkt.sport),
        End::Destination => (pkt.l3_off + F::DADDR, pkt.l4_off + 2, pkt.daddr, pkt.dport),
    };
    // UDP checksum 0 means "none" (IPv4) and must stay 0; an update that comes out 0 is sent as
    // 0xffff (both families).
    let udp_zero = if pkt.proto == proto::UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let l4_csum = pkt.l4_csum_off();
    F::set_addr(
        p,
        pkt.l3_off,
        addr_off,
        old_addr,
        new_addr,
        Some((l4_csum, BPF_F_PSEUDO_HDR as u64 | udp_zero)),
    )?;
    p.l4_csum_replace(l4_csum, old_port as u64, new_port as u64, 2 | udp_zero)?;
    p.store(port_off, &new_port)?;
    Ok(())
}

/// Does what a router does to a packet it forwards: decrements the TTL or hop limit (the
/// caller has checked that it is above 1) and, when known, sets the next hop's MAC addresses.
#[inline(always)]
pub fn hop<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    macs: Option<(&[u8; 6], &[u8; 6])>,
) -> Result<(), i64> {
    F::hop(p, pkt)?;
    if let Some((smac, dmac)) = macs {
        p.store(0, dmac)?;
        p.store(6, smac)?;
    }
    Ok(())
}
