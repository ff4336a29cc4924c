//! The BPF maps, and the two ways the programs read and write their values: a copying lookup
//! ([`Lookup::copied`]) and an in-place update of a per-CPU slot ([`update`], [`bump`]). All map
//! unsafe is in those. Names come from `portfwd_common::maps` so userspace finds them by the
//! same constant.
use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use portfwd_common::{
    maps::{
        Allow6Key, AllowKey, Flow6Key, Flow6Value, FlowKey, FlowValue, Forward6Key, Forward6Value,
        ForwardKey, ForwardStats, ForwardValue, Hook, IcmpBudget, Ipv6Words, MAX_ALLOW_PREFIXES,
        MAX_FLOWS, MAX_FLOWS6, MAX_FORWARDS, MAX_HOST_ADDRS, MAX_IFACES, MAX_PORT_MACS,
        MAX_RANGE_PREFIXES, MacKey, PortEntry, Range6Key, Range6Value, RangeKey, RangeValue,
    },
    reason::Reason,
    sock::{MAX_SOCK_REVNAT, SockRev6Key, SockRev6Value, SockRevKey, SockRevValue, SockVerdict},
};

#[map(name = "PF_FORWARDS")]
pub static FORWARDS: HashMap<ForwardKey, ForwardValue> = HashMap::with_max_entries(MAX_FORWARDS, 0);

#[map(name = "PF_RANGES")]
pub static RANGES: LpmTrie<RangeKey, RangeValue> = LpmTrie::with_max_entries(MAX_RANGE_PREFIXES, 0);

/// Value: unused (1).
#[map(name = "PF_ALLOW")]
pub static ALLOW: LpmTrie<AllowKey, u32> = LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES, 0);

/// Per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`): a new flow is inserted on every packet of a
/// flood of new flows, and with one list shared by all CPUs each insert contends on its lock.
/// Lookups still see every CPU's entries; eviction is per CPU, each CPU holding at most its share
/// (`MAX_FLOWS` / CPUs) of the flows it created.
#[map(name = "PF_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_FLOWS, BPF_F_NO_COMMON_LRU);

/// Key: IPv4 address as on the wire. Value: unused (1).
#[map(name = "PF_HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_HOST_ADDRS, 0);

#[map(name = "PF_FORWARDS6")]
pub static FORWARDS6: HashMap<Forward6Key, Forward6Value> =
    HashMap::with_max_entries(MAX_FORWARDS, 0);

#[map(name = "PF_RANGES6")]
pub static RANGES6: LpmTrie<Range6Key, Range6Value> =
    LpmTrie::with_max_entries(MAX_RANGE_PREFIXES, 0);

/// Value: unused (1).
#[map(name = "PF_ALLOW6")]
pub static ALLOW6: LpmTrie<Allow6Key, u32> = LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES, 0);

/// Per-CPU LRU lists, as [`FLOWS`].
#[map(name = "PF_FLOWS6")]
pub static FLOWS6: LruHashMap<Flow6Key, Flow6Value> =
    LruHashMap::with_max_entries(MAX_FLOWS6, BPF_F_NO_COMMON_LRU);

/// Key: IPv6 address as on the wire. Value: unused (1).
#[map(name = "PF_HOST_ADDRS6")]
pub static HOST_ADDRS6: HashMap<Ipv6Words, u32> = HashMap::with_max_entries(MAX_HOST_ADDRS, 0);

#[map(name = "PF_IFACES")]
pub static IFACES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "PF_BRIDGE_PORTS")]
pub static BRIDGE_PORTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "PF_PORT_MACS")]
pub static PORT_MACS: LruHashMap<MacKey, PortEntry> =
    LruHashMap::with_max_entries(MAX_PORT_MACS, 0);

#[map(name = "PF_FWD_STATS")]
pub static FORWARD_STATS: PerCpuArray<ForwardStats> =
    PerCpuArray::with_max_entries(MAX_FORWARDS, 0);

#[map(name = "PF_VERDICTS")]
pub static VERDICTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(Reason::COUNT * Hook::COUNT, 0);

/// The rate limit of the ICMP "too big" answers (`pmtu`): one token bucket per CPU.
#[map(name = "PF_ICMP_BUDGET")]
pub static ICMP_BUDGET: PerCpuArray<IcmpBudget> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "PF_XDP_EGRESS")]
pub static XDP_EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_IFACES, 0);

/// The daemon's network namespace cookie, for the socket hooks (`sock`).
#[map(name = "PF_SOCK_NETNS")]
pub static SOCK_NETNS: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "PF_SOCK_REVNAT")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(MAX_SOCK_REVNAT, 0);

#[map(name = "PF_SOCK_REVNAT6")]
pub static SOCK_REVNAT6: LruHashMap<SockRev6Key, SockRev6Value> =
    LruHashMap::with_max_entries(MAX_SOCK_REVNAT, 0);

#[map(name = "PF_SOCK_VERDICTS")]
pub static SOCK_VERDICTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SockVerdict::COUNT, 0);

/// Hash maps whose values are read by copying them out at once.
pub trait Lookup<K, V: Copy> {
    /// A copy of the value at `key`, if any. The key is taken by value, as the map helpers take
    /// it: a copy made for the call lives only as long as the call, so the stack slot is free
    /// again afterwards (the programs are near the 512-byte stack limit).
    fn copied(&self, key: K) -> Option<V>;
}

impl<K, V: Copy> Lookup<K, V> for HashMap<K, V> {
    #[inline(always)]
    fn copied(&self, key: K) -> Option<V> {
        let v = self.get_ptr(key)?;
        // SAFETY: the pointer comes from a successful lookup and the values of these maps are
        // plain integers; copied out at once, a concurrent update can only make it stale, not
        // invalid.
        Some(unsafe { *v })
    }
}

impl<K, V: Copy> Lookup<K, V> for LruHashMap<K, V> {
    #[inline(always)]
    fn copied(&self, key: K) -> Option<V> {
        let v = self.get_ptr(key)?;
        // SAFETY: as for `HashMap`.
        Some(unsafe { *v })
    }
}

/// Applies `f` to slot `index` of a per-CPU array (nothing when out of range).
#[inline(always)]
pub fn update<T>(map: &PerCpuArray<T>, index: u32, f: impl FnOnce(&mut T)) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled, so this is
        // the only reference to it while `f` runs.
        f(unsafe { &mut *slot });
    }
}

/// Adds one to counter `index` of a per-CPU array.
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    update(map, index, |c| *c += 1);
}
