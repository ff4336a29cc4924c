//! Where a translated packet goes next: a FIB lookup for its new destination, done before the
//! packet is touched so that a packet we cannot send on is dropped unchanged.
use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
};
use portfwd_common::reason::Reason;

use crate::{family::Family, packet::Packet, parse::IpL4};

/// The next hop of a translated packet.
pub enum NextHop {
    /// Interface and both MAC addresses known.
    Resolved {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Interface known; the neighbour (ARP) entry is not, the kernel must resolve it.
    Unresolved { ifindex: u32 },
}

/// The addresses and ports a packet will carry once translated.
pub struct Tuple<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
}

#[inline(always)]
pub fn lookup<P: Packet, F: Family>(
    p: &P,
    pkt: &IpL4<F::Addr>,
    t: &Tuple<F::Addr>,
) -> Result<NextHop, Reason> {
    // SAFETY: `bpf_fib_lookup` is a plain C struct of integers and unions of integers, for which
    // all-zero bytes are a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    F::fib(&mut params, pkt, t);
    params.l4_protocol = pkt.proto;
    params.sport = t.sport;
    params.dport = t.dport;
    params.ifindex = p.ingress_ifindex();
    if !p.fib_checks_packet_mtu() {
        // XDP: let the lookup compare the IP length (IPv4 total length, IPv6 header + payload)
        // with the egress MTU.
        let frame = p.frame_len() - crate::parse::L3_OFF;
        params.__bindgen_anon_1.tot_len = frame as u16;
    }
    // SAFETY: `params` is a valid, initialised `bpf_fib_lookup` that lives across the call, and
    // its size is passed alongside.
    let rc = unsafe {
        fib_lookup(
            p.ctx_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc < 0 {
        return Err(Reason::DropNoRoute);
    }
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(NextHop::Resolved {
            ifindex: params.ifindex,
            smac: params.smac,
            dmac: params.dmac,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(NextHop::Unresolved {
            ifindex: params.ifindex,
        }),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Reason::DropFragNeeded),
        _ => Err(Reason::DropNoRoute),
    }
}
