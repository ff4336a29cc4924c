//! Backends draining: removed from their pool (by a reload, `portfwd del`, a Docker event) or
//! drained (weight 0, `portfwd drain`). They get no new flows (they are out of the table), and
//! are marked [`BACKEND_DRAINING`] in the datapath, which keeps their established TCP flows on
//! them and hashes their UDP flows again. When the pool's grace period is over, their id is
//! freed: what is left of their flows is hashed again (a TCP peer then gets a reset from the
//! backend it lands on, as after a failover).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use portfwd_common::pool::{BACKEND_DRAINING, BACKEND_LIVE};

use super::write_backend;
use crate::{datapath::pools::PoolMaps, error::chain};

/// One backend draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Drain {
    pub(super) slot: u32,
    pub(super) addr: SocketAddr,
    epoch: u32,
    until: Instant,
    /// Removed from its pool (rather than drained in place, weight 0): listed apart.
    removed: bool,
}

impl Drain {
    pub(super) fn removed(slot: u32, addr: SocketAddr, epoch: u32, grace: Duration) -> Drain {
        Drain {
            slot,
            addr,
            epoch,
            until: Instant::now() + grace,
            removed: true,
        }
    }

    pub(super) fn member(slot: u32, addr: SocketAddr, epoch: u32, grace: Duration) -> Drain {
        Drain {
            removed: false,
            ..Drain::removed(slot, addr, epoch, grace)
        }
    }
}

/// Every backend draining, by id.
#[derive(Debug, Default)]
pub(super) struct Draining {
    by_id: BTreeMap<u32, Drain>,
    /// Rows a previous daemon's pools read, freed once the pools are reconciled.
    orphan_rows: Vec<u32>,
}

impl Draining {
    /// Marks backend `id` draining in the datapath until `drain.until`.
    pub(super) fn start(&mut self, id: u32, drain: Drain, maps: &mut PoolMaps) {
        let flags = BACKEND_LIVE | BACKEND_DRAINING;
        if let Err(e) = write_backend(maps, id, drain.addr, flags, drain.slot, drain.epoch) {
            tracing::warn!("{}", chain(&e));
        }
        self.by_id.insert(id, drain);
    }

    /// Backend `id` is back in service (the caller marks it live again).
    pub(super) fn cancel(&mut self, id: u32) {
        self.by_id.remove(&id);
    }

    /// The drains whose grace is over, taken out.
    pub(super) fn expired(&mut self) -> Vec<(u32, Drain)> {
        let now = Instant::now();
        let ids: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, d)| d.until <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| Some((id, self.by_id.remove(&id)?)))
            .collect()
    }

    /// How long until the next grace is over.
    pub(super) fn next_due(&self) -> Option<Duration> {
        let now = Instant::now();
        self.by_id
            .values()
            .map(|d| d.until.saturating_duration_since(now))
            .min()
    }

    /// The backends removed from pool `slot` and still draining.
    pub(super) fn removed_of(&self, slot: u32) -> impl Iterator<Item = (u32, SocketAddr)> + '_ {
        self.by_id
            .iter()
            .filter(move |(_, d)| d.slot == slot && d.removed)
            .map(|(id, d)| (*id, d.addr))
    }

    /// Every backend draining, with its epoch.
    pub(super) fn epochs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.by_id.iter().map(|(id, d)| (*id, d.epoch))
    }

    /// Pool `slot` is gone: its drains end now. Returns their ids, to be freed.
    pub(super) fn forget_slot(&mut self, slot: u32) -> Vec<u32> {
        let ids: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, d)| d.slot == slot)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.by_id.remove(id);
        }
        ids
    }

    pub(super) fn orphan_row(&mut self, row: u32) {
        self.orphan_rows.push(row);
    }

    pub(super) fn take_orphan_rows(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.orphan_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_expire_in_order_and_say_when_the_next_is_due() {
        let addr: SocketAddr = "172.17.0.2:80".parse().unwrap();
        let mut d = Draining::default();
        d.by_id
            .insert(1, Drain::removed(7, addr, 1, Duration::ZERO));
        d.by_id
            .insert(2, Drain::member(7, addr, 2, Duration::from_secs(60)));
        let expired = d.expired();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, 1);
        assert!(d.next_due().unwrap() > Duration::from_secs(50));
        assert_eq!(
            d.removed_of(7).count(),
            0,
            "a drained member is not 'removed'"
        );
        assert_eq!(d.forget_slot(7), vec![2]);
        assert_eq!(d.next_due(), None);
    }
}
