//! The flow tables' size from `max_flows` (issue #20, item 3): the loader creates the six tables
//! it sizes (both families' new and established flows, the pools' affinity tables) at the size
//! asked, and a restart with another size carries the pinned tables' flows over to the new
//! tables, spread over the CPUs, with the insert counters reading what was carried.
use std::{
    collections::HashMap as StdHashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Pod,
    maps::{HashMap, Map, MapData},
};
use portfwd::datapath::{Datapath, FlowSizes, flows::FlowTableFill};
use portfwd_common::{
    maps::{FLOWS, FLOWS_EST, FLOWS6, FLOWS6_EST, FlowKeyOf, FlowTable, FlowValueOf, Ipv6Words},
    pool::{AFFINITY, AFFINITY6, Affinity},
};

use super::support;

/// A bpffs of the test's own, mounted in a temporary directory; unmounted (its pins freed)
/// and removed on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn new(name: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("portfwd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting bpffs at {dir:?}: {out:?}");
        Bpffs(dir)
    }

    fn map(&self, name: &str) -> PathBuf {
        self.0.join("maps").join(name)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The pinned map `name` as a hash map of its key and value types.
fn pinned<K: Pod, V: Pod>(fs: &Bpffs, name: &str) -> HashMap<MapData, K, V> {
    let data = MapData::from_pin(fs.map(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

fn max_entries(path: &Path) -> u32 {
    MapData::from_pin(path)
        .and_then(|m| m.info())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .max_entries()
}

/// What the kernel makes of `n` entries for an LRU hash with per-CPU lists: a multiple of the
/// possible CPUs (rounded up).
fn kernel_size(n: u32) -> u32 {
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    n.div_ceil(cpus) * cpus
}

/// The entries a table of `n` can take from userspace spread over the usable CPUs: each
/// possible CPU's share, on every online CPU.
fn spread_capacity(n: u32) -> usize {
    let possible = aya::util::nr_cpus().unwrap() as u32;
    let online = aya::util::online_cpus().unwrap().len() as u32;
    (kernel_size(n) / possible * online) as usize
}

fn v4_key(i: u32) -> FlowKeyOf<u32> {
    FlowKeyOf {
        saddr_be: u32::from_ne_bytes([172, 17, 0, 2]),
        daddr_be: u32::from_ne_bytes([10, 9, (i >> 8) as u8, i as u8]),
        sport_be: 3000u16.to_be(),
        dport_be: (20_000 + i as u16).to_be(),
        proto: 6,
        _pad: [0; 3],
    }
}

fn v6_key(i: u32) -> FlowKeyOf<Ipv6Words> {
    FlowKeyOf {
        saddr_be: [0xfd00_0017u32.to_be(), 0, 0, 2u32.to_be()],
        daddr_be: [0x2001_0db8u32.to_be(), 0, 0, i.to_be()],
        sport_be: 3000u16.to_be(),
        dport_be: (20_000 + i as u16).to_be(),
        proto: 17,
        _pad: [0; 3],
    }
}

fn v4_value(i: u32) -> FlowValueOf<u32> {
    FlowValueOf {
        orig_addr_be: u32::from_ne_bytes([192, 0, 2, 1]),
        orig_port_be: 8080u16.to_be(),
        flags: 0,
        stats_slot: i % 7,
        client_addr_be: 0,
    }
}

fn v6_value(i: u32) -> FlowValueOf<Ipv6Words> {
    FlowValueOf {
        orig_addr_be: [0x2001_0db8u32.to_be(), 0, 0, 1u32.to_be()],
        orig_port_be: 8080u16.to_be(),
        flags: 1,
        stats_slot: i % 5,
        client_addr_be: [0; 4],
    }
}

fn affinity(i: u32) -> Affinity {
    Affinity {
        backend: i % 16,
        epoch: i,
    }
}

/// The six tables' entries, written or read through their pins.
#[derive(Debug, Default, PartialEq)]
struct Tables {
    new4: StdHashMap<FlowKeyOf<u32>, FlowValueOf<u32>>,
    est4: StdHashMap<FlowKeyOf<u32>, FlowValueOf<u32>>,
    aff4: StdHashMap<FlowKeyOf<u32>, Affinity>,
    new6: StdHashMap<FlowKeyOf<Ipv6Words>, FlowValueOf<Ipv6Words>>,
    est6: StdHashMap<FlowKeyOf<Ipv6Words>, FlowValueOf<Ipv6Words>>,
    aff6: StdHashMap<FlowKeyOf<Ipv6Words>, Affinity>,
}

impl Tables {
    /// `n` entries in each table (distinct keys per table).
    fn made(n: u32) -> Tables {
        Tables {
            new4: (0..n).map(|i| (v4_key(i), v4_value(i))).collect(),
            est4: (n..2 * n).map(|i| (v4_key(i), v4_value(i))).collect(),
            aff4: (0..n).map(|i| (v4_key(i), affinity(i))).collect(),
            new6: (0..n).map(|i| (v6_key(i), v6_value(i))).collect(),
            est6: (n..2 * n).map(|i| (v6_key(i), v6_value(i))).collect(),
            aff6: (0..n).map(|i| (v6_key(i), affinity(i))).collect(),
        }
    }

    fn write(&self, fs: &Bpffs) {
        fn put<K: Pod, V: Pod>(fs: &Bpffs, name: &str, entries: &StdHashMap<K, V>) {
            let mut map = pinned::<K, V>(fs, name);
            for (k, v) in entries {
                map.insert(k, v, 0)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        put(fs, FLOWS, &self.new4);
        put(fs, FLOWS_EST, &self.est4);
        put(fs, AFFINITY, &self.aff4);
        put(fs, FLOWS6, &self.new6);
        put(fs, FLOWS6_EST, &self.est6);
        put(fs, AFFINITY6, &self.aff6);
    }

    fn read(fs: &Bpffs) -> Tables {
        fn get<K: Pod + Eq + std::hash::Hash, V: Pod>(fs: &Bpffs, name: &str) -> StdHashMap<K, V> {
            pinned::<K, V>(fs, name)
                .iter()
                .map(|kv| kv.unwrap_or_else(|e| panic!("{name}: {e}")))
                .collect()
        }
        Tables {
            new4: get(fs, FLOWS),
            est4: get(fs, FLOWS_EST),
            aff4: get(fs, AFFINITY),
            new6: get(fs, FLOWS6),
            est6: get(fs, FLOWS6_EST),
            aff6: get(fs, AFFINITY6),
        }
    }

    fn lens(&self) -> [usize; 6] {
        [
            self.new4.len(),
            self.est4.len(),
            self.aff4.len(),
            self.new6.len(),
            self.est6.len(),
            self.aff6.len(),
        ]
    }

    /// Whether every entry of `self` is in `all`, with the same value.
    fn within(&self, all: &Tables) -> bool {
        fn sub<K: Eq + std::hash::Hash, V: PartialEq>(
            a: &StdHashMap<K, V>,
            b: &StdHashMap<K, V>,
        ) -> bool {
            a.iter().all(|(k, v)| b.get(k) == Some(v))
        }
        sub(&self.new4, &all.new4)
            && sub(&self.est4, &all.est4)
            && sub(&self.aff4, &all.aff4)
            && sub(&self.new6, &all.new6)
            && sub(&self.est6, &all.est6)
            && sub(&self.aff6, &all.aff6)
    }
}

fn fill(dp: &Datapath, table: FlowTable) -> FlowTableFill {
    let all = dp.maps.flow_tables().expect("reading the flow tables");
    *all.iter().find(|f| f.table == table).unwrap()
}

/// Every table sized by `max_flows` has the size asked (as the kernel rounds it), pinned and
/// as `portfwd status` reads it (the fill rows), and the default sizes are the object's.
fn assert_sizes(dp: &Datapath, fs: &Bpffs, sizes: FlowSizes) {
    for (name, n) in sizes.tables() {
        assert_eq!(max_entries(&fs.map(name)), kernel_size(n), "{name}");
    }
    let rows = dp.maps.fill(0).expect("fill rows");
    for name in [FLOWS, FLOWS_EST, FLOWS6, FLOWS6_EST] {
        let (_, _, cap) = rows.iter().find(|(n, _, _)| *n == name).unwrap();
        let want = sizes.tables().iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(
            *cap,
            u64::from(kernel_size(want)),
            "status capacity of {name}"
        );
    }
}

#[test]
fn the_flow_tables_take_the_size_asked_and_a_process_local_load_too() {
    if !support::require_root() {
        return;
    }
    let sizes = FlowSizes::new(Some(10_000));
    let dp = Datapath::load_with(sizes).expect("loading with 10,000 flows per table");
    for f in dp.maps.flow_tables().unwrap() {
        assert_eq!(
            f.max_entries,
            u64::from(kernel_size(10_000)),
            "{:?}",
            f.table
        );
    }
    drop(dp);
    let dp = Datapath::load().expect("loading at the default sizes");
    let caps: Vec<u64> = dp
        .maps
        .flow_tables()
        .unwrap()
        .iter()
        .map(|f| f.max_entries)
        .collect();
    assert_eq!(caps, [131_072, 131_072, 65_536, 65_536]);
}

#[test]
fn a_restart_with_another_size_carries_the_flows_over() {
    if !support::require_root() {
        return;
    }
    let fs = Bpffs::new("flowsize");
    // A first daemon at 8192 flows per table; each table gets 3/4 of a CPU's share from this
    // thread (userspace inserts take the running CPU's share: more would evict).
    let first = FlowSizes::new(Some(8192));
    let dp = Datapath::load_pinned(&fs.0, first).expect("first load");
    assert_sizes(&dp, &fs, first);
    let share = kernel_size(8192) / aya::util::nr_cpus().unwrap() as u32;
    let n = share * 3 / 4;
    let made = Tables::made(n);
    made.write(&fs);
    assert_eq!(Tables::read(&fs), made);
    drop(dp);

    // The same size: the pinned tables are reused as they are.
    let dp = Datapath::load_pinned(&fs.0, first).expect("same size");
    assert_eq!(Tables::read(&fs), made);
    drop(dp);

    // Bigger: every flow carried over, the fill reads them, nothing evicted. The flows the
    // previous programs make while the new daemon loads (played here through a descriptor of
    // the old table, whose pin the load removes) are carried over when it takes the links.
    let bigger = FlowSizes::new(Some(50_000));
    let old_new4 = MapData::from_pin(fs.map(FLOWS)).unwrap();
    let mut dp = Datapath::load_pinned(&fs.0, bigger).expect("grown");
    let mut old_new4: HashMap<MapData, FlowKeyOf<u32>, FlowValueOf<u32>> =
        HashMap::try_from(Map::from_map_data(old_new4).unwrap()).unwrap();
    let late = (5 * n..5 * n + 10).map(|i| (v4_key(i), v4_value(i)));
    for (k, v) in late.clone() {
        old_new4.insert(k, v, 0).unwrap();
    }
    drop(old_new4);
    assert_eq!(
        Tables::read(&fs).new4,
        made.new4,
        "pass 1: the flows at load"
    );
    dp.adopt_pinned_links();
    assert_sizes(&dp, &fs, bigger);
    let mut made = made;
    made.new4.extend(late);
    assert_eq!(Tables::read(&fs), made, "every flow carried over");
    // Pass 2 does not count: the flows it carries were counted by the programs that made
    // them (here made from userspace, so not counted at all).
    for table in FlowTable::ALL {
        let f = fill(&dp, table);
        assert_eq!(
            (f.entries, f.inserted, f.evicted),
            (n.into(), n.into(), 0),
            "{table:?}"
        );
    }
    drop(dp);

    // Smaller than what it holds: as many flows as the new tables hold spread over the CPUs,
    // each one as it was.
    let smaller = FlowSizes::new(Some(2048));
    let mut dp = Datapath::load_pinned(&fs.0, smaller).expect("shrunk");
    dp.adopt_pinned_links();
    assert_sizes(&dp, &fs, smaller);
    let kept = Tables::read(&fs);
    let cap = spread_capacity(2048);
    let want = [
        made.new4.len(),
        n as usize,
        n as usize,
        n as usize,
        n as usize,
        n as usize,
    ]
    .map(|had| had.min(cap));
    assert_eq!(kept.lens(), want, "carried over up to the capacity");
    assert!(kept.within(&made), "carried flows keep their values");
    for (table, want) in FlowTable::ALL
        .into_iter()
        .zip([want[0], want[1], want[3], want[4]])
    {
        let f = fill(&dp, table);
        assert_eq!((f.entries, f.evicted), (want as u64, 0), "{table:?}");
    }
    drop(dp);

    // Back to the defaults (no max_flows): the object's sizes, the flows still there.
    let dp = Datapath::load_pinned(&fs.0, FlowSizes::default()).expect("default sizes");
    assert_sizes(&dp, &fs, FlowSizes::default());
    assert_eq!(Tables::read(&fs), kept);
}

/// The kernel memory of a map (`bpftool map show`'s `bytes_memlock`: what the kernel counts
/// for the map, every preallocated entry included).
fn memlock(id: u32) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "id", &id.to_string()])
        .output()
        .expect("running bpftool (installed by `cargo xtask setup`)");
    assert!(out.status.success(), "bpftool map show id {id}: {out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["bytes_memlock"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bytes_memlock in {json}"))
}

/// The memory per million flows the README gives ("Map sizes"), measured: each table loaded
/// at 1,000,000 entries. The README's figures are checked within 5%. Also prints what the
/// default sizes take.
#[test]
fn memory_per_million_flows() {
    if !support::require_root() {
        return;
    }
    const MILLION: u32 = 1_000_000;
    // (table, the README's MB per million flows).
    let documented = [
        (FLOWS, 96.8),
        (FLOWS_EST, 96.8),
        (AFFINITY, 88.8),
        (FLOWS6, 144.8),
        (FLOWS6_EST, 144.8),
        (AFFINITY6, 112.8),
    ];
    let defaults = Bpffs::new("flowsize-defaults");
    let dp = Datapath::load_pinned(&defaults.0, FlowSizes::default()).expect("default sizes");
    let at_defaults: u64 = FlowSizes::default()
        .tables()
        .iter()
        .map(|(name, _)| {
            memlock(
                MapData::from_pin(defaults.map(name))
                    .unwrap()
                    .info()
                    .unwrap()
                    .id(),
            )
        })
        .sum();
    eprintln!("the six tables at the default sizes: {at_defaults} bytes");
    drop(dp);
    drop(defaults);
    let fs = Bpffs::new("flowsize-memory");
    let dp = Datapath::load_pinned(&fs.0, FlowSizes::new(Some(MILLION))).expect("1M flows");
    let mut total = 0;
    let mut off = Vec::new();
    for (name, mb) in documented {
        let info = MapData::from_pin(fs.map(name)).unwrap().info().unwrap();
        assert_eq!(info.max_entries(), kernel_size(MILLION), "{name}");
        let bytes = memlock(info.id());
        total += bytes;
        eprintln!(
            "{name}: {bytes} bytes at {MILLION} entries: {:.1} bytes per flow",
            bytes as f64 / f64::from(MILLION)
        );
        let want = (mb * 1e6) as u64;
        if bytes.abs_diff(want) > want / 20 {
            off.push(format!("{name}: {bytes} bytes, the README says {want}"));
        }
    }
    eprintln!("the six tables: {total} bytes per million flows");
    assert!(off.is_empty(), "per million flows: {off:?}");
    drop(dp);
}
