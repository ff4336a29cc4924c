//! Typed access to the maps of forwards with several backends (`portfwd_common::pool`): the
//! backends, the Maglev rows, which row each pool reads, the flows' affinity and the
//! per-backend counters. Like [`super::maps`], this is a byte-order boundary: addresses and
//! ports are converted to wire order here.
use std::{
    collections::HashMap as StdHashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
};
use portfwd_common::{
    maps::Ipv6Words,
    pool::{
        AFFINITY, AFFINITY6, Affinity, AffinityKeyOf, BACKEND_STATS, BACKENDS, BACKENDS6,
        BackendOf, BackendStats, MAGLEV, MAGLEV_SIZE, MAX_MAGLEV_ROWS, POOLS,
    },
};

use super::maps::{MapAddr, map_err, per_cpu, take};
use crate::error::{Error, LoadError};

/// One backend as [`PoolMaps`] writes and reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendEntry {
    pub addr: SocketAddr,
    /// `portfwd_common::pool::BACKEND_LIVE` / `BACKEND_DRAINING`.
    pub flags: u16,
    /// The stats slot of the forward it belongs to.
    pub slot: u32,
    pub epoch: u32,
}

/// The maps of pools, both families.
pub struct PoolMaps {
    pools: Array<MapData, u32>,
    maglev: Array<MapData, u32>,
    backends: Array<MapData, BackendOf<u32>>,
    backends6: Array<MapData, BackendOf<Ipv6Words>>,
    affinity: HashMap<MapData, AffinityKeyOf<u32>, Affinity>,
    affinity6: HashMap<MapData, AffinityKeyOf<Ipv6Words>, Affinity>,
    stats: PerCpuArray<MapData, BackendStats>,
    /// What this process last wrote into each row: a rewrite of the row updates only the slots
    /// that differ (a table swap after one backend of 16 changed rewrites about an eighth of
    /// the row instead of all of its 16,381 slots, one syscall each).
    written: StdHashMap<u32, Vec<u32>>,
    /// The last count of live flows, and when it was taken.
    live_cache: Mutex<Option<LiveCount>>,
}

impl PoolMaps {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            pools: take(ebpf, POOLS)?,
            maglev: take(ebpf, MAGLEV)?,
            backends: take(ebpf, BACKENDS)?,
            backends6: take(ebpf, BACKENDS6)?,
            affinity: take(ebpf, AFFINITY)?,
            affinity6: take(ebpf, AFFINITY6)?,
            stats: take(ebpf, BACKEND_STATS)?,
            written: StdHashMap::new(),
            live_cache: Mutex::new(None),
        })
    }

    /// Writes backend `id`. The entry of the other family under the same id is cleared, so an id
    /// is live in one family at most.
    pub fn set_backend(&mut self, id: u32, b: BackendEntry) -> Result<(), Error> {
        let what = "backends";
        match b.addr {
            SocketAddr::V4(a) => {
                self.backends
                    .set(
                        id,
                        entry::<u32>(&b, u32::from_ip(a.ip().to_owned().into())),
                        0,
                    )
                    .map_err(map_err(what))?;
                self.backends6
                    .set(id, BackendOf::default(), 0)
                    .map_err(map_err(what))
            }
            SocketAddr::V6(a) => {
                let addr = Ipv6Words::from_ip(a.ip().to_owned().into());
                self.backends6
                    .set(id, entry::<Ipv6Words>(&b, addr), 0)
                    .map_err(map_err(what))?;
                self.backends
                    .set(id, BackendOf::default(), 0)
                    .map_err(map_err(what))
            }
        }
    }

    /// Frees backend `id` (both families): its flows are hashed again.
    pub fn clear_backend(&mut self, id: u32) -> Result<(), Error> {
        let what = "backends";
        self.backends
            .set(id, BackendOf::default(), 0)
            .map_err(map_err(what))?;
        self.backends6
            .set(id, BackendOf::default(), 0)
            .map_err(map_err(what))
    }

    /// Backend `id` as stored, `None` when free.
    pub fn backend(&self, id: u32) -> Option<BackendEntry> {
        let v4 = self.backends.get(&id, 0).ok().filter(|b| b.flags != 0);
        if let Some(b) = v4 {
            return Some(read_entry(&b));
        }
        let v6 = self.backends6.get(&id, 0).ok().filter(|b| b.flags != 0)?;
        Some(read_entry(&v6))
    }

    /// Every backend in use, with its id: what a restarted daemon takes over.
    pub fn live_backends(&self) -> Vec<(u32, BackendEntry)> {
        let n = self.backends.len();
        (0..n)
            .filter_map(|id| Some((id, self.backend(id)?)))
            .collect()
    }

    /// Writes Maglev row `row` (`table` holds exactly [`MAGLEV_SIZE`] backend ids). The row must
    /// be one no pool points at.
    pub fn write_row(&mut self, row: u32, table: &[u32]) -> Result<(), Error> {
        assert!(row < MAX_MAGLEV_ROWS, "Maglev row {row} out of range");
        assert_eq!(table.len(), MAGLEV_SIZE as usize, "a Maglev row's size");
        let base = row * MAGLEV_SIZE;
        let before = self.written.remove(&row);
        for (i, id) in table.iter().enumerate() {
            if before.as_ref().is_some_and(|b| b[i] == *id) {
                continue;
            }
            // Below MAGLEV_SIZE: fits u32.
            self.maglev
                .set(base + i as u32, *id, 0)
                .map_err(map_err("Maglev tables"))?;
        }
        // Kept only once the whole row is written: after a failure, the next write is whole.
        self.written.insert(row, table.to_vec());
        Ok(())
    }

    /// Row `row` as stored.
    pub fn row(&self, row: u32) -> Result<Vec<u32>, Error> {
        let base = row * MAGLEV_SIZE;
        (0..MAGLEV_SIZE)
            .map(|i| {
                self.maglev
                    .get(&(base + i), 0)
                    .map_err(map_err("Maglev tables"))
            })
            .collect()
    }

    /// Points the pool of the forward counting into `slot` at `row` (one store: the swap), or
    /// makes it refuse new flows (`None`).
    pub fn point_pool(&mut self, slot: u32, row: Option<u32>) -> Result<(), Error> {
        self.pools
            .set(slot, row.map_or(0, |r| r + 1), 0)
            .map_err(map_err("pools"))
    }

    /// The row the pool of `slot` reads (`None`: it refuses, or is no pool).
    pub fn pool_row(&self, slot: u32) -> Option<u32> {
        self.pools.get(&slot, 0).ok().and_then(|r| r.checked_sub(1))
    }

    /// Counters of backend `id`, summed over CPUs.
    pub fn stats(&self, id: u32) -> Result<BackendStats, Error> {
        let per_cpu = self
            .stats
            .get(&id, 0)
            .map_err(map_err("backend counters"))?;
        let mut sum = BackendStats::default();
        for s in per_cpu.iter() {
            sum.add(s);
        }
        Ok(sum)
    }

    /// Zeroes the counters of backend `id` (before a new backend takes it).
    pub fn reset_stats(&mut self, id: u32) -> Result<(), Error> {
        let zero = per_cpu(BackendStats::default(), "backend counters")?;
        self.stats
            .set(id, zero, 0)
            .map_err(map_err("backend counters"))
    }

    /// Flows remembered per backend id: the entries of both affinity tables naming a backend
    /// of `epochs` (id -> its current epoch), as far as the LRU tables still hold them. A walk
    /// of the tables costs two system calls an entry (up to 196,608 of them), so a count is
    /// reused while it is younger than [`LIVE_FLOWS_TTL`] and no backend has had a new flow
    /// since: `list`, `status` and a metrics scrape in a row walk once, and a count never
    /// misses a placement.
    pub fn live_flows(&self, epochs: &StdHashMap<u32, u32>) -> StdHashMap<u32, u64> {
        let placed: u64 = epochs
            .keys()
            .filter_map(|id| self.stats(*id).ok())
            .map(|s| s.new_flows)
            .sum();
        let mut cache = self
            .live_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = cache.as_ref()
            && c.at.elapsed() < LIVE_FLOWS_TTL
            && c.placed == placed
            && &c.epochs == epochs
        {
            return c.counts.clone();
        }
        let mut counts = StdHashMap::new();
        let values = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v)
            .chain(self.affinity6.iter().filter_map(Result::ok).map(|(_, v)| v));
        for v in values {
            if epochs.get(&v.backend) == Some(&v.epoch) {
                *counts.entry(v.backend).or_insert(0) += 1;
            }
        }
        *cache = Some(LiveCount {
            at: Instant::now(),
            placed,
            epochs: epochs.clone(),
            counts: counts.clone(),
        });
        counts
    }
}

/// A count of [`PoolMaps::live_flows`], with what it was taken for.
struct LiveCount {
    at: Instant,
    /// The backends' new flows summed at the time.
    placed: u64,
    epochs: StdHashMap<u32, u32>,
    counts: StdHashMap<u32, u64>,
}

/// How long a count of [`PoolMaps::live_flows`] is reused.
pub const LIVE_FLOWS_TTL: Duration = Duration::from_secs(1);

fn entry<A: MapAddr>(b: &BackendEntry, addr: Option<A>) -> BackendOf<A> {
    BackendOf {
        addr_be: addr.unwrap_or_default(),
        port_be: b.addr.port().to_be(),
        flags: b.flags,
        stats_slot: b.slot,
        epoch: b.epoch,
    }
}

fn read_entry<A: MapAddr>(b: &BackendOf<A>) -> BackendEntry {
    BackendEntry {
        addr: SocketAddr::new(b.addr_be.to_ip(), u16::from_be(b.port_be)),
        flags: b.flags,
        slot: b.stats_slot,
        epoch: b.epoch,
    }
}
