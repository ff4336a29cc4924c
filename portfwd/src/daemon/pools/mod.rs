//! Forwards with several backends (pools, issue #16) as the daemon runs them: each pool's
//! backends with their ids in the datapath, their health and weight, the Maglev table the
//! pool's new flows are hashed into, and the backends draining after their removal.
//!
//! - this file: [`Pools`], reconciling the pools with the forwards that run, and building and
//!   swapping their tables;
//! - `checks`: the health scheduler the daemon owns, and what its events change;
//! - `drain`: removed (or drained) backends that keep their TCP flows for the grace period.
//!
//! # Order of writes
//!
//! A pool's table is written whole into a row no packet reads, then the pool is pointed at it
//! (one store), and only then is the old row freed: every new flow is hashed over the old set
//! or the new one. A new pool forward is pointed at its table *before* its forward entry goes
//! live ([`Pools::prepare`] runs before the generation switch or the insert), so no packet
//! finds the forward without a table; a pool forward that went is retired after
//! ([`Pools::retire`]).
//!
//! # Restarts
//!
//! The backends live in pinned maps, each with an id and an epoch that the flows' affinity
//! entries name. A restarted daemon takes over each backend still wanted (same forward slot,
//! same address) with its id and epoch ([`Pools::adopt`]), so every remembered flow stays on
//! its backend; and as the tables are a function of the backend set, flows not remembered
//! hash to the same backend as before.

mod checks;
mod drain;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

use portfwd_common::pool::{
    BACKEND_DRAINING, BACKEND_LIVE, MAGLEV_SIZE, MAX_BACKENDS, MAX_MAGLEV_ROWS,
};

pub(super) use self::checks::HealthChecks;
use self::drain::Draining;
use super::{slots::Slots, state::Active};
use crate::{
    api::{BackendState, BackendStatus, ForwardEntry, PoolsStatus},
    balance,
    datapath::{
        maps::Maps,
        pools::{BackendEntry, PoolMaps},
    },
    error::{Error, chain},
    health::{self, Health},
    publish::{AllDown, Listen, Pool},
};

/// One backend of a running pool.
#[derive(Debug, Clone)]
struct Member {
    addr: SocketAddr,
    weight: u32,
    /// Its id in the datapath; `None` once a drained member's grace has run out.
    id: Option<u32>,
    epoch: u32,
    /// From the health checks; `Up` without a check.
    health: Health,
}

/// A pool forward as it runs.
#[derive(Debug)]
struct PoolRun {
    listen: Listen,
    spec: Pool,
    members: Vec<Member>,
    /// The row the datapath reads (`None`: none yet, or the pool refuses).
    row: Option<u32>,
    /// What the current table was built from (id, address, weight), or `None` for refusing:
    /// an unchanged set is not rebuilt.
    built: Option<Option<Vec<(u32, SocketAddr, u32)>>>,
}

/// Every pool the daemon runs, by its forward's stats slot.
pub(super) struct Pools {
    runs: BTreeMap<u32, PoolRun>,
    ids: Slots,
    rows: Slots,
    next_epoch: u32,
    /// Backends a previous daemon left, by (slot, address), until taken over or retired.
    adopted: HashMap<(u32, SocketAddr), (u32, BackendEntry)>,
    draining: Draining,
    pub(super) checks: HealthChecks,
    /// The task that wakes up when the next drain is due.
    drain_timer: Option<tokio::task::AbortHandle>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            runs: BTreeMap::new(),
            ids: Slots::with_limit(MAX_BACKENDS),
            rows: Slots::with_limit(MAX_MAGLEV_ROWS),
            next_epoch: 1,
            adopted: HashMap::new(),
            draining: Draining::default(),
            checks: HealthChecks::default(),
            drain_timer: None,
        }
    }
}

impl Pools {
    /// Takes over what a previous daemon left in the pinned maps: its backends (claimed by
    /// [`Pools::prepare`] when still wanted) and the rows its pools read.
    pub(super) fn adopt(&mut self, maps: &PoolMaps, slots: impl Iterator<Item = u32>) {
        let live = maps.live_backends();
        let mut rows = Vec::new();
        for slot in slots {
            if let Some(row) = maps.pool_row(slot)
                && row < MAX_MAGLEV_ROWS
            {
                rows.push(row);
            }
        }
        self.ids.adopt(live.iter().map(|(id, _)| *id));
        self.rows.adopt(rows.iter().copied());
        self.next_epoch = live.iter().map(|(_, b)| b.epoch).max().unwrap_or(0) + 1;
        // Rows pointed at by a pool that is not taken over are freed when it is retired.
        for row in rows {
            self.draining.orphan_row(row);
        }
        self.adopted = live
            .into_iter()
            .map(|(id, b)| ((b.slot, b.addr), (id, b)))
            .collect();
    }

    /// Brings the pools in line with `forwards` (all of them, or the one being added) before
    /// they go live: new pools get their backends and table; changed pools get new backends,
    /// a new table swapped in, and their removed backends draining. Pools not in `forwards`
    /// are left alone (see [`Pools::retire`]).
    pub(super) fn prepare(&mut self, maps: &mut Maps, forwards: &[Active]) -> Result<(), Error> {
        let mut touched = Vec::new();
        for a in forwards {
            let Some(spec) = &a.fwd.pool else { continue };
            self.reconcile(maps, a.slot, a.fwd.listen, spec)?;
            touched.push(a.slot);
        }
        self.sync_checks();
        for slot in touched {
            let Some(mut run) = self.runs.remove(&slot) else {
                continue;
            };
            // A backend another pool already checks starts with its known health.
            if let Some(h) = &run.spec.health {
                for m in &mut run.members {
                    let target = health::Target {
                        addr: m.addr,
                        check: h.check.clone(),
                    };
                    if let Some(health) = self.checks.health(&target)
                        && health != m.health
                    {
                        m.health = health;
                        if let Some(id) = m.id
                            && m.weight > 0
                            && health == Health::Down
                        {
                            let flags = BACKEND_LIVE | BACKEND_DRAINING;
                            write_backend(&mut maps.pools, id, m.addr, flags, slot, m.epoch)?;
                        }
                    }
                }
            }
            let result = self.rebuild(&mut maps.pools, slot, &mut run);
            self.runs.insert(slot, run);
            result?;
        }
        Ok(())
    }

    /// Retires the pools whose forward no longer runs as a pool (`live`: the slots of the
    /// forwards running, with whether each is a pool): their backends and table are freed at
    /// once, since no packet can reach them any more. Then what a previous daemon left and
    /// nobody took over goes too.
    pub(super) fn retire(&mut self, maps: &mut Maps, live: &[(u32, bool)]) {
        let pools: BTreeSet<u32> = live.iter().filter(|(_, p)| *p).map(|(s, _)| *s).collect();
        let gone: Vec<u32> = self
            .runs
            .keys()
            .copied()
            .filter(|s| !pools.contains(s))
            .collect();
        for slot in gone {
            let Some(run) = self.runs.remove(&slot) else {
                continue;
            };
            tracing::info!(listen = %run.listen, backends = run.members.len(), "pool removed");
            for m in &run.members {
                if let Some(id) = m.id {
                    self.free_backend(&mut maps.pools, id);
                }
            }
            if let Err(e) = maps.pools.point_pool(slot, None) {
                tracing::warn!("{}", chain(&e));
            }
            if let Some(row) = run.row {
                self.rows.free(row);
            }
            for id in self.draining.forget_slot(slot) {
                self.free_backend(&mut maps.pools, id);
            }
        }
        for ((slot, addr), (id, b)) in std::mem::take(&mut self.adopted) {
            match self.runs.get(&slot) {
                // Still a pool, without this backend: it drains as if just removed.
                Some(run) => {
                    let drain = drain::Drain::removed(slot, addr, b.epoch, run.spec.grace);
                    self.draining.start(id, drain, &mut maps.pools);
                }
                None => self.free_backend(&mut maps.pools, id),
            }
        }
        for row in self.draining.take_orphan_rows() {
            if !self.runs.values().any(|r| r.row == Some(row)) {
                self.rows.free(row);
            }
        }
        self.sync_checks();
    }

    fn free_backend(&mut self, maps: &mut PoolMaps, id: u32) {
        if let Err(e) = maps.clear_backend(id) {
            tracing::warn!("{}", chain(&e));
        }
        self.ids.free(id);
    }

    /// One pool in line with `spec`.
    fn reconcile(
        &mut self,
        maps: &mut Maps,
        slot: u32,
        listen: Listen,
        spec: &Pool,
    ) -> Result<(), Error> {
        let mut run = self.runs.remove(&slot).unwrap_or_else(|| PoolRun {
            listen,
            spec: spec.clone(),
            members: Vec::new(),
            row: None,
            built: None,
        });
        run.listen = listen;
        run.spec = spec.clone();
        let result = self.reconcile_members(maps, slot, &mut run);
        self.runs.insert(slot, run);
        result
    }

    fn reconcile_members(
        &mut self,
        maps: &mut Maps,
        slot: u32,
        run: &mut PoolRun,
    ) -> Result<(), Error> {
        let wanted: Vec<(SocketAddr, u32)> = run
            .spec
            .targets
            .iter()
            .map(|w| (SocketAddr::new(w.target.addr, w.target.port), w.weight))
            .collect();
        // Removed members drain.
        let (kept, removed): (Vec<Member>, Vec<Member>) = std::mem::take(&mut run.members)
            .into_iter()
            .partition(|m| wanted.iter().any(|(a, _)| *a == m.addr));
        for m in removed {
            tracing::info!(listen = %run.listen, backend = %m.addr, grace = ?run.spec.grace, "backend removed: draining");
            if let Some(id) = m.id {
                let drain = drain::Drain::removed(slot, m.addr, m.epoch, run.spec.grace);
                self.draining.start(id, drain, &mut maps.pools);
            }
        }
        run.members = kept;
        for (addr, weight) in wanted {
            let Some(i) = run.members.iter().position(|m| m.addr == addr) else {
                // A new member; one listed drained (weight 0) from the start takes no id.
                let member = if weight == 0 {
                    Member {
                        addr,
                        weight,
                        id: None,
                        epoch: 0,
                        health: Health::Up,
                    }
                } else {
                    Member {
                        weight,
                        ..self.new_member(&mut maps.pools, slot, addr)?
                    }
                };
                run.members.push(member);
                continue;
            };
            let m = &mut run.members[i];
            let was = std::mem::replace(&mut m.weight, weight);
            if weight == 0 && was != 0 {
                // Drained: no new flows; its flows keep it for the grace period.
                tracing::info!(listen = %run.listen, backend = %addr, grace = ?run.spec.grace, "backend drained");
                if let Some(id) = m.id {
                    let drain = drain::Drain::member(slot, addr, m.epoch, run.spec.grace);
                    self.draining.start(id, drain, &mut maps.pools);
                }
            } else if weight != 0 && was == 0 {
                // Back from a drain: a live backend again (a fresh id if its grace ran out).
                match m.id {
                    Some(id) => {
                        self.draining.cancel(id);
                        write_backend(&mut maps.pools, id, addr, BACKEND_LIVE, slot, m.epoch)?;
                    }
                    None => {
                        *m = Member {
                            weight,
                            ..self.new_member(&mut maps.pools, slot, addr)?
                        };
                    }
                }
                tracing::info!(listen = %run.listen, backend = %addr, "backend back in service");
            }
        }
        Ok(())
    }

    /// A backend joining pool `slot`: the one a previous daemon left, or a fresh id.
    fn new_member(
        &mut self,
        maps: &mut PoolMaps,
        slot: u32,
        addr: SocketAddr,
    ) -> Result<Member, Error> {
        if let Some((id, b)) = self.adopted.remove(&(slot, addr)) {
            if b.flags & BACKEND_DRAINING == 0 {
                return Ok(Member {
                    addr,
                    weight: 1,
                    id: Some(id),
                    epoch: b.epoch,
                    health: Health::Up,
                });
            }
            // It was draining: a fresh start under the same id.
            self.ids.free(id);
        }
        let id = self
            .ids
            .try_alloc()
            .ok_or(Error::TooManyBackends(MAX_BACKENDS))?;
        let epoch = self.next_epoch;
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        maps.reset_stats(id)?;
        write_backend(maps, id, addr, BACKEND_LIVE, slot, epoch)?;
        Ok(Member {
            addr,
            weight: 1,
            id: Some(id),
            epoch,
            health: Health::Up,
        })
    }

    /// Builds `run`'s table from its members that take new flows and swaps it in, unless the
    /// set is the one already built.
    fn rebuild(&mut self, maps: &mut PoolMaps, slot: u32, run: &mut PoolRun) -> Result<(), Error> {
        let serving = |m: &&Member| m.weight > 0 && m.id.is_some();
        let mut set: Vec<(u32, SocketAddr, u32)> = run
            .members
            .iter()
            .filter(serving)
            .filter(|m| m.health == Health::Up)
            .filter_map(|m| Some((m.id?, m.addr, m.weight)))
            .collect();
        if set.is_empty() && run.spec.all_down == AllDown::Serve {
            set = run
                .members
                .iter()
                .filter(serving)
                .filter_map(|m| Some((m.id?, m.addr, m.weight)))
                .collect();
        }
        let wanted = (!set.is_empty()).then_some(set);
        if run.built.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let old = run.row;
        match &wanted {
            None => {
                maps.point_pool(slot, None)?;
                run.row = None;
                tracing::warn!(listen = %run.listen, "every backend is down: refusing new flows (all_down: refuse)");
            }
            Some(set) => {
                let backends: Vec<balance::Backend> = set
                    .iter()
                    .map(|(id, addr, weight)| balance::Backend {
                        id: *id,
                        addr: *addr,
                        weight: *weight,
                    })
                    .collect();
                let table = balance::build_table(&backends, MAGLEV_SIZE as usize)
                    .map_err(|e| Error::Pool(e.to_string()))?;
                let row = self
                    .rows
                    .try_alloc()
                    .ok_or(Error::TooManyPools(MAX_MAGLEV_ROWS))?;
                if let Err(e) = maps.write_row(row, &table) {
                    self.rows.free(row);
                    return Err(e);
                }
                maps.point_pool(slot, Some(row))?;
                run.row = Some(row);
            }
        }
        run.built = Some(wanted);
        if let Some(old) = old {
            // No packet reads the old row once every CPU has moved on from the pointer.
            crate::datapath::generation::wait_for_readers();
            self.rows.free(old);
        }
        Ok(())
    }

    /// Applies a health check's change to every pool with that backend and check.
    pub(super) fn on_health(&mut self, maps: &mut Maps, ev: &health::Event) {
        let slots: Vec<u32> = self.runs.keys().copied().collect();
        for slot in slots {
            let Some(mut run) = self.runs.remove(&slot) else {
                continue;
            };
            let checked = run
                .spec
                .health
                .as_ref()
                .is_some_and(|h| h.check == ev.target.check);
            let mut changed = false;
            for m in run.members.iter_mut().filter(|m| m.addr == ev.target.addr) {
                if checked && m.health != ev.health {
                    m.health = ev.health;
                    changed = true;
                    let cause = ev.cause.as_ref().map(|c| c.to_string()).unwrap_or_default();
                    tracing::warn!(listen = %run.listen, backend = %m.addr, health = %ev.health, cause, "backend health changed");
                    // A backend down keeps its TCP flows (they end on their own, as a dead
                    // peer's do) but its UDP flows are hashed again, as a draining one's.
                    if let Some(id) = m.id
                        && m.weight > 0
                    {
                        let flags = match ev.health {
                            Health::Up => BACKEND_LIVE,
                            Health::Down => BACKEND_LIVE | BACKEND_DRAINING,
                        };
                        if let Err(e) =
                            write_backend(&mut maps.pools, id, m.addr, flags, slot, m.epoch)
                        {
                            tracing::error!("{}", chain(&e));
                        }
                    }
                }
            }
            if changed && let Err(e) = self.rebuild(&mut maps.pools, slot, &mut run) {
                tracing::error!(listen = %run.listen, "rebuilding the pool's table: {}", chain(&e));
            }
            self.runs.insert(slot, run);
        }
    }

    /// Ends the grace of draining backends whose time is up: their remaining flows are hashed
    /// again (and fail, for TCP), and their ids are freed. Returns when the next one is due.
    pub(super) fn expire(&mut self, maps: &mut Maps) -> Option<Duration> {
        let expired = self.draining.expired();
        for (id, drain::Drain { slot, addr, .. }) in expired {
            tracing::info!(backend = %addr, "grace period over: backend's remaining flows are cut");
            // A drained member (weight 0) still configured keeps its place without an id.
            if let Some(run) = self.runs.get_mut(&slot)
                && let Some(m) = run.members.iter_mut().find(|m| m.id == Some(id))
            {
                m.id = None;
            }
            self.free_backend(&mut maps.pools, id);
        }
        self.draining.next_due()
    }

    /// The backends of the pool of `slot`, with their counters, as `portfwd list` shows them.
    pub(super) fn status(
        &self,
        maps: &PoolMaps,
        slot: u32,
        live: &HashMap<u32, u64>,
    ) -> Vec<BackendStatus> {
        let Some(run) = self.runs.get(&slot) else {
            return Vec::new();
        };
        let mut out: Vec<BackendStatus> = run
            .members
            .iter()
            .map(|m| {
                let state = if m.weight == 0 {
                    BackendState::Draining
                } else if run.spec.health.is_none() {
                    BackendState::Unchecked
                } else if m.health == Health::Up {
                    BackendState::Up
                } else {
                    BackendState::Down
                };
                member_status(maps, m.id, m.addr, m.weight, state, live)
            })
            .collect();
        out.extend(self.draining.removed_of(slot).map(|(id, addr)| {
            member_status(maps, Some(id), addr, 0, BackendState::Draining, live)
        }));
        out
    }

    /// Every backend id in use (members and drains) with its current epoch.
    pub(super) fn epochs(&self) -> HashMap<u32, u32> {
        let members = self
            .runs
            .values()
            .flat_map(|r| &r.members)
            .filter_map(|m| Some((m.id?, m.epoch)));
        members.chain(self.draining.epochs()).collect()
    }

    /// Whether the pool of `slot` refuses new flows (every backend down, `all_down: refuse`).
    pub(super) fn refusing(&self, slot: u32) -> bool {
        self.runs
            .get(&slot)
            .is_some_and(|r| matches!(r.built, Some(None)))
    }

    /// The health checks every running pool asks for.
    fn sync_checks(&mut self) {
        let wanted: Vec<(health::Target, health::Params)> = self
            .runs
            .values()
            .filter_map(|r| Some((r, r.spec.health.as_ref()?)))
            .flat_map(|(r, h)| {
                r.members.iter().filter(|m| m.weight > 0).map(move |m| {
                    let target = health::Target {
                        addr: m.addr,
                        check: h.check.clone(),
                    };
                    (target, h.params)
                })
            })
            .collect();
        self.checks.sync(wanted);
    }
}

fn member_status(
    maps: &PoolMaps,
    id: Option<u32>,
    addr: SocketAddr,
    weight: u32,
    state: BackendState,
    live: &HashMap<u32, u64>,
) -> BackendStatus {
    let stats = id.and_then(|id| maps.stats(id).ok()).unwrap_or_default();
    BackendStatus {
        target: addr.to_string(),
        weight,
        state,
        packets: stats.packets,
        bytes: stats.bytes,
        new_flows: stats.new_flows,
        live_flows: id.and_then(|id| live.get(&id).copied()).unwrap_or(0),
    }
}

fn write_backend(
    maps: &mut PoolMaps,
    id: u32,
    addr: SocketAddr,
    flags: u16,
    slot: u32,
    epoch: u32,
) -> Result<(), Error> {
    maps.set_backend(
        id,
        BackendEntry {
            addr,
            flags,
            slot,
            epoch,
        },
    )
}

impl super::state::State {
    /// The pools summed up for `portfwd status`, from the forwards' entries.
    pub(super) fn pools_status(&self, entries: &[ForwardEntry]) -> Option<PoolsStatus> {
        let pools: Vec<&Active> = self
            .forwards
            .iter()
            .filter(|a| a.fwd.pool.is_some())
            .collect();
        if pools.is_empty() {
            return None;
        }
        let backends = entries.iter().flat_map(|e| &e.backends);
        let count = |state: BackendState| backends.clone().filter(|b| b.state == state).count();
        Some(PoolsStatus {
            pools: pools.len(),
            backends: backends.clone().count(),
            down: count(BackendState::Down),
            draining: count(BackendState::Draining),
            checked: self.pools.checks.len(),
            refusing: pools
                .iter()
                .filter(|a| self.pools.refusing(a.slot))
                .map(|a| a.fwd.listen.to_string())
                .collect(),
        })
    }

    /// The pools' side of a change of the running forwards: pools whose forward went are
    /// retired; health events and the drain timer are started as needed.
    pub(super) fn retire_pools(&mut self) {
        let live: Vec<(u32, bool)> = self
            .forwards
            .iter()
            .map(|a| (a.slot, a.fwd.pool.is_some()))
            .collect();
        self.pools.retire(&mut self.dp.maps, &live);
        self.after_pools_change();
    }

    /// After a failed change: the pools as the running forwards have them.
    pub(super) fn restore_pools(&mut self) {
        let running: Vec<Active> = self
            .forwards
            .iter()
            .filter(|a| a.fwd.pool.is_some())
            .map(|a| Active {
                fwd: a.fwd.clone(),
                slot: a.slot,
                origin: a.origin.clone(),
            })
            .collect();
        if let Err(e) = self.pools.prepare(&mut self.dp.maps, &running) {
            tracing::error!("restoring the pools: {}", chain(&e));
        }
        self.retire_pools();
    }

    /// Starts what the pools need running: the task applying health events (once), and the
    /// timer of the next drain to end.
    pub(super) fn after_pools_change(&mut self) {
        if let Some(mut events) = self.pools.checks.take_events() {
            let weak = self.weak_self.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    let Some(state) = weak.upgrade() else { return };
                    let mut st = state.lock().await;
                    let st = &mut *st;
                    st.pools.on_health(&mut st.dp.maps, &ev);
                }
            });
        }
        self.arm_drain_timer();
    }

    /// Wakes up when the next drain's grace is over, and ends it (and re-arms).
    fn arm_drain_timer(&mut self) {
        let Some(due) = self.pools.expire(&mut self.dp.maps) else {
            return;
        };
        let weak = self.weak_self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(due).await;
            if let Some(state) = weak.upgrade() {
                state.lock().await.arm_drain_timer();
            }
        });
        if let Some(old) = self.pools.drain_timer.replace(task.abort_handle()) {
            old.abort();
        }
    }
}

#[cfg(test)]
mod tests;
