//! Typed access to the datapath's maps.
//!
//! This is the byte-order boundary: the datapath keeps addresses and ports exactly as they are
//! on the wire, so every key and value is converted to network byte order here and nowhere else.
use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{
        DevMapHash, HashMap, IterableMap, MapData, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
    util::nr_cpus,
};
use portfwd_common::{
    maps::{
        ALLOW, AllowKey, BRIDGE_PORTS, FLOWS, FORWARD_STATS, FORWARDS, FWD_ALLOWLIST, FlowKey,
        FlowValue, ForwardKey, ForwardStats, ForwardValue, HOST_ADDRS, Hook, IFACE_BRIDGE_PORT,
        IFACE_EXPOSE, IFACES, MAX_FORWARDS, RANGES, RangeKey, RangeValue, VERDICTS, XDP_EGRESS,
        port_prefixes,
    },
    reason::Reason,
};

use crate::{
    error::Error,
    spec::{AllowPrefix, Forward, Listen, Protocol},
};

/// Owned handles to every map of the loaded object.
pub struct Maps {
    forwards: HashMap<MapData, ForwardKey, ForwardValue>,
    ranges: LpmTrie<MapData, RangeKey, RangeValue>,
    allow: LpmTrie<MapData, AllowKey, u32>,
    // An LRU hash in the kernel; aya reads it through HashMap.
    flows: HashMap<MapData, FlowKey, FlowValue>,
    host_addrs: HashMap<MapData, u32, u32>,
    ifaces: HashMap<MapData, u32, u32>,
    bridge_ports: HashMap<MapData, u32, u32>,
    forward_stats: PerCpuArray<MapData, ForwardStats>,
    verdicts: PerCpuArray<MapData, u64>,
    xdp_egress: DevMapHash<MapData>,
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::Load(format!("map {name} missing from the object")))?;
    T::try_from(map).map_err(|e| Error::Load(format!("map {name}: {e}")))
}

fn map_err(what: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        what,
        message: e.to_string(),
    }
}

/// The key a forward is stored under.
pub fn forward_key(listen: &Listen) -> ForwardKey {
    ForwardKey {
        addr_be: listen.addr.map_or(0, ipv4_be),
        port_be: listen.port.to_be(),
        proto: ip_proto(listen.protocol),
        _pad: 0,
    }
}

/// The trie keys a port range is stored under: one per prefix of [`port_prefixes`].
pub fn range_keys(listen: &Listen) -> impl Iterator<Item = Key<RangeKey>> + '_ {
    port_prefixes(listen.port, listen.end).map(|(port, bits)| {
        Key::new(
            RangeKey::FIXED_BITS + u32::from(bits),
            RangeKey {
                proto: ip_proto(listen.protocol),
                _pad: [0; 3],
                addr_be: listen.addr.map_or(0, ipv4_be),
                port_be: port.to_be(),
                _pad2: [0; 2],
            },
        )
    })
}

/// The trie key of one allowlist prefix of the forward counting into `slot`.
pub fn allow_key(slot: u32, prefix: &AllowPrefix) -> Key<AllowKey> {
    Key::new(
        AllowKey::FIXED_BITS + u32::from(prefix.prefix_len()),
        AllowKey {
            slot,
            saddr_be: ipv4_be(prefix.addr()),
        },
    )
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

impl Maps {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            forwards: take(ebpf, FORWARDS)?,
            ranges: take(ebpf, RANGES)?,
            allow: take(ebpf, ALLOW)?,
            flows: take(ebpf, FLOWS)?,
            host_addrs: take(ebpf, HOST_ADDRS)?,
            ifaces: take(ebpf, IFACES)?,
            bridge_ports: take(ebpf, BRIDGE_PORTS)?,
            forward_stats: take(ebpf, FORWARD_STATS)?,
            verdicts: take(ebpf, VERDICTS)?,
            xdp_egress: take(ebpf, XDP_EGRESS)?,
        })
    }

    /// Publishes `fwd`, counting into `slot` (whose counters are reset first). Its allowlist is
    /// written before the forward, so no packet ever sees the forward without it. A port range
    /// is one value repeated under each of its (at most 30) prefixes; on failure whatever was
    /// written is removed again.
    pub fn insert_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let zero =
            PerCpuValues::try_from(vec![ForwardStats::default(); nr_cpus_or_1()]).map_err(|e| {
                Error::Map {
                    what: "forward counters",
                    message: e.to_string(),
                }
            })?;
        self.forward_stats
            .set(slot, zero, 0)
            .map_err(map_err("forward counters"))?;
        self.restore_forward(fwd, slot)
    }

    /// Writes `fwd` counting into `slot` without resetting the slot's counters (undoing a
    /// removal, or publishing for the first time after [`Maps::insert_forward`] reset them).
    pub fn restore_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let flags = if fwd.allow.is_empty() {
            0
        } else {
            FWD_ALLOWLIST
        };
        let written = self.insert_allow(fwd, slot).and_then(|()| {
            if fwd.listen.is_range() {
                let value = RangeValue {
                    target_addr_be: ipv4_be(fwd.to.addr),
                    target_port_be: fwd.to.port.to_be(),
                    start_port_be: fwd.listen.port.to_be(),
                    stats_slot: slot,
                    flags,
                };
                range_keys(&fwd.listen).try_for_each(|key| {
                    self.ranges
                        .insert(&key, value, 0)
                        .map_err(map_err("port ranges"))
                })
            } else {
                let value = ForwardValue {
                    target_addr_be: ipv4_be(fwd.to.addr),
                    target_port_be: fwd.to.port.to_be(),
                    _pad: 0,
                    stats_slot: slot,
                    flags,
                };
                self.forwards
                    .insert(forward_key(&fwd.listen), value, 0)
                    .map_err(map_err("forwarding table"))
            }
        });
        if written.is_err() {
            let _ = self.remove_forward(fwd, slot);
        }
        written
    }

    fn insert_allow(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        fwd.allow.iter().try_for_each(|p| {
            self.allow
                .insert(&allow_key(slot, p), 1, 0)
                .map_err(map_err("allowlists"))
        })
    }

    /// Stops publishing `fwd` (published with `slot`): the forward first, then its allowlist.
    pub fn remove_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        let gone = |r: Result<(), aya::maps::MapError>, what| match r {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(what)(e)),
        };
        let mut result = if fwd.listen.is_range() {
            range_keys(&fwd.listen)
                .map(|key| gone(self.ranges.remove(&key), "port ranges"))
                .fold(Ok(()), Result::and)
        } else {
            gone(
                self.forwards.remove(&forward_key(&fwd.listen)),
                "forwarding table",
            )
        };
        for p in &fwd.allow {
            result = result.and(gone(self.allow.remove(&allow_key(slot, p)), "allowlists"));
        }
        result
    }

    /// Removes the allowlist entries of `fwd` published with `slot` (after its key was taken
    /// over by a changed forward in another slot).
    pub fn remove_allow(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        for p in &fwd.allow {
            match self.allow.remove(&allow_key(slot, p)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("allowlists")(e)),
            }
        }
        Ok(())
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
        let res = if enabled {
            self.xdp_egress
                .insert(ifindex, ifindex, None, 0)
                .map_err(|e| e.to_string())
        } else if !self
            .xdp_egress
            .keys()
            .any(|k| k.is_ok_and(|k| k == ifindex))
        {
            // Not there: nothing to do (a devmap's delete reports ENOENT as a plain syscall
            // error, not as KeyNotFound).
            Ok(())
        } else {
            match self.xdp_egress.remove(ifindex) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                // A DEVMAP_HASH reports a missing key as a failed syscall (ENOENT).
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        };
        res.map_err(|message| Error::Map {
            what: "XDP egress",
            message,
        })
    }

    pub fn set_host_addr(&mut self, addr: Ipv4Addr) -> Result<(), Error> {
        self.host_addrs
            .insert(ipv4_be(addr), 1, 0)
            .map_err(map_err("host addresses"))
    }

    pub fn remove_host_addr(&mut self, addr: Ipv4Addr) -> Result<(), Error> {
        match self.host_addrs.remove(&ipv4_be(addr)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("host addresses")(e)),
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
        match self.ifaces.remove(&index) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("interfaces")(e)),
        }
    }

    /// Takes over what a previous daemon left in the pinned maps: each of `wanted` that is
    /// stored exactly as [`Maps::insert_forward`] would store it (single port or every prefix
    /// of a range, same target, same allowlist flag) keeps its counter slot, which is returned
    /// at its index; its allowlist entries are rewritten. Everything else in the forwarding
    /// table, the range trie and the allowlist trie is removed. Returns the slots and how many
    /// stale entries were removed.
    pub fn adopt(&mut self, wanted: &[Forward]) -> (Vec<Option<u32>>, usize) {
        let mut slots: Vec<Option<u32>> = vec![None; wanted.len()];
        let mut used = std::collections::BTreeSet::new();
        let mut removed = 0;
        let flags_of = |f: &Forward| if f.allow.is_empty() { 0 } else { FWD_ALLOWLIST };

        let singles: Vec<(ForwardKey, ForwardValue)> =
            self.forwards.iter().filter_map(Result::ok).collect();
        for (key, value) in singles {
            let found = wanted.iter().enumerate().position(|(i, f)| {
                slots[i].is_none()
                    && !f.listen.is_range()
                    && key == forward_key(&f.listen)
                    && value.target_addr_be == ipv4_be(f.to.addr)
                    && value.target_port_be == f.to.port.to_be()
                    && value.flags == flags_of(f)
            });
            match found {
                Some(i) if value.stats_slot < MAX_FORWARDS && used.insert(value.stats_slot) => {
                    slots[i] = Some(value.stats_slot);
                }
                _ => {
                    let _ = self.forwards.remove(&key);
                    removed += 1;
                }
            }
        }

        let same = |a: &Key<RangeKey>, b: &Key<RangeKey>| {
            a.prefix_len() == b.prefix_len() && a.data() == b.data()
        };
        let ranges: Vec<(Key<RangeKey>, RangeValue)> =
            self.ranges.iter().filter_map(Result::ok).collect();
        let mut keep_ranges: Vec<Key<RangeKey>> = Vec::new();
        for (i, f) in wanted.iter().enumerate() {
            if !f.listen.is_range() {
                continue;
            }
            let keys: Vec<Key<RangeKey>> = range_keys(&f.listen).collect();
            let values: Option<Vec<RangeValue>> = keys
                .iter()
                .map(|k| ranges.iter().find(|(e, _)| same(e, k)).map(|(_, v)| *v))
                .collect();
            let Some(values) = values else { continue };
            let first = values[0];
            let intact = values.iter().all(|v| *v == first)
                && first.target_addr_be == ipv4_be(f.to.addr)
                && first.target_port_be == f.to.port.to_be()
                && first.start_port_be == f.listen.port.to_be()
                && first.flags == flags_of(f);
            if intact && first.stats_slot < MAX_FORWARDS && used.insert(first.stats_slot) {
                slots[i] = Some(first.stats_slot);
                keep_ranges.extend(keys);
            }
        }
        for (key, _) in &ranges {
            if !keep_ranges.iter().any(|k| same(k, key)) {
                let _ = self.ranges.remove(key);
                removed += 1;
            }
        }

        let mut keep_allow: Vec<Key<AllowKey>> = Vec::new();
        for (f, slot) in wanted.iter().zip(&slots) {
            if let Some(slot) = slot {
                keep_allow.extend(f.allow.iter().map(|p| allow_key(*slot, p)));
            }
        }
        let allow: Vec<Key<AllowKey>> = self.allow.keys().filter_map(Result::ok).collect();
        for key in &allow {
            let kept = keep_allow
                .iter()
                .any(|k| k.prefix_len() == key.prefix_len() && k.data() == key.data());
            if !kept {
                let _ = self.allow.remove(key);
                removed += 1;
            }
        }
        for (f, slot) in wanted.iter().zip(&slots) {
            if let Some(slot) = slot
                && let Err(e) = self.insert_allow(f, *slot)
            {
                tracing::error!("restoring the allowlist of {}: {e}", f.listen);
            }
        }
        (slots, removed)
    }

    /// The host addresses in the map (in the datapath's byte order: wire order).
    pub fn host_addr_entries(&self) -> Vec<Ipv4Addr> {
        self.host_addrs
            .keys()
            .filter_map(Result::ok)
            .map(|be| Ipv4Addr::from(be.to_ne_bytes()))
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
    /// state migration).
    pub fn insert_flow(&mut self, key: FlowKey, value: FlowValue) -> Result<(), Error> {
        self.flows.insert(key, value, 0).map_err(map_err("flows"))
    }

    /// Looks up a flow (for tests and diagnostics).
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key, 0).ok()
    }

    /// Number of live flows (walks the table; for status output, not for hot paths).
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(|k| k.is_ok()).count()
    }
}

impl Maps {
    /// Each map's name, entries in use and capacity (from the kernel). `forward_slots` is how
    /// many counter slots the daemon has handed out; the verdict array is always full.
    pub fn fill(&self, forward_slots: u64) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        fn cap<K: aya::Pod, V>(
            m: &impl IterableMap<K, V>,
            what: &'static str,
        ) -> Result<u64, Error> {
            m.map()
                .info()
                .map(|i| u64::from(i.max_entries()))
                .map_err(map_err(what))
        }
        let count = |keys: aya::maps::MapKeys<'_, u32>| keys.filter(|k| k.is_ok()).count() as u64;
        let verdicts = cap(&self.verdicts, "verdict counters")?;
        Ok(vec![
            (
                FORWARDS,
                self.forwards.keys().filter(|k| k.is_ok()).count() as u64,
                cap(&self.forwards, "forwarding table")?,
            ),
            (
                RANGES,
                self.ranges.keys().filter(|k| k.is_ok()).count() as u64,
                cap(&self.ranges, "port ranges")?,
            ),
            (
                ALLOW,
                self.allow.keys().filter(|k| k.is_ok()).count() as u64,
                cap(&self.allow, "allowlists")?,
            ),
            (FLOWS, self.flow_count() as u64, cap(&self.flows, "flows")?),
            (
                HOST_ADDRS,
                count(self.host_addrs.keys()),
                cap(&self.host_addrs, "host addresses")?,
            ),
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
        ])
    }
}

fn nr_cpus_or_1() -> usize {
    nr_cpus().map(|n| n.max(1)).unwrap_or(1)
}
