//! Packet rewriting: addresses, ports, TTL and MACs, with incremental checksum updates.
//!
//! All writes go through [`Packet`], so tc keeps the skb's checksum state right and XDP does the
//! arithmetic itself. A failure part-way leaves the packet half-written: callers drop it.
use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use portfwd_common::proto;

use crate::{
    packet::Packet,
    parse::{Ipv4L4, L3_OFF},
};

const IP_CSUM_OFF: usize = L3_OFF + 10;
const IP_TTL_OFF: usize = L3_OFF + 8;
const IP_SADDR_OFF: usize = L3_OFF + 12;
const IP_DADDR_OFF: usize = L3_OFF + 16;

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Replaces the source or destination address and port.
#[inline(always)]
pub fn addr_port<P: Packet>(
    p: &P,
    pkt: &Ipv4L4,
    end: End,
    new_addr: u32,
    new_port: u16,
) -> Result<(), i64> {
    let (addr_off, port_off, old_addr, old_port) = match end {
        End::Source => (IP_SADDR_OFF, pkt.l4_off, pkt.saddr, pkt.sport),
        End::Destination => (IP_DADDR_OFF, pkt.l4_off + 2, pkt.daddr, pkt.dport),
    };
    // UDP checksum 0 means "none" and must stay 0.
    let udp_zero = if pkt.proto == proto::UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let l4_csum = pkt.l4_csum_off();
    p.l4_csum_replace(
        l4_csum,
        old_addr as u64,
        new_addr as u64,
        BPF_F_PSEUDO_HDR as u64 | 4 | udp_zero,
    )?;
    p.l4_csum_replace(l4_csum, old_port as u64, new_port as u64, 2 | udp_zero)?;
    p.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, new_addr as u64, 4)?;
    p.store(addr_off, &new_addr)?;
    p.store(port_off, &new_port)?;
    Ok(())
}

/// Does what a router does to a packet it forwards: decrements the TTL (the caller has checked
/// that it is above 1) and, when known, sets the next hop's MAC addresses.
#[inline(always)]
pub fn hop<P: Packet>(p: &P, pkt: &Ipv4L4, macs: Option<(&[u8; 6], &[u8; 6])>) -> Result<(), i64> {
    let ttl = pkt.ttl - 1;
    let new_word = u16::from_ne_bytes([ttl, pkt.proto]);
    p.l3_csum_replace(IP_CSUM_OFF, pkt.ttl_proto_word as u64, new_word as u64, 2)?;
    p.store(IP_TTL_OFF, &ttl)?;
    if let Some((smac, dmac)) = macs {
        p.store(0, dmac)?;
        p.store(6, smac)?;
    }
    Ok(())
}
