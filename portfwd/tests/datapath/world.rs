//! The world the fixtures run in: a lab host namespace with fixed addresses and MACs, the maps
//! filled by the test, the same content for the reference model, and the programs under test.
//!
//! ```text
//!  client 10.77.0.2 (MAC 02:00:0a:4d:00:02, permanent neighbour)
//!     |
//!  eth0 10.77.0.1 (MAC 02:00:0a:4d:00:01), exposed     host addresses: 10.77.0.1, 10.77.0.10,
//!  docker0 172.17.0.1 (MAC 02:42:ac:11:00:01)                          172.17.0.1
//!     |   \
//!     |    pfport0: a port of the bridge (the host end of a container's veth), exposed
//!     |
//!  c1 172.17.0.2 (MAC 02:42:ac:11:00:02, permanent neighbour); 172.17.0.3 has no neighbour entry
//! ```
//!
//! docker0 itself is not exposed, so that fixtures show a bridge where ports are not published;
//! `pfport0` is, as every bridge port is when the config names no `interfaces:`: frames from
//! containers to published ports (hairpin) arrive there.
//!
//! BPF_PROG_TEST_RUN makes its FIB lookups in the network namespace of the calling thread, so
//! everything that runs a program happens inside [`Env::run`] (the lab's host namespace).
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use portfwd::datapath::{self, Datapath, maps::ipv4_be};
use portfwd::spec::{AllowPrefix, Forward, Listen, Protocol, Target};
use portfwd_common::{
    maps::{
        Allow6Key, AllowKey, FWD_ALLOWLIST, Flow6Key, Flow6Value, FlowKey, FlowValue, Forward6Key,
        Forward6Value, ForwardKey, ForwardStats, ForwardValue, Hook, IFACE_EXPOSE, Ipv6Words,
        Range6Key, Range6Value, RangeKey, RangeValue,
    },
    model::{self, FlowEntry, Route, RouteQuery},
    reason::Reason,
};
use xtask::lab::Lab;

use super::world6::{self, Model6};

pub const HOST: Ipv4Addr = Lab::HOST_ADDR;
/// A second host address (in `PF_HOST_ADDRS`), for forwards bound to one address.
pub const HOST2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
pub const BRIDGE: Ipv4Addr = Lab::BRIDGE_ADDR;
pub const CLIENT: Ipv4Addr = Lab::CLIENT_ADDR;
/// A client on the LAN without a neighbour entry.
pub const CLIENT_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// A client the host has no route to (the lab host has no default route).
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
/// A target without a neighbour entry.
pub const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
/// A target the host cannot route to.
pub const UNROUTABLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

pub const ETH0_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02];
pub const DOCKER0_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
pub const C1_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
pub const MTU: u32 = 1500;

/// Which interface a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// The LAN side, where ports are exposed.
    Eth0,
    /// The bridge, known to portfwd but not exposed (replies arrive here).
    Docker0,
    /// An interface portfwd does not know (`lo`).
    Lo,
    /// A port of the bridge (`pfport0`, the host end of a container's veth), exposed: where a
    /// container's frames to a published port arrive.
    Port,
}

/// A published port or range of the test world: `(slot, listen address, port, protocol,
/// target, port)`, and for a range its last port, for an allowlist its prefixes.
pub struct Published {
    pub slot: u32,
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
    /// The last port of a range (`port` for a single port).
    pub end: u16,
    pub protocol: Protocol,
    pub to: Ipv4Addr,
    pub to_port: u16,
    /// The source allowlist (empty: every source).
    pub allow: &'static [(Ipv4Addr, u8)],
}

pub const TCP_8080: u32 = 0;
pub const UDP_5353: u32 = 1;
pub const TCP_8081_BOUND: u32 = 2;
pub const TCP_8080_HOST2: u32 = 3;
pub const TCP_9090_NO_NEIGH: u32 = 4;
pub const UDP_7070_UNROUTABLE: u32 = 5;
pub const TCP_8443_SAME_PORT: u32 = 6;
pub const TCP_8082_HOST2_ONLY: u32 = 7;
/// `*:9000-9010/tcp -> c1:7000-7010`.
pub const TCP_9000_RANGE: u32 = 8;
/// `10.77.0.10:9000-9003/tcp -> c1:7100-7103`: bound to one address, inside the range above.
pub const TCP_9000_RANGE_HOST2: u32 = 9;
/// `*:9001/tcp -> c1:3004`: a single port inside both ranges.
pub const TCP_9001_SINGLE: u32 = 10;
/// `*:8090/tcp -> c1:3005 allow 10.77.0.2, 198.51.100.0/24`.
pub const TCP_8090_ALLOW: u32 = 11;
/// `*:5000-5099/udp -> c1:6000-6099 allow 10.77.0.0/31`: a range with an allowlist.
pub const UDP_5000_RANGE_ALLOW: u32 = 12;

/// The allowlist of [`TCP_8090_ALLOW`]: the client, and the remote network.
pub const ALLOW_8090: &[(Ipv4Addr, u8)] = &[(CLIENT, 32), (Ipv4Addr::new(198, 51, 100, 0), 24)];
/// The allowlist of [`UDP_5000_RANGE_ALLOW`]: 10.77.0.0-10.77.0.1 and the client (10.77.0.3,
/// [`CLIENT_NO_NEIGH`], is outside).
pub const ALLOW_5000: &[(Ipv4Addr, u8)] = &[(Ipv4Addr::new(10, 77, 0, 0), 31), (CLIENT, 32)];

pub const FORWARDS: &[Published] = &[
    Published::new(TCP_8080, None, 8080, Protocol::Tcp, C1, 3000),
    Published::new(UDP_5353, None, 5353, Protocol::Udp, C1, 53),
    Published::new(TCP_8081_BOUND, Some(HOST), 8081, Protocol::Tcp, C1, 3001),
    Published::new(TCP_8080_HOST2, Some(HOST2), 8080, Protocol::Tcp, C1, 3002),
    Published::new(TCP_9090_NO_NEIGH, None, 9090, Protocol::Tcp, C2, 80),
    Published::new(
        UDP_7070_UNROUTABLE,
        None,
        7070,
        Protocol::Udp,
        UNROUTABLE,
        7,
    ),
    Published::new(TCP_8443_SAME_PORT, None, 8443, Protocol::Tcp, C1, 8443),
    Published::new(
        TCP_8082_HOST2_ONLY,
        Some(HOST2),
        8082,
        Protocol::Tcp,
        C1,
        3003,
    ),
    Published::new(TCP_9000_RANGE, None, 9000, Protocol::Tcp, C1, 7000).range(9010),
    Published::new(
        TCP_9000_RANGE_HOST2,
        Some(HOST2),
        9000,
        Protocol::Tcp,
        C1,
        7100,
    )
    .range(9003),
    Published::new(TCP_9001_SINGLE, None, 9001, Protocol::Tcp, C1, 3004),
    Published::new(TCP_8090_ALLOW, None, 8090, Protocol::Tcp, C1, 3005).allow(ALLOW_8090),
    Published::new(UDP_5000_RANGE_ALLOW, None, 5000, Protocol::Udp, C1, 6000)
        .range(5099)
        .allow(ALLOW_5000),
];

impl Published {
    const fn new(
        slot: u32,
        addr: Option<Ipv4Addr>,
        port: u16,
        protocol: Protocol,
        to: Ipv4Addr,
        to_port: u16,
    ) -> Published {
        Published {
            slot,
            addr,
            port,
            end: port,
            protocol,
            to,
            to_port,
            allow: &[],
        }
    }

    /// A range of ports, `port..=end`, going to `to_port..` port by port.
    const fn range(self, end: u16) -> Published {
        Published { end, ..self }
    }

    const fn allow(self, allow: &'static [(Ipv4Addr, u8)]) -> Published {
        Published { allow, ..self }
    }

    /// The target port of host port `port`.
    pub fn to_port_of(&self, port: u16) -> u16 {
        self.to_port + (port - self.port)
    }

    fn forward(&self) -> Forward {
        let listen = Listen {
            addr: self.addr.map(IpAddr::V4),
            port: self.port,
            end: self.end,
            protocol: self.protocol,
        };
        let to = Target {
            addr: self.to.into(),
            port: self.to_port,
            end: self.to_port_of(self.end),
        };
        let allow = self
            .allow
            .iter()
            .map(|(a, len)| format!("{a}/{len}").parse::<AllowPrefix>().unwrap())
            .collect();
        Forward::new(listen, to).unwrap().with_allow(allow).unwrap()
    }
}

/// A flow: `(target, target port, client, client port, proto, published address, published
/// port, slot)`.
pub type FlowRow = (Ipv4Addr, u16, Ipv4Addr, u16, u8, Ipv4Addr, u16, u32);

/// Flows present before any fixture runs.
pub const FLOWS: &[FlowRow] = &[
    (C1, 3000, CLIENT, 40000, 6, HOST, 8080, TCP_8080),
    (C1, 53, CLIENT, 40001, 17, HOST, 5353, UDP_5353),
    (C1, 3000, CLIENT_NO_NEIGH, 40002, 6, HOST, 8080, TCP_8080),
    (C1, 3000, REMOTE, 40003, 6, HOST, 8080, TCP_8080),
    (C1, 3002, CLIENT, 40004, 6, HOST2, 8080, TCP_8080_HOST2),
    (C1, 7005, CLIENT, 40005, 6, HOST, 9005, TCP_9000_RANGE),
    (C1, 3005, CLIENT, 40006, 6, HOST, 8090, TCP_8090_ALLOW),
    (
        C1,
        3005,
        CLIENT_NO_NEIGH,
        40007,
        6,
        HOST,
        8090,
        TCP_8090_ALLOW,
    ),
    (
        C1,
        6042,
        CLIENT,
        40008,
        17,
        HOST,
        5042,
        UDP_5000_RANGE_ALLOW,
    ),
    (C1, 3000, C2, 45004, 6, HOST, 8080, TCP_8080),
];

/// Hairpin flows present before any fixture runs: c1 called its own published port, so the
/// flow's client is the published address and the caller (`client_addr_be`) is c1 itself.
pub const HAIRPIN_FLOWS: &[FlowRow] = &[
    (C1, 3000, HOST, 45001, 6, HOST, 8080, TCP_8080),
    (C1, 53, HOST, 45002, 17, HOST, 5353, UDP_5353),
];

/// The key of the flow that the target's replies to `client:cport` carry.
pub fn flow_key(target: (Ipv4Addr, u16), client: (Ipv4Addr, u16), proto: u8) -> FlowKey {
    FlowKey {
        saddr_be: ipv4_be(target.0),
        daddr_be: ipv4_be(client.0),
        sport_be: target.1.to_be(),
        dport_be: client.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

pub fn flow_value(published: (Ipv4Addr, u16), slot: u32) -> FlowValue {
    FlowValue {
        orig_addr_be: ipv4_be(published.0),
        orig_port_be: published.1.to_be(),
        _pad: 0,
        stats_slot: slot,
        client_addr_be: 0,
    }
}

/// The flow of a hairpin to itself: `caller` is the target that called its own published port.
pub fn hairpin_flow_value(published: (Ipv4Addr, u16), slot: u32, caller: Ipv4Addr) -> FlowValue {
    FlowValue {
        client_addr_be: ipv4_be(caller),
        ..flow_value(published, slot)
    }
}

/// A datapath program the fixtures run against, in one configuration. Verdicts in the fixtures
/// are hook-neutral (pass, drop, redirect); each program says how it spells them and how its
/// test context names the ingress interface.
pub struct Program {
    /// What reports call it.
    pub label: &'static str,
    /// The program's name in the object.
    pub name: portfwd_common::maps::Program,
    pub hook: Hook,
    /// XDP: eth0 and docker0 are in `PF_XDP_EGRESS` (XDP finishes translations itself); without
    /// it every translation is handed to tc (`pass_to_tc`), as on a host whose egress devices
    /// have no native XDP (bridges, veths).
    pub xdp_egress: bool,
    pub pass: i32,
    pub drop: i32,
    pub redirect: i32,
    /// The program's BPF_PROG_TEST_RUN context for a frame of `len` bytes arriving on
    /// `ifindex`.
    pub ctx: fn(ifindex: u32, len: usize) -> Vec<u8>,
}

pub const TC: Program = Program {
    label: "tc",
    name: portfwd_common::maps::Program::TcIngress,
    hook: Hook::Tc,
    xdp_egress: false,
    pass: -1,    // TC_ACT_UNSPEC
    drop: 2,     // TC_ACT_SHOT
    redirect: 7, // TC_ACT_REDIRECT
    ctx: skb_ctx,
};

pub const XDP: Program = Program {
    label: "xdp",
    name: portfwd_common::maps::Program::Xdp,
    hook: Hook::Xdp,
    xdp_egress: true,
    pass: 2,     // XDP_PASS
    drop: 1,     // XDP_DROP
    redirect: 4, // XDP_REDIRECT
    ctx: xdp_ctx,
};

pub const XDP_TO_TC: Program = Program {
    label: "xdp (egress without XDP)",
    xdp_egress: false,
    ..XDP
};

/// Every program (and configuration) the fixture table runs against.
pub const PROGRAMS: &[Program] = &[TC, XDP, XDP_TO_TC];

/// Size of `struct __sk_buff` (uapi/linux/bpf.h) on 6.x kernels.
const SK_BUFF_LEN: usize = 192;
/// Offset of `__u32 ifindex` in `struct __sk_buff`: the 11th `__u32` (after len, pkt_type,
/// mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority,
/// ingress_ifindex). For a sched_cls test run the kernel accepts only mark, priority,
/// ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and hwtstamp non-zero, and
/// makes the device with this ifindex (in the caller's namespace) the skb's device.
const SK_BUFF_IFINDEX: usize = 40;

fn skb_ctx(ifindex: u32, _len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; SK_BUFF_LEN];
    ctx[SK_BUFF_IFINDEX..SK_BUFF_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// `struct xdp_md` (uapi/linux/bpf.h): data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex, all `__u32`. A test run requires data 0 (no metadata),
/// data_end equal to the frame's length and egress_ifindex 0; ingress_ifindex names a device of
/// the caller's namespace, whose queue 0 becomes the frame's receive queue.
fn xdp_ctx(ifindex: u32, len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The maps' content and the routing table, for the reference model.
#[derive(Clone, Default)]
pub struct ModelWorld {
    pub ifaces: HashMap<u32, u32>,
    pub host_addrs: Vec<u32>,
    pub forwards: HashMap<ForwardKey, ForwardValue>,
    /// Port ranges as ranges: `(protocol, address or 0, first port, last port, value)`. The
    /// kernel's trie holds them as prefixes (`port_prefixes`); the model world matches the
    /// ports directly, so a wrong prefix cover shows up as a difference.
    pub ranges: Vec<(u8, u32, u16, u16, RangeValue)>,
    /// Allowlists by stats slot, as prefixes matched directly (the kernel has a trie).
    pub allow: HashMap<u32, Vec<(Ipv4Addr, u8)>>,
    pub flows: HashMap<FlowKey, FlowValue>,
    pub xdp_egress: Vec<u32>,
    pub eth0: u32,
    pub docker0: u32,
    /// The IPv6 maps.
    pub v6: Model6,
}

impl model::World for ModelWorld {
    fn range(&self, key: &RangeKey) -> Option<RangeValue> {
        let port = u16::from_be(key.port_be);
        self.ranges
            .iter()
            .find(|(proto, addr, start, end, _)| {
                *proto == key.proto && *addr == key.addr_be && (*start..=*end).contains(&port)
            })
            .map(|r| r.4)
    }

    fn allowed(&self, key: &AllowKey) -> bool {
        let source = Ipv4Addr::from(key.saddr_be.to_ne_bytes());
        self.allow.get(&key.slot).is_some_and(|prefixes| {
            prefixes
                .iter()
                .any(|&(net, len)| in_net(source, net, u32::from(len)))
        })
    }

    fn iface_flags(&self, ifindex: u32) -> Option<u32> {
        self.ifaces.get(&ifindex).copied()
    }

    fn is_host_addr(&self, addr_be: u32) -> bool {
        self.host_addrs.contains(&addr_be)
    }

    fn forward(&self, key: &ForwardKey) -> Option<ForwardValue> {
        self.forwards.get(key).copied()
    }

    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }

    fn is_host_addr6(&self, addr: Ipv6Words) -> bool {
        self.v6.host_addrs.contains(&addr)
    }

    fn forward6(&self, key: &Forward6Key) -> Option<Forward6Value> {
        self.v6.forwards.get(key).copied()
    }

    fn range6(&self, key: &Range6Key) -> Option<Range6Value> {
        self.v6.range(key)
    }

    fn allowed6(&self, key: &Allow6Key) -> bool {
        self.v6.allowed(key)
    }

    fn flow6(&self, key: &Flow6Key) -> Option<Flow6Value> {
        self.v6.flows.get(key).copied()
    }

    /// The lab host's routing table: 10.77.0.0/24 on eth0, 172.17.0.0/16 on docker0, no
    /// default route; its own and broadcast addresses are not forwarded; the two permanent
    /// neighbour entries are the only known MACs. IPv6: see `world6::route6`.
    fn route(&self, q: &RouteQuery) -> Route {
        let dst = match q.daddr {
            IpAddr::V4(dst) => dst,
            IpAddr::V6(dst) => {
                return match world6::route6(dst, (self.eth0, ETH0_MAC), (self.docker0, DOCKER0_MAC))
                {
                    None => Route::Unroutable,
                    Some((ifindex, _, None)) => Route::NoNeighbour { ifindex, mtu: MTU },
                    Some((ifindex, smac, Some(dmac))) => Route::Neighbour {
                        ifindex,
                        mtu: MTU,
                        smac,
                        dmac,
                    },
                };
            }
        };
        let (ifindex, smac, local, broadcast) = if in_net(dst, HOST, 24) {
            (self.eth0, ETH0_MAC, HOST, Ipv4Addr::new(10, 77, 0, 255))
        } else if in_net(dst, BRIDGE, 16) {
            (
                self.docker0,
                DOCKER0_MAC,
                BRIDGE,
                Ipv4Addr::new(172, 17, 255, 255),
            )
        } else {
            return Route::Unroutable;
        };
        if dst == local || dst == broadcast {
            return Route::Unroutable;
        }
        let dmac = match dst {
            CLIENT => CLIENT_MAC,
            C1 => C1_MAC,
            _ => return Route::NoNeighbour { ifindex, mtu: MTU },
        };
        Route::Neighbour {
            ifindex,
            mtu: MTU,
            smac,
            dmac,
        }
    }

    fn xdp_egress(&self, ifindex: u32) -> bool {
        self.xdp_egress.contains(&ifindex)
    }
}

fn in_net(a: Ipv4Addr, net: Ipv4Addr, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

impl ModelWorld {
    /// Runs the model of `hook` on `frame` and applies its map updates.
    pub fn process(&mut self, frame: &mut [u8], ifindex: u32, hook: Hook) -> model::Outcome {
        let out = model::process(frame, ifindex, hook, self);
        match out.flow {
            Some(FlowEntry::V4(k, v)) => {
                self.flows.insert(k, v);
            }
            Some(FlowEntry::V6(k, v)) => {
                self.v6.flows.insert(k, v);
            }
            None => {}
        }
        out
    }
}

/// A loaded datapath in a lab, maps filled, and the model's copy of the same world.
pub struct Env {
    pub lab: Lab,
    pub eth0: u32,
    pub docker0: u32,
    /// `pfport0`, the exposed bridge port.
    pub port: u32,
}

impl Env {
    /// Builds the lab (fixed MACs, permanent neighbours) for the world above.
    pub fn new(tag: &str) -> Env {
        let lab = Lab::new(tag).expect("building the lab");
        let host = lab.host().clone();
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        lab.sh(
            &host,
            &format!(
                "ip link set eth0 address {eth0} && ip link set docker0 address {docker0} && \
                 ip neigh replace {CLIENT} lladdr {client} dev eth0 nud permanent && \
                 ip neigh replace {C1} lladdr {c1} dev docker0 nud permanent && \
                 ip link add pfport0 type veth peer name pfport1 && \
                 ip link set pfport0 master docker0 && \
                 ip link set pfport1 up && ip link set pfport0 up && {v6}",
                eth0 = mac(ETH0_MAC),
                docker0 = mac(DOCKER0_MAC),
                client = mac(CLIENT_MAC),
                c1 = mac(C1_MAC),
                v6 = world6::lab_setup(),
            ),
        )
        .expect("setting MACs, addresses and neighbours");
        let index = |dev: &str| -> u32 {
            lab.sh(&host, &format!("cat /sys/class/net/{dev}/ifindex"))
                .expect("reading an ifindex")
                .trim()
                .parse()
                .expect("an ifindex")
        };
        let (eth0, docker0, port) = (index("eth0"), index("docker0"), index("pfport0"));
        Env {
            lab,
            eth0,
            docker0,
            port,
        }
    }

    /// Runs `f` in the lab's host namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.lab.host().run(f)
    }

    pub fn ifindex(&self, i: Ingress) -> u32 {
        match i {
            Ingress::Eth0 => self.eth0,
            Ingress::Docker0 => self.docker0,
            Ingress::Lo => 1,
            Ingress::Port => self.port,
        }
    }

    /// Loads the datapath (call inside [`Env::run`]) and fills its maps as `prog` needs;
    /// returns it with the model's copy of the same state.
    pub fn load(&self, prog: &Program) -> (Datapath, ModelWorld) {
        let mut dp = Datapath::load().expect("loading the datapath");
        let mut w = ModelWorld::new(self.eth0, self.docker0, self.port);
        if prog.xdp_egress {
            for i in [self.eth0, self.docker0] {
                dp.maps.set_xdp_egress(i, true).unwrap();
                w.xdp_egress.push(i);
            }
        }
        dp.maps.set_iface(self.eth0, true, None).unwrap();
        dp.maps.set_iface(self.docker0, false, None).unwrap();
        dp.maps.set_iface(self.port, true, None).unwrap();
        for a in [HOST, HOST2, BRIDGE] {
            dp.maps.set_host_addr(a.into()).unwrap();
        }
        for p in FORWARDS {
            dp.maps.insert_forward(&p.forward(), p.slot).unwrap();
        }
        for (k, v) in initial_flows() {
            dp.maps.insert_flow(k, v).unwrap();
        }
        world6::fill(&mut dp);
        (dp, w)
    }
}

fn initial_flows() -> impl Iterator<Item = (FlowKey, FlowValue)> {
    let plain = FLOWS.iter().map(|&(t, tp, c, cp, proto, a, ap, slot)| {
        (flow_key((t, tp), (c, cp), proto), flow_value((a, ap), slot))
    });
    let hairpin = HAIRPIN_FLOWS
        .iter()
        .map(|&(t, tp, c, cp, proto, a, ap, slot)| {
            (
                flow_key((t, tp), (c, cp), proto),
                hairpin_flow_value((a, ap), slot, t),
            )
        });
    plain.chain(hairpin)
}

impl ModelWorld {
    /// The world above as the model sees it, with the given interface indexes.
    pub fn new(eth0: u32, docker0: u32, port: u32) -> ModelWorld {
        let mut w = ModelWorld {
            eth0,
            docker0,
            ..ModelWorld::default()
        };
        w.ifaces.insert(eth0, IFACE_EXPOSE);
        w.ifaces.insert(docker0, 0);
        w.ifaces.insert(port, IFACE_EXPOSE);
        w.host_addrs = [HOST, HOST2, BRIDGE].into_iter().map(ipv4_be).collect();
        for p in FORWARDS {
            let flags = if p.allow.is_empty() { 0 } else { FWD_ALLOWLIST };
            if !p.allow.is_empty() {
                w.allow.insert(p.slot, p.allow.to_vec());
            }
            let proto = datapath::maps::ip_proto(p.protocol);
            let addr_be = p.addr.map_or(0, ipv4_be);
            if p.end != p.port {
                let value = RangeValue {
                    target_addr_be: ipv4_be(p.to),
                    target_port_be: p.to_port.to_be(),
                    start_port_be: p.port.to_be(),
                    stats_slot: p.slot,
                    flags,
                };
                w.ranges.push((proto, addr_be, p.port, p.end, value));
                continue;
            }
            w.forwards.insert(
                ForwardKey {
                    addr_be,
                    port_be: p.port.to_be(),
                    proto,
                    _pad: 0,
                },
                ForwardValue {
                    target_addr_be: ipv4_be(p.to),
                    target_port_be: p.to_port.to_be(),
                    _pad: 0,
                    stats_slot: p.slot,
                    flags,
                },
            );
        }
        w.flows.extend(initial_flows());
        w.v6 = Model6::new();
        w
    }
}

/// The flow entry `entry`'s key holds in the kernel's maps.
pub fn kernel_flow(dp: &Datapath, entry: &FlowEntry) -> Option<FlowEntry> {
    match entry {
        FlowEntry::V4(k, _) => dp.maps.flow(k).map(|v| FlowEntry::V4(*k, v)),
        FlowEntry::V6(k, _) => dp.maps.flow(k).map(|v| FlowEntry::V6(*k, v)),
    }
}

/// Runs `prog` once on `frame`, arriving on `ifindex`.
pub fn test_run(
    dp: &mut Datapath,
    prog: &Program,
    frame: &[u8],
    ifindex: u32,
) -> Result<(i32, Vec<u8>), portfwd::error::Error> {
    dp.test_run_program(prog.name, frame, Some(&(prog.ctx)(ifindex, frame.len())))
}

/// Every verdict counter of every hook, indexed by `hook * Reason::COUNT + reason` as in the
/// map.
pub fn verdicts(dp: &Datapath) -> Vec<u64> {
    let mut all = Vec::new();
    for hook in Hook::ALL {
        let v = dp
            .maps
            .verdicts_of(hook)
            .expect("reading the verdict counters");
        assert_eq!(v.len(), Reason::ALL.len());
        all.extend(v.into_iter().map(|(_, n)| n));
    }
    all
}

/// The one counter that moved between `before` and `after`, if exactly one moved by exactly 1,
/// and it is one of `hook`'s.
pub fn verdict_delta(hook: Hook, before: &[u64], after: &[u64]) -> Result<Reason, String> {
    let names = Hook::ALL
        .iter()
        .flat_map(|h| Reason::ALL.iter().map(move |r| (*h, *r)));
    let moved: Vec<((Hook, Reason), i128)> = names
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(r, (b, a))| (r, i128::from(*a) - i128::from(*b)))
        .collect();
    match moved.as_slice() {
        [((h, r), 1)] if *h == hook => Ok(*r),
        _ => Err(format!(
            "expected exactly one {} verdict counter to move by 1, got {:?}",
            hook.name(),
            moved
                .iter()
                .map(|((h, r), d)| format!("{}:{} {d:+}", h.name(), r.name()))
                .collect::<Vec<_>>()
        )),
    }
}

pub fn stats(dp: &Datapath, slot: u32) -> ForwardStats {
    dp.maps
        .forward_stats(slot)
        .expect("reading forward counters")
}

/// The return code `prog` gives for `action`.
pub fn code_of(prog: &Program, action: model::Action) -> i32 {
    match action {
        model::Action::Pass => prog.pass,
        model::Action::Drop => prog.drop,
        model::Action::Redirect { .. } => prog.redirect,
    }
}
