//! Typed access to the datapath's maps.
//!
//! This is the byte-order boundary: the datapath keeps addresses and ports exactly as they are
//! on the wire, so every key and value is converted to network byte order here and nowhere else.
use std::net::{IpAddr, Ipv4Addr};

use aya::{
    Ebpf, Pod,
    maps::{
        DevMapHash, HashMap, IterableMap, MapData, MapError, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
        xdp::XdpMapError,
    },
    util::nr_cpus,
};
use portfwd_common::{
    maps::{
        ALLOW, ALLOW6, Addr, AllowKeyOf, BRIDGE_PORTS, FLOWS, FLOWS6, FORWARD_STATS, FORWARDS,
        FORWARDS6, FWD_ALLOWLIST, FlowKeyOf, FlowValueOf, ForwardKeyOf, ForwardStats,
        ForwardValueOf, HOST_ADDRS, HOST_ADDRS6, Hook, ICMP_BUDGET, IFACE_BRIDGE_PORT,
        IFACE_EXPOSE, IFACES, IcmpBudget, Ipv6Words, MAX_FORWARDS, RANGES, RANGES6, RangeKeyOf,
        RangeValueOf, VERDICTS, XDP_EGRESS, ipv6_octets, ipv6_words, port_prefixes,
    },
    reason::Reason,
};

use super::count;
use crate::{
    error::{Error, LoadError, chain},
    publish::{AllowPrefix, Family, Forward, Listen, Protocol},
};

/// Owned handles to every map of the loaded object.
pub struct Maps {
    v4: FamilyMaps<u32>,
    v6: FamilyMaps<Ipv6Words>,
    ifaces: HashMap<MapData, u32, u32>,
    bridge_ports: HashMap<MapData, u32, u32>,
    forward_stats: PerCpuArray<MapData, ForwardStats>,
    verdicts: PerCpuArray<MapData, u64>,
    xdp_egress: DevMapHash<MapData>,
    icmp_budget: PerCpuArray<MapData, IcmpBudget>,
}

/// The maps one address family has to itself (the `*6` maps for IPv6): forwards, ranges,
/// allowlists, flows and host addresses. Counter slots are shared by both families.
struct FamilyMaps<A: MapAddr> {
    forwards: HashMap<MapData, ForwardKeyOf<A>, ForwardValueOf<A>>,
    ranges: LpmTrie<MapData, RangeKeyOf<A>, RangeValueOf<A>>,
    allow: LpmTrie<MapData, AllowKeyOf<A>, u32>,
    // An LRU hash in the kernel; aya reads it through HashMap.
    flows: HashMap<MapData, FlowKeyOf<A>, FlowValueOf<A>>,
    host_addrs: HashMap<MapData, A, u32>,
}

/// An address as the maps of one family hold it (`u32` for IPv4, [`Ipv6Words`] for IPv6),
/// and the one conversion from and to [`IpAddr`].
pub trait MapAddr: Addr + Pod {
    /// The family whose maps hold this type.
    const FAMILY: Family;
    /// Map names of this family: forwards, ranges, allowlists, flows, host addresses.
    const MAPS: [&'static str; 5];
    /// The map form of `addr`; `None` if it is of the other family.
    fn from_ip(addr: IpAddr) -> Option<Self>;
    /// The address this map form stands for.
    fn to_ip(self) -> IpAddr;
}

impl MapAddr for u32 {
    const FAMILY: Family = Family::V4;
    const MAPS: [&'static str; 5] = [FORWARDS, RANGES, ALLOW, FLOWS, HOST_ADDRS];

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
    const MAPS: [&'static str; 5] = [FORWARDS6, RANGES6, ALLOW6, FLOWS6, HOST_ADDRS6];

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

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|e| LoadError::Map(name, e))
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { what, source }
}

/// A removal that found nothing to remove is not an error.
fn gone(r: Result<(), MapError>, what: &'static str) -> Result<(), Error> {
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

/// The key a forward is stored under. Every host address (a bare port, `[::]`) is the zero
/// address.
pub fn forward_key<A: MapAddr>(listen: &Listen) -> ForwardKeyOf<A> {
    ForwardKeyOf {
        addr_be: listen.addr.map_or(A::default(), addr_of),
        port_be: listen.port.to_be(),
        proto: ip_proto(listen.protocol),
        _pad: 0,
    }
}

/// The trie keys a port range is stored under: one per prefix of [`port_prefixes`].
pub fn range_keys<A: MapAddr>(listen: &Listen) -> impl Iterator<Item = Key<RangeKeyOf<A>>> + '_ {
    port_prefixes(listen.port, listen.end).map(|(port, bits)| {
        Key::new(
            RangeKeyOf::<A>::FIXED_BITS + u32::from(bits),
            RangeKeyOf {
                proto: ip_proto(listen.protocol),
                _pad: [0; 3],
                addr_be: listen.addr.map_or(A::default(), addr_of),
                port_be: port.to_be(),
                _pad2: [0; 2],
            },
        )
    })
}

/// The trie key of one allowlist prefix of the forward counting into `slot`; `None` for a
/// prefix of the other family (it never matches, so it is not stored).
pub fn allow_key<A: MapAddr>(slot: u32, prefix: &AllowPrefix) -> Option<Key<AllowKeyOf<A>>> {
    Some(Key::new(
        AllowKeyOf::<A>::FIXED_BITS + u32::from(prefix.prefix_len()),
        AllowKeyOf {
            slot,
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
    if fwd.allow.is_empty() {
        0
    } else {
        FWD_ALLOWLIST
    }
}

impl<A: MapAddr> FamilyMaps<A> {
    fn take_from(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let [forwards, ranges, allow, flows, host_addrs] = A::MAPS;
        Ok(Self {
            forwards: take(ebpf, forwards)?,
            ranges: take(ebpf, ranges)?,
            allow: take(ebpf, allow)?,
            flows: take(ebpf, flows)?,
            host_addrs: take(ebpf, host_addrs)?,
        })
    }

    /// See [`Maps::restore_forward`].
    fn restore_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let flags = flags_of(fwd);
        let target_addr_be = addr_of::<A>(fwd.to.addr);
        let written = self.insert_allow(fwd, slot).and_then(|()| {
            if fwd.listen.is_range() {
                let value = RangeValueOf {
                    target_addr_be,
                    target_port_be: fwd.to.port.to_be(),
                    start_port_be: fwd.listen.port.to_be(),
                    stats_slot: slot,
                    flags,
                };
                range_keys::<A>(&fwd.listen).try_for_each(|key| {
                    self.ranges
                        .insert(&key, value, 0)
                        .map_err(map_err("port ranges"))
                })
            } else {
                let value = ForwardValueOf {
                    target_addr_be,
                    target_port_be: fwd.to.port.to_be(),
                    _pad: 0,
                    stats_slot: slot,
                    flags,
                };
                self.forwards
                    .insert(forward_key::<A>(&fwd.listen), value, 0)
                    .map_err(map_err("forwarding table"))
            }
        });
        if written.is_err() {
            let _ = self.remove_forward(fwd, slot);
        }
        written
    }

    fn insert_allow(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        fwd.allow
            .iter()
            .filter_map(|p| allow_key::<A>(slot, p))
            .try_for_each(|key| self.allow.insert(&key, 1, 0).map_err(map_err("allowlists")))
    }

    /// See [`Maps::remove_forward`].
    fn remove_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let result = if fwd.listen.is_range() {
            range_keys::<A>(&fwd.listen)
                .map(|key| gone(self.ranges.remove(&key), "port ranges"))
                .fold(Ok(()), Result::and)
        } else {
            gone(
                self.forwards.remove(&forward_key::<A>(&fwd.listen)),
                "forwarding table",
            )
        };
        result.and(self.remove_allow(fwd, slot))
    }

    /// See [`Maps::remove_allow`].
    fn remove_allow(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        fwd.allow
            .iter()
            .filter_map(|p| allow_key::<A>(slot, p))
            .map(|key| gone(self.allow.remove(&key), "allowlists"))
            .fold(Ok(()), Result::and)
    }

    /// [`Maps::adopt`] for this family's forwards (`wanted` holds only them, with their index
    /// in the whole list); `used` collects the slots taken over, across families.
    fn adopt(
        &mut self,
        wanted: &[(usize, &Forward)],
        slots: &mut [Option<u32>],
        used: &mut std::collections::BTreeSet<u32>,
    ) -> usize {
        let mut removed = 0;

        let singles: Vec<(ForwardKeyOf<A>, ForwardValueOf<A>)> =
            self.forwards.iter().filter_map(Result::ok).collect();
        for (key, value) in singles {
            let found = wanted.iter().find(|(i, f)| {
                slots[*i].is_none()
                    && !f.listen.is_range()
                    && key == forward_key::<A>(&f.listen)
                    && value.target_addr_be == addr_of::<A>(f.to.addr)
                    && value.target_port_be == f.to.port.to_be()
                    && value.flags == flags_of(f)
            });
            match found {
                Some((i, _))
                    if value.stats_slot < MAX_FORWARDS && used.insert(value.stats_slot) =>
                {
                    slots[*i] = Some(value.stats_slot);
                }
                _ => {
                    let _ = self.forwards.remove(&key);
                    removed += 1;
                }
            }
        }

        let same = |a: &Key<RangeKeyOf<A>>, b: &Key<RangeKeyOf<A>>| {
            a.prefix_len() == b.prefix_len() && a.data() == b.data()
        };
        let ranges: Vec<(Key<RangeKeyOf<A>>, RangeValueOf<A>)> =
            self.ranges.iter().filter_map(Result::ok).collect();
        let mut keep_ranges: Vec<Key<RangeKeyOf<A>>> = Vec::new();
        for (i, f) in wanted {
            if !f.listen.is_range() {
                continue;
            }
            let keys: Vec<Key<RangeKeyOf<A>>> = range_keys::<A>(&f.listen).collect();
            let values: Option<Vec<RangeValueOf<A>>> = keys
                .iter()
                .map(|k| ranges.iter().find(|(e, _)| same(e, k)).map(|(_, v)| *v))
                .collect();
            let Some(values) = values else { continue };
            let first = values[0];
            let intact = values.iter().all(|v| *v == first)
                && first.target_addr_be == addr_of::<A>(f.to.addr)
                && first.target_port_be == f.to.port.to_be()
                && first.start_port_be == f.listen.port.to_be()
                && first.flags == flags_of(f);
            if intact && first.stats_slot < MAX_FORWARDS && used.insert(first.stats_slot) {
                slots[*i] = Some(first.stats_slot);
                keep_ranges.extend(keys);
            }
        }
        for (key, _) in &ranges {
            if !keep_ranges.iter().any(|k| same(k, key)) {
                let _ = self.ranges.remove(key);
                removed += 1;
            }
        }

        let mut keep_allow: Vec<Key<AllowKeyOf<A>>> = Vec::new();
        for (i, f) in wanted {
            if let Some(slot) = slots[*i] {
                keep_allow.extend(f.allow.iter().filter_map(|p| allow_key::<A>(slot, p)));
            }
        }
        let allow: Vec<Key<AllowKeyOf<A>>> = self.allow.keys().filter_map(Result::ok).collect();
        for key in &allow {
            let kept = keep_allow
                .iter()
                .any(|k| k.prefix_len() == key.prefix_len() && k.data() == key.data());
            if !kept {
                let _ = self.allow.remove(key);
                removed += 1;
            }
        }
        for (i, f) in wanted {
            if let Some(slot) = slots[*i]
                && let Err(e) = self.insert_allow(f, slot)
            {
                tracing::error!("restoring the allowlist of {}: {}", f.listen, chain(&e));
            }
        }
        removed
    }

    /// Live flows: one system call per 1,024 (a key walk on a kernel without batch lookups).
    fn flow_count(&self) -> usize {
        match count::hash_entries(self.flows.map()) {
            Ok(n) => n as usize,
            Err(e) => {
                tracing::debug!("counting flows with a batch lookup: {e}; walking the keys");
                self.flows.keys().filter(|k| k.is_ok()).count()
            }
        }
    }

    /// This family's rows of [`Maps::fill`].
    fn fill(&self) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        let [forwards, ranges, allow, flows, host_addrs] = A::MAPS;
        let count = |n: usize| n as u64;
        Ok(vec![
            (
                forwards,
                count(self.forwards.keys().filter(|k| k.is_ok()).count()),
                cap(&self.forwards, "forwarding table")?,
            ),
            (
                ranges,
                count(self.ranges.keys().filter(|k| k.is_ok()).count()),
                cap(&self.ranges, "port ranges")?,
            ),
            (
                allow,
                count(self.allow.keys().filter(|k| k.is_ok()).count()),
                cap(&self.allow, "allowlists")?,
            ),
            (flows, count(self.flow_count()), cap(&self.flows, "flows")?),
            (
                host_addrs,
                count(self.host_addrs.keys().filter(|k| k.is_ok()).count()),
                cap(&self.host_addrs, "host addresses")?,
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
            ifaces: take(ebpf, IFACES)?,
            bridge_ports: take(ebpf, BRIDGE_PORTS)?,
            forward_stats: take(ebpf, FORWARD_STATS)?,
            verdicts: take(ebpf, VERDICTS)?,
            xdp_egress: take(ebpf, XDP_EGRESS)?,
            icmp_budget: take(ebpf, ICMP_BUDGET)?,
        })
    }

    /// Publishes `fwd`, counting into `slot` (whose counters are reset first). Its allowlist is
    /// written before the forward, so no packet ever sees the forward without it. A port range
    /// is one value repeated under each of its (at most 30) prefixes; on failure whatever was
    /// written is removed again. The forward goes to its family's maps.
    pub fn insert_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let zero = per_cpu(ForwardStats::default(), "forward counters")?;
        self.forward_stats
            .set(slot, zero, 0)
            .map_err(map_err("forward counters"))?;
        self.restore_forward(fwd, slot)
    }

    /// Sets every CPU's token bucket of the ICMP "too big" answers ([`IcmpBudget`]). The
    /// datapath starts from a full bucket by itself; tests lift the limit (a `tokens` far above
    /// the burst is never refilled, only spent) or exhaust it (no tokens, stamped in the future).
    pub fn set_icmp_budget(&mut self, budget: IcmpBudget) -> Result<(), Error> {
        let what = "ICMP answer budget";
        let values = per_cpu(budget, what)?;
        self.icmp_budget.set(0, values, 0).map_err(map_err(what))
    }

    /// Writes `fwd` counting into `slot` without resetting the slot's counters (undoing a
    /// removal, or publishing for the first time after [`Maps::insert_forward`] reset them).
    /// Allowlist prefixes of the other family are not stored: they never match.
    pub fn restore_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        match fwd.family() {
            Family::V4 => self.v4.restore_forward(fwd, slot),
            Family::V6 => self.v6.restore_forward(fwd, slot),
        }
    }

    /// Stops publishing `fwd` (published with `slot`): the forward first, then its allowlist.
    pub fn remove_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        match fwd.family() {
            Family::V4 => self.v4.remove_forward(fwd, slot),
            Family::V6 => self.v6.remove_forward(fwd, slot),
        }
    }

    /// Removes the allowlist entries of `fwd` published with `slot` (after its key was taken
    /// over by a changed forward in another slot).
    pub fn remove_allow(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        match fwd.family() {
            Family::V4 => self.v4.remove_allow(fwd, slot),
            Family::V6 => self.v6.remove_allow(fwd, slot),
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

    /// Takes over what a previous daemon left in the pinned maps: each of `wanted` that is
    /// stored exactly as [`Maps::insert_forward`] would store it (single port or every prefix
    /// of a range, same target, same allowlist flag) keeps its counter slot, which is returned
    /// at its index; its allowlist entries are rewritten. Everything else in the forwarding
    /// tables, the range tries and the allowlist tries of both families is removed. Returns the
    /// slots and how many stale entries were removed.
    pub fn adopt(&mut self, wanted: &[Forward]) -> (Vec<Option<u32>>, usize) {
        let mut slots: Vec<Option<u32>> = vec![None; wanted.len()];
        let mut used = std::collections::BTreeSet::new();
        let of = |family: Family| -> Vec<(usize, &Forward)> {
            wanted
                .iter()
                .enumerate()
                .filter(|(_, f)| f.family() == family)
                .collect()
        };
        let removed = self.v4.adopt(&of(Family::V4), &mut slots, &mut used)
            + self.v6.adopt(&of(Family::V6), &mut slots, &mut used);
        (slots, removed)
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

    /// Looks up a flow (for tests and diagnostics).
    pub fn flow<A: MapAddr>(&self, key: &FlowKeyOf<A>) -> Option<FlowValueOf<A>> {
        self.family::<A>().flows.get(key, 0).ok()
    }

    /// Whether `name` is one of the flow tables in [`Maps::fill`]'s rows: the flow count can be
    /// summed from those rows instead of walking the tables a second time.
    pub fn is_flow_map(name: &str) -> bool {
        name == <u32 as MapAddr>::MAPS[3] || name == <Ipv6Words as MapAddr>::MAPS[3]
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
    /// Each map's name, entries in use and capacity (from the kernel). `forward_slots` is how
    /// many counter slots the daemon has handed out; the verdict array is always full.
    pub fn fill(&self, forward_slots: u64) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        let count = |keys: aya::maps::MapKeys<'_, u32>| keys.filter(|k| k.is_ok()).count() as u64;
        let verdicts = cap(&self.verdicts, "verdict counters")?;
        let mut rows = self.v4.fill()?;
        rows.extend(self.v6.fill()?);
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
                XDP_EGRESS,
                count(self.xdp_egress.keys()),
                cap(&self.xdp_egress, "XDP egress")?,
            ),
        ]);
        Ok(rows)
    }
}

/// `value` for every CPU.
fn per_cpu<T: Pod>(value: T, what: &'static str) -> Result<PerCpuValues<T>, Error> {
    PerCpuValues::try_from(vec![value; nr_cpus_or_1()]).map_err(|io_error| {
        // Only reading the number of CPUs can fail here.
        map_err(what)(MapError::SyscallError(aya::sys::SyscallError {
            call: "nr_cpus",
            io_error,
        }))
    })
}

fn nr_cpus_or_1() -> usize {
    nr_cpus().map(|n| n.max(1)).unwrap_or(1)
}
