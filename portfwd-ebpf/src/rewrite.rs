//! Packet rewriting: addresses, ports, TTL/hop limit and MACs, with incremental checksum
//! updates, for both families (what differs is in `family`).
//!
//! All writes go through [`Ctx`], so tc keeps the skb's checksum state right and XDP does the
//! arithmetic itself. A failure part-way leaves the packet half-written: callers drop it.
use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use portfwd_common::proto;

use crate::{
    ctx::Ctx,
    family::Family,
    types::{End, IpL4},
};

/// Replaces the address and port at one end of the packet.
#[inline(always)]
pub fn addr_port<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    end: End,
    new_addr: F::Addr,
    new_port: u16,
) -> Result<(), i64> {
    let (addr_off, port_off, old_addr, old_port) = pkt.end(end, F::SADDR, F::DADDR);
    // UDP checksum 0 means "none" (IPv4) and must stay 0; an update that comes out 0 is sent as
    // 0xffff (both families).
    let udp_zero = if pkt.proto == proto::UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let l4_csum = pkt.l4_csum_off();
    F::set_addr(
        ctx,
        pkt.l3_off,
        addr_off,
        old_addr,
        new_addr,
        Some((l4_csum, BPF_F_PSEUDO_HDR as u64 | udp_zero)),
    )?;
    ctx.l4_csum_replace(l4_csum, old_port as u64, new_port as u64, 2 | udp_zero)?;
    ctx.store(port_off, &new_port)?;
    Ok(())
}

/// Does what a router does to a packet it forwards: decrements the TTL or hop limit (the
/// caller has checked that it is above 1) and, when known, sets the next hop's MAC addresses.
#[inline(always)]
pub fn hop<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    macs: Option<(&[u8; 6], &[u8; 6])>,
) -> Result<(), i64> {
    F::hop(ctx, pkt)?;
    if let Some((smac, dmac)) = macs {
        ctx.store(0, dmac)?;
        ctx.store(6, smac)?;
    }
    Ok(())
}
