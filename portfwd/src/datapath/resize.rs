//! The flow tables' size (`max_flows:`), and carrying their flows over when a restart changes it.
//!
//! Six tables are sized by `max_flows`: both families' new-flow and established-flow tables
//! (`PF_FLOWS`, `PF_FLOWS_EST`, `PF_FLOWS6`, `PF_FLOWS6_EST`) and the pools' affinity tables
//! (`PF_AFFINITY`, `PF_AFFINITY6`). The object declares them at the default sizes; the loader
//! overrides `max_entries` before the maps are created.
//!
//! A pinned table of another size cannot be reused (the kernel fixes a map's size at creation),
//! so a restart with a new `max_flows` creates the table anew and copies the old one's entries
//! into it, in two passes:
//!
//! 1. at load, before any program uses the new table (the previous daemon's programs still run
//!    on the old one): every entry, up to the new table's capacity;
//! 2. once the links are taken over (the old programs no longer run, the old table is frozen):
//!    the entries the old programs made after pass 1, without replacing any.
//!
//! Each table is an LRU hash with a list per CPU (`BPF_F_NO_COMMON_LRU`): an insert, from a
//! program or from userspace, takes an entry of the inserting CPU's share (`max_entries / possible
//! CPUs`) and evicts from that share only. So the copy runs one thread per CPU, each pinned to its
//! CPU and inserting at most that CPU's share: the copied flows are spread evenly and none of them
//! evicts another. Pass 1 sets the table's insert counters (`PF_FLOW_INSERTS`, see
//! [`super::flows`]) to what it placed on each CPU, so the fill level reads the copied flows;
//! pass 2 leaves them alone, since the old programs counted the flows it carries when they made
//! them. When the new table is smaller, which entries are kept is arbitrary (the kernel does not
//! say which are the least recently used).
use std::os::fd::AsFd as _;

use aya::{
    EbpfLoader, Pod,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
};
use nix::{sched::CpuSet, unistd::Pid};
use portfwd_common::{
    maps::{
        FLOWS, FLOWS_EST, FLOWS6, FLOWS6_EST, FlowKeyOf, FlowTable, FlowValueOf, Ipv6Words,
        MAX_FLOWS, MAX_FLOWS6,
    },
    pool::{AFFINITY, AFFINITY6, Affinity},
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// How many entries each table sized by `max_flows` holds, per address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSizes {
    pub v4: u32,
    pub v6: u32,
}

impl Default for FlowSizes {
    /// The sizes the object declares: 131,072 IPv4 flows and 65,536 IPv6 flows per table.
    fn default() -> Self {
        FlowSizes {
            v4: MAX_FLOWS,
            v6: MAX_FLOWS6,
        }
    }
}

impl FlowSizes {
    /// `max_flows` for every table of both families; `None` is the default sizes.
    pub fn new(max_flows: Option<u32>) -> Self {
        match max_flows {
            Some(n) => FlowSizes { v4: n, v6: n },
            None => FlowSizes::default(),
        }
    }

    /// Each table sized by `max_flows`, with its entries.
    pub fn tables(&self) -> [(&'static str, u32); 6] {
        [
            (FLOWS, self.v4),
            (FLOWS_EST, self.v4),
            (AFFINITY, self.v4),
            (FLOWS6, self.v6),
            (FLOWS6_EST, self.v6),
            (AFFINITY6, self.v6),
        ]
    }

    /// Whether `name` is one of these tables.
    pub fn is_flow_table(name: &str) -> bool {
        FlowSizes::flow_table(name).is_some()
    }

    /// The table named `name`, if it is one of these.
    pub(super) fn flow_table(name: &str) -> Option<&'static str> {
        let tables = FlowSizes::default().tables();
        tables.into_iter().map(|(n, _)| n).find(|n| *n == name)
    }

    pub(super) fn apply(&self, loader: &mut EbpfLoader<'_>) {
        for (name, entries) in self.tables() {
            loader.map_max_entries(name, entries);
        }
    }
}

/// A pinned flow table being replaced by one of another size: the old map (its pin removed,
/// held by this descriptor alone), the new one, and what pass 1 placed on each CPU.
pub(super) struct Carry {
    name: &'static str,
    old: MapData,
    new: MapData,
    placed: Vec<u64>,
}

impl Carry {
    pub(super) fn new(name: &'static str, old: MapData, new: MapData) -> Self {
        Carry {
            name,
            old,
            new,
            placed: Vec::new(),
        }
    }

    /// Pass 1: copies the old table into the new one (which nothing uses yet), spread over the
    /// CPUs, and sets the table's insert counters in `inserts` (`PF_FLOW_INSERTS`) to what it
    /// placed on each CPU. Logs what it did; a failure loses flows, never the daemon.
    pub(super) fn first_pass(&mut self, inserts: &MapData) {
        let old_entries = self.old.info().map(|i| i.max_entries()).unwrap_or(0);
        let new_entries = self.new.info().map(|i| i.max_entries()).unwrap_or(0);
        match self.copy(None) {
            Ok((read, placed)) => {
                let copied: u64 = placed.iter().sum();
                if let Err(e) = self.set_inserts(inserts, &placed) {
                    tracing::warn!(map = self.name, "resetting the insert counters: {e}");
                }
                self.placed = placed;
                tracing::info!(
                    map = self.name,
                    old_max_entries = old_entries,
                    max_entries = new_entries,
                    flows = read,
                    carried_over = copied,
                    "flow table resized: flows carried over to the new table"
                );
            }
            Err(e) => tracing::warn!(
                map = self.name,
                "flow table resized, but its flows could not be carried over (they are lost): {e}"
            ),
        }
    }

    /// Pass 2 (the old programs no longer run): the entries the old table gained since pass 1,
    /// none replacing an entry of the new table, in what is left of each CPU's share. Then the
    /// old table is freed.
    pub(super) fn second_pass(mut self) {
        let placed = std::mem::take(&mut self.placed);
        match self.copy(Some(&placed)) {
            Ok((_, more)) => {
                let more: u64 = more.iter().sum();
                if more > 0 {
                    tracing::info!(
                        map = self.name,
                        carried_over = more,
                        "flows made by the previous programs during the resize carried over too"
                    );
                }
            }
            Err(e) => tracing::warn!(map = self.name, "carrying over the last flows: {e}"),
        }
    }

    /// Copies the old table into the new one: (entries read, entries inserted per possible
    /// CPU). `placed` is what an earlier pass put on each CPU, taken off that CPU's share.
    fn copy(&self, placed: Option<&[u64]>) -> Result<(usize, Vec<u64>), String> {
        let (old, new, placed) = (&self.old, &self.new, placed.unwrap_or(&[]));
        match self.name {
            FLOWS | FLOWS_EST => copy::<FlowKeyOf<u32>, FlowValueOf<u32>>(old, new, placed),
            FLOWS6 | FLOWS6_EST => {
                copy::<FlowKeyOf<Ipv6Words>, FlowValueOf<Ipv6Words>>(old, new, placed)
            }
            AFFINITY => copy::<FlowKeyOf<u32>, Affinity>(old, new, placed),
            AFFINITY6 => copy::<FlowKeyOf<Ipv6Words>, Affinity>(old, new, placed),
            other => Err(format!("{other} is not a flow table")),
        }
    }

    /// Sets the insert counters of this table (if it has any: the affinity tables have none).
    fn set_inserts(&self, inserts: &MapData, placed: &[u64]) -> Result<(), String> {
        let Some(table) = FlowTable::ALL.into_iter().find(|t| t.name() == self.name) else {
            return Ok(());
        };
        let mut counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(clone(inserts)?)).map_err(|e| e.to_string())?;
        let values = aya::maps::PerCpuValues::try_from(placed.to_vec())
            .map_err(|e| format!("{} per-CPU values: {e}", placed.len()))?;
        counters
            .set(table as u32, values, 0)
            .map_err(|e| e.to_string())
    }
}

/// Another descriptor of the same map, as an owned [`MapData`].
fn clone(map: &MapData) -> Result<MapData, String> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating a map descriptor: {e}"))?;
    MapData::from_fd(fd).map_err(|e| e.to_string())
}

fn hash_map<K: Pod, V: Pod>(map: &MapData) -> Result<HashMap<MapData, K, V>, String> {
    let map = Map::from_map_data(clone(map)?).map_err(|e| e.to_string())?;
    HashMap::try_from(map).map_err(|e| e.to_string())
}

/// The CPUs an insert can be made on: online, and allowed to this process.
fn usable_cpus() -> Result<Vec<usize>, String> {
    let online = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    let allowed = nix::sched::sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| format!("reading the CPUs this process may run on: {e}"))?;
    Ok(online
        .into_iter()
        .map(|c| c as usize)
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect())
}

/// Copies `old` into `new` with `BPF_NOEXIST`, each CPU's part inserted from a thread pinned to
/// that CPU, at most its share of `new` less `placed[cpu]`. Returns the entries read and those
/// inserted per possible CPU.
fn copy<K: Pod + Send + Sync, V: Pod + Send + Sync>(
    old: &MapData,
    new: &MapData,
    placed: &[u64],
) -> Result<(usize, Vec<u64>), String> {
    let possible = aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    let max_entries = new.info().map_err(|e| e.to_string())?.max_entries();
    let share = u64::from(max_entries) / possible.max(1) as u64;
    // The old table, read whole first. While the previous programs run, an entry may be
    // evicted under the walk, which then starts over: the walk is bounded, and a key read
    // twice is inserted once.
    let source = hash_map::<K, V>(old)?;
    let bound = 2 * old.info().map_err(|e| e.to_string())?.max_entries() as usize;
    let mut entries = Vec::new();
    for item in source.iter().take(bound) {
        match item {
            Ok(kv) => entries.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(format!("reading the old table: {e}")),
        }
    }
    let read = entries.len();
    // Each usable CPU's part, in turn.
    let mut rest = entries.as_slice();
    let mut parts = Vec::new();
    for cpu in usable_cpus()? {
        if cpu >= possible || rest.is_empty() {
            continue;
        }
        let room = share.saturating_sub(placed.get(cpu).copied().unwrap_or(0));
        let (part, tail) = rest.split_at(rest.len().min(room as usize));
        parts.push((cpu, part));
        rest = tail;
    }
    let mut inserted = vec![0u64; possible];
    std::thread::scope(|s| {
        let threads: Vec<_> = parts
            .into_iter()
            .map(|(cpu, part)| (cpu, s.spawn(move || insert_on(cpu, new, part))))
            .collect();
        for (cpu, thread) in threads {
            inserted[cpu] = thread
                .join()
                .map_err(|_| format!("the copy thread of CPU {cpu} panicked"))??;
        }
        Ok::<_, String>(())
    })?;
    Ok((read, inserted))
}

/// Inserts `entries` into `new` from CPU `cpu` (this thread is pinned to it), skipping keys
/// already there: how many were inserted.
fn insert_on<K: Pod, V: Pod>(cpu: usize, new: &MapData, entries: &[(K, V)]) -> Result<u64, String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("running on CPU {cpu}: {e}"))?;
    let mut table = hash_map::<K, V>(new)?;
    let mut inserted = 0;
    for (k, v) in entries {
        match table.insert(k, v, BPF_NOEXIST) {
            Ok(()) => inserted += 1,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(format!("inserting on CPU {cpu}: {e}")),
        }
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_are_the_objects() {
        let d = FlowSizes::default();
        assert_eq!(FlowSizes::new(None), d);
        assert_eq!((d.v4, d.v6), (131_072, 65_536));
        assert_eq!(FlowSizes::new(Some(5000)), FlowSizes { v4: 5000, v6: 5000 });
        assert!(FlowSizes::is_flow_table("PF_AFFINITY6"));
        assert!(!FlowSizes::is_flow_table("PF_FORWARDS"));
    }
}
