//! The published services: which forward (if any) a destination address and port reach, and
//! whether a source may use it. Read by the packet path (`datapath`, `icmp`) and by the socket
//! hooks (`sock`) alike, from the same maps (`PF_FORWARDS`, `PF_RANGES`, `PF_ALLOW`, their IPv6
//! twins, and `PF_HOST_ADDRS`/`PF_HOST_ADDRS6`).
//!
//! Those three tables hold two generations of the forwarding state (`PF_GEN`): a lookup reads
//! the active generation once and finds only its entries, and the forward it returns carries
//! that generation to the allowlist lookup. A reload writes the new state under the other
//! generation and switches `PF_GEN` last, so no packet sees part of one state and part of
//! the other.
use aya_ebpf::maps::lpm_trie::Key;
use portfwd_common::maps::{
    Addr, AllowKeyOf, FWD_ALLOWLIST, ForwardKeyOf, ForwardValueOf, RangeKeyOf,
};

use crate::{
    family::Family,
    maps::{GENERATION, Lookup as _},
};

/// The active generation of the forwarding state (0 before any daemon set one). Only 0 and 1
/// are written; the low bit is what counts.
#[inline(always)]
fn active_generation() -> u8 {
    GENERATION.get(0).map_or(0, |g| (*g & 1) as u8)
}

/// Whether `addr` (wire order) is one of the host's addresses.
#[inline(always)]
pub fn is_host_addr<F: Family>(addr: F::Addr) -> bool {
    F::host_addrs().get_ptr(addr).is_some()
}

/// The forward published at `addr:port` (wire order). Forwards bound to the exact address win
/// over ones published on every address. Single ports come from the exact-match table; only on
/// a miss are port ranges looked up (at most four lookups in all, after the one of the
/// generation).
#[inline(always)]
pub fn lookup<F: Family>(addr: F::Addr, port: u16, proto: u8) -> Option<ForwardValueOf<F::Addr>> {
    let generation = active_generation();
    let mut key = ForwardKeyOf {
        addr_be: addr,
        port_be: port,
        proto,
        generation,
    };
    if let Some(fwd) = F::forwards().copied(key) {
        return Some(fwd);
    }
    key.addr_be = F::Addr::default();
    if let Some(fwd) = F::forwards().copied(key) {
        return Some(fwd);
    }
    lookup_range::<F>(addr, port, proto, generation)
}

/// The port range published at `addr:port` (wire order) in `generation`, as the forward for
/// that one port.
#[inline(always)]
fn lookup_range<F: Family>(
    addr: F::Addr,
    port: u16,
    proto: u8,
    generation: u8,
) -> Option<ForwardValueOf<F::Addr>> {
    let mut key = Key::new(
        RangeKeyOf::<F::Addr>::LOOKUP_BITS,
        RangeKeyOf {
            proto,
            generation,
            _pad: [0; 2],
            addr_be: addr,
            port_be: port,
            _pad2: [0; 2],
        },
    );
    let found = match F::ranges().get(&key) {
        Some(v) => Some(v),
        None => {
            key.data.addr_be = F::Addr::default();
            F::ranges().get(&key)
        }
    };
    found.map(|v| v.forward_for(port, generation))
}

/// Whether `fwd` admits a packet from `saddr` (wire order): it has no source allowlist, or
/// `saddr` is in it (in the generation `fwd` was found in).
#[inline(always)]
pub fn admits<F: Family>(fwd: &ForwardValueOf<F::Addr>, saddr: F::Addr) -> bool {
    if fwd.flags & FWD_ALLOWLIST == 0 {
        return true;
    }
    let key = Key::new(
        AllowKeyOf::<F::Addr>::FIXED_BITS + F::Addr::BITS,
        AllowKeyOf {
            slot: fwd.stats_slot as u16,
            generation: fwd.generation,
            _pad: 0,
            saddr_be: saddr,
        },
    );
    F::allow().get(&key).is_some()
}
