//! The goals for Maglev (#16 "Tests and measures"), measured on the table and the flow
//! hash alone: spread over 16 backends, flows moved by removing and adding a backend, weights,
//! and the time to build a table. The figures are printed (`--nocapture`) for the bench notes.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Instant,
};

use super::*;

/// SplitMix64: a fixed stream of random numbers, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` backends 10.0.0.1:3000, 10.0.0.2:3000, ... with ids 0.. and weight 1.
fn backends(n: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            id: i,
            addr: SocketAddr::new(Ipv4Addr::from_bits(0x0a00_0001 + i).into(), 3000),
            weight: 1,
        })
        .collect()
}

/// `n` random TCP flows from anywhere to 192.0.2.1:8080.
fn flows(n: usize, seed: u64) -> Vec<FlowTuple> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let r = rng.next();
            FlowTuple {
                src: Ipv4Addr::from_bits(r as u32).into(),
                dst: Ipv4Addr::new(192, 0, 2, 1).into(),
                src_port: (r >> 32) as u16,
                dst_port: 8080,
                proto: 6,
            }
        })
        .collect()
}

fn backend_of(table: &[u32], flow: &FlowTuple) -> u32 {
    table[flow_slot(flow, table.len())]
}

/// How many flows (or slots) each backend id `0..n` gets.
fn shares(ids: impl Iterator<Item = u32>, n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for id in ids {
        counts[id as usize] += 1;
    }
    counts
}

fn max_over_min(counts: &[usize]) -> f64 {
    let max = *counts.iter().max().unwrap() as f64;
    let min = *counts.iter().min().unwrap() as f64;
    max / min
}

#[test]
fn spread_over_16_backends() {
    let table = build_table(&backends(16), DEFAULT_TABLE_SIZE).unwrap();
    let flows = flows(100_000, 1);
    let slots = shares(table.iter().copied(), 16);
    let by_flow = shares(flows.iter().map(|f| backend_of(&table, f)), 16);
    eprintln!(
        "16 backends, table {DEFAULT_TABLE_SIZE}: slots max/min {:.4} ({slots:?}); \
         100000 flows max/min {:.4} ({by_flow:?})",
        max_over_min(&slots),
        max_over_min(&by_flow)
    );
    assert!(max_over_min(&slots) <= 1.10);
    assert!(max_over_min(&by_flow) <= 1.10);
}

/// Flows whose backend differs between two tables: (moved among those whose old backend is
/// still in the new table, those flows, moved among all).
fn moved(
    old: &[u32],
    new: &[u32],
    flows: &[FlowTuple],
    gone: Option<u32>,
) -> (usize, usize, usize) {
    let mut kept_moved = 0;
    let mut kept = 0;
    let mut all_moved = 0;
    for flow in flows {
        let (before, after) = (backend_of(old, flow), backend_of(new, flow));
        all_moved += usize::from(before != after);
        if Some(before) != gone {
            kept += 1;
            kept_moved += usize::from(before != after);
        }
    }
    (kept_moved, kept, all_moved)
}

#[test]
fn removing_and_adding_one_of_16_moves_few_flows() {
    let all = backends(16);
    let flows = flows(100_000, 2);
    let full = build_table(&all, DEFAULT_TABLE_SIZE).unwrap();
    let bound = 1.0 / 16.0 + 0.01;
    for gone in [0, 5, 15] {
        let rest: Vec<Backend> = all.iter().copied().filter(|b| b.id != gone).collect();
        let less = build_table(&rest, DEFAULT_TABLE_SIZE).unwrap();
        assert!(!less.contains(&gone));

        let (kept_moved, kept, all_moved) = moved(&full, &less, &flows, Some(gone));
        let (kept_share, all_share) = (
            kept_moved as f64 / kept as f64,
            all_moved as f64 / flows.len() as f64,
        );
        eprintln!(
            "remove backend {gone} of 16: {kept_moved} of the {kept} flows not on it moved \
             ({:.3}%); {all_moved} of all {} flows moved ({:.3}%)",
            kept_share * 100.0,
            flows.len(),
            all_share * 100.0
        );
        assert!(kept_share <= bound, "{kept_share}");
        assert!(all_share <= bound, "{all_share}");

        // Adding it back restores the first table exactly (the table is a function of the set).
        let (_, _, back_moved) = moved(&less, &full, &flows, None);
        let to_new = flows
            .iter()
            .filter(|f| backend_of(&less, f) != backend_of(&full, f))
            .filter(|f| backend_of(&full, f) == gone)
            .count();
        let back_share = back_moved as f64 / flows.len() as f64;
        eprintln!(
            "add backend {gone} back: {back_moved} of {} flows moved ({:.3}%), {to_new} of them \
             to it; {} moved between the other backends",
            flows.len(),
            back_share * 100.0,
            back_moved - to_new
        );
        assert!(back_share <= bound, "{back_share}");
    }
}

#[test]
fn weights_1_2_3_share_by_weight() {
    let mut set = backends(3);
    for (b, w) in set.iter_mut().zip([1, 2, 3]) {
        b.weight = w;
    }
    let table = build_table(&set, DEFAULT_TABLE_SIZE).unwrap();
    let flows = flows(100_000, 3);
    let slots = shares(table.iter().copied(), 3);
    let by_flow = shares(flows.iter().map(|f| backend_of(&table, f)), 3);
    for (i, w) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let due = w / 6.0;
        let slot_share = slots[i] as f64 / table.len() as f64;
        let flow_share = by_flow[i] as f64 / flows.len() as f64;
        eprintln!(
            "weight {w}: due {due:.4}, slots {slot_share:.4} ({}), flows {flow_share:.4} ({})",
            slots[i], by_flow[i]
        );
        assert!(
            (slot_share / due - 1.0).abs() <= 0.05,
            "slots of weight {w}"
        );
        assert!(
            (flow_share / due - 1.0).abs() <= 0.05,
            "flows of weight {w}"
        );
    }
}

#[test]
fn one_backend_fills_every_slot() {
    let mut one = backends(1);
    one[0].id = 7;
    let table = build_table(&one, DEFAULT_TABLE_SIZE).unwrap();
    assert_eq!(table.len(), DEFAULT_TABLE_SIZE);
    assert!(table.iter().all(|&id| id == 7));
}

#[test]
fn weight_0_gets_no_slot_and_leaves_the_others_as_removal_does() {
    let mut set = backends(4);
    set[2].weight = 0;
    let draining = build_table(&set, 251).unwrap();
    assert!(!draining.contains(&2));
    let removed: Vec<Backend> = set.iter().copied().filter(|b| b.id != 2).collect();
    assert_eq!(draining, build_table(&removed, 251).unwrap());
}

#[test]
fn the_table_is_a_function_of_the_set_not_of_its_order() {
    let set = backends(16);
    let mut reversed = set.clone();
    reversed.reverse();
    assert_eq!(build_table(&set, 1021), build_table(&reversed, 1021));
}

#[test]
fn a_backend_keeps_its_slots_when_its_id_changes() {
    // The permutation is hashed from the address: renumbering only renames the slots.
    let set = backends(8);
    let renumbered: Vec<Backend> = set
        .iter()
        .map(|b| Backend {
            id: b.id + 100,
            ..*b
        })
        .collect();
    let (a, b) = (
        build_table(&set, 509).unwrap(),
        build_table(&renumbered, 509).unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x + 100 == *y));
}

#[test]
fn tables_are_the_same_on_every_machine() {
    // Golden values: a change here changes where every deployed flow goes.
    let mut set = backends(3);
    set.push(Backend {
        id: 3,
        addr: SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 443),
        weight: 2,
    });
    let table = build_table(&set, 251).unwrap();
    assert_eq!(&table[..16], &GOLDEN_251[..]);
}

const GOLDEN_251: [u32; 16] = [1, 3, 3, 3, 3, 2, 2, 3, 1, 2, 3, 1, 2, 3, 3, 2];

#[test]
fn bad_inputs_are_refused() {
    let set = backends(2);
    assert_eq!(
        build_table(&set, 16380),
        Err(TableError::SizeNotPrime(16380))
    );
    assert_eq!(build_table(&set, 1), Err(TableError::SizeNotPrime(1)));
    assert_eq!(build_table(&[], 251), Err(TableError::NoBackend));
    let zero = [Backend {
        weight: 0,
        ..set[0]
    }];
    assert_eq!(build_table(&zero, 251), Err(TableError::NoBackend));
    let twice = [set[0], Backend { id: 9, ..set[0] }];
    assert_eq!(
        build_table(&twice, 251),
        Err(TableError::DuplicateBackend(set[0].addr))
    );
    // The smallest prime works: one slot each for two backends.
    let mut two = build_table(&set, 2).unwrap();
    two.sort_unstable();
    assert_eq!(two, [0, 1]);
}

#[test]
fn table_sizes_are_primes_chosen_by_backend_count() {
    for size in TABLE_SIZES {
        assert!(
            (2..size)
                .take_while(|d| d * d <= size)
                .all(|d| !size.is_multiple_of(d)),
            "{size}"
        );
    }
    assert_eq!(table_size_for(0), DEFAULT_TABLE_SIZE);
    assert_eq!(table_size_for(16), DEFAULT_TABLE_SIZE);
    assert_eq!(table_size_for(163), DEFAULT_TABLE_SIZE);
    assert_eq!(table_size_for(164), 32749);
    assert_eq!(table_size_for(256), 32749);
    assert_eq!(table_size_for(1000), 131071);
    assert_eq!(table_size_for(usize::MAX), 1048573);
}

#[test]
fn jhash2_is_the_kernels() {
    // From include/linux/jhash.h compiled with gcc.
    assert_eq!(jhash2(&[], 0), 0xdead_beef);
    assert_eq!(jhash2(&[1], 0), 0x72a8_2a9b);
    assert_eq!(jhash2(&[1, 2, 3, 4, 5], 7), 0x5a4f_3b1e);
    let v4 = [0x0a00_0001, 0xc0a8_0102, (40000 << 16) | 8080, 6 << 24];
    assert_eq!(jhash2(&v4, 0), 0xcdaa_1043);
    assert_eq!(jhash2(&v4, FLOW_HASH_SEED), 0x729d_35a3);
}

#[test]
fn flow_hash_layout() {
    // The same words as `jhash2_is_the_kernels`, built from the tuple.
    let v4 = FlowTuple {
        src: Ipv4Addr::new(10, 0, 0, 1).into(),
        dst: Ipv4Addr::new(192, 168, 1, 2).into(),
        src_port: 40000,
        dst_port: 8080,
        proto: 6,
    };
    assert_eq!(flow_hash(&v4), 0x729d_35a3);
    assert_eq!(
        flow_slot(&v4, DEFAULT_TABLE_SIZE),
        0x729d_35a3 % DEFAULT_TABLE_SIZE
    );
    let v6 = FlowTuple {
        src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        proto: 17,
        ..v4
    };
    assert_eq!(flow_hash(&v6), 0x578f_913e);
}

#[test]
fn build_time() {
    // A measure, not a check: run with --release --nocapture for the figures.
    for (n, size) in [
        (16, DEFAULT_TABLE_SIZE),
        (256, DEFAULT_TABLE_SIZE),
        (256, table_size_for(256)),
    ] {
        let set = backends(n);
        let runs = 20;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(build_table(std::hint::black_box(&set), size).unwrap());
        }
        let each = start.elapsed() / runs;
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!("build a {size}-slot table for {n} backends: {each:?} ({profile})");
    }
}
