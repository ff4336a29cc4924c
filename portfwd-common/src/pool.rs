//! Forwards with several backends (a *pool*): the maps the datapath chooses a backend with.
//!
//! A forward whose value carries [`FWD_POOL`] has no target of its own (its target fields are
//! unused). Its stats slot indexes [`POOLS`], which names the Maglev row ([`MAGLEV`]) its new
//! flows are hashed into; the row's slots hold backend ids, which index [`BACKENDS`] (or
//! [`BACKENDS6`]) for the backend's address and port. The forward direction of a flow is
//! remembered in [`AFFINITY`] (client's tuple -> backend), so that a flow keeps its backend
//! when the backend set changes; an evicted entry is found again by the same hash as long as
//! the set is unchanged.
//!
//! ```text
//! FORWARDS[key] = {flags: FWD_POOL, stats_slot: s}
//!   POOLS[s] = row + 1            (0: every backend is down and the forward refuses)
//!     MAGLEV[row * MAGLEV_SIZE + flow_hash % MAGLEV_SIZE] = backend id
//!       BACKENDS[id] = {addr, port, flags, stats_slot: s, epoch}
//! AFFINITY[client tuple] = {backend id, epoch}
//! ```
//!
//! Userspace swaps a forward's table atomically: it writes a whole row no packet reads (the
//! rows are allocated, never shared), then points `POOLS[s]` at it (one 4-byte store), and
//! only then frees the old row.
//!
//! A backend id is allocated per (forward, backend address) and is the same in both families'
//! id spaces (ids are unique across [`BACKENDS`] and [`BACKENDS6`], like stats slots). Its
//! `epoch` is raised every time the id is given to a backend, so an [`AFFINITY`] entry naming a
//! freed and reused id is recognised as stale.
//!
//! The flow hash (`jhash2` of the 5-tuple, seed [`FLOW_HASH_SEED`]) and its word layout are
//! documented in `portfwd::balance::flow`; [`jhash2`] here is the one implementation both
//! sides use.

use crate::maps::{FlowKeyOf, Ipv6Words};

/// [`crate::maps::ForwardValueOf::flags`]: the forward has several backends (a pool), chosen
/// per flow through [`POOLS`], [`MAGLEV`] and [`BACKENDS`]; its target fields are unused.
pub const FWD_POOL: u32 = 2;

/// Per forward (indexed by its stats slot): the Maglev row its new flows are hashed into,
/// plus one; 0 when the forward refuses new flows (every backend down, `all_down: refuse`).
/// An `Array<u32>` of [`crate::maps::MAX_FORWARDS`].
pub const POOLS: &str = "PF_POOLS";
/// The Maglev lookup tables: [`MAX_MAGLEV_ROWS`] rows of [`MAGLEV_SIZE`] backend ids, flat
/// (an `Array<u32>`). A row is one forward's table.
pub const MAGLEV: &str = "PF_MAGLEV";
/// Backends of IPv4 pools, indexed by backend id ([`BackendOf`]).
pub const BACKENDS: &str = "PF_BACKENDS";
/// Backends of IPv6 pools, indexed by backend id.
pub const BACKENDS6: &str = "PF_BACKENDS6";
/// Which backend a flow of a pool went to: the client's packet's tuple as it arrives
/// ([`FlowKeyOf`]: source = client, destination = the published address and port) ->
/// [`Affinity`]. An LRU hash with per-CPU lists, as the flow tables.
pub const AFFINITY: &str = "PF_AFFINITY";
pub const AFFINITY6: &str = "PF_AFFINITY6";
/// Per-backend counters, indexed by backend id ([`BackendStats`], per CPU).
pub const BACKEND_STATS: &str = "PF_BACKEND_STATS";

/// Slots of a Maglev row: the prime the issue names, about 100 times [`MAX_POOL_BACKENDS`]
/// (so each backend's share is within about 1% of its due). Fixed, so the datapath's modulus
/// is a constant.
pub const MAGLEV_SIZE: u32 = 16_381;
/// Rows of [`MAGLEV`]: a pool holds one, and a second one while its table is being swapped.
/// 256 rows are 16 MiB.
pub const MAX_MAGLEV_ROWS: u32 = 256;
/// Backend ids (both families together).
pub const MAX_BACKENDS: u32 = 8_192;
/// Backends of one forward: `MAGLEV_SIZE / 100`, rounded down to a round number.
pub const MAX_POOL_BACKENDS: usize = 128;
/// Entries of [`AFFINITY`] (and of [`AFFINITY6`]): as many as new flows.
pub const MAX_AFFINITY: u32 = crate::maps::MAX_FLOWS;
pub const MAX_AFFINITY6: u32 = crate::maps::MAX_FLOWS6;

/// [`BackendOf::flags`]: the id is in use; its flows are served.
pub const BACKEND_LIVE: u16 = 1;
/// [`BackendOf::flags`]: the backend was removed and is draining: its established TCP flows
/// stay on it until the grace period ends (userspace then frees the id); its UDP flows, and
/// every new flow, are hashed again over the current table.
pub const BACKEND_DRAINING: u16 = 2;

/// The `initval` of the flow hash: "port" in ASCII.
pub const FLOW_HASH_SEED: u32 = 0x706f_7274;

/// One backend: where its flows go, and whose it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendOf<A> {
    pub addr_be: A,
    pub port_be: u16,
    /// [`BACKEND_LIVE`], [`BACKEND_DRAINING`]; 0: a free id.
    pub flags: u16,
    /// The stats slot of the forward it belongs to: an [`AFFINITY`] entry is followed only for
    /// a packet of that forward.
    pub stats_slot: u32,
    /// Raised each time the id is allocated (see the module).
    pub epoch: u32,
}

pub type Backend = BackendOf<u32>;
pub type Backend6 = BackendOf<Ipv6Words>;

/// Value of [`AFFINITY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Affinity {
    pub backend: u32,
    /// The backend's [`BackendOf::epoch`] when the flow was placed.
    pub epoch: u32,
}

/// Key of [`AFFINITY`]: the client's packet as it arrives.
pub type AffinityKeyOf<A> = FlowKeyOf<A>;

/// Per-backend counters (client -> backend direction), summed over CPUs by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    /// Flows placed on this backend (a new entry in [`AFFINITY`]).
    pub new_flows: u64,
}

impl BackendStats {
    /// Sum of per-CPU values.
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}

/// The kernel's `jhash2(k, length, initval)` (`include/linux/jhash.h`, Bob Jenkins' lookup3
/// `hashword`) over `words`, at most 10 of them (an IPv6 5-tuple). Written without slices
/// past the fixed array, so the eBPF verifier sees bounded loops.
#[inline(always)]
pub fn jhash2(words: &[u32; 10], len: usize, initval: u32) -> u32 {
    let len = if len > 10 { 10 } else { len };
    // The kernel counts the length in bytes (`length << 2`).
    let mut a = 0xdead_beef_u32
        .wrapping_add((len as u32).wrapping_shl(2))
        .wrapping_add(initval);
    let (mut b, mut c) = (a, a);
    let mut i = 0;
    while len - i > 3 {
        a = a.wrapping_add(words[i]);
        b = b.wrapping_add(words[i + 1]);
        c = c.wrapping_add(words[i + 2]);
        (a, b, c) = mix(a, b, c);
        i += 3;
    }
    match len - i {
        3 => {
            c = c.wrapping_add(words[i + 2]);
            b = b.wrapping_add(words[i + 1]);
            a = a.wrapping_add(words[i]);
            final_mix(a, b, c)
        }
        2 => {
            b = b.wrapping_add(words[i + 1]);
            a = a.wrapping_add(words[i]);
            final_mix(a, b, c)
        }
        1 => {
            a = a.wrapping_add(words[i]);
            final_mix(a, b, c)
        }
        _ => c,
    }
}

#[inline(always)]
fn mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(4);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(6);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(8);
    b = b.wrapping_add(a);
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(16);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(19);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(4);
    b = b.wrapping_add(a);
    (a, b, c)
}

#[inline(always)]
fn final_mix(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, integers only, explicit padding; instantiated at `u32` and
    // `Ipv6Words` (4-byte aligned), so no implicit padding (sizes checked below).
    unsafe impl<A: crate::maps::Addr> aya::Pod for BackendOf<A> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Affinity {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Backend>(), 16);
        assert_eq!(size_of::<Backend6>(), 28);
        assert_eq!(size_of::<Affinity>(), 8);
        assert_eq!(size_of::<BackendStats>(), 24);
    }

    #[test]
    fn jhash2_matches_known_values() {
        // jhash2 of nothing is the initial value's `c`.
        let w = [0u32; 10];
        assert_eq!(jhash2(&w, 0, 0), 0xdead_beef);
    }
}
