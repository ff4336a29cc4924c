//! The IPv6 half of the test world (`world.rs` has the IPv4 one and the programs):
//!
//! ```text
//!  client fd77::2 (MAC of the IPv4 client, permanent neighbour)
//!     |
//!  eth0 fd77::1/64, exposed                    host addresses: fd77::1, fd77::10, fd17::1
//!  docker0 fd17::1/64
//!     |
//!  c1 fd17::2 (MAC of c1, permanent neighbour); fd17::3 has no neighbour entry
//! ```
//!
//! The same interfaces as IPv4, so the MACs and interface flags are shared. The IPv6 forwards
//! count into slots of their own (the stats slots are shared by both families).
//!
//! Until the dataplane's typed map access covers the IPv6 maps (the userspace side of IPv6),
//! the test writes them through the kernel: it finds its own dataplane's maps by a marker
//! address it puts in `PF_HOST_ADDRS` (other dataplanes, of concurrent tests, are loaded in the
//! same kernel), then the program using that map, then that program's IPv6 maps by name.
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{
    HashMap as BpfHashMap, Map, MapData, MapInfo,
    lpm_trie::{Key, LpmTrie},
};
use portfwd::dataplane::Dataplane;
use portfwd_common::{
    maps::{
        ALLOW6, Allow6Key, FLOWS6, FORWARDS6, FWD_ALLOWLIST, Flow6Key, Flow6Value, Forward6Key,
        Forward6Value, HOST_ADDRS, HOST_ADDRS6, Ipv6Words, RANGES6, Range6Key, Range6Value,
        ipv6_words, port_prefixes,
    },
    proto,
};

pub const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// A second host address (in `PF_HOST_ADDRS6` only), for forwards bound to one address.
pub const HOST6_2: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10);
pub const BRIDGE6: Ipv6Addr = Ipv6Addr::new(0xfd17, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// A client the host has no route to (the lab host has no default route).
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
pub const C1_6: Ipv6Addr = Ipv6Addr::new(0xfd17, 0, 0, 0, 0, 0, 0, 2);
/// A target without a neighbour entry.
pub const C2_6: Ipv6Addr = Ipv6Addr::new(0xfd17, 0, 0, 0, 0, 0, 0, 3);

/// `*:8080/tcp -> [c1]:3000`.
pub const TCP6_8080: u32 = 20;
/// `*:5353/udp -> [c1]:53`.
pub const UDP6_5353: u32 = 21;
/// `[fd77::10]:8081/tcp -> [c1]:3001`: bound to one address.
pub const TCP6_8081_HOST2: u32 = 22;
/// `*:9000-9010/tcp -> [c1]:7000-7010`.
pub const TCP6_9000_RANGE: u32 = 23;
/// `*:8090/tcp -> [c1]:3005 allow fd77::2/128, 2001:db8:100::/48`.
pub const TCP6_8090_ALLOW: u32 = 24;
/// `*:9090/tcp -> [fd17::3]:80`: a target without a neighbour entry.
pub const TCP6_9090_NO_NEIGH: u32 = 25;

/// An IPv6 published port or range: `(slot, listen address or every address, first port, last
/// port, protocol, target, first target port, allowlist)`.
pub type Published6 = (
    u32,
    Option<Ipv6Addr>,
    u16,
    u16,
    u8,
    Ipv6Addr,
    u16,
    &'static [(Ipv6Addr, u8)],
);

pub const ALLOW6_8090: &[(Ipv6Addr, u8)] = &[
    (CLIENT6, 128),
    (Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0), 48),
];

pub const FORWARDS6_W: &[Published6] = &[
    (TCP6_8080, None, 8080, 8080, proto::TCP, C1_6, 3000, &[]),
    (UDP6_5353, None, 5353, 5353, proto::UDP, C1_6, 53, &[]),
    (
        TCP6_8081_HOST2,
        Some(HOST6_2),
        8081,
        8081,
        proto::TCP,
        C1_6,
        3001,
        &[],
    ),
    (
        TCP6_9000_RANGE,
        None,
        9000,
        9010,
        proto::TCP,
        C1_6,
        7000,
        &[],
    ),
    (
        TCP6_8090_ALLOW,
        None,
        8090,
        8090,
        proto::TCP,
        C1_6,
        3005,
        ALLOW6_8090,
    ),
    (
        TCP6_9090_NO_NEIGH,
        None,
        9090,
        9090,
        proto::TCP,
        C2_6,
        80,
        &[],
    ),
];

/// A flow: `(target, target port, client, client port, proto, published address, published
/// port, slot)`.
pub type Flow6Row = (Ipv6Addr, u16, Ipv6Addr, u16, u8, Ipv6Addr, u16, u32);

/// IPv6 flows present before any fixture runs.
pub const FLOWS6_W: &[Flow6Row] = &[
    (C1_6, 3000, CLIENT6, 40000, 6, HOST6, 8080, TCP6_8080),
    (C1_6, 53, CLIENT6, 40001, 17, HOST6, 5353, UDP6_5353),
    (C1_6, 3000, REMOTE6, 40003, 6, HOST6, 8080, TCP6_8080),
    (
        C1_6,
        3001,
        CLIENT6,
        40004,
        6,
        HOST6_2,
        8081,
        TCP6_8081_HOST2,
    ),
    (C1_6, 7005, CLIENT6, 40005, 6, HOST6, 9005, TCP6_9000_RANGE),
    (C1_6, 3005, CLIENT6, 40006, 6, HOST6, 8090, TCP6_8090_ALLOW),
];

/// IPv6 hairpin flows present before any fixture runs: c1 called its own published port.
pub const HAIRPIN_FLOWS6_W: &[Flow6Row] = &[(C1_6, 3000, HOST6, 45001, 6, HOST6, 8080, TCP6_8080)];

pub fn w6(a: Ipv6Addr) -> Ipv6Words {
    ipv6_words(a.octets())
}

/// The key of the flow that the target's replies to `client:cport` carry.
pub fn flow6_key(target: (Ipv6Addr, u16), client: (Ipv6Addr, u16), proto: u8) -> Flow6Key {
    Flow6Key {
        saddr_be: w6(target.0),
        daddr_be: w6(client.0),
        sport_be: target.1.to_be(),
        dport_be: client.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

pub fn flow6_value(published: (Ipv6Addr, u16), slot: u32) -> Flow6Value {
    Flow6Value {
        orig_addr_be: w6(published.0),
        orig_port_be: published.1.to_be(),
        _pad: 0,
        stats_slot: slot,
        client_addr_be: [0; 4],
    }
}

pub fn hairpin_flow6_value(published: (Ipv6Addr, u16), slot: u32, caller: Ipv6Addr) -> Flow6Value {
    Flow6Value {
        client_addr_be: w6(caller),
        ..flow6_value(published, slot)
    }
}

pub fn initial_flows6() -> impl Iterator<Item = (Flow6Key, Flow6Value)> {
    let plain = FLOWS6_W.iter().map(|&(t, tp, c, cp, proto, a, ap, slot)| {
        (
            flow6_key((t, tp), (c, cp), proto),
            flow6_value((a, ap), slot),
        )
    });
    let hairpin = HAIRPIN_FLOWS6_W
        .iter()
        .map(|&(t, tp, c, cp, proto, a, ap, slot)| {
            (
                flow6_key((t, tp), (c, cp), proto),
                hairpin_flow6_value((a, ap), slot, t),
            )
        });
    plain.chain(hairpin)
}

/// The IPv6 maps' content, for the reference model.
#[derive(Clone, Default)]
pub struct Model6 {
    pub host_addrs: Vec<Ipv6Words>,
    pub forwards: HashMap<Forward6Key, Forward6Value>,
    /// `(protocol, address or 0, first port, last port, value)`, matched directly.
    pub ranges: Vec<(u8, Ipv6Words, u16, u16, Range6Value)>,
    pub allow: HashMap<u32, Vec<(Ipv6Addr, u8)>>,
    pub flows: HashMap<Flow6Key, Flow6Value>,
}

fn in_net6(a: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(a) & mask == u128::from(net) & mask
}

impl Model6 {
    pub fn new() -> Model6 {
        let mut w = Model6 {
            host_addrs: [HOST6, HOST6_2, BRIDGE6].into_iter().map(w6).collect(),
            ..Model6::default()
        };
        for &(slot, addr, port, end, proto, to, to_port, allow) in FORWARDS6_W {
            let flags = if allow.is_empty() { 0 } else { FWD_ALLOWLIST };
            if !allow.is_empty() {
                w.allow.insert(slot, allow.to_vec());
            }
            let addr_be = addr.map_or([0; 4], w6);
            if end != port {
                let value = Range6Value {
                    target_addr_be: w6(to),
                    target_port_be: to_port.to_be(),
                    start_port_be: port.to_be(),
                    stats_slot: slot,
                    flags,
                };
                w.ranges.push((proto, addr_be, port, end, value));
                continue;
            }
            w.forwards.insert(
                Forward6Key {
                    addr_be,
                    port_be: port.to_be(),
                    proto,
                    _pad: 0,
                },
                Forward6Value {
                    target_addr_be: w6(to),
                    target_port_be: to_port.to_be(),
                    _pad: 0,
                    stats_slot: slot,
                    flags,
                },
            );
        }
        w.flows.extend(initial_flows6());
        w
    }

    pub fn range(&self, key: &Range6Key) -> Option<Range6Value> {
        let port = u16::from_be(key.port_be);
        self.ranges
            .iter()
            .find(|(proto, addr, start, end, _)| {
                *proto == key.proto && *addr == key.addr_be && (*start..=*end).contains(&port)
            })
            .map(|r| r.4)
    }

    pub fn allowed(&self, key: &Allow6Key) -> bool {
        let source = Ipv6Addr::from(portfwd_common::maps::ipv6_octets(key.saddr_be));
        self.allow.get(&key.slot).is_some_and(|prefixes| {
            prefixes
                .iter()
                .any(|&(net, len)| in_net6(source, net, u32::from(len)))
        })
    }
}

/// The lab host's IPv6 routes as the model sees them: fd77::/64 on eth0, fd17::/64 on docker0,
/// nothing else; its own addresses and the subnet-router anycast addresses are not forwarded;
/// the two permanent neighbour entries are the only known MACs. `(ifindex, smac, dmac or
/// None)`, or `None` when unroutable.
pub fn route6(
    dst: Ipv6Addr,
    eth0: (u32, [u8; 6]),
    docker0: (u32, [u8; 6]),
) -> Option<(u32, [u8; 6], Option<[u8; 6]>)> {
    let ((ifindex, smac), local, net) = if in_net6(dst, HOST6, 64) {
        (eth0, HOST6, Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0))
    } else if in_net6(dst, BRIDGE6, 64) {
        (docker0, BRIDGE6, Ipv6Addr::new(0xfd17, 0, 0, 0, 0, 0, 0, 0))
    } else {
        return None;
    };
    if dst == local || dst == net {
        return None;
    }
    let dmac = match dst {
        CLIENT6 => Some(super::world::CLIENT_MAC),
        C1_6 => Some(super::world::C1_MAC),
        _ => None,
    };
    Some((ifindex, smac, dmac))
}

/// The shell commands that give the lab host its IPv6 side (run once, in `Env::new`).
pub fn lab_setup() -> String {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    format!(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.all.forwarding=1 && \
         ip -6 addr add {HOST6}/64 dev eth0 nodad && \
         ip -6 addr add {BRIDGE6}/64 dev docker0 nodad && \
         ip -6 neigh replace {CLIENT6} lladdr {client} dev eth0 nud permanent && \
         ip -6 neigh replace {C1_6} lladdr {c1} dev docker0 nud permanent",
        client = mac(super::world::CLIENT_MAC),
        c1 = mac(super::world::C1_MAC),
    )
}

/// The IPv6 maps of one loaded dataplane.
pub struct Maps6 {
    pub forwards: BpfHashMap<MapData, Forward6Key, Forward6Value>,
    pub ranges: LpmTrie<MapData, Range6Key, Range6Value>,
    pub allow: LpmTrie<MapData, Allow6Key, u32>,
    pub flows: BpfHashMap<MapData, Flow6Key, Flow6Value>,
    pub host_addrs: BpfHashMap<MapData, Ipv6Words, u32>,
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(id: u32) -> T {
    let data = MapData::from_id(id).expect("opening a map by id");
    T::try_from(Map::from_map_data(data).expect("a known map type")).expect("the map's type")
}

impl Maps6 {
    /// Finds the IPv6 maps of `dp` (see the module doc).
    pub fn of(dp: &mut Dataplane) -> Maps6 {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        // A marker address of this process and call, in 240.0.0.0/4 (reserved, never used).
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let marker = Ipv4Addr::new(
            240 | ((pid >> 16) & 0x0f) as u8,
            (pid >> 8) as u8,
            pid as u8,
            n as u8,
        );
        dp.maps.set_host_addr(marker.into()).unwrap();
        let marker_be = u32::from_ne_bytes(marker.octets());
        let host_map = aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .filter(|m| m.name_as_str() == Some(HOST_ADDRS))
            .map(|m| m.id())
            .find(|&id| {
                let Ok(data) = MapData::from_id(id) else {
                    return false;
                };
                let Ok(map) = Map::from_map_data(data) else {
                    return false;
                };
                BpfHashMap::<MapData, u32, u32>::try_from(map)
                    .is_ok_and(|m| m.get(&marker_be, 0).is_ok())
            })
            .expect("this dataplane's PF_HOST_ADDRS");
        let ids = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| p.map_ids().ok().flatten())
            .find(|ids| ids.contains(&host_map))
            .expect("a program of this dataplane");
        dp.maps.remove_host_addr(marker.into()).unwrap();
        let by_name = |name: &str| -> u32 {
            *ids.iter()
                .find(|&&id| MapInfo::from_id(id).is_ok_and(|i| i.name_as_str() == Some(name)))
                .unwrap_or_else(|| panic!("{name} among the program's maps"))
        };
        Maps6 {
            forwards: open(by_name(FORWARDS6)),
            ranges: open(by_name(RANGES6)),
            allow: open(by_name(ALLOW6)),
            flows: open(by_name(FLOWS6)),
            host_addrs: open(by_name(HOST_ADDRS6)),
        }
    }

    /// Fills the maps with the IPv6 world.
    pub fn fill(&mut self) {
        for a in [HOST6, HOST6_2, BRIDGE6] {
            self.host_addrs.insert(w6(a), 1, 0).unwrap();
        }
        for &(slot, addr, port, end, proto, to, to_port, allow) in FORWARDS6_W {
            let flags = if allow.is_empty() { 0 } else { FWD_ALLOWLIST };
            for &(net, len) in allow {
                let key = Key::new(
                    Allow6Key::FIXED_BITS + u32::from(len),
                    Allow6Key {
                        slot,
                        saddr_be: w6(net),
                    },
                );
                self.allow.insert(&key, 1, 0).unwrap();
            }
            let addr_be = addr.map_or([0; 4], w6);
            if end == port {
                let key = Forward6Key {
                    addr_be,
                    port_be: port.to_be(),
                    proto,
                    _pad: 0,
                };
                let value = Forward6Value {
                    target_addr_be: w6(to),
                    target_port_be: to_port.to_be(),
                    _pad: 0,
                    stats_slot: slot,
                    flags,
                };
                self.forwards.insert(key, value, 0).unwrap();
                continue;
            }
            let value = Range6Value {
                target_addr_be: w6(to),
                target_port_be: to_port.to_be(),
                start_port_be: port.to_be(),
                stats_slot: slot,
                flags,
            };
            for (first, bits) in port_prefixes(port, end) {
                let key = Key::new(
                    Range6Key::FIXED_BITS + u32::from(bits),
                    Range6Key {
                        proto,
                        _pad: [0; 3],
                        addr_be,
                        port_be: first.to_be(),
                        _pad2: [0; 2],
                    },
                );
                self.ranges.insert(&key, value, 0).unwrap();
            }
        }
        for (k, v) in initial_flows6() {
            self.flows.insert(k, v, 0).unwrap();
        }
    }

    pub fn flow(&self, key: &Flow6Key) -> Option<Flow6Value> {
        self.flows.get(key, 0).ok()
    }
}
