//! Differential test of backend selection (issue #16): the daemon's Maglev table and flow hash
//! (`portfwd::balance`) against the model's independent implementation
//! (`portfwd_model::maglev`), on random backend sets, weights, table sizes and 5-tuples.
//! Runs without privileges or network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portfwd::balance::{Backend, FlowTuple, TableError, build_table, flow_hash, flow_slot};
use portfwd_model::maglev::{MaglevBackend, maglev_flow_hash, maglev_flow_slot, maglev_table};
use proptest::{collection, prelude::*, sample::select};

/// Small primes (the algorithm's corner cases) and the sizes the daemon uses.
const SIZES: [usize; 12] = [2, 3, 5, 7, 13, 61, 251, 509, 1021, 2039, 4093, 16381];

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        // A few addresses, so that sets share addresses and differ by port.
        (0u32..4).prop_map(|i| IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0001 + i))),
        any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from_bits(b))),
        any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from_bits(b))),
        // IPv4-mapped IPv6: a different key from the IPv4 address.
        any::<u32>().prop_map(|b| IpAddr::V6(Ipv4Addr::from_bits(b).to_ipv6_mapped())),
    ]
}

/// 1 to 40 backends with distinct addresses, weights mostly 0 to 5, distinct ids.
fn backends() -> impl Strategy<Value = Vec<Backend>> {
    let weight = prop_oneof![8 => 0u32..=5, 1 => 1u32..1000, 1 => Just(u32::MAX)];
    let backend = (ip(), prop_oneof![Just(80u16), any::<u16>()], weight);
    collection::vec(backend, 1..40).prop_map(|list| {
        let mut seen = std::collections::HashSet::new();
        list.into_iter()
            .map(|(ip, port, weight)| (SocketAddr::new(ip, port), weight))
            .filter(|(addr, _)| seen.insert(*addr))
            .zip(0u32..)
            .map(|((addr, weight), i)| Backend {
                id: i * 7 + 3,
                addr,
                weight,
            })
            .collect()
    })
}

fn model(set: &[Backend]) -> Vec<MaglevBackend> {
    set.iter()
        .map(|b| MaglevBackend {
            id: b.id,
            addr: b.addr,
            weight: b.weight,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn tables_agree(set in backends(), size in select(&SIZES[..]), reversed in any::<bool>()) {
        let mut given = set.clone();
        if reversed {
            given.reverse();
        }
        match (build_table(&given, size), maglev_table(&model(&set), size)) {
            (Ok(table), Some(expected)) => prop_assert_eq!(table, expected),
            (Err(TableError::NoBackend), None) => {}
            (got, expected) => prop_assert!(false, "daemon {:?}, model {:?}", got, expected),
        }
    }

    #[test]
    fn flow_hashes_agree(
        src in ip(),
        dst in ip(),
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        proto in prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
        size in select(&SIZES[..]),
    ) {
        let tuple = FlowTuple { src, dst, src_port, dst_port, proto };
        prop_assert_eq!(flow_hash(&tuple), maglev_flow_hash(src, dst, src_port, dst_port, proto));
        prop_assert_eq!(
            flow_slot(&tuple, size),
            maglev_flow_slot(src, dst, src_port, dst_port, proto, size)
        );
    }
}
