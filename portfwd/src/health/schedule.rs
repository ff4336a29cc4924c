//! The checker: one tokio task per backend, probing at its interval, reporting each change of
//! health on a channel.
//!
//! - **Spread.** The k-th task started makes its first probe `start_offset(k, interval)` after
//!   its start: the fractional parts of k/φ, a sequence that fills the interval evenly whatever
//!   the number of backends and however they come and go (16 backends started together are at
//!   least 1/42 of the interval apart; the offsets are deterministic, so tests can rely on them).
//!   After that each task keeps its phase (`MissedTickBehavior::Delay`: a late probe shifts the
//!   following ones rather than bursting to catch up).
//! - **Bounded.** At most `max_in_flight` probes run at once (a semaphore); the timeout starts
//!   once a probe has its permit, so a queue on our side is never blamed on a backend.
//! - **No polling.** Between probes a task sleeps on its timer.
//! - **Changes.** [`Scheduler::insert`] and [`Scheduler::remove`] start and stop one backend's
//!   task; the others are not touched. New parameters for a known backend reach its task on a
//!   `watch` channel: its health is kept and its schedule restarts.
//! - **Stop.** Dropping the [`Scheduler`] aborts every task (a `JoinSet`); the event channel
//!   then closes once the receiver has read what was sent.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::{AbortHandle, JoinSet},
    time::{self, Instant, Interval, MissedTickBehavior},
};

use super::{Failure, Health, Outcome, Params, Target, Tracker, attempt};

/// Probes in flight at once, across all backends, unless told otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// What runs one probe; the scheduler bounds it by the backend's timeout. [`NetProber`] is the
/// real one; tests script their own.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, target: &Target) -> impl Future<Output = Outcome> + Send;
}

/// Probes over the network, from the namespace of the thread the runtime runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetProber;

impl Prober for NetProber {
    fn probe(&self, target: &Target) -> impl Future<Output = Outcome> + Send {
        attempt(target.addr, &target.check)
    }
}

/// A change of a backend's health, sent once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub target: Target,
    pub health: Health,
    /// The failure of the probe that took the backend down (`None` when it came up).
    pub cause: Option<Failure>,
    /// When the deciding probe ended.
    pub at: Instant,
}

/// When the `k`-th task started makes its first probe: `interval × frac(k / φ)`.
pub fn start_offset(k: u64, interval: Duration) -> Duration {
    const INV_PHI: f64 = 0.618_033_988_749_894_9;
    // `k as f64` loses precision past 2^53 starts: only the fraction matters.
    let frac = (k as f64 * INV_PHI).fract();
    interval.mul_f64(frac)
}

struct Entry {
    params: watch::Sender<Params>,
    tracker: Arc<Mutex<Tracker>>,
    task: AbortHandle,
}

/// What every task shares.
struct Shared<P> {
    prober: P,
    in_flight: Semaphore,
    events: mpsc::Sender<Event>,
}

/// The set of backends being checked. Must be used inside a tokio runtime (it spawns tasks).
pub struct Scheduler<P: Prober> {
    shared: Arc<Shared<P>>,
    entries: HashMap<Target, Entry>,
    tasks: JoinSet<()>,
    started: u64,
}

impl<P: Prober> Scheduler<P> {
    /// A checker with no backends yet, running at most `max_in_flight` (at least 1) probes at
    /// once and sending changes to `events`.
    pub fn new(prober: P, max_in_flight: usize, events: mpsc::Sender<Event>) -> Scheduler<P> {
        Scheduler {
            shared: Arc::new(Shared {
                prober,
                in_flight: Semaphore::new(max_in_flight.max(1)),
                events,
            }),
            entries: HashMap::new(),
            tasks: JoinSet::new(),
            started: 0,
        }
    }

    /// Starts checking `target` (up, provisionally), or gives a known one new parameters (its
    /// health is kept, its schedule restarts). Returns whether anything changed.
    pub fn insert(&mut self, target: Target, params: Params) -> bool {
        while self.tasks.try_join_next().is_some() {}
        if let Some(entry) = self.entries.get(&target) {
            return entry.params.send_if_modified(|p| {
                let changed = *p != params;
                *p = params;
                changed
            });
        }
        let tracker = Arc::new(Mutex::new(Tracker::new()));
        let (params_tx, params_rx) = watch::channel(params);
        let first = start_offset(self.started, params.interval);
        self.started += 1;
        let task = self.tasks.spawn(run(
            self.shared.clone(),
            target.clone(),
            params_rx,
            tracker.clone(),
            first,
        ));
        self.entries.insert(
            target,
            Entry {
                params: params_tx,
                tracker,
                task,
            },
        );
        true
    }

    /// Stops checking `target`; the others go on. Returns whether it was checked.
    pub fn remove(&mut self, target: &Target) -> bool {
        let Some(entry) = self.entries.remove(target) else {
            return false;
        };
        entry.task.abort();
        while self.tasks.try_join_next().is_some() {}
        true
    }

    /// The backend's health now, if it is checked.
    pub fn health(&self, target: &Target) -> Option<Health> {
        self.entries.get(target).map(|e| lock(&e.tracker).health())
    }

    /// The backends checked, in no order.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stops every task and waits until they are gone (dropping the scheduler aborts them too,
    /// without waiting).
    pub async fn shutdown(mut self) {
        self.entries.clear();
        self.tasks.shutdown().await;
    }
}

fn lock(m: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ticks(first: Duration, interval: Duration) -> Interval {
    let mut ticks = time::interval_at(Instant::now() + first, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// One backend's task: probe at each tick, feed the tracker, send what changed.
async fn run<P: Prober>(
    shared: Arc<Shared<P>>,
    target: Target,
    mut params_rx: watch::Receiver<Params>,
    tracker: Arc<Mutex<Tracker>>,
    first: Duration,
) {
    let mut params = *params_rx.borrow_and_update();
    let mut ticks = ticks(first, params.interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = params_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                params = *params_rx.borrow_and_update();
                ticks = ticks_after_change(&params);
                continue;
            }
        }
        let outcome = {
            let Ok(_permit) = shared.in_flight.acquire().await else {
                return;
            };
            time::timeout(params.timeout, shared.prober.probe(&target))
                .await
                .unwrap_or(Err(Failure::TimedOut))
        };
        let change = lock(&tracker).observe(outcome.is_ok(), &params);
        if let Some(health) = change {
            let event = Event {
                target: target.clone(),
                health,
                cause: outcome.err(),
                at: Instant::now(),
            };
            if shared.events.send(event).await.is_err() {
                return; // nobody listens any more
            }
        }
    }
}

/// New parameters: the next probe one new interval from now.
fn ticks_after_change(params: &Params) -> Interval {
    ticks(params.interval, params.interval)
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
