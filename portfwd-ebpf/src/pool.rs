//! Forwards with several backends (a *pool*, `portfwd_common::pool`): which backend a flow of
//! a forward carrying `FWD_POOL` goes to. The chosen backend becomes the forward's target, and
//! the packet is then translated exactly as for a forward with one target (`nat::publish`).
//!
//! A client's packet (its tuple as it arrives is the [`AFFINITY`](crate::maps::AFFINITY) key):
//! 1. its flow's affinity entry names a backend that is still the one it named (live, of this
//!    forward, same epoch) and, if draining, the flow is TCP: that backend (a flow keeps its
//!    backend across table changes; a draining backend keeps its TCP flows, its UDP flows are
//!    hashed again);
//! 2. otherwise `POOLS[slot]`: 0, the forward refuses new flows (every backend down, policy
//!    `refuse`): answered with ICMP port unreachable ([`refuse`]);
//! 3. otherwise the flow hash (`jhash2` of the tuple, the word layout of
//!    `portfwd::balance::flow`) reads a slot of the forward's Maglev row; its backend must be
//!    live and of this forward (else `drop_no_backend`); the choice is remembered in the
//!    affinity table and counted as a new flow of the backend.
//!
//! A forward without `FWD_POOL` never comes here: one test of its flags is all a single target
//! pays.
//!
//! The socket hooks pick a backend per socket ([`for_socket`]): the socket cookie hashed into
//! the row, so the socket's choice is stable while the table is unchanged.
use aya_ebpf::maps::{Array, LruHashMap};
use portfwd_common::{
    maps::{FlowKeyOf, ForwardValueOf, Ipv6Words},
    pool::{
        Affinity, BACKEND_DRAINING, BACKEND_LIVE, BackendOf, BackendStats, FLOW_HASH_SEED,
        MAGLEV_SIZE, MAX_BACKENDS, jhash2,
    },
    proto,
    reason::Reason,
};

use crate::{
    ctx::Ctx,
    family::{Family, Ipv4, Ipv6},
    flow,
    maps::{
        self, AFFINITY, AFFINITY6, BACKEND_STATS, BACKENDS, BACKENDS6, Lookup as _, MAGLEV, POOLS,
    },
    pmtu,
    types::IpL4,
};

/// No backend: a forward with one target (`stats::Tally::backend`), or a pool's slot naming no
/// live backend of it.
pub const NO_BACKEND: u32 = u32::MAX;
/// [`select`]: the forward refuses new flows.
const REFUSE: u32 = u32::MAX - 1;

/// What a family adds for pools: its backends, its affinity table, and the flow hash's words.
pub trait Pool: Family {
    fn backends() -> &'static Array<BackendOf<Self::Addr>>;
    fn affinity() -> &'static LruHashMap<FlowKeyOf<Self::Addr>, Affinity>;
    /// The words the flow hash reads for `key` (see `portfwd::balance::flow`), and how many.
    fn hash_words(key: &FlowKeyOf<Self::Addr>) -> ([u32; 10], usize);
}

/// The ports and protocol words of the flow hash: `(src_port << 16) | dst_port`,
/// `protocol << 24`.
#[inline(always)]
fn port_words<A>(key: &FlowKeyOf<A>) -> (u32, u32) {
    let ports = ((u16::from_be(key.sport_be) as u32) << 16) | u16::from_be(key.dport_be) as u32;
    (ports, (key.proto as u32) << 24)
}

impl Pool for Ipv4 {
    #[inline(always)]
    fn backends() -> &'static Array<BackendOf<u32>> {
        &BACKENDS
    }
    #[inline(always)]
    fn affinity() -> &'static LruHashMap<FlowKeyOf<u32>, Affinity> {
        &AFFINITY
    }
    #[inline(always)]
    fn hash_words(key: &FlowKeyOf<u32>) -> ([u32; 10], usize) {
        let (ports, proto) = port_words(key);
        let mut w = [0u32; 10];
        w[0] = u32::from_be(key.saddr_be);
        w[1] = u32::from_be(key.daddr_be);
        w[2] = ports;
        w[3] = proto;
        (w, 4)
    }
}

impl Pool for Ipv6 {
    #[inline(always)]
    fn backends() -> &'static Array<BackendOf<Ipv6Words>> {
        &BACKENDS6
    }
    #[inline(always)]
    fn affinity() -> &'static LruHashMap<FlowKeyOf<Ipv6Words>, Affinity> {
        &AFFINITY6
    }
    #[inline(always)]
    fn hash_words(key: &FlowKeyOf<Ipv6Words>) -> ([u32; 10], usize) {
        let (ports, proto) = port_words(key);
        let mut w = [0u32; 10];
        for i in 0..4 {
            w[i] = u32::from_be(key.saddr_be[i]);
            w[4 + i] = u32::from_be(key.daddr_be[i]);
        }
        w[8] = ports;
        w[9] = proto;
        (w, 10)
    }
}

/// The backend of `pkt`'s flow, a packet for the pool forward `fwd`: written into `fwd`'s
/// target fields, its id returned. Otherwise the reason the packet goes no further: refused
/// (answered, [`refuse`]) or `drop_no_backend`.
#[inline(always)]
pub fn choose<C: Ctx, F: Pool>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    fwd: &mut ForwardValueOf<F::Addr>,
) -> Result<u32, Reason> {
    let picked = select::<F>(pkt, fwd.stats_slot, flow::opens_connection(ctx, pkt));
    if picked < MAX_BACKENDS {
        // Live and of this forward: `select` checked it.
        let b = F::backends().get(picked).ok_or(Reason::DropNoBackend)?;
        fwd.target_addr_be = b.addr_be;
        fwd.target_port_be = b.port_be;
        return Ok(picked);
    }
    if picked == REFUSE {
        // SAFETY: `refuse` returns a `Reason`'s discriminant, and `Reason` is `repr(u32)`.
        return Err(unsafe { core::mem::transmute::<u32, Reason>(refuse::<C, F>(ctx, pkt)) });
    }
    Err(Reason::DropNoBackend)
}

/// The selection (see the module) for a packet of the forward counting into `slot`, a BPF
/// function of its own: the affinity key, the hash's words and the backend it reads stay in its
/// own frame. Returns the backend id, or (at least
/// `MAX_BACKENDS`) [`REFUSE`] or [`NO_BACKEND`].
#[inline(never)]
fn select<F: Pool>(pkt: &IpL4<F::Addr>, slot: u32, opens: bool) -> u32 {
    let Some(key) = maps::pool_scratch::<FlowKeyOf<F::Addr>>() else {
        return NO_BACKEND;
    };
    let key: &FlowKeyOf<F::Addr> = key.write(flow::key(&pkt.tuple(), pkt.proto));
    if let Some(a) = F::affinity().get_ptr(key)
        // SAFETY: from a successful lookup; the entry stays allocated while the program runs
        // (RCU); copied out at once, a concurrent update can only make it stale.
        && let a = unsafe { *a }
        && let Some(b) = F::backends().get(a.backend)
        && b.flags & BACKEND_LIVE != 0
        && b.stats_slot == slot
        && b.epoch == a.epoch
        // Draining (or down): its established TCP flows stay; a new connection that reuses
        // the tuple of one of them (a SYN) does not.
        && (b.flags & BACKEND_DRAINING == 0 || (pkt.proto == proto::TCP && !opens))
    {
        return a.backend;
    }
    // The row first, then the hash: no helper call in between, so its words need no stack.
    let Some(row) = pool_row(slot) else {
        return REFUSE;
    };
    let id = row_backend(row, flow_hash::<F>(key));
    let Some(b) = serving::<F>(id, slot) else {
        return NO_BACKEND;
    };
    let placed = Affinity {
        backend: id,
        epoch: b.epoch,
    };
    // An LRU map makes room by evicting; should the insert still fail, the flow is found again
    // by the same hash while the table is unchanged.
    if F::affinity().insert(key, placed, 0).is_ok() {
        maps::update(&BACKEND_STATS, id, |s: &mut BackendStats| s.new_flows += 1);
    }
    id
}

/// The flow hash of the tuple `key`.
#[inline(always)]
fn flow_hash<F: Pool>(key: &FlowKeyOf<F::Addr>) -> u32 {
    let (words, len) = F::hash_words(key);
    jhash2(&words, len, FLOW_HASH_SEED)
}

/// The Maglev row of the pool counting into `slot`; `None` when it refuses new flows
/// (`POOLS[slot] == 0`).
#[inline(always)]
fn pool_row(slot: u32) -> Option<u32> {
    let row = *POOLS.get(slot)?;
    row.checked_sub(1)
}

/// The backend id in slot `hash % MAGLEV_SIZE` of Maglev row `row`. An index out of the map's
/// range gives [`NO_BACKEND`], which [`serving`] finds no backend at.
#[inline(always)]
fn row_backend(row: u32, hash: u32) -> u32 {
    let index = row * MAGLEV_SIZE + hash % MAGLEV_SIZE;
    MAGLEV.get(index).copied().unwrap_or(NO_BACKEND)
}

/// Backend `id`, if it is live and belongs to the forward counting into `slot`.
#[inline(always)]
fn serving<F: Pool>(id: u32, slot: u32) -> Option<BackendOf<F::Addr>> {
    let b = *F::backends().get(id)?;
    (b.flags & BACKEND_LIVE != 0 && b.stats_slot == slot).then_some(b)
}

/// A new flow of a forward that refuses them: answered with ICMP port unreachable, as
/// iptables' REJECT does (a TCP client's `connect()` fails with `ECONNREFUSED`). A BPF function
/// of its own (the answer is built in place, `pmtu`). Returns the reason counted.
#[inline(never)]
fn refuse<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> u32 {
    pmtu::port_unreachable::<C, F>(ctx, pkt) as u32
}

/// The backend the flow of the client's tuple `key` was placed on, as its affinity entry
/// names it, written into `fwd`'s target (for an ICMP error about one of its replies); `false`
/// when the entry is gone. Whether the flow was really translated so is for the caller to
/// check (its reply flow entry).
#[inline(always)]
pub fn flow_target<F: Pool>(key: FlowKeyOf<F::Addr>, fwd: &mut ForwardValueOf<F::Addr>) -> bool {
    let Some(a) = F::affinity().copied(key) else {
        return false;
    };
    let Some(b) = F::backends().get(a.backend) else {
        return false;
    };
    fwd.target_addr_be = b.addr_be;
    fwd.target_port_be = b.port_be;
    true
}

/// Counts a packet of `bytes` sent to backend `id` (client -> backend); nothing for
/// [`NO_BACKEND`].
#[inline(always)]
pub fn count_packet(id: u32, bytes: u64) {
    if id == NO_BACKEND {
        return;
    }
    maps::update(&BACKEND_STATS, id, |s: &mut BackendStats| {
        s.packets += 1;
        s.bytes += bytes;
    });
}

/// The backend a socket (`cookie`) connecting to the pool forward `fwd` goes to: written into
/// `fwd`'s target; `false` when there is none (the forward refuses new flows, or its slot has
/// no live backend of it).
#[inline(always)]
pub fn for_socket<F: Pool>(cookie: u64, fwd: &mut ForwardValueOf<F::Addr>) -> bool {
    let mut words = [0u32; 10];
    words[0] = cookie as u32;
    words[1] = (cookie >> 32) as u32;
    let Some(row) = pool_row(fwd.stats_slot) else {
        return false;
    };
    let id = row_backend(row, jhash2(&words, 2, FLOW_HASH_SEED));
    let Some(b) = serving::<F>(id, fwd.stats_slot) else {
        return false;
    };
    fwd.target_addr_be = b.addr_be;
    fwd.target_port_be = b.port_be;
    true
}
