//! Typed access to the datapath's maps.
//!
//! This is the byte-order boundary: the datapath keeps addresses and ports exactly as they are
//! on the wire, so every key and value is converted to network byte order here and nowhere else.
//!
//! The forwarding tables (forwards, ranges, allowlists) hold two generations (see
//! [`super::generation`]); the writers here take the generation to write, and the ones without
//! a generation argument write the active one.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use aya::{
    Ebpf, Pod,
    maps::{
        Array, DevMapHash, HashMap, IterableMap, MapData, MapError, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
        xdp::XdpMapError,
    },
    util::nr_cpus,
};
use portfwd_common::{
    maps::{
        ALLOW, ALLOW6, Addr, AllowKeyOf, BRIDGE_PORTS, FLOW_INSERTS, FLOWS, FLOWS_EST, FLOWS6,
        FLOWS6_EST, FORWARD_STATS, FORWARDS, FORWARDS6, FWD_ALLOWLIST, FlowKeyOf, FlowTable,
        FlowValueOf, ForwardKeyOf, ForwardStats, ForwardValueOf, GENERATION, GENERATIONS,
        HOST_ADDRS, HOST_ADDRS6, Hook, ICMP_BUDGET, IFACE_BRIDGE_PORT, IFACE_EXPOSE, IFACES,
        IcmpBudget, Ipv6Words, LOCAL_FLOWS, LOCAL_FLOWS6, MAX_FORWARDS, RANGES, RANGES6,
        RangeKeyOf, RangeValueOf, VERDICTS, XDP_EGRESS, ipv6_octets, ipv6_words, port_prefixes,
    },
    pool::FWD_POOL,
    reason::Reason,
};

use super::{flows::FlowTableFill, pools::PoolMaps};
use crate::{
    error::{Error, LoadError},
    publish::{AllowPrefix, Family, Forward, Listen, Protocol},
};

/// What [`Maps::adopt`] found in the pinned active generation.
pub struct Adopted {
    /// The counter slot of each wanted forward stored there as it wants it, at its index.
    pub slots: Vec<Option<u32>>,
    /// Entries of forwards the config does not have (as it is).
    pub stale_entries: usize,
    /// The slots those forwards count into: not to be handed to a new forward while they are
    /// still served.
    pub stale_slots: Vec<u32>,
}

/// Owned handles to every map of the loaded object.
pub struct Maps {
    pub(super) v4: FamilyMaps<u32>,
    pub(super) v6: FamilyMaps<Ipv6Words>,
    /// The active generation of the forwarding tables (one element).
    pub(super) generation: Array<MapData, u32>,
    ifaces: HashMap<MapData, u32, u32>,
    bridge_ports: HashMap<MapData, u32, u32>,
    forward_stats: PerCpuArray<MapData, ForwardStats>,
    verdicts: PerCpuArray<MapData, u64>,
    flow_inserts: PerCpuArray<MapData, u64>,
    xdp_egress: DevMapHash<MapData>,
    icmp_budget: PerCpuArray<MapData, IcmpBudget>,
    /// The maps of forwards with several backends.
    pub pools: PoolMaps,
}

/// The maps one address family has to itself (the `*6` maps for IPv6): forwards, ranges,
/// allowlists, flows (new and established) and host addresses. Counter slots are shared by both
/// families.
pub(super) struct FamilyMaps<A: MapAddr> {
    pub(super) forwards: HashMap<MapData, ForwardKeyOf<A>, ForwardValueOf<A>>,
    pub(super) ranges: LpmTrie<MapData, RangeKeyOf<A>, RangeValueOf<A>>,
    pub(super) allow: LpmTrie<MapData, AllowKeyOf<A>, u32>,
    // An LRU hash in the kernel; aya reads it through HashMap.
    flows: HashMap<MapData, FlowKeyOf<A>, FlowValueOf<A>>,
    flows_est: HashMap<MapData, FlowKeyOf<A>, FlowValueOf<A>>,
    host_addrs: HashMap<MapData, A, u32>,
    /// An LRU hash in the kernel, valued with when the flow was last seen (monotonic seconds).
    local_flows: HashMap<MapData, FlowKeyOf<A>, u32>,
}

/// An address as the maps of one family hold it (`u32` for IPv4, [`Ipv6Words`] for IPv6),
/// and the one conversion from and to [`IpAddr`].
pub trait MapAddr: Addr + Pod {
    /// The family whose maps hold this type.
    const FAMILY: Family;
    /// Map names of this family: forwards, ranges, allowlists, new flows, established flows,
    /// host addresses.
    const MAPS: [&'static str; 6];
    /// Its flow tables (new, established), as `PF_FLOW_INSERTS` counts them.
    const FLOW_TABLES: [FlowTable; 2];
    /// The name of this family's local flow map.
    const LOCAL_FLOWS: &'static str;
    /// The map form of `addr`; `None` if it is of the other family.
    fn from_ip(addr: IpAddr) -> Option<Self>;
    /// The address this map form stands for.
    fn to_ip(self) -> IpAddr;
}

impl MapAddr for u32 {
    const FAMILY: Family = Family::V4;
    const MAPS: [&'static str; 6] = [FORWARDS, RANGES, ALLOW, FLOWS, FLOWS_EST, HOST_ADDRS];
    const FLOW_TABLES: [FlowTable; 2] = [FlowTable::New, FlowTable::Est];
    const LOCAL_FLOWS: &'static str = LOCAL_FLOWS;

    fn from_ip(addr: IpAddr) -> Option<u32> {
        match addr {
            IpAddr::V4(a) => Some(ipv4_be(a)),
            IpAddr::V6(_) => None,
        }
    }

    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self.to_ne_bytes()))
    }
}

impl MapAddr for Ipv6Words {
    const FAMILY: Family = Family::V6;
    const MAPS: [&'static str; 6] = [FORWARDS6, RANGES6, ALLOW6, FLOWS6, FLOWS6_EST, HOST_ADDRS6];
    const FLOW_TABLES: [FlowTable; 2] = [FlowTable::New6, FlowTable::Est6];
    const LOCAL_FLOWS: &'static str = LOCAL_FLOWS6;

    fn from_ip(addr: IpAddr) -> Option<Ipv6Words> {
        match addr {
            IpAddr::V6(a) => Some(ipv6_words(a.octets())),
            IpAddr::V4(_) => None,
        }
    }

    fn to_ip(self) -> IpAddr {
        IpAddr::from(ipv6_octets(self))
    }
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|e| LoadError::Map(name, e))
}

pub(super) fn map_err(what: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { what, source }
}

/// A removal that found nothing to remove is not an error.
pub(super) fn gone(r: Result<(), MapError>, what: &'static str) -> Result<(), Error> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(what)(e)),
    }
}

/// The map form of an address of `A`'s family (a forward's addresses are of one family, which
/// [`Forward::new`] checks; the caller picks the maps by that family).
fn addr_of<A: MapAddr>(addr: IpAddr) -> A {
    A::from_ip(addr).unwrap_or_default()
}

/// The key a forward is stored under in `generation`. Every host address (a bare port, `[::]`)
/// is the zero address.
pub fn forward_key<A: MapAddr>(listen: &Listen, generation: u8) -> ForwardKeyOf<A> {
    ForwardKeyOf {
        addr_be: listen.addr.map_or(A::default(), addr_of),
        port_be: listen.port.to_be(),
        proto: ip_proto(listen.protocol),
        generation,
    }
}

/// The trie keys a port range is stored under in `generation`: one per prefix of
/// [`port_prefixes`].
pub fn range_keys<A: MapAddr>(
    listen: &Listen,
    generation: u8,
) -> impl Iterator<Item = Key<RangeKeyOf<A>>> + '_ {
    port_prefixes(listen.port, listen.end).map(move |(port, bits)| {
        Key::new(
            RangeKeyOf::<A>::FIXED_BITS + u32::from(bits),
            RangeKeyOf {
                proto: ip_proto(listen.protocol),
                generation,
                _pad: [0; 2],
                addr_be: listen.addr.map_or(A::default(), addr_of),
                port_be: port.to_be(),
                _pad2: [0; 2],
            },
        )
    })
}

/// The trie key of one allowlist prefix of the forward counting into `slot`, in `generation`;
/// `None` for a prefix of the other family (it never matches, so it is not stored).
pub fn allow_key<A: MapAddr>(
    slot: u32,
    generation: u8,
    prefix: &AllowPrefix,
) -> Option<Key<AllowKeyOf<A>>> {
    Some(Key::new(
        AllowKeyOf::<A>::FIXED_BITS + u32::from(prefix.prefix_len()),
        AllowKeyOf {
            // Below MAX_FORWARDS, which fits 16 bits (checked where the key is defined).
            slot: slot as u16,
            generation,
            _pad: 0,
            saddr_be: A::from_ip(prefix.addr())?,
        },
    ))
}

/// The IP protocol number of `p`.
pub fn ip_proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => portfwd_common::proto::TCP,
        Protocol::Udp => portfwd_common::proto::UDP,
    }
}

/// An IPv4 address as the datapath reads it from a packet: the four bytes in wire order.
pub fn ipv4_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn flags_of(fwd: &Forward) -> u32 {
    let allow = if fwd.allow.is_empty() {
        0
    } else {
        FWD_ALLOWLIST
    };
    let pool = if fwd.pool.is_some() { FWD_POOL } else { 0 };
    allow | pool
}

/// The target fields of `fwd`'s value: its target, or zeroes for a pool (whose backends are in
/// their own maps, [`super::pools`]).
fn target_of<A: MapAddr>(fwd: &Forward) -> (A, u16) {
    if fwd.pool.is_some() {
        (A::default(), 0)
    } else {
        (addr_of::<A>(fwd.to.addr), fwd.to.port.to_be())
    }
}

impl<A: MapAddr> FamilyMaps<A> {
    fn take_from(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let [forwards, ranges, allow, flows, flows_est, host_addrs] = A::MAPS;
        Ok(Self {
            forwards: take(ebpf, forwards)?,
            ranges: take(ebpf, ranges)?,
            allow: take(ebpf, allow)?,
            flows: take(ebpf, flows)?,
            flows_est: take(ebpf, flows_est)?,
            host_addrs: take(ebpf, host_addrs)?,
            local_flows: take(ebpf, A::LOCAL_FLOWS)?,
        })
    }

    /// See [`Maps::write_forward`].
    fn write_forward(&mut self, fwd: &Forward, slot: u32, generation: u8) -> Result<(), Error> {
        let flags = flags_of(fwd);
        let (target_addr_be, target_port_be) = target_of::<A>(fwd);
        let written = self.insert_allow(fwd, slot, generation).and_then(|()| {
            if fwd.listen.is_range() {
                let value = RangeValueOf {
                    target_addr_be,
                    target_port_be,
                    start_port_be: fwd.listen.port.to_be(),
                    stats_slot: slot,
                    flags,
                };
                range_keys::<A>(&fwd.listen, generation).try_for_each(|key| {
                    self.ranges
                        .insert(&key, value, 0)
                        .map_err(map_err("port ranges"))
                })
            } else {
                let value = ForwardValueOf {
                    target_addr_be,
                    target_port_be,
                    generation,
                    _pad: 0,
                    stats_slot: slot,
                    flags,
                };
                self.forwards
                    .insert(forward_key::<A>(&fwd.listen, generation), value, 0)
                    .map_err(map_err("forwarding table"))
            }
        });
        if written.is_err() {
            let _ = self.remove_forward(fwd, slot, generation);
        }
        written
    }

    fn insert_allow(&mut self, fwd: &Forward, slot: u32, generation: u8) -> Result<(), Error> {
        fwd.allow
            .iter()
            .filter_map(|p| allow_key::<A>(slot, generation, p))
            .try_for_each(|key| self.allow.insert(&key, 1, 0).map_err(map_err("allowlists")))
    }

    /// See [`Maps::remove_forward`].
    fn remove_forward(&mut self, fwd: &Forward, slot: u32, generation: u8) -> Result<(), Error> {
        let result = if fwd.listen.is_range() {
            range_keys::<A>(&fwd.listen, generation)
                .map(|key| gone(self.ranges.remove(&key), "port ranges"))
                .fold(Ok(()), Result::and)
        } else {
            gone(
                self.forwards
                    .remove(&forward_key::<A>(&fwd.listen, generation)),
                "forwarding table",
            )
        };
        result.and(
            fwd.allow
                .iter()
                .filter_map(|p| allow_key::<A>(slot, generation, p))
                .map(|key| gone(self.allow.remove(&key), "allowlists"))
                .fold(Ok(()), Result::and),
        )
    }

    /// [`Maps::adopt`] for this family's forwards (`wanted` holds only them, with their index
    /// in the whole list) in `generation`; `used` collects the slots taken over and `seen` every
    /// slot the generation counts into, across families. Returns how many entries of the
    /// generation are not taken over.
    fn adopt(
        &self,
        wanted: &[(usize, &Forward)],
        generation: u8,
        slots: &mut [Option<u32>],
        (used, seen): (&mut BTreeSet<u32>, &mut BTreeSet<u32>),
    ) -> usize {
        let mut stale = 0;

        let singles = self
            .forwards
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.generation == generation);
        for (key, value) in singles {
            seen.insert(value.stats_slot);
            let found = wanted.iter().find(|(i, f)| {
                slots[*i].is_none()
                    && !f.listen.is_range()
                    && key == forward_key::<A>(&f.listen, generation)
                    && (value.target_addr_be, value.target_port_be) == target_of::<A>(f)
                    && value.flags == flags_of(f)
            });
            match found {
                Some((i, _))
                    if value.stats_slot < MAX_FORWARDS && used.insert(value.stats_slot) =>
                {
                    slots[*i] = Some(value.stats_slot);
                }
                _ => stale += 1,
            }
        }

        let same = |a: &Key<RangeKeyOf<A>>, b: &Key<RangeKeyOf<A>>| {
            a.prefix_len() == b.prefix_len() && a.data() == b.data()
        };
        let ranges: Vec<(Key<RangeKeyOf<A>>, RangeValueOf<A>)> = self
            .ranges
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.data().generation == generation)
            .collect();
        seen.extend(ranges.iter().map(|(_, v)| v.stats_slot));
        let mut kept = 0;
        for (i, f) in wanted {
            if !f.listen.is_range() {
                continue;
            }
            let keys: Vec<Key<RangeKeyOf<A>>> = range_keys::<A>(&f.listen, generation).collect();
            let values: Option<Vec<RangeValueOf<A>>> = keys
                .iter()
                .map(|k| ranges.iter().find(|(e, _)| same(e, k)).map(|(_, v)| *v))
                .collect();
            let Some(values) = values else { continue };
            let first = values[0];
            let intact = values.iter().all(|v| *v == first)
                && (first.target_addr_be, first.target_port_be) == target_of::<A>(f)
                && first.start_port_be == f.listen.port.to_be()
                && first.flags == flags_of(f);
            if intact && first.stats_slot < MAX_FORWARDS && used.insert(first.stats_slot) {
                slots[*i] = Some(first.stats_slot);
                kept += keys.len();
            }
        }
        stale + ranges.len() - kept
    }

    /// The fill of this family's two flow tables (new, established), from `inserts`.
    fn flow_tables(
        &self,
        inserts: &PerCpuArray<MapData, u64>,
    ) -> Result<[FlowTableFill; 2], Error> {
        let fill = |table: FlowTable,
                    map: &HashMap<MapData, FlowKeyOf<A>, FlowValueOf<A>>|
         -> Result<FlowTableFill, Error> {
            let per_cpu = inserts
                .get(&(table as u32), 0)
                .map_err(map_err("flow inserts"))?;
            Ok(FlowTableFill::from_inserts(
                table,
                cap(map, "flows")?,
                &per_cpu,
            ))
        };
        let [new, est] = A::FLOW_TABLES;
        Ok([fill(new, &self.flows)?, fill(est, &self.flows_est)?])
    }

    /// This family's rows of [`Maps::fill`].
    /// The forwarding tables hold room for two generations, and one config can use one: their
    /// capacity is given per generation (between reloads, only the active one has entries).
    fn fill(&self, flows: [FlowTableFill; 2]) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        let [forwards, ranges, allow, new, est, host_addrs] = A::MAPS;
        let count = |n: usize| n as u64;
        let per_generation = |n: u64| n / u64::from(GENERATIONS);
        Ok(vec![
            (
                forwards,
                count(self.forwards.keys().filter(|k| k.is_ok()).count()),
                per_generation(cap(&self.forwards, "forwarding table")?),
            ),
            (
                ranges,
                count(self.ranges.keys().filter(|k| k.is_ok()).count()),
                per_generation(cap(&self.ranges, "port ranges")?),
            ),
            (
                allow,
                count(self.allow.keys().filter(|k| k.is_ok()).count()),
                per_generation(cap(&self.allow, "allowlists")?),
            ),
            (new, flows[0].entries, flows[0].max_entries),
            (est, flows[1].entries, flows[1].max_entries),
            (
                host_addrs,
                count(self.host_addrs.keys().filter(|k| k.is_ok()).count()),
                cap(&self.host_addrs, "host addresses")?,
            ),
            (
                A::LOCAL_FLOWS,
                count(self.local_flows.keys().filter(|k| k.is_ok()).count()),
                cap(&self.local_flows, "local flows")?,
            ),
        ])
    }
}

/// A map's capacity, from the kernel.
fn cap<K: Pod, V>(m: &impl IterableMap<K, V>, what: &'static str) -> Result<u64, Error> {
    m.map()
        .info()
        .map(|i| u64::from(i.max_entries()))
        .map_err(map_err(what))
}

impl Maps {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            v4: FamilyMaps::take_from(ebpf)?,
            v6: FamilyMaps::take_from(ebpf)?,
            generation: take(ebpf, GENERATION)?,
            ifaces: take(ebpf, IFACES)?,
            bridge_ports: take(ebpf, BRIDGE_PORTS)?,
            forward_stats: take(ebpf, FORWARD_STATS)?,
            verdicts: take(ebpf, VERDICTS)?,
            flow_inserts: take(ebpf, FLOW_INSERTS)?,
            xdp_egress: take(ebpf, XDP_EGRESS)?,
            icmp_budget: take(ebpf, ICMP_BUDGET)?,
            pools: PoolMaps::take_from(ebpf)?,
        })
    }

    /// Publishes `fwd` in the active generation, counting into `slot` (whose counters are reset
    /// first). See [`Maps::write_forward`].
    pub fn insert_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        self.reset_counters(slot)?;
        self.write_forward(fwd, slot, self.active_generation()?)
    }

    /// Zeroes the counters of `slot` (before a new forward counts into it).
    pub fn reset_counters(&mut self, slot: u32) -> Result<(), Error> {
        let zero = per_cpu(ForwardStats::default(), "forward counters")?;
        self.forward_stats
            .set(slot, zero, 0)
            .map_err(map_err("forward counters"))
    }

    /// Sets every CPU's token bucket of the ICMP "too big" answers ([`IcmpBudget`]). The
    /// datapath starts from a full bucket by itself; tests lift the limit (a `tokens` far above
    /// the burst is never refilled, only spent) or exhaust it (no tokens, stamped in the future).
    pub fn set_icmp_budget(&mut self, budget: IcmpBudget) -> Result<(), Error> {
        let what = "ICMP answer budget";
        let values = per_cpu(budget, what)?;
        self.icmp_budget.set(0, values, 0).map_err(map_err(what))
    }

    /// Writes `fwd` in `generation`, counting into `slot`, without touching the slot's
    /// counters. Its allowlist is written before the forward, so no packet ever sees the
    /// forward without it. A port range is one value repeated under each of its (at most 30)
    /// prefixes; on failure whatever was written is removed again. The forward goes to its
    /// family's maps; allowlist prefixes of the other family are not stored (they never match).
    pub fn write_forward(&mut self, fwd: &Forward, slot: u32, generation: u8) -> Result<(), Error> {
        match fwd.family() {
            Family::V4 => self.v4.write_forward(fwd, slot, generation),
            Family::V6 => self.v6.write_forward(fwd, slot, generation),
        }
    }

    /// Stops publishing `fwd` (published with `slot`) in the active generation: the forward
    /// first, then its allowlist.
    pub fn remove_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let generation = self.active_generation()?;
        match fwd.family() {
            Family::V4 => self.v4.remove_forward(fwd, slot, generation),
            Family::V6 => self.v6.remove_forward(fwd, slot, generation),
        }
    }

    /// Counters of the forward in `slot`, summed over CPUs.
    pub fn forward_stats(&self, slot: u32) -> Result<ForwardStats, Error> {
        let per_cpu = self
            .forward_stats
            .get(&slot, 0)
            .map_err(map_err("forward counters"))?;
        let mut sum = ForwardStats::default();
        for s in per_cpu.iter() {
            sum.add(s);
        }
        Ok(sum)
    }

    /// Every verdict counter, summed over CPUs and hooks.
    pub fn verdicts(&self) -> Result<Vec<(Reason, u64)>, Error> {
        let tc = self.verdicts_of(Hook::Tc)?;
        let xdp = self.verdicts_of(Hook::Xdp)?;
        Ok(tc
            .into_iter()
            .zip(xdp)
            .map(|((r, a), (_, b))| (r, a + b))
            .collect())
    }

    /// The verdict counters of one hook, summed over CPUs.
    pub fn verdicts_of(&self, hook: Hook) -> Result<Vec<(Reason, u64)>, Error> {
        Reason::ALL
            .iter()
            .map(|r| {
                let index = hook as u32 * Reason::COUNT + *r as u32;
                let per_cpu = self
                    .verdicts
                    .get(&index, 0)
                    .map_err(map_err("verdict counters"))?;
                Ok((*r, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// One verdict counter of one hook, summed over CPUs.
    pub fn verdict(&self, hook: Hook, reason: Reason) -> Result<u64, Error> {
        let index = hook as u32 * Reason::COUNT + reason as u32;
        let per_cpu = self
            .verdicts
            .get(&index, 0)
            .map_err(map_err("verdict counters"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Lets XDP finish translations whose next hop is `ifindex` (its driver takes XDP frames).
    pub fn set_xdp_egress(&mut self, ifindex: u32, enabled: bool) -> Result<(), Error> {
        let what = "XDP egress";
        if enabled {
            return self
                .xdp_egress
                .insert(ifindex, ifindex, None, 0)
                .map_err(|e| match e {
                    XdpMapError::MapError(e) => map_err(what)(e),
                    // Only with a chained program, which is never passed.
                    XdpMapError::ChainedProgramNotSupported => {
                        unreachable!("no chained program is given")
                    }
                });
        }
        if !self
            .xdp_egress
            .keys()
            .any(|k| k.is_ok_and(|k| k == ifindex))
        {
            // Not there: nothing to do.
            return Ok(());
        }
        match self.xdp_egress.remove(ifindex) {
            // A DEVMAP_HASH reports a missing key as a failed syscall (ENOENT), not as
            // KeyNotFound.
            Err(MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) =>
            {
                Ok(())
            }
            r => gone(r, what),
        }
    }

    /// Records `addr` as one of the host's own addresses, in its family's map.
    pub fn set_host_addr(&mut self, addr: IpAddr) -> Result<(), Error> {
        let what = "host addresses";
        match addr {
            IpAddr::V4(a) => self.v4.host_addrs.insert(ipv4_be(a), 1, 0),
            IpAddr::V6(a) => self.v6.host_addrs.insert(ipv6_words(a.octets()), 1, 0),
        }
        .map_err(map_err(what))
    }

    pub fn remove_host_addr(&mut self, addr: IpAddr) -> Result<(), Error> {
        let what = "host addresses";
        match addr {
            IpAddr::V4(a) => gone(self.v4.host_addrs.remove(&ipv4_be(a)), what),
            IpAddr::V6(a) => gone(self.v6.host_addrs.remove(&ipv6_words(a.octets())), what),
        }
    }

    /// Marks interface `index` as served (`exposed`: published ports are reachable through
    /// it), and as a veth port of bridge `bridge` (see the datapath's `bridge` module) or not.
    pub fn set_iface(
        &mut self,
        index: u32,
        exposed: bool,
        bridge: Option<u32>,
    ) -> Result<(), Error> {
        let mut flags = if exposed { IFACE_EXPOSE } else { 0 };
        if bridge.is_some() {
            flags |= IFACE_BRIDGE_PORT;
        }
        self.ifaces
            .insert(index, flags, 0)
            .map_err(map_err("interfaces"))?;
        match bridge {
            Some(bridge) => self
                .bridge_ports
                .insert(index, bridge, 0)
                .map_err(map_err("bridge ports")),
            // (A hash map's delete reports a missing key as a plain syscall error.)
            None if self.bridge_ports.get(&index, 0).is_err() => Ok(()),
            None => self
                .bridge_ports
                .remove(&index)
                .map_err(map_err("bridge ports")),
        }
    }

    pub fn remove_iface(&mut self, index: u32) -> Result<(), Error> {
        let _ = self.bridge_ports.remove(&index);
        gone(self.ifaces.remove(&index), "interfaces")
    }

    /// Takes over what a previous daemon left in the active generation of the pinned maps:
    /// each of `wanted` that is stored exactly as [`Maps::write_forward`] would store it (single
    /// port or every prefix of a range, same target, same allowlist flag) keeps its counter
    /// slot. Nothing is changed: the forwards go on being served as they are until the
    /// daemon's first state replaces the generation.
    pub fn adopt(&self, wanted: &[Forward]) -> Result<Adopted, Error> {
        let generation = self.active_generation()?;
        let mut slots: Vec<Option<u32>> = vec![None; wanted.len()];
        let (mut used, mut seen) = (BTreeSet::new(), BTreeSet::new());
        let of = |family: Family| -> Vec<(usize, &Forward)> {
            wanted
                .iter()
                .enumerate()
                .filter(|(_, f)| f.family() == family)
                .collect()
        };
        let stale_entries = self.v4.adopt(
            &of(Family::V4),
            generation,
            &mut slots,
            (&mut used, &mut seen),
        ) + self.v6.adopt(
            &of(Family::V6),
            generation,
            &mut slots,
            (&mut used, &mut seen),
        );
        let stale_slots = seen
            .difference(&used)
            .copied()
            .filter(|s| *s < MAX_FORWARDS)
            .collect();
        Ok(Adopted {
            slots,
            stale_entries,
            stale_slots,
        })
    }

    /// The host addresses in the maps of both families.
    pub fn host_addr_entries(&self) -> Vec<IpAddr> {
        let v4 = self.v4.host_addrs.keys().filter_map(Result::ok);
        let v6 = self.v6.host_addrs.keys().filter_map(Result::ok);
        v4.map(MapAddr::to_ip)
            .chain(v6.map(MapAddr::to_ip))
            .collect()
    }

    /// The interface indexes in the interfaces map and in the XDP egress map.
    pub fn iface_indexes(&self) -> (Vec<u32>, Vec<u32>) {
        let ifaces = self.ifaces.keys().filter_map(Result::ok).collect();
        let egress = self
            .xdp_egress
            .iter()
            .filter_map(Result::ok)
            .map(|(k, _)| k)
            .collect();
        (ifaces, egress)
    }

    /// Records a flow directly, as the datapath does on a client's first packet (for tests and
    /// state migration), in the maps of the key's family.
    pub fn insert_flow<A: MapAddr>(
        &mut self,
        key: FlowKeyOf<A>,
        value: FlowValueOf<A>,
    ) -> Result<(), Error> {
        self.family_mut::<A>()
            .flows
            .insert(key, value, 0)
            .map_err(map_err("flows"))
    }

    /// Records a flow as having left the host from a published port `age` ago, as the tc
    /// egress program does (for tests): its replies, keyed by `key`, are passed to the stack
    /// while the entry is younger than
    /// [`local_flow_timeout`](portfwd_common::maps::local_flow_timeout).
    pub fn insert_local_flow<A: MapAddr>(
        &mut self,
        key: FlowKeyOf<A>,
        age: Duration,
    ) -> Result<(), Error> {
        let seen = monotonic_secs().saturating_sub(age.as_secs()) as u32;
        self.family_mut::<A>()
            .local_flows
            .insert(key, seen, 0)
            .map_err(map_err("local flows"))
    }

    /// Whether a flow's replies (keyed by `key`) are recorded as the host's (expired or not).
    pub fn is_local_flow<A: MapAddr>(&self, key: &FlowKeyOf<A>) -> bool {
        self.family::<A>().local_flows.get(key, 0).is_ok()
    }

    /// Looks up a flow as the datapath does, established first (for tests and diagnostics).
    pub fn flow<A: MapAddr>(&self, key: &FlowKeyOf<A>) -> Option<FlowValueOf<A>> {
        let maps = self.family::<A>();
        maps.flows_est
            .get(key, 0)
            .or_else(|_| maps.flows.get(key, 0))
            .ok()
    }

    /// The flow tables of `A`'s family (new, established), for the walk that drops the flows a
    /// changed forward left behind (`daemon::follow`).
    pub fn flows_mut<A: MapAddr>(
        &mut self,
    ) -> [&mut HashMap<MapData, FlowKeyOf<A>, FlowValueOf<A>>; 2] {
        let family = self.family_mut::<A>();
        [&mut family.flows, &mut family.flows_est]
    }

    /// Every flow table's fill level and evictions, both families (see [`super::flows`]): no
    /// walk of the tables.
    pub fn flow_tables(&self) -> Result<Vec<FlowTableFill>, Error> {
        let mut all = self.v4.flow_tables(&self.flow_inserts)?.to_vec();
        all.extend(self.v6.flow_tables(&self.flow_inserts)?);
        Ok(all)
    }

    fn family<A: MapAddr>(&self) -> &FamilyMaps<A> {
        let any: &dyn std::any::Any = match A::FAMILY {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        any.downcast_ref()
            .expect("MapAddr::FAMILY names the maps of its own type")
    }

    fn family_mut<A: MapAddr>(&mut self) -> &mut FamilyMaps<A> {
        let any: &mut dyn std::any::Any = match A::FAMILY {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        };
        any.downcast_mut()
            .expect("MapAddr::FAMILY names the maps of its own type")
    }
}

impl Maps {
    /// Each map's name, entries in use and capacity (from the kernel; the flow tables' entries
    /// derived from the datapath's inserts, see [`Maps::flow_tables`]). `forward_slots` is how
    /// many counter slots the daemon has handed out; the verdict array is always full.
    pub fn fill(&self, forward_slots: u64) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        let count = |keys: aya::maps::MapKeys<'_, u32>| keys.filter(|k| k.is_ok()).count() as u64;
        let verdicts = cap(&self.verdicts, "verdict counters")?;
        let mut rows = self.v4.fill(self.v4.flow_tables(&self.flow_inserts)?)?;
        rows.extend(self.v6.fill(self.v6.flow_tables(&self.flow_inserts)?)?);
        rows.extend([
            (
                IFACES,
                count(self.ifaces.keys()),
                cap(&self.ifaces, "interfaces")?,
            ),
            (
                FORWARD_STATS,
                forward_slots,
                cap(&self.forward_stats, "forward counters")?,
            ),
            (VERDICTS, verdicts, verdicts),
            (
                FLOW_INSERTS,
                FlowTable::COUNT.into(),
                FlowTable::COUNT.into(),
            ),
            (
                XDP_EGRESS,
                count(self.xdp_egress.keys()),
                cap(&self.xdp_egress, "XDP egress")?,
            ),
        ]);
        Ok(rows)
    }
}

/// `value` for every CPU.
pub(super) fn per_cpu<T: Pod>(value: T, what: &'static str) -> Result<PerCpuValues<T>, Error> {
    PerCpuValues::try_from(vec![value; nr_cpus_or_1()]).map_err(|io_error| {
        // Only reading the number of CPUs can fail here.
        map_err(what)(MapError::SyscallError(aya::sys::SyscallError {
            call: "nr_cpus",
            io_error,
        }))
    })
}

/// `CLOCK_MONOTONIC` in seconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_secs() -> u64 {
    // CLOCK_MONOTONIC always exists; 0 only if the call could fail.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u64)
}

fn nr_cpus_or_1() -> usize {
    nr_cpus().map(|n| n.max(1)).unwrap_or(1)
}
