//! The pools against real (process-local, unattached) maps: what the datapath will read.
use std::{net::SocketAddr, time::Duration};

use portfwd_common::pool::{BACKEND_DRAINING, BACKEND_LIVE, MAGLEV_SIZE};

use super::*;
use crate::{
    daemon::state::Origin,
    datapath::Datapath,
    publish::{Forward, Pool, Weighted},
};

fn datapath() -> Option<Datapath> {
    if !crate::check::is_root() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "needs root");
        return None;
    }
    Some(Datapath::load().expect("load the datapath"))
}

fn pool_forward(targets: &[(&str, u32)], all_down: AllDown) -> Forward {
    let weighted: Vec<Weighted> = targets
        .iter()
        .map(|(t, w)| Weighted {
            target: t.parse().unwrap(),
            weight: *w,
        })
        .collect();
    let mut fwd = Forward::new("8080".parse().unwrap(), weighted[0].target).unwrap();
    fwd.pool = Some(Box::new(Pool {
        targets: weighted,
        health: None,
        all_down,
        grace: Duration::from_secs(30),
    }));
    fwd
}

fn active(fwd: Forward, slot: u32) -> Active {
    Active {
        fwd,
        slot,
        origin: Origin::Config,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The backends the row of `slot` holds, by address, with how many slots each has.
fn row_shares(maps: &PoolMaps, slot: u32) -> BTreeMap<SocketAddr, usize> {
    let row = maps.pool_row(slot).expect("the pool points at a row");
    let mut shares = BTreeMap::new();
    for id in maps.row(row).unwrap() {
        let b = maps.backend(id).expect("every slot names a live backend");
        assert_eq!(b.slot, slot);
        *shares.entry(b.addr).or_insert(0) += 1;
    }
    shares
}

#[test]
fn a_pool_gets_backends_and_a_table_and_its_removed_backend_drains() {
    let Some(mut dp) = datapath() else { return };
    let mut pools = Pools::default();
    let fwd = pool_forward(
        &[
            ("172.17.0.2:80", 1),
            ("172.17.0.3:80", 1),
            ("172.17.0.4:80", 2),
        ],
        AllDown::Serve,
    );
    let started = std::time::Instant::now();
    pools.prepare(&mut dp.maps, &[active(fwd, 5)]).unwrap();
    eprintln!(
        "a pool of 3: table built and swapped in {:?}",
        started.elapsed()
    );
    let shares = row_shares(&dp.maps.pools, 5);
    assert_eq!(shares.len(), 3);
    assert_eq!(shares.values().sum::<usize>(), MAGLEV_SIZE as usize);
    let heavy = shares[&addr("172.17.0.4:80")] as f64;
    let light = shares[&addr("172.17.0.2:80")] as f64;
    assert!(
        (heavy / light - 2.0).abs() < 0.05,
        "weight 2: {heavy} vs {light}"
    );
    let live = dp.maps.pools.live_backends();
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|(_, b)| b.flags == BACKEND_LIVE));
    let first_row = dp.maps.pools.pool_row(5).unwrap();

    // One backend removed: out of a new table, draining, the others keep their ids.
    let two = pool_forward(
        &[("172.17.0.2:80", 1), ("172.17.0.4:80", 2)],
        AllDown::Serve,
    );
    let started = std::time::Instant::now();
    pools
        .prepare(&mut dp.maps, &[active(two.clone(), 5)])
        .unwrap();
    eprintln!("one of 3 removed: table swapped in {:?}", started.elapsed());
    assert_ne!(dp.maps.pools.pool_row(5).unwrap(), first_row, "a new row");
    let two_shares = row_shares(&dp.maps.pools, 5);
    assert_eq!(two_shares.len(), 2);
    let removed = dp
        .maps
        .pools
        .live_backends()
        .into_iter()
        .find(|(_, b)| b.addr == addr("172.17.0.3:80"))
        .expect("the removed backend is still there while it drains");
    assert_eq!(removed.1.flags, BACKEND_LIVE | BACKEND_DRAINING);
    let still: Vec<u32> = live
        .iter()
        .filter(|(_, b)| b.addr != addr("172.17.0.3:80"))
        .map(|(id, _)| *id)
        .collect();
    for id in still {
        assert_eq!(dp.maps.pools.backend(id).unwrap().flags, BACKEND_LIVE);
    }
    let status = pools.status(&dp.maps.pools, 5, &HashMap::new());
    assert_eq!(
        status.iter().map(|m| m.state).collect::<Vec<_>>(),
        [
            BackendState::Unchecked,
            BackendState::Unchecked,
            BackendState::Draining
        ]
    );
    // Back to three, then two again: the rows are reused and rewritten only where they differ,
    // and hold exactly the table of their set.
    let three = pool_forward(
        &[
            ("172.17.0.2:80", 1),
            ("172.17.0.3:80", 1),
            ("172.17.0.4:80", 2),
        ],
        AllDown::Serve,
    );
    pools.prepare(&mut dp.maps, &[active(three, 5)]).unwrap();
    assert_eq!(row_shares(&dp.maps.pools, 5).len(), 3);
    let started = std::time::Instant::now();
    pools.prepare(&mut dp.maps, &[active(two, 5)]).unwrap();
    eprintln!(
        "one of 3 removed again, into a reused row: {:?}",
        started.elapsed()
    );
    assert_eq!(row_shares(&dp.maps.pools, 5), two_shares);

    // The forward goes: everything of the pool is freed at once.
    pools.retire(&mut dp.maps, &[]);
    assert!(dp.maps.pools.live_backends().is_empty());
    assert_eq!(dp.maps.pools.pool_row(5), None);
}

#[test]
fn drained_backends_leave_the_table_and_come_back() {
    let Some(mut dp) = datapath() else { return };
    let mut pools = Pools::default();
    let both = [("172.17.0.2:80", 1), ("172.17.0.3:80", 1)];
    pools
        .prepare(
            &mut dp.maps,
            &[active(pool_forward(&both, AllDown::Serve), 1)],
        )
        .unwrap();
    let drained = [("172.17.0.2:80", 1), ("172.17.0.3:80", 0)];
    pools
        .prepare(
            &mut dp.maps,
            &[active(pool_forward(&drained, AllDown::Serve), 1)],
        )
        .unwrap();
    assert_eq!(row_shares(&dp.maps.pools, 1).len(), 1);
    let status = pools.status(&dp.maps.pools, 1, &HashMap::new());
    assert_eq!(status[1].state, BackendState::Draining);
    pools
        .prepare(
            &mut dp.maps,
            &[active(pool_forward(&both, AllDown::Serve), 1)],
        )
        .unwrap();
    assert_eq!(row_shares(&dp.maps.pools, 1).len(), 2);
    assert!(
        dp.maps
            .pools
            .live_backends()
            .iter()
            .all(|(_, b)| b.flags == BACKEND_LIVE)
    );
}

#[test]
fn all_down_refuse_points_the_pool_at_nothing_and_serve_keeps_every_backend() {
    let Some(mut dp) = datapath() else { return };
    let down = |pools: &mut Pools, maps: &mut Maps, a: &str| {
        pools.on_health(
            maps,
            &health::Event {
                target: health::Target {
                    addr: addr(a),
                    check: health::Check::Tcp,
                },
                health: Health::Down,
                cause: None,
                at: tokio::time::Instant::now(),
            },
        )
    };
    for (policy, slot) in [(AllDown::Refuse, 2), (AllDown::Serve, 3)] {
        let mut pools = Pools::default();
        let mut fwd = pool_forward(&[("172.17.0.2:80", 1), ("172.17.0.3:80", 1)], policy);
        if let Some(p) = fwd.pool.as_mut() {
            p.health = Some(crate::publish::HealthSpec {
                check: health::Check::Tcp,
                params: health::Params::default(),
            });
        }
        // Health checks start probing: they need a runtime (the addresses are never answered
        // within this test's time: it ends first).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        pools.prepare(&mut dp.maps, &[active(fwd, slot)]).unwrap();
        assert_eq!(pools.checks.len(), 2);
        down(&mut pools, &mut dp.maps, "172.17.0.2:80");
        assert_eq!(row_shares(&dp.maps.pools, slot).len(), 1, "{policy}");
        // Its UDP flows are hashed again; its TCP flows stay.
        let flags: Vec<u16> = dp
            .maps
            .pools
            .live_backends()
            .iter()
            .filter(|(_, b)| b.addr == addr("172.17.0.2:80"))
            .map(|(_, b)| b.flags)
            .collect();
        assert_eq!(flags, [BACKEND_LIVE | BACKEND_DRAINING]);
        down(&mut pools, &mut dp.maps, "172.17.0.3:80");
        match policy {
            AllDown::Refuse => {
                assert_eq!(dp.maps.pools.pool_row(slot), None);
                assert!(pools.refusing(slot));
            }
            AllDown::Serve => {
                assert_eq!(row_shares(&dp.maps.pools, slot).len(), 2);
                assert!(!pools.refusing(slot));
            }
        }
        let states: Vec<BackendState> = pools
            .status(&dp.maps.pools, slot, &HashMap::new())
            .iter()
            .map(|m| m.state)
            .collect();
        assert_eq!(states, [BackendState::Down, BackendState::Down]);
        pools.retire(&mut dp.maps, &[]);
    }
}

#[test]
fn a_restarted_daemon_keeps_ids_epochs_and_the_table() {
    let Some(mut dp) = datapath() else { return };
    let three = [
        ("172.17.0.2:80", 1),
        ("172.17.0.3:80", 1),
        ("172.17.0.4:80", 1),
    ];
    let mut first = Pools::default();
    first
        .prepare(
            &mut dp.maps,
            &[active(pool_forward(&three, AllDown::Serve), 9)],
        )
        .unwrap();
    let before = dp.maps.pools.live_backends();
    let row = dp
        .maps
        .pools
        .row(dp.maps.pools.pool_row(9).unwrap())
        .unwrap();

    // A new daemon over the same maps, with one backend fewer in its config.
    let mut second = Pools::default();
    second.adopt(&dp.maps.pools, [9].into_iter());
    let two = [("172.17.0.2:80", 1), ("172.17.0.4:80", 1)];
    second
        .prepare(
            &mut dp.maps,
            &[active(pool_forward(&two, AllDown::Serve), 9)],
        )
        .unwrap();
    second.retire(&mut dp.maps, &[(9, true)]);
    let after = dp.maps.pools.live_backends();
    for (id, b) in &before {
        let (_, now) = after.iter().find(|(i, _)| i == id).expect("same id");
        assert_eq!((now.addr, now.epoch), (b.addr, b.epoch));
        let draining = b.addr == addr("172.17.0.3:80");
        assert_eq!(now.flags & BACKEND_DRAINING != 0, draining, "{}", b.addr);
    }
    // Flows of the kept backends hash where they did: only the removed one's slots moved.
    let new_row = dp
        .maps
        .pools
        .row(dp.maps.pools.pool_row(9).unwrap())
        .unwrap();
    let removed_id = before
        .iter()
        .find(|(_, b)| b.addr == addr("172.17.0.3:80"))
        .unwrap()
        .0;
    let moved = row
        .iter()
        .zip(&new_row)
        .filter(|(a, b)| a != b && **a != removed_id)
        .count();
    assert!(
        moved < row.len() / 50,
        "{moved} slots of kept backends moved"
    );
}
