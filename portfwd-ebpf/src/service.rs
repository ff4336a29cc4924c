//! The published services: which forward (if any) a destination address and port reach, and
//! whether a source may use it. Read by the packet path (`datapath`, `icmp`) and by the socket
//! hooks (`sock`) alike, from the same maps (`PF_FORWARDS`, `PF_RANGES`, `PF_ALLOW`, their IPv6
//! twins, and `PF_HOST_ADDRS`/`PF_HOST_ADDRS6`).
use aya_ebpf::maps::lpm_trie::Key;
use portfwd_common::maps::{
    Addr, AllowKeyOf, FWD_ALLOWLIST, ForwardKeyOf, ForwardValueOf, RangeKeyOf,
};

use crate::{family::Family, maps::Lookup as _};

/// Whether `addr` (wire order) is one of the host's addresses.
#[inline(always)]
pub fn is_host_addr<F: Family>(addr: F::Addr) -> bool {
    F::host_addrs().get_ptr(addr).is_some()
}

/// The forward published at `addr:port` (wire order). Forwards bound to the exact address win
/// over ones published on every address. Single ports come from the exact-match table; only on
/// a miss are port ranges looked up (at most four lookups in all).
#[inline(always)]
pub fn lookup<F: Family>(addr: F::Addr, port: u16, proto: u8) -> Option<ForwardValueOf<F::Addr>> {
    let mut key = ForwardKeyOf {
        addr_be: addr,
        port_be: port,
        proto,
        _pad: 0,
    };
    if let Some(fwd) = F::forwards().copied(key) {
        return Some(fwd);
    }
    key.addr_be = F::Addr::default();
    if let Some(fwd) = F::forwards().copied(key) {
        return Some(fwd);
    }
    lookup_range::<F>(addr, port, proto)
}

/// The port range published at `addr:port` (wire order), as the forward for that one port.
#[inline(always)]
fn lookup_range<F: Family>(addr: F::Addr, port: u16, proto: u8) -> Option<ForwardValueOf<F::Addr>> {
    let mut key = Key::new(
        RangeKeyOf::<F::Addr>::LOOKUP_BITS,
        RangeKeyOf {
            proto,
            _pad: [0; 3],
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
    found.map(|v| v.forward_for(port))
}

/// Whether `fwd` admits a packet from `saddr` (wire order): it has no source allowlist, or
/// `saddr` is in it.
#[inline(always)]
pub fn admits<F: Family>(fwd: &ForwardValueOf<F::Addr>, saddr: F::Addr) -> bool {
    if fwd.flags & FWD_ALLOWLIST == 0 {
        return true;
    }
    let key = Key::new(
        AllowKeyOf::<F::Addr>::FIXED_BITS + F::Addr::BITS,
        AllowKeyOf {
            slot: fwd.stats_slot,
            saddr_be: saddr,
        },
    );
    F::allow().get(&key).is_some()
}
