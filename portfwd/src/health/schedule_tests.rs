//! The scheduler on tokio's paused clock, with a scripted prober: timings are exact, and a
//! test of minutes of probing runs in milliseconds.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::*;
use crate::health::Check;

/// How a scripted backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Alive,
    /// Refuses at once.
    Dead,
    /// Never answers (the timeout ends the probe).
    Hung,
}

/// Answers each probe as its backend is scripted, after `delay`; logs when each probe started
/// and how many ran at once.
#[derive(Default)]
struct Script {
    backends: Mutex<HashMap<SocketAddr, Backend>>,
    log: Mutex<Vec<(Instant, SocketAddr)>>,
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Script {
    fn set(&self, addr: SocketAddr, b: Backend) {
        self.backends.lock().unwrap().insert(addr, b);
    }
    fn probes_of(&self, addr: SocketAddr) -> Vec<Instant> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, a)| *a == addr)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Prober for Arc<Script> {
    fn probe(&self, target: &Target) -> impl Future<Output = Outcome> + Send {
        let (me, addr) = (self.clone(), target.addr);
        async move {
            me.log.lock().unwrap().push((Instant::now(), addr));
            let now = me.running.fetch_add(1, Ordering::SeqCst) + 1;
            me.max_running.fetch_max(now, Ordering::SeqCst);
            time::sleep(me.delay).await;
            let b = me.backends.lock().unwrap().get(&addr).copied();
            let outcome = match b.unwrap_or(Backend::Alive) {
                Backend::Alive => Ok(()),
                Backend::Dead => Err(Failure::Refused),
                Backend::Hung => std::future::pending().await,
            };
            me.running.fetch_sub(1, Ordering::SeqCst);
            outcome
        }
    }
}

fn target(i: u16) -> Target {
    Target {
        addr: SocketAddr::from(([172, 17, 0, 2], 3000 + i)),
        check: Check::Tcp,
    }
}

fn scheduler(
    script: &Arc<Script>,
    max_in_flight: usize,
) -> (Scheduler<Arc<Script>>, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(64);
    (Scheduler::new(script.clone(), max_in_flight, tx), rx)
}

async fn next(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Event {
    time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("the channel open")
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_dead_backend_goes_down_within_fall_intervals_and_comes_back_within_rise() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let p = Params::default();
    let t = target(0);
    s.insert(t.clone(), p);
    time::sleep(3 * SEC + Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "an alive backend: no event");

    let died = Instant::now();
    script.set(t.addr, Backend::Dead);
    let e = next(&mut rx, 10 * SEC).await;
    assert_eq!((e.health, e.cause), (Health::Down, Some(Failure::Refused)));
    let down_after = e.at - died;
    assert!(down_after <= p.interval * p.fall, "{down_after:?}");
    assert!(
        down_after > p.interval * (p.fall - 1),
        "{down_after:?}: fall is 2"
    );
    assert_eq!(s.health(&t), Some(Health::Down));

    let revived = Instant::now();
    script.set(t.addr, Backend::Alive);
    let e = next(&mut rx, 10 * SEC).await;
    assert_eq!((e.health, e.cause), (Health::Up, None));
    let up_after = e.at - revived;
    assert!(up_after <= p.interval * p.rise, "{up_after:?}");
    time::sleep(5 * SEC).await;
    assert!(rx.try_recv().is_err(), "each change once");
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_is_cut_by_the_timeout() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let p = Params::default();
    let t = target(0);
    s.insert(t.clone(), p);
    time::sleep(2 * SEC + Duration::from_millis(300)).await;
    let hung = Instant::now();
    script.set(t.addr, Backend::Hung);
    let e = next(&mut rx, 10 * SEC).await;
    assert_eq!((e.health, e.cause), (Health::Down, Some(Failure::TimedOut)));
    let after = e.at - hung;
    assert!(after <= p.interval * p.fall + p.timeout, "{after:?}");
    // Probes kept their 1 s period although each took the whole timeout.
    let probes = script.probes_of(t.addr);
    assert!(probes.windows(2).all(|w| w[1] - w[0] == SEC), "{probes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_new_backend_dead_from_the_start_goes_down_on_its_first_probe() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let t = target(0);
    script.set(t.addr, Backend::Dead);
    let start = Instant::now();
    s.insert(t.clone(), Params::default());
    assert_eq!(s.health(&t), Some(Health::Up), "up until proven down");
    let e = next(&mut rx, 10 * SEC).await;
    assert_eq!(e.health, Health::Down);
    assert!(
        e.at - start < SEC,
        "the first probe, within the first interval"
    );
}

#[tokio::test(start_paused = true)]
async fn sixteen_backends_spread_their_probes_over_the_interval() {
    let script = Arc::new(Script::default());
    let (mut s, _rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let start = Instant::now();
    for i in 0..16 {
        s.insert(target(i), Params::default());
    }
    time::sleep(10 * SEC - Duration::from_millis(1)).await;
    let mut firsts: Vec<Duration> = (0..16)
        .map(|i| script.probes_of(target(i).addr)[0] - start)
        .collect();
    firsts.sort();
    assert!(firsts.iter().all(|d| *d < SEC), "{firsts:?}");
    let min_gap = firsts.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    eprintln!("16 backends: first probes {firsts:?}, closest two {min_gap:?} apart");
    assert!(min_gap >= SEC / 42, "{min_gap:?}");
    for i in 0..16 {
        let probes = script.probes_of(target(i).addr);
        assert_eq!(probes.len(), 10, "one probe a second each, no more");
        assert!(probes.windows(2).all(|w| w[1] - w[0] == SEC));
    }
}

#[test]
fn start_offsets_stay_in_the_interval() {
    for k in 0..1000 {
        assert!(start_offset(k, SEC) < SEC);
    }
    assert_eq!(start_offset(0, SEC), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn probes_in_flight_are_bounded() {
    let script = Arc::new(Script {
        delay: Duration::from_millis(300),
        ..Script::default()
    });
    let (mut s, mut rx) = scheduler(&script, 2);
    for i in 0..8 {
        s.insert(target(i), Params::default());
    }
    time::sleep(5 * SEC).await;
    assert_eq!(script.max_running.load(Ordering::SeqCst), 2);
    assert!(
        rx.try_recv().is_err(),
        "waiting for a permit is not a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn adding_and_removing_leaves_the_others_alone() {
    let script = Arc::new(Script::default());
    let (mut s, _rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let (a, b, c) = (target(0), target(1), target(2));
    assert!(s.insert(a.clone(), Params::default()));
    assert!(s.insert(b.clone(), Params::default()));
    time::sleep(3 * SEC + Duration::from_millis(500)).await;
    assert!(
        !s.insert(a.clone(), Params::default()),
        "unchanged: nothing to do"
    );
    assert!(s.insert(c.clone(), Params::default()));
    assert!(s.remove(&b));
    assert!(!s.remove(&b));
    time::sleep(5 * SEC).await;
    let pa = script.probes_of(a.addr);
    assert!(
        pa.windows(2).all(|w| w[1] - w[0] == SEC),
        "a keeps its phase: {pa:?}"
    );
    assert_eq!(pa.len(), 9);
    let pb = script.probes_of(b.addr);
    assert_eq!(pb.len(), 3, "b not probed once removed: {pb:?}");
    assert_eq!(script.probes_of(c.addr).len(), 5);
    assert_eq!(s.len(), 2);
    assert_eq!(s.health(&b), None);
}

#[tokio::test(start_paused = true)]
async fn new_params_keep_the_health() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    let t = target(0);
    script.set(t.addr, Backend::Dead);
    s.insert(t.clone(), Params::default());
    assert_eq!(next(&mut rx, 2 * SEC).await.health, Health::Down);
    let slow = Params {
        interval: 3 * SEC,
        ..Params::default()
    };
    assert!(s.insert(t.clone(), slow));
    let changed = Instant::now();
    time::sleep(10 * SEC).await;
    assert!(rx.try_recv().is_err(), "still down: no event");
    assert_eq!(s.health(&t), Some(Health::Down));
    let later: Vec<_> = script
        .probes_of(t.addr)
        .into_iter()
        .filter(|p| *p > changed)
        .collect();
    assert_eq!(later.len(), 3, "every 3 s now: {later:?}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_scheduler_stops_every_probe_and_closes_the_channel() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    for i in 0..4 {
        s.insert(target(i), Params::default());
    }
    time::sleep(2 * SEC).await;
    drop(s);
    let probes = script.log.lock().unwrap().len();
    assert_eq!(rx.recv().await, None, "every sender gone with its task");
    time::sleep(5 * SEC).await;
    assert_eq!(script.log.lock().unwrap().len(), probes);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_tasks() {
    let script = Arc::new(Script::default());
    let (mut s, mut rx) = scheduler(&script, DEFAULT_MAX_IN_FLIGHT);
    s.insert(target(0), Params::default());
    s.shutdown().await;
    assert_eq!(rx.recv().await, None);
}
