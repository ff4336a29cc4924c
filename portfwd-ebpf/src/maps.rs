//! The BPF maps, and the two ways the programs read and write their values: a copying lookup
//! ([`Lookup::copied`]) and an in-place update of a per-CPU slot ([`update`], [`bump`]). All map
//! unsafe is in those. Names come from `portfwd_common::maps` so userspace finds them by the
//! same constant.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, bpf_fib_lookup, bpf_sock_tuple},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use portfwd_common::{
    maps::{
        Allow6Key, AllowKey, Flow6Key, Flow6Value, FlowKey, FlowTable, FlowValue, Forward6Key,
        Forward6Value, ForwardKey, ForwardStats, ForwardValue, Frag6Key, Frag6Value, FragKey,
        FragValue, GENERATIONS, Hook, IcmpBudget, Ipv6Words, MAX_ALLOW_PREFIXES, MAX_EST_FLOWS,
        MAX_EST_FLOWS6, MAX_FLOWS, MAX_FLOWS6, MAX_FORWARDS, MAX_FRAGS, MAX_HOST_ADDRS, MAX_IFACES,
        MAX_LOCAL_FLOWS, MAX_PORT_MACS, MAX_RANGE_PREFIXES, MacKey, PortEntry, Range6Key,
        Range6Value, RangeKey, RangeValue,
    },
    pool::{
        Affinity, Backend, Backend6, BackendStats, MAGLEV_SIZE, MAX_AFFINITY, MAX_AFFINITY6,
        MAX_BACKENDS, MAX_MAGLEV_ROWS,
    },
    reason::Reason,
    sock::{MAX_SOCK_REVNAT, SockRev6Key, SockRev6Value, SockRevKey, SockRevValue, SockVerdict},
};

/// The active generation of the forwarding tables below (0 or 1), read once per packet.
#[map(name = "PF_GEN")]
pub static GENERATION: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "PF_FORWARDS")]
pub static FORWARDS: HashMap<ForwardKey, ForwardValue> =
    HashMap::with_max_entries(MAX_FORWARDS * GENERATIONS, 0);

#[map(name = "PF_RANGES")]
pub static RANGES: LpmTrie<RangeKey, RangeValue> =
    LpmTrie::with_max_entries(MAX_RANGE_PREFIXES * GENERATIONS, 0);

/// Value: unused (1).
#[map(name = "PF_ALLOW")]
pub static ALLOW: LpmTrie<AllowKey, u32> =
    LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES * GENERATIONS, 0);

/// Per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`): a new flow is inserted on every packet of a
/// flood of new flows, and with one list shared by all CPUs each insert contends on its lock.
/// Lookups still see every CPU's entries; eviction is per CPU, each CPU holding at most its share
/// (`MAX_FLOWS` / CPUs) of the flows it created.
#[map(name = "PF_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_FLOWS, BPF_F_NO_COMMON_LRU);

/// The established flows (`flow`): per-CPU LRU lists, as [`FLOWS`], but only flows answered
/// beyond a handshake enter, so a flood of new flows does not evict them.
#[map(name = "PF_FLOWS_EST")]
pub static FLOWS_EST: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_EST_FLOWS, BPF_F_NO_COMMON_LRU);

/// Key: IPv4 address as on the wire. Value: unused (1).
#[map(name = "PF_HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_HOST_ADDRS, 0);

#[map(name = "PF_FORWARDS6")]
pub static FORWARDS6: HashMap<Forward6Key, Forward6Value> =
    HashMap::with_max_entries(MAX_FORWARDS * GENERATIONS, 0);

#[map(name = "PF_RANGES6")]
pub static RANGES6: LpmTrie<Range6Key, Range6Value> =
    LpmTrie::with_max_entries(MAX_RANGE_PREFIXES * GENERATIONS, 0);

/// Value: unused (1).
#[map(name = "PF_ALLOW6")]
pub static ALLOW6: LpmTrie<Allow6Key, u32> =
    LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES * GENERATIONS, 0);

/// Per-CPU LRU lists, as [`FLOWS`].
#[map(name = "PF_FLOWS6")]
pub static FLOWS6: LruHashMap<Flow6Key, Flow6Value> =
    LruHashMap::with_max_entries(MAX_FLOWS6, BPF_F_NO_COMMON_LRU);

/// As [`FLOWS_EST`].
#[map(name = "PF_FLOWS6_EST")]
pub static FLOWS6_EST: LruHashMap<Flow6Key, Flow6Value> =
    LruHashMap::with_max_entries(MAX_EST_FLOWS6, BPF_F_NO_COMMON_LRU);

/// Key: IPv6 address as on the wire. Value: unused (1).
#[map(name = "PF_HOST_ADDRS6")]
pub static HOST_ADDRS6: HashMap<Ipv6Words, u32> = HashMap::with_max_entries(MAX_HOST_ADDRS, 0);

/// One LRU list shared by all CPUs: entries are written only for fragmented datagrams, rarely
/// enough that its lock is not contended, and the fragments of one datagram may be processed
/// on another CPU than its first.
#[map(name = "PF_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

#[map(name = "PF_FRAGS6")]
pub static FRAGS6: LruHashMap<Frag6Key, Frag6Value> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

/// Written at tc egress for every packet leaving from a published port; the common LRU list
/// is enough, as an entry is rewritten only when it is missing.
#[map(name = "PF_LOCAL_FLOWS")]
pub static LOCAL_FLOWS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(MAX_LOCAL_FLOWS, 0);

#[map(name = "PF_LOCAL_FLOWS6")]
pub static LOCAL_FLOWS6: LruHashMap<Flow6Key, u32> =
    LruHashMap::with_max_entries(MAX_LOCAL_FLOWS, 0);

/// Pools (`portfwd_common::pool`): per forward's stats slot, its Maglev row plus one (0:
/// refuse new flows).
#[map(name = "PF_POOLS")]
pub static POOLS: Array<u32> = Array::with_max_entries(MAX_FORWARDS, 0);

/// The Maglev rows, flat: row `r` is entries `r * MAGLEV_SIZE ..`, each a backend id.
#[map(name = "PF_MAGLEV")]
pub static MAGLEV: Array<u32> = Array::with_max_entries(MAX_MAGLEV_ROWS * MAGLEV_SIZE, 0);

#[map(name = "PF_BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "PF_BACKENDS6")]
pub static BACKENDS6: Array<Backend6> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Per-CPU LRU lists, as [`FLOWS`]: a new flow of a pool inserts here.
#[map(name = "PF_AFFINITY")]
pub static AFFINITY: LruHashMap<FlowKey, Affinity> =
    LruHashMap::with_max_entries(MAX_AFFINITY, BPF_F_NO_COMMON_LRU);

#[map(name = "PF_AFFINITY6")]
pub static AFFINITY6: LruHashMap<Flow6Key, Affinity> =
    LruHashMap::with_max_entries(MAX_AFFINITY6, BPF_F_NO_COMMON_LRU);

#[map(name = "PF_BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendStats> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// One `bpf_sock_tuple` per CPU: the socket lookup's argument, kept off the stack (the programs
/// are near the 512-byte stack limit).
#[map(name = "PF_SOCK_TUPLE")]
pub static SOCK_TUPLE: PerCpuArray<bpf_sock_tuple> = PerCpuArray::with_max_entries(1, 0);

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

/// Entries the datapath inserted into each flow table, indexed by [`FlowTable`].
#[map(name = "PF_FLOW_INSERTS")]
pub static FLOW_INSERTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FlowTable::COUNT, 0);

/// Room for the FIB lookup's parameters (`xmit`), one per CPU: 64 bytes the programs' stack,
/// within a few bytes of its 512-byte limit, does not have to hold.
#[map(name = "PF_FIB_SCRATCH")]
static FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// Room for the parsed packet (`datapath`), one per CPU: the headers' offsets and values (up
/// to 160 bytes for an IPv6 ICMP error) stay off the stack for the whole translation, so that
/// the path a packet takes has the stack to itself. Sized for the largest parse result.
#[map(name = "PF_PKT_SCRATCH")]
static PKT_SCRATCH: PerCpuArray<PacketScratch> = PerCpuArray::with_max_entries(1, 0);

/// The storage behind [`packet_scratch`]: plain bytes, 8-aligned.
#[repr(C, align(8))]
pub struct PacketScratch([u8; PACKET_SCRATCH_LEN]);

/// Bytes of [`PacketScratch`]: enough for any parse result (checked where it is used).
const PACKET_SCRATCH_LEN: usize = 192;

/// Room for a pool's affinity key (`pool`), one per CPU: its 40 bytes (IPv6) off the stack of
/// the selection, which runs at the deepest point of the packet path's call chain.
#[map(name = "PF_POOL_SCRATCH")]
static POOL_SCRATCH: PerCpuArray<PoolScratch> = PerCpuArray::with_max_entries(1, 0);

/// The storage behind [`pool_scratch`]: an IPv6 flow key's bytes, 8-aligned.
#[repr(C, align(8))]
pub struct PoolScratch([u8; core::mem::size_of::<Flow6Key>()]);

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

/// This CPU's FIB lookup parameters, zeroed. One packet program runs at a time on a CPU (the
/// packet hooks run in softirq context, which does not nest), and it holds the reference only
/// for the lookup.
#[inline(always)]
pub fn fib_scratch() -> Option<&'static mut bpf_fib_lookup> {
    let slot = FIB_SCRATCH.get_ptr_mut(0)?;
    const WORDS: usize = core::mem::size_of::<bpf_fib_lookup>() / 8;
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == WORDS * 8);
    let words = slot as *mut u64;
    for i in 0..WORDS {
        // SAFETY: `i < WORDS` keeps each 8-byte store inside the slot, a map value of the
        // struct's size, 8-aligned; volatile so that LLVM does not turn the stores into a call
        // of the eBPF `memset` (a byte loop).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: a per-CPU slot, used by the one program running on this CPU (see above), so
    // this is the only reference to it; all-zero bytes are a valid value of this plain C struct
    // of integers and unions of integers.
    Some(unsafe { &mut *slot })
}

/// This CPU's room for the parsed packet, as an uninitialized `T`. As for [`fib_scratch`]: one
/// packet program runs at a time on a CPU, and the reference lives for that program's run.
#[inline(always)]
pub fn packet_scratch<T>() -> Option<&'static mut MaybeUninit<T>> {
    const {
        assert!(core::mem::size_of::<T>() <= PACKET_SCRATCH_LEN);
        assert!(core::mem::align_of::<T>() <= core::mem::align_of::<PacketScratch>());
    }
    let slot = PKT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU slot used by the one program running on this CPU (see above), large and
    // aligned enough for a `T` (asserted above); `MaybeUninit` asks nothing of its bytes.
    Some(unsafe { &mut *(slot as *mut MaybeUninit<T>) })
}

/// This CPU's room for a pool's affinity key, as an uninitialized `T` (as [`packet_scratch`]).
#[inline(always)]
pub fn pool_scratch<T>() -> Option<&'static mut MaybeUninit<T>> {
    const {
        assert!(core::mem::size_of::<T>() <= core::mem::size_of::<PoolScratch>());
        assert!(core::mem::align_of::<T>() <= core::mem::align_of::<PoolScratch>());
    }
    let slot = POOL_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `packet_scratch`: a per-CPU slot, used by the one program running on this
    // CPU, large and aligned enough for a `T` (asserted above).
    Some(unsafe { &mut *(slot as *mut MaybeUninit<T>) })
}

/// Adds one to counter `index` of a per-CPU array.
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    update(map, index, |c| *c += 1);
}
