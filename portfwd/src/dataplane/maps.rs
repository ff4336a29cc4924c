//! Typed access to the datapath's maps.
//!
//! This is the byte-order boundary: the datapath keeps addresses and ports exactly as they are
//! on the wire, so every key and value is converted to network byte order here and nowhere else.
use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{DevMapHash, HashMap, IterableMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use portfwd_common::{
    maps::{
        FLOWS, FORWARD_STATS, FORWARDS, FlowKey, FlowValue, ForwardKey, ForwardStats, ForwardValue,
        HOST_ADDRS, Hook, IFACE_EXPOSE, IFACES, VERDICTS, XDP_EGRESS,
    },
    reason::Reason,
};

use crate::{
    error::Error,
    spec::{Forward, Listen, Protocol},
};

/// Owned handles to every map of the loaded object.
pub struct Maps {
    forwards: HashMap<MapData, ForwardKey, ForwardValue>,
    // An LRU hash in the kernel; aya reads it through HashMap.
    flows: HashMap<MapData, FlowKey, FlowValue>,
    host_addrs: HashMap<MapData, u32, u32>,
    ifaces: HashMap<MapData, u32, u32>,
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

/// The value a forward is stored as, counting into `slot`.
fn forward_value(fwd: &Forward, slot: u32) -> ForwardValue {
    ForwardValue {
        target_addr_be: ipv4_be(fwd.to.addr),
        target_port_be: fwd.to.port.to_be(),
        _pad: 0,
        stats_slot: slot,
        _pad2: 0,
    }
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
            flows: take(ebpf, FLOWS)?,
            host_addrs: take(ebpf, HOST_ADDRS)?,
            ifaces: take(ebpf, IFACES)?,
            forward_stats: take(ebpf, FORWARD_STATS)?,
            verdicts: take(ebpf, VERDICTS)?,
            xdp_egress: take(ebpf, XDP_EGRESS)?,
        })
    }

    /// Publishes `fwd`, counting into `slot` (whose counters are reset first).
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
        self.forwards
            .insert(forward_key(&fwd.listen), forward_value(fwd, slot), 0)
            .map_err(map_err("forwarding table"))
    }

    /// Puts `fwd` back in `slot` without resetting the slot's counters (undoing a removal).
    pub fn restore_forward(&mut self, fwd: &Forward, slot: u32) -> Result<(), Error> {
        self.forwards
            .insert(forward_key(&fwd.listen), forward_value(fwd, slot), 0)
            .map_err(map_err("forwarding table"))
    }

    pub fn remove_forward(&mut self, listen: &Listen) -> Result<(), Error> {
        match self.forwards.remove(&forward_key(listen)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("forwarding table")(e)),
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

    /// Lets XDP finish translations whose next hop is `ifindex` (its driver takes XDP frames).
    pub fn set_xdp_egress(&mut self, ifindex: u32, enabled: bool) -> Result<(), Error> {
        let res = if enabled {
            self.xdp_egress
                .insert(ifindex, ifindex, None, 0)
                .map_err(|e| e.to_string())
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

    pub fn set_iface(&mut self, index: u32, exposed: bool) -> Result<(), Error> {
        let flags = if exposed { IFACE_EXPOSE } else { 0 };
        self.ifaces
            .insert(index, flags, 0)
            .map_err(map_err("interfaces"))
    }

    pub fn remove_iface(&mut self, index: u32) -> Result<(), Error> {
        match self.ifaces.remove(&index) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("interfaces")(e)),
        }
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
