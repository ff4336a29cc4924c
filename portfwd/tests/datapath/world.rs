//! The world the fixtures run in, described once and instantiated for each family: a lab host
//! namespace with fixed MACs, the addresses of each family ([`Net`]: [`V4`], [`V6`]), the
//! published ports and the flows present before any fixture runs, written with symbolic
//! addresses ([`Sym`]). `env.rs` builds it in a lab and loads the programs' maps from it; the
//! reference model's copy is `model_world.rs`, the programs under test `program.rs`.
//!
//! ```text
//!  client          10.77.0.2  fd77::2  (MAC 02:00:0a:4d:00:02, permanent neighbour)
//!     |
//!  eth0 (host)     10.77.0.1  fd77::1  (MAC 02:00:0a:4d:00:01), exposed
//!  host2           10.77.0.10 fd77::10 (a host address of the maps only)
//!  docker0 (bridge) 172.17.0.1 fd17::1 (MAC 02:42:ac:11:00:01)
//!     |   \
//!     |    pfport0: a port of the bridge (the host end of a container's veth), exposed
//!     |
//!  c1              172.17.0.2 fd17::2  (MAC 02:42:ac:11:00:02, permanent neighbour)
//!  c2              172.17.0.3 fd17::3  (no neighbour entry)
//!  client_no_neigh 10.77.0.3  fd77::3  (on the LAN, no neighbour entry)
//!  remote     198.51.100.7 2001:db8:100::7 (no route: the lab host has no default route)
//!  unroutable  203.0.113.5 2001:db8:203::5 (a target the host cannot route to)
//! ```
//!
//! docker0 itself is not exposed, so that fixtures show a bridge where ports are not published;
//! `pfport0` is, as every bridge port is when the config names no `interfaces:`: frames from
//! containers to published ports (hairpin) arrive there. The interfaces, MACs and routes are
//! the same in both families; the IPv6 forwards count into slots of their own
//! ([`Net::slot`]), as the stats slots are shared by both families.
//!
//! The forwarding tables hold two generations: [`FORWARDS`] are written in the active one (0),
//! [`STAGED`] in the other one, as a reload stages its config before switching to it. Every
//! fixture thus also shows that a staged config is not seen; the `generation` table's
//! switched rows run with generation 1 active.
//!
//! BPF_PROG_TEST_RUN makes its FIB lookups in the network namespace of the calling thread, so
//! everything that runs a program happens inside `Env::run` (the lab's host namespace).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portfwd::datapath::{Datapath, generation, maps::MapAddr};
use portfwd::publish::{AllowPrefix, Forward, Listen, Protocol, Target};
use portfwd_common::maps::{FlowKeyOf, FlowValueOf, Ipv6Words};
use portfwd_lab::Lab;
use portfwd_model::FlowEntry;

/// An address family of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The named addresses of the world, resolved per family by [`Net::at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sym {
    Host,
    Host2,
    Client,
    ClientNoNeigh,
    Remote,
    C1,
    C2,
    Unroutable,
    /// The LAN's first address (10.77.0.0, fd77::), for prefixes.
    Lan0,
}

/// The world's addresses in one family.
pub struct Net {
    pub family: Family,
    /// eth0's address.
    pub host: IpAddr,
    /// A second host address (in the host-address map only), for forwards bound to one address.
    pub host2: IpAddr,
    /// docker0's address.
    pub bridge: IpAddr,
    pub client: IpAddr,
    /// A client on the LAN without a neighbour entry.
    pub client_no_neigh: IpAddr,
    /// A client the host has no route to.
    pub remote: IpAddr,
    pub c1: IpAddr,
    /// A container without a neighbour entry.
    pub c2: IpAddr,
    /// A target the host cannot route to.
    pub unroutable: IpAddr,
    /// The LAN (eth0) and the bridge (docker0) networks.
    pub lan: (IpAddr, u8),
    pub bridge_net: (IpAddr, u8),
    /// The LAN's broadcast (IPv4) or subnet-router anycast (IPv6) address: on the LAN, never a
    /// host's, never forwarded to.
    pub lan_edge: IpAddr,
    pub bridge_edge: IpAddr,
    /// Another LAN address, not the host's.
    pub lan_other: IpAddr,
    pub loopback: IpAddr,
    /// The IP header length without options or extension headers.
    pub ip_header: usize,
    /// The stats slot of forward 0; forward `i` counts into `slot_base + i`.
    pub slot_base: u32,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(net: [u16; 3], last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(net[0], net[1], net[2], 0, 0, 0, 0, last))
}

const LAN6: [u16; 3] = [0xfd77, 0, 0];
const BRIDGE6: [u16; 3] = [0xfd17, 0, 0];

pub const V4: Net = Net {
    family: Family::V4,
    host: IpAddr::V4(Lab::HOST_ADDR),
    host2: v4(10, 77, 0, 10),
    bridge: IpAddr::V4(Lab::BRIDGE_ADDR),
    client: IpAddr::V4(Lab::CLIENT_ADDR),
    client_no_neigh: v4(10, 77, 0, 3),
    remote: v4(198, 51, 100, 7),
    c1: v4(172, 17, 0, 2),
    c2: v4(172, 17, 0, 3),
    unroutable: v4(203, 0, 113, 5),
    lan: (v4(10, 77, 0, 0), 24),
    bridge_net: (v4(172, 17, 0, 0), 16),
    lan_edge: v4(10, 77, 0, 255),
    bridge_edge: v4(172, 17, 255, 255),
    lan_other: v4(10, 77, 0, 99),
    loopback: v4(127, 0, 0, 1),
    ip_header: 20,
    slot_base: 0,
};

pub const V6: Net = Net {
    family: Family::V6,
    host: v6(LAN6, 1),
    host2: v6(LAN6, 0x10),
    bridge: v6(BRIDGE6, 1),
    client: v6(LAN6, 2),
    client_no_neigh: v6(LAN6, 3),
    remote: v6([0x2001, 0xdb8, 0x100], 7),
    c1: v6(BRIDGE6, 2),
    c2: v6(BRIDGE6, 3),
    unroutable: v6([0x2001, 0xdb8, 0x203], 5),
    lan: (v6(LAN6, 0), 64),
    bridge_net: (v6(BRIDGE6, 0), 64),
    lan_edge: v6(LAN6, 0),
    bridge_edge: v6(BRIDGE6, 0),
    lan_other: v6(LAN6, 0x99),
    loopback: IpAddr::V6(Ipv6Addr::LOCALHOST),
    ip_header: 40,
    slot_base: 20,
};

/// The world in each family.
pub const NETS: [&Net; 2] = [&V4, &V6];

pub const ETH0_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02];
pub const DOCKER0_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
pub const C1_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
pub const C2_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];
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

/// A prefix of an allowlist: the network of `at`, `v4` or `v6` bits long.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    pub at: Sym,
    pub v4: u8,
    pub v6: u8,
}

/// A published port or range of the test world, in both families: forward `id` (its stats slot
/// in IPv4; [`Net::slot`]), `addr:port-end/protocol -> to:to_port-..`, with a source allowlist
/// (empty: every source).
pub struct Published {
    pub id: u32,
    pub addr: Option<Sym>,
    pub port: u16,
    /// The last port of a range (`port` for a single port).
    pub end: u16,
    pub protocol: Protocol,
    pub to: Sym,
    pub to_port: u16,
    pub allow: &'static [Prefix],
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
/// `host2:9000-9003/tcp -> c1:7100-7103`: bound to one address, inside the range above.
pub const TCP_9000_RANGE_HOST2: u32 = 9;
/// `*:9001/tcp -> c1:3004`: a single port inside both ranges.
pub const TCP_9001_SINGLE: u32 = 10;
/// `*:8090/tcp -> c1:3005 allow client, remote's network`.
pub const TCP_8090_ALLOW: u32 = 11;
/// `*:5000-5099/udp -> c1:6000-6099 allow lan0/31 (lan0/127), client`: a range with an
/// allowlist ([`Sym::ClientNoNeigh`] is outside).
pub const UDP_5000_RANGE_ALLOW: u32 = 12;

/// The allowlist of [`TCP_8090_ALLOW`]: the client, and the remote network.
const ALLOW_8090: &[Prefix] = &[
    Prefix::host(Sym::Client),
    Prefix {
        at: Sym::Remote,
        v4: 24,
        v6: 48,
    },
];
/// The allowlist of [`UDP_5000_RANGE_ALLOW`]: the LAN's first two addresses, and the client.
const ALLOW_5000: &[Prefix] = &[
    Prefix {
        at: Sym::Lan0,
        v4: 31,
        v6: 127,
    },
    Prefix::host(Sym::Client),
];

pub const FORWARDS: &[Published] = &[
    Published::new(TCP_8080, None, 8080, Protocol::Tcp, Sym::C1, 3000),
    Published::new(UDP_5353, None, 5353, Protocol::Udp, Sym::C1, 53),
    Published::new(
        TCP_8081_BOUND,
        Some(Sym::Host),
        8081,
        Protocol::Tcp,
        Sym::C1,
        3001,
    ),
    Published::new(
        TCP_8080_HOST2,
        Some(Sym::Host2),
        8080,
        Protocol::Tcp,
        Sym::C1,
        3002,
    ),
    Published::new(TCP_9090_NO_NEIGH, None, 9090, Protocol::Tcp, Sym::C2, 80),
    Published::new(
        UDP_7070_UNROUTABLE,
        None,
        7070,
        Protocol::Udp,
        Sym::Unroutable,
        7,
    ),
    Published::new(TCP_8443_SAME_PORT, None, 8443, Protocol::Tcp, Sym::C1, 8443),
    Published::new(
        TCP_8082_HOST2_ONLY,
        Some(Sym::Host2),
        8082,
        Protocol::Tcp,
        Sym::C1,
        3003,
    ),
    Published::new(TCP_9000_RANGE, None, 9000, Protocol::Tcp, Sym::C1, 7000).range(9010),
    Published::new(
        TCP_9000_RANGE_HOST2,
        Some(Sym::Host2),
        9000,
        Protocol::Tcp,
        Sym::C1,
        7100,
    )
    .range(9003),
    Published::new(TCP_9001_SINGLE, None, 9001, Protocol::Tcp, Sym::C1, 3004),
    Published::new(TCP_8090_ALLOW, None, 8090, Protocol::Tcp, Sym::C1, 3005).allow(ALLOW_8090),
    Published::new(
        UDP_5000_RANGE_ALLOW,
        None,
        5000,
        Protocol::Udp,
        Sym::C1,
        6000,
    )
    .range(5099)
    .allow(ALLOW_5000),
];

/// `*:6060/udp -> c1:6060`: published in the staged generation only.
pub const UDP_6060_STAGED: u32 = 13;

/// The staged allowlist of [`TCP_8090_ALLOW`]: remote's network only (the client is out).
const ALLOW_8090_STAGED: &[Prefix] = &[Prefix {
    at: Sym::Remote,
    v4: 24,
    v6: 48,
}];

/// The config staged in the inactive generation beside [`FORWARDS`]: the same forward ids (and
/// so the same stats slots) with other targets, another allowlist on the same slot, no single
/// port inside the range (host:9001 is a range port there), and a port of its own.
pub const STAGED: &[Published] = &[
    Published::new(TCP_8080, None, 8080, Protocol::Tcp, Sym::C1, 4000),
    Published::new(TCP_9000_RANGE, None, 9000, Protocol::Tcp, Sym::C1, 7500).range(9010),
    Published::new(TCP_8090_ALLOW, None, 8090, Protocol::Tcp, Sym::C1, 3005)
        .allow(ALLOW_8090_STAGED),
    Published::new(UDP_6060_STAGED, None, 6060, Protocol::Udp, Sym::C1, 6060),
];

impl Prefix {
    const fn host(at: Sym) -> Prefix {
        Prefix {
            at,
            v4: 32,
            v6: 128,
        }
    }
}

impl Published {
    const fn new(
        id: u32,
        addr: Option<Sym>,
        port: u16,
        protocol: Protocol,
        to: Sym,
        to_port: u16,
    ) -> Published {
        Published {
            id,
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

    const fn allow(self, allow: &'static [Prefix]) -> Published {
        Published { allow, ..self }
    }

    /// The target port of host port `port`.
    pub fn to_port_of(&self, port: u16) -> u16 {
        self.to_port + (port - self.port)
    }
}

/// A flow: `(target, target port, client, client port, proto, published address, published
/// port, forward)`.
pub type FlowRow = (Sym, u16, Sym, u16, u8, Sym, u16, u32);

/// Flows present before any fixture runs.
pub const FLOWS: &[FlowRow] = &[
    (
        Sym::C1,
        3000,
        Sym::Client,
        40000,
        6,
        Sym::Host,
        8080,
        TCP_8080,
    ),
    (
        Sym::C1,
        53,
        Sym::Client,
        40001,
        17,
        Sym::Host,
        5353,
        UDP_5353,
    ),
    (
        Sym::C1,
        3000,
        Sym::ClientNoNeigh,
        40002,
        6,
        Sym::Host,
        8080,
        TCP_8080,
    ),
    (
        Sym::C1,
        3000,
        Sym::Remote,
        40003,
        6,
        Sym::Host,
        8080,
        TCP_8080,
    ),
    (
        Sym::C1,
        3002,
        Sym::Client,
        40004,
        6,
        Sym::Host2,
        8080,
        TCP_8080_HOST2,
    ),
    (
        Sym::C1,
        7005,
        Sym::Client,
        40005,
        6,
        Sym::Host,
        9005,
        TCP_9000_RANGE,
    ),
    (
        Sym::C1,
        3005,
        Sym::Client,
        40006,
        6,
        Sym::Host,
        8090,
        TCP_8090_ALLOW,
    ),
    (
        Sym::C1,
        3005,
        Sym::ClientNoNeigh,
        40007,
        6,
        Sym::Host,
        8090,
        TCP_8090_ALLOW,
    ),
    (
        Sym::C1,
        6042,
        Sym::Client,
        40008,
        17,
        Sym::Host,
        5042,
        UDP_5000_RANGE_ALLOW,
    ),
    (Sym::C1, 3000, Sym::C2, 45004, 6, Sym::Host, 8080, TCP_8080),
];

/// Hairpin flows present before any fixture runs: c1 called its own published port, so the
/// flow's client is the published address and the caller (`client_addr_be`) is c1 itself.
pub const HAIRPIN_FLOWS: &[FlowRow] = &[
    (
        Sym::C1,
        3000,
        Sym::Host,
        45001,
        6,
        Sym::Host,
        8080,
        TCP_8080,
    ),
    (Sym::C1, 53, Sym::Host, 45002, 17, Sym::Host, 5353, UDP_5353),
];

/// A flow that left the host from a published port (as the tc egress program records it):
/// (remote, remote port, protocol, host address, published port, seconds since last seen).
pub type LocalRow = (Sym, u16, u8, Sym, u16, u64);

/// Local flows present before any fixture runs: the host connected out from host:8080 to
/// remote:443 and sent from host:5042 (a UDP range whose allowlist excludes remote) to
/// remote:53; and one whose addresses are also those of a flow portfwd forwards (the client's
/// usual TCP connection to host:8080), where the forwarded flow wins; and one from host:5353 to
/// remote:123 last seen longer ago than conntrack keeps a UDP flow, which no longer counts.
pub const LOCAL_FLOWS: &[LocalRow] = &[
    (Sym::Remote, 443, 6, Sym::Host, 8080, 0),
    (Sym::Remote, 53, 17, Sym::Host, 5042, 0),
    (Sym::Client, 40000, 6, Sym::Host, 8080, 0),
    (Sym::Remote, 123, 17, Sym::Host, 5353, 200),
];

/// The network of `addr`, `len` bits long.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Whether `a` is in `net`.
pub fn in_net(a: IpAddr, net: (IpAddr, u8)) -> bool {
    a.is_ipv6() == net.0.is_ipv6() && mask(a, net.1) == mask(net.0, net.1)
}

/// A flow entry as the maps of `A`'s family hold it: the key the target's replies to `client`
/// carry, the published address and port they are translated back to, and for a hairpin to
/// itself the caller.
pub fn flow_of<A: MapAddr>(
    target: (IpAddr, u16),
    client: (IpAddr, u16),
    proto: u8,
    published: (IpAddr, u16),
    slot: u32,
    caller: Option<IpAddr>,
) -> (FlowKeyOf<A>, FlowValueOf<A>) {
    let a = |ip: IpAddr| A::from_ip(ip).expect("an address of the flow's family");
    let key = FlowKeyOf {
        saddr_be: a(target.0),
        daddr_be: a(client.0),
        sport_be: target.1.to_be(),
        dport_be: client.1.to_be(),
        proto,
        _pad: [0; 3],
    };
    let value = FlowValueOf {
        orig_addr_be: a(published.0),
        orig_port_be: published.1.to_be(),
        flags: 0,
        stats_slot: slot,
        client_addr_be: caller.map_or_else(A::default, a),
    };
    (key, value)
}

impl Net {
    pub fn at(&self, s: Sym) -> IpAddr {
        match s {
            Sym::Host => self.host,
            Sym::Host2 => self.host2,
            Sym::Client => self.client,
            Sym::ClientNoNeigh => self.client_no_neigh,
            Sym::Remote => self.remote,
            Sym::C1 => self.c1,
            Sym::C2 => self.c2,
            Sym::Unroutable => self.unroutable,
            Sym::Lan0 => self.lan.0,
        }
    }

    /// The stats slot of forward `id` in this family.
    pub fn slot(&self, id: u32) -> u32 {
        self.slot_base + id
    }

    /// The host's addresses in this family.
    pub fn host_addrs(&self) -> [IpAddr; 3] {
        [self.host, self.host2, self.bridge]
    }

    /// `p`'s allowlist in this family, as networks.
    pub fn allowlist(&self, p: &Published) -> Vec<(IpAddr, u8)> {
        p.allow
            .iter()
            .map(|x| {
                let len = match self.family {
                    Family::V4 => x.v4,
                    Family::V6 => x.v6,
                };
                (mask(self.at(x.at), len), len)
            })
            .collect()
    }

    /// `p` in this family, as the daemon's publish grammar has it.
    pub fn forward(&self, p: &Published) -> Forward {
        // Every address: no address in IPv4, `::` in IPv6 (as a `Forward` keeps them).
        let every = match self.family {
            Family::V4 => None,
            Family::V6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        let addr = p.addr.map(|s| self.at(s)).or(every);
        let listen = Listen {
            addr,
            port: p.port,
            end: p.end,
            protocol: p.protocol,
        };
        let to = Target {
            addr: self.at(p.to),
            port: p.to_port,
            end: p.to_port_of(p.end),
        };
        let allow = self
            .allowlist(p)
            .iter()
            .map(|(a, len)| format!("{a}/{len}").parse::<AllowPrefix>().unwrap())
            .collect();
        Forward::new(listen, to).unwrap().with_allow(allow).unwrap()
    }

    /// The flow entry of `row` (`hairpin`: c1 called itself, the caller is the target).
    pub fn flow(&self, row: &FlowRow, hairpin: bool) -> FlowEntry {
        let &(t, tp, c, cp, proto, a, ap, id) = row;
        let caller = hairpin.then(|| self.at(t));
        self.flow_entry(
            (self.at(t), tp),
            (self.at(c), cp),
            proto,
            (self.at(a), ap),
            self.slot(id),
            caller,
        )
    }

    /// A flow entry of this family (see [`flow_of`]).
    pub fn flow_entry(
        &self,
        target: (IpAddr, u16),
        client: (IpAddr, u16),
        proto: u8,
        published: (IpAddr, u16),
        slot: u32,
        caller: Option<IpAddr>,
    ) -> FlowEntry {
        match self.family {
            Family::V4 => {
                let (k, v) = flow_of(target, client, proto, published, slot, caller);
                FlowEntry::V4(k, v)
            }
            Family::V6 => {
                let (k, v) = flow_of(target, client, proto, published, slot, caller);
                FlowEntry::V6(k, v)
            }
        }
    }

    /// The key of `row`'s replies in the local flow map of `A`'s family.
    pub fn local_flow_key<A: MapAddr>(&self, row: &LocalRow) -> FlowKeyOf<A> {
        let &(remote, rport, proto, host, port, _) = row;
        let a = |s: Sym| A::from_ip(self.at(s)).expect("an address of the family");
        FlowKeyOf {
            saddr_be: a(remote),
            daddr_be: a(host),
            sport_be: rport.to_be(),
            dport_be: port.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    /// Every flow present before any fixture runs.
    pub fn initial_flows(&self) -> impl Iterator<Item = FlowEntry> + '_ {
        let plain = FLOWS.iter().map(|r| self.flow(r, false));
        plain.chain(HAIRPIN_FLOWS.iter().map(|r| self.flow(r, true)))
    }

    /// Fills `dp`'s maps of this family, through the daemon's own map writers: [`FORWARDS`] in
    /// the active generation, [`STAGED`] in the other.
    pub fn fill(&self, dp: &mut Datapath) {
        for a in self.host_addrs() {
            dp.maps.set_host_addr(a).unwrap();
        }
        for p in FORWARDS {
            dp.maps
                .insert_forward(&self.forward(p), self.slot(p.id))
                .unwrap();
        }
        let staged = generation::other(dp.maps.active_generation().unwrap());
        for p in STAGED {
            dp.maps
                .write_forward(&self.forward(p), self.slot(p.id), staged)
                .unwrap();
        }
        for entry in self.initial_flows() {
            match entry {
                FlowEntry::V4(k, v) => dp.maps.insert_flow(k, v).unwrap(),
                FlowEntry::V6(k, v) => dp.maps.insert_flow(k, v).unwrap(),
            }
        }
        for row in LOCAL_FLOWS {
            let age = std::time::Duration::from_secs(row.5);
            match self.family {
                Family::V4 => dp
                    .maps
                    .insert_local_flow(self.local_flow_key::<u32>(row), age),
                Family::V6 => dp
                    .maps
                    .insert_local_flow(self.local_flow_key::<Ipv6Words>(row), age),
            }
            .unwrap();
        }
    }

    /// The shell commands that give the lab host this family's neighbours (and, for IPv6,
    /// addresses: the lab has IPv4 ones).
    pub fn lab_setup(&self) -> String {
        let (ip, addrs) = match self.family {
            Family::V4 => ("ip -4", String::new()),
            Family::V6 => (
                "ip -6",
                format!(
                    "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.all.forwarding=1 && \
                     ip -6 addr add {}/{} dev eth0 nodad && \
                     ip -6 addr add {}/{} dev docker0 nodad && ",
                    self.host, self.lan.1, self.bridge, self.bridge_net.1
                ),
            ),
        };
        format!(
            "{addrs}{ip} neigh replace {} lladdr {} dev eth0 nud permanent && \
             {ip} neigh replace {} lladdr {} dev docker0 nud permanent",
            self.client,
            mac(CLIENT_MAC),
            self.c1,
            mac(C1_MAC),
        )
    }
}

/// `m` as `ip link` writes it.
pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface index of `i`, given those of eth0, docker0 and the bridge port.
pub fn ifindex_of(i: Ingress, eth0: u32, docker0: u32, port: u32) -> u32 {
    match i {
        Ingress::Eth0 => eth0,
        Ingress::Docker0 => docker0,
        Ingress::Lo => 1,
        Ingress::Port => port,
    }
}
