//! The test world as the reference model sees it: the maps' content of each family (one
//! generic [`ModelMaps`], built from the same description as the kernel's maps, `world.rs`,
//! both generations of the forwarding tables included), the active generation, and the lab
//! host's routing table.
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;

use portfwd::datapath::maps::{MapAddr, ip_proto};
use portfwd_common::maps::{
    Allow6Key, AllowKey, AllowKeyOf, FWD_ALLOWLIST, Flow6Key, Flow6Value, FlowKey, FlowKeyOf,
    FlowValue, FlowValueOf, Forward6Key, Forward6Value, ForwardKey, ForwardKeyOf, ForwardValue,
    ForwardValueOf, Frag6Key, Frag6Value, FragKey, FragKeyOf, FragValue, FragValueOf, Hook,
    IFACE_EXPOSE, Ipv6Words, Range6Key, Range6Value, RangeKey, RangeKeyOf, RangeValue,
    RangeValueOf, local_flow_timeout,
};
use portfwd_model::{self as model, FlowEntry, FragEntry, Route, RouteQuery};

use super::program::Program;
use super::world::{
    C1_MAC, CLIENT_MAC, DOCKER0_MAC, ETH0_MAC, FORWARDS, Ingress, LOCAL_FLOWS, MTU, NETS, Net,
    Published, STAGED, V4, V6, ifindex_of, in_net,
};

/// One family's maps, for the model.
#[derive(Clone, Default)]
pub struct ModelMaps<A: MapAddr + Hash> {
    pub host_addrs: Vec<A>,
    pub forwards: HashMap<ForwardKeyOf<A>, ForwardValueOf<A>>,
    /// Port ranges as ranges: `(protocol, generation, address or 0, first port, last port,
    /// value)`. The kernel's trie holds them as prefixes (`port_prefixes`); the model world
    /// matches the ports directly, so a wrong prefix cover shows up as a difference.
    pub ranges: Vec<(u8, u8, A, u16, u16, RangeValueOf<A>)>,
    /// Allowlists by (generation, stats slot), as networks matched directly (the kernel has a
    /// trie).
    pub allow: HashMap<(u8, u16), Vec<(IpAddr, u8)>>,
    pub flows: HashMap<FlowKeyOf<A>, FlowValueOf<A>>,
    pub frags: HashMap<FragKeyOf<A>, FragValueOf<A>>,
    /// What tc egress recorded (`PF_LOCAL_FLOWS`) and has not expired: the model has no clock,
    /// so expiry is decided here, from the rows' ages.
    pub local_flows: HashSet<FlowKeyOf<A>>,
}

impl<A: MapAddr + Hash> ModelMaps<A> {
    /// The maps of `net`'s family, as `Env::load` fills the kernel's: [`FORWARDS`] in
    /// generation 0, [`STAGED`] in generation 1.
    fn new(net: &Net) -> ModelMaps<A> {
        let a = |ip: IpAddr| A::from_ip(ip).expect("an address of the family");
        let mut m = ModelMaps {
            host_addrs: net.host_addrs().into_iter().map(a).collect(),
            local_flows: LOCAL_FLOWS
                .iter()
                .filter(|r| r.5 <= u64::from(local_flow_timeout(r.2)))
                .map(|r| net.local_flow_key(r))
                .collect(),
            ..ModelMaps::default()
        };
        m.publish(net, FORWARDS, 0);
        m.publish(net, STAGED, 1);
        m
    }

    /// Writes `forwards` in `generation`.
    fn publish(&mut self, net: &Net, forwards: &[Published], generation: u8) {
        let a = |ip: IpAddr| A::from_ip(ip).expect("an address of the family");
        for p in forwards {
            let slot = net.slot(p.id);
            let flags = if p.allow.is_empty() { 0 } else { FWD_ALLOWLIST };
            if !p.allow.is_empty() {
                self.allow
                    .insert((generation, slot as u16), net.allowlist(p));
            }
            let proto = ip_proto(p.protocol);
            let addr_be = p.addr.map_or_else(A::default, |s| a(net.at(s)));
            let target_addr_be = a(net.at(p.to));
            if p.end != p.port {
                let value = RangeValueOf {
                    target_addr_be,
                    target_port_be: p.to_port.to_be(),
                    start_port_be: p.port.to_be(),
                    stats_slot: slot,
                    flags,
                };
                self.ranges
                    .push((proto, generation, addr_be, p.port, p.end, value));
                continue;
            }
            let key = ForwardKeyOf {
                addr_be,
                port_be: p.port.to_be(),
                proto,
                generation,
            };
            let value = ForwardValueOf {
                target_addr_be,
                target_port_be: p.to_port.to_be(),
                generation,
                _pad: 0,
                stats_slot: slot,
                flags,
            };
            self.forwards.insert(key, value);
        }
    }

    fn range(&self, key: &RangeKeyOf<A>) -> Option<RangeValueOf<A>> {
        let port = u16::from_be(key.port_be);
        self.ranges
            .iter()
            .find(|(proto, generation, addr, start, end, _)| {
                *proto == key.proto
                    && *generation == key.generation
                    && *addr == key.addr_be
                    && (*start..=*end).contains(&port)
            })
            .map(|r| r.5)
    }

    fn allowed(&self, key: &AllowKeyOf<A>) -> bool {
        let source = key.saddr_be.to_ip();
        self.allow
            .get(&(key.generation, key.slot))
            .is_some_and(|nets| nets.iter().any(|&net| in_net(source, net)))
    }
}

/// The maps' content and the routing table, for the reference model.
#[derive(Clone)]
pub struct ModelWorld {
    /// `PF_GEN`: the active generation (0, as in fresh maps).
    pub generation: u8,
    pub ifaces: HashMap<u32, u32>,
    pub v4: ModelMaps<u32>,
    pub v6: ModelMaps<Ipv6Words>,
    pub xdp_egress: Vec<u32>,
    pub eth0: u32,
    pub docker0: u32,
}

impl ModelWorld {
    /// The world as the model sees it for `prog`, with the given interface indexes.
    pub fn new(eth0: u32, docker0: u32, port: u32, prog: &Program) -> ModelWorld {
        let mut w = ModelWorld {
            generation: 0,
            ifaces: HashMap::from([(eth0, IFACE_EXPOSE), (docker0, 0), (port, IFACE_EXPOSE)]),
            v4: ModelMaps::new(&V4),
            v6: ModelMaps::new(&V6),
            xdp_egress: Vec::new(),
            eth0,
            docker0,
        };
        if prog.xdp_egress {
            w.xdp_egress = vec![eth0, docker0];
        }
        for net in NETS {
            for entry in net.initial_flows() {
                w.record(entry);
            }
        }
        w
    }

    /// The model world of a run without a lab, with made-up interface indexes.
    pub fn detached(prog: &Program) -> (ModelWorld, impl Fn(Ingress) -> u32) {
        let (eth0, docker0, port) = (3, 4, 5);
        let w = ModelWorld::new(eth0, docker0, port, prog);
        (w, move |i| ifindex_of(i, eth0, docker0, port))
    }

    fn record(&mut self, entry: FlowEntry) {
        match entry {
            FlowEntry::V4(k, v) => {
                self.v4.flows.insert(k, v);
            }
            FlowEntry::V6(k, v) => {
                self.v6.flows.insert(k, v);
            }
        }
    }

    /// Runs the model of `hook` on `frame` and applies its map updates.
    pub fn process(&mut self, frame: &mut Vec<u8>, ifindex: u32, hook: Hook) -> model::Outcome {
        let out = model::process(frame, ifindex, hook, self);
        if let Some(entry) = out.flow {
            self.record(entry);
        }
        match out.frag {
            Some(FragEntry::V4(k, v)) => {
                self.v4.frags.insert(k, v);
            }
            Some(FragEntry::V6(k, v)) => {
                self.v6.frags.insert(k, v);
            }
            None => {}
        }
        out
    }
}

impl model::World for ModelWorld {
    fn iface_flags(&self, ifindex: u32) -> Option<u32> {
        self.ifaces.get(&ifindex).copied()
    }

    fn is_host_addr(&self, addr_be: u32) -> bool {
        self.v4.host_addrs.contains(&addr_be)
    }

    fn generation(&self) -> u8 {
        self.generation
    }

    fn is_host_addr6(&self, addr: Ipv6Words) -> bool {
        self.v6.host_addrs.contains(&addr)
    }

    fn forward(&self, key: &ForwardKey) -> Option<ForwardValue> {
        self.v4.forwards.get(key).copied()
    }

    fn forward6(&self, key: &Forward6Key) -> Option<Forward6Value> {
        self.v6.forwards.get(key).copied()
    }

    fn range(&self, key: &RangeKey) -> Option<RangeValue> {
        self.v4.range(key)
    }

    fn range6(&self, key: &Range6Key) -> Option<Range6Value> {
        self.v6.range(key)
    }

    fn allowed(&self, key: &AllowKey) -> bool {
        self.v4.allowed(key)
    }

    fn allowed6(&self, key: &Allow6Key) -> bool {
        self.v6.allowed(key)
    }

    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.v4.flows.get(key).copied()
    }

    fn flow6(&self, key: &Flow6Key) -> Option<Flow6Value> {
        self.v6.flows.get(key).copied()
    }

    fn frag(&self, key: &FragKey) -> Option<FragValue> {
        self.v4.frags.get(key).copied()
    }

    fn frag6(&self, key: &Frag6Key) -> Option<Frag6Value> {
        self.v6.frags.get(key).copied()
    }

    fn local_flow(&self, key: &FlowKey) -> bool {
        self.v4.local_flows.contains(key)
    }

    fn local_flow6(&self, key: &Flow6Key) -> bool {
        self.v6.local_flows.contains(key)
    }

    /// The lab host's routing table, in either family: the LAN on eth0, the bridge network on
    /// docker0, no default route; its own addresses and the networks' broadcast (IPv4) or
    /// subnet-router anycast (IPv6) addresses are not forwarded; the two permanent neighbour
    /// entries (client, c1) are the only known MACs. Over IPv6 the kernel's FIB lookup forwards
    /// nothing from or to a multicast, link-local or loopback address (`rt6_need_strict` in
    /// `bpf_ipv6_fib_lookup`: "link local addresses are never forwarded").
    fn route(&self, q: &RouteQuery) -> Route {
        let dst = q.daddr;
        let strict = |a: IpAddr| match a {
            IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local() || a.is_loopback(),
            IpAddr::V4(_) => false,
        };
        if strict(q.saddr) || strict(dst) {
            return Route::Unroutable;
        }
        let net = if dst.is_ipv4() { &V4 } else { &V6 };
        let (ifindex, smac, local, edge) = if in_net(dst, net.lan) {
            (self.eth0, ETH0_MAC, net.host, net.lan_edge)
        } else if in_net(dst, net.bridge_net) {
            (self.docker0, DOCKER0_MAC, net.bridge, net.bridge_edge)
        } else {
            return Route::Unroutable;
        };
        if dst == local || dst == edge {
            return Route::Unroutable;
        }
        let dmac = if dst == net.client {
            CLIENT_MAC
        } else if dst == net.c1 {
            C1_MAC
        } else {
            return Route::NoNeighbour { ifindex, mtu: MTU };
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
