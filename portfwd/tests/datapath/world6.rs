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
//! The kernel's maps are filled through the daemon's own map writers ([`fill`]), from the same
//! rows the model ([`Model6`]) is built from.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use portfwd::{
    datapath::Datapath,
    spec::{AllowPrefix, Forward, Listen, Protocol, Target},
};
use portfwd_common::{
    maps::{
        Allow6Key, FWD_ALLOWLIST, Flow6Key, Flow6Value, Forward6Key, Forward6Value, Ipv6Words,
        Range6Key, Range6Value, ipv6_words,
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

/// The IPv6 published port or range `row` as the daemon's spec has it.
fn forward6(row: &Published6) -> Forward {
    let &(_, addr, port, end, proto, to, to_port, allow) = row;
    let protocol = if proto == proto::TCP {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let listen = Listen {
        addr: Some(IpAddr::V6(addr.unwrap_or(Ipv6Addr::UNSPECIFIED))),
        port,
        end,
        protocol,
    };
    let to = Target {
        addr: IpAddr::V6(to),
        port: to_port,
        end: to_port + (end - port),
    };
    let allow = allow
        .iter()
        .map(|(a, len)| format!("{a}/{len}").parse::<AllowPrefix>().unwrap())
        .collect();
    Forward::new(listen, to).unwrap().with_allow(allow).unwrap()
}

/// Fills `dp`'s IPv6 maps with the IPv6 world, through the daemon's own map writers.
pub fn fill(dp: &mut Datapath) {
    for a in [HOST6, HOST6_2, BRIDGE6] {
        dp.maps.set_host_addr(a.into()).unwrap();
    }
    for row in FORWARDS6_W {
        dp.maps.insert_forward(&forward6(row), row.0).unwrap();
    }
    for (k, v) in initial_flows6() {
        dp.maps.insert_flow(k, v).unwrap();
    }
}
