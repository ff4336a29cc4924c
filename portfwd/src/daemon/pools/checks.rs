//! The health checks of the pools' backends: one scheduler (`crate::health`) owned by the
//! daemon, started with the first pool that asks for checks, probing from the daemon's own
//! network namespace (the host's). Its events (a backend's health changed) are taken by a task
//! of the daemon ([`super::super::state::State::start_health_events`]), which applies them to
//! every pool with that backend and check.
use tokio::sync::mpsc;

use crate::health::{self, DEFAULT_MAX_IN_FLIGHT, Health, NetProber, Scheduler};

/// Events waiting for the daemon's task: a backend changes health rarely, so a short queue
/// only fills if the daemon is stuck; the probes then wait.
const EVENT_QUEUE: usize = 256;

/// The scheduler, once a pool asks for checks.
#[derive(Default)]
pub(in crate::daemon) struct HealthChecks {
    scheduler: Option<Scheduler<NetProber>>,
    /// Handed once to the daemon's task.
    events: Option<mpsc::Receiver<health::Event>>,
}

impl HealthChecks {
    /// Probes exactly `wanted` (a backend shared by pools with the same check is probed once;
    /// the last params listed win).
    pub(super) fn sync(&mut self, wanted: Vec<(health::Target, health::Params)>) {
        if wanted.is_empty() && self.scheduler.is_none() {
            return;
        }
        let scheduler = self.scheduler.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            self.events = Some(rx);
            Scheduler::new(NetProber, DEFAULT_MAX_IN_FLIGHT, tx)
        });
        let gone: Vec<health::Target> = scheduler
            .targets()
            .filter(|t| !wanted.iter().any(|(w, _)| w == *t))
            .cloned()
            .collect();
        for t in &gone {
            scheduler.remove(t);
        }
        for (target, params) in wanted {
            scheduler.insert(target, params);
        }
    }

    /// The health of a backend being checked.
    pub(super) fn health(&self, target: &health::Target) -> Option<Health> {
        self.scheduler.as_ref()?.health(target)
    }

    /// The event queue, the first time it exists (for the daemon's task).
    pub(in crate::daemon) fn take_events(&mut self) -> Option<mpsc::Receiver<health::Event>> {
        self.events.take()
    }

    /// How many backends are being checked.
    pub(in crate::daemon) fn len(&self) -> usize {
        self.scheduler.as_ref().map_or(0, Scheduler::len)
    }
}
