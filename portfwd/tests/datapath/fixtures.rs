//! The fixture table: {name, input frame, expected output frame or "unchanged", expected
//! verdict}, in the style of Katran's `lib/testing`. See the world in `world.rs` (addresses,
//! MACs, published ports, flows present before the run).
//!
//! Expected outputs are built from a description of the translated packet, with every checksum
//! recomputed from scratch by `frame.rs`, never derived from the input's bytes.
//!
//! # Fragments
//! portfwd never translates part of a datagram. The first fragment of a datagram to a
//! published port (or of a reply) is dropped and counted `drop_fragment`; later fragments carry
//! no ports and pass untouched, `pass_fragment` (to the host's stack, which can never reassemble
//! them since their first fragment is gone). A fragmented datagram to a port that is not
//! published is not ours: its first fragment passes (`pass_no_forward`).
use std::net::Ipv4Addr;

use portfwd_common::{maps::Hook, reason::Reason};
use portfwd_model::{Direction, FlowEntry};

use super::frame::{ACK, Csum, ETH_P_ARP, FIN, L4, PSH, Pkt, RST, SYN, TCP, UDP};
use super::world::{
    BRIDGE, C1, C1_MAC, C2, CLIENT, CLIENT_MAC, CLIENT_NO_NEIGH, DOCKER0_MAC, ETH0_MAC, HOST,
    HOST2, Ingress, Program, REMOTE, TCP_8080, TCP_8080_HOST2, TCP_8081_BOUND, TCP_8082_HOST2_ONLY,
    TCP_8090_ALLOW, TCP_8443_SAME_PORT, TCP_9000_RANGE, TCP_9000_RANGE_HOST2, TCP_9001_SINGLE,
    TCP_9090_NO_NEIGH, UDP_5000_RANGE_ALLOW, UDP_5353, flow_key, flow_value, hairpin_flow_value,
};

/// What the program must leave in the frame.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The frame as it came (the verdict is pass or drop).
    Unchanged,
    /// The frame is redirected, rewritten to exactly these bytes.
    Output(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Fixture {
    pub category: &'static str,
    pub name: String,
    pub ingress: Ingress,
    pub input: Vec<u8>,
    pub expect: Expect,
    /// The verdict counter the frame must increment (and no other).
    pub reason: Reason,
    /// For a translated frame: the forward whose counters move, and in which direction.
    pub count: Option<(u32, Direction)>,
    /// For a forwarded frame: the flow entry that must exist afterwards.
    pub flow: Option<FlowEntry>,
    /// Where XDP's verdict differs from tc's beyond handing translations to tc when its egress
    /// cannot take XDP frames: the reason it counts, the frame left unchanged.
    pub xdp: Option<Reason>,
}

/// What a fixture expects from one program.
#[derive(Clone, Debug)]
pub struct Expected {
    pub expect: Expect,
    pub reason: Reason,
    pub count: Option<(u32, Direction)>,
    pub flow: Option<FlowEntry>,
}

impl Expected {
    fn untouched(reason: Reason) -> Expected {
        Expected {
            expect: Expect::Unchanged,
            reason,
            count: None,
            flow: None,
        }
    }
}

impl Fixture {
    fn untouched(
        category: &'static str,
        name: &str,
        ingress: Ingress,
        input: Pkt,
        reason: Reason,
    ) -> Fixture {
        Fixture {
            category,
            name: name.to_owned(),
            ingress,
            input: input.bytes(),
            expect: Expect::Unchanged,
            reason,
            count: None,
            flow: None,
            xdp: None,
        }
    }

    pub(crate) fn pass(
        category: &'static str,
        name: &str,
        ingress: Ingress,
        input: Pkt,
        reason: Reason,
    ) -> Fixture {
        assert!(!reason.is_drop(), "{name}: {} is a drop", reason.name());
        Fixture::untouched(category, name, ingress, input, reason)
    }

    pub(crate) fn drop(
        category: &'static str,
        name: &str,
        ingress: Ingress,
        input: Pkt,
        reason: Reason,
    ) -> Fixture {
        assert!(reason.is_drop(), "{name}: {} is not a drop", reason.name());
        Fixture::untouched(category, name, ingress, input, reason)
    }

    /// Client -> published port, arriving on eth0, becomes `output` (client -> target).
    fn forwarded(
        category: &'static str,
        name: &str,
        input: Pkt,
        output: Pkt,
        slot: u32,
    ) -> Fixture {
        let (isport, idport) = ports(&input);
        let (osport, odport) = ports(&output);
        assert_eq!(isport, osport, "{name}: the client's port is kept");
        let flow = FlowEntry::V4(
            flow_key((output.dst, odport), (output.src, osport), input.proto),
            flow_value((input.dst, idport), slot),
        );
        Fixture {
            category,
            name: name.to_owned(),
            ingress: Ingress::Eth0,
            input: input.bytes(),
            expect: Expect::Output(output.bytes()),
            reason: Reason::Forwarded,
            count: Some((slot, Direction::ToTarget)),
            flow: Some(flow),
            xdp: None,
        }
    }

    /// Target -> client, arriving on docker0, becomes `output` (published port -> client).
    pub(crate) fn replied(
        category: &'static str,
        name: &str,
        input: Pkt,
        output: Pkt,
        slot: u32,
    ) -> Fixture {
        Fixture {
            category,
            name: name.to_owned(),
            ingress: Ingress::Docker0,
            input: input.bytes(),
            expect: Expect::Output(output.bytes()),
            reason: Reason::Replied,
            count: Some((slot, Direction::ToClient)),
            flow: None,
            xdp: None,
        }
    }

    /// An ICMP error about a translated flow, arriving on `ingress`, becomes `output`.
    pub(crate) fn icmp_translated(
        category: &'static str,
        name: &str,
        ingress: Ingress,
        input: Pkt,
        output: Pkt,
        count: (u32, Direction),
    ) -> Fixture {
        Fixture {
            category,
            name: name.to_owned(),
            ingress,
            input: input.bytes(),
            expect: Expect::Output(output.bytes()),
            reason: Reason::IcmpErrorTranslated,
            count: Some(count),
            flow: None,
            xdp: None,
        }
    }

    /// A target calling its own published port (arriving on the bridge port) becomes `output`:
    /// published address:client port -> target. The flow remembers the caller.
    fn hairpinned(
        category: &'static str,
        name: &str,
        input: Pkt,
        output: Pkt,
        slot: u32,
    ) -> Fixture {
        let (isport, idport) = ports(&input);
        let (osport, odport) = ports(&output);
        assert_eq!(isport, osport, "{name}: the caller's port is kept");
        assert_eq!(input.src, output.dst, "{name}: a hairpin to itself");
        let flow = FlowEntry::V4(
            flow_key((output.dst, odport), (output.src, osport), input.proto),
            hairpin_flow_value((input.dst, idport), slot, input.src),
        );
        Fixture {
            category,
            name: name.to_owned(),
            ingress: Ingress::Port,
            input: input.bytes(),
            expect: Expect::Output(output.bytes()),
            reason: Reason::Hairpinned,
            count: Some((slot, Direction::ToTarget)),
            flow: Some(flow),
            xdp: None,
        }
    }

    /// The target's reply to its own hairpinned call (target -> published address) becomes
    /// `output` (published address:port -> target).
    pub(crate) fn hairpin_replied(
        category: &'static str,
        name: &str,
        ingress: Ingress,
        input: Pkt,
        output: Pkt,
        slot: u32,
    ) -> Fixture {
        Fixture {
            category,
            name: name.to_owned(),
            ingress,
            input: input.bytes(),
            expect: Expect::Output(output.bytes()),
            reason: Reason::HairpinReplied,
            count: Some((slot, Direction::ToClient)),
            flow: None,
            xdp: None,
        }
    }

    /// The frame arrives on `ingress` instead.
    pub(crate) fn on(mut self, ingress: Ingress) -> Fixture {
        self.ingress = ingress;
        self
    }

    /// The action the verdict implies.
    pub fn redirected(&self) -> bool {
        matches!(self.expect, Expect::Output(_))
    }

    /// XDP takes `reason` for this frame (and leaves it unchanged) where tc translates it or
    /// counts another reason.
    pub(crate) fn xdp(mut self, reason: Reason) -> Fixture {
        self.xdp = Some(reason);
        self
    }

    /// What `prog` must make of this fixture. tc: as written. XDP: the same, except where
    /// [`Fixture::xdp`] says otherwise, and except that a translation is handed to tc untouched
    /// (`pass_to_tc`) when the egress interface is not in `PF_XDP_EGRESS`.
    pub fn expected(&self, prog: &Program) -> Expected {
        if prog.hook == Hook::Xdp {
            if let Some(r) = self.xdp {
                return Expected::untouched(r);
            }
            if self.redirected() && !prog.xdp_egress {
                return Expected::untouched(Reason::PassToTc);
            }
        }
        Expected {
            expect: self.expect.clone(),
            reason: self.reason,
            count: self.count,
            flow: self.flow,
        }
    }
}

fn ports(p: &Pkt) -> (u16, u16) {
    match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (sport, dport),
        _ => panic!("no ports"),
    }
}

// Categories, as counted in the report.
const ORDINARY: &str = "ordinary traffic";
const NOT_OURS: &str = "not ours";
const OPTIONS: &str = "IPv4 options";
const FRAGMENTS: &str = "fragments";
pub const SHORT: &str = "cut short / malformed";
const SPECIAL: &str = "special values";
pub const CHECKSUMS: &str = "bad checksums";
const SPOOFING: &str = "spoofing";
const ICMP_ERRORS: &str = "ICMP errors";
const RANGES: &str = "port ranges, lookup order";
const ALLOWLISTS: &str = "allowlists";
const HAIRPIN: &str = "hairpin";

const CPORT: u16 = 40000;

/// A TCP segment from the client to the host's 8080, as it arrives on eth0.
fn c_tcp(flags: u8) -> Pkt {
    Pkt::tcp((CLIENT, CPORT), (HOST, 8080), flags).macs(CLIENT_MAC, ETH0_MAC)
}

/// A UDP datagram from the client to the host's 5353.
fn c_udp() -> Pkt {
    Pkt::udp((CLIENT, 40001), (HOST, 5353)).macs(CLIENT_MAC, ETH0_MAC)
}

/// A TCP segment from c1:3000 to the client, as it arrives on docker0.
fn r_tcp(flags: u8) -> Pkt {
    Pkt::tcp((C1, 3000), (CLIENT, CPORT), flags).macs(C1_MAC, DOCKER0_MAC)
}

fn r_udp() -> Pkt {
    Pkt::udp((C1, 53), (CLIENT, 40001))
        .macs(C1_MAC, DOCKER0_MAC)
        .payload(b"answer")
}

/// What a router makes of `p` towards c1: TTL - 1, MACs of docker0 -> c1.
pub(crate) fn via_docker0(p: Pkt) -> Pkt {
    let ttl = p.ttl - 1;
    p.ttl(ttl).macs(DOCKER0_MAC, C1_MAC)
}

/// What a router makes of `p` towards the client: TTL - 1, MACs of eth0 -> client.
pub(crate) fn via_eth0(p: Pkt) -> Pkt {
    let ttl = p.ttl - 1;
    p.ttl(ttl).macs(ETH0_MAC, CLIENT_MAC)
}

fn to_c1(p: Pkt, port: u16) -> Pkt {
    via_docker0(p.dst(C1, port))
}

fn from_host(p: Pkt, port: u16) -> Pkt {
    via_eth0(p.src(HOST, port))
}

pub(crate) fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// Typical SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const SYN_OPTIONS: [u8; 20] = [
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x03, 0x03, 0x07,
];

/// Finds a 16-bit word that, put at the end of the payload of both `input` and `output`, makes
/// `output`'s L4 checksum field come out as `want`.
fn payload_for_csum(input: Pkt, output: Pkt, want: u16) -> (Pkt, Pkt) {
    let csum_at = |p: &Pkt| {
        let f = p.bytes();
        let l4 = 14 + 20;
        let off = if p.proto == TCP { l4 + 16 } else { l4 + 6 };
        u16::from_be_bytes([f[off], f[off + 1]])
    };
    let base = input.payload.clone();
    for w in 0..=u16::MAX {
        let mut pl = base.clone();
        pl.extend_from_slice(&w.to_be_bytes());
        let out = output.clone().payload(&pl);
        if csum_at(&out) == want {
            return (input.payload(&pl), out);
        }
    }
    panic!("no payload gives checksum {want:#06x}");
}

/// The whole table.
pub fn all() -> Vec<Fixture> {
    let mut t = Vec::new();
    ordinary(&mut t);
    not_ours(&mut t);
    ip_options(&mut t);
    fragments(&mut t);
    cut_short(&mut t);
    special(&mut t);
    checksums(&mut t);
    spoofing(&mut t);
    icmp_errors(&mut t);
    ranges(&mut t);
    allowlists(&mut t);
    hairpin(&mut t);
    super::fixtures6::all(&mut t);
    t
}

fn ordinary(t: &mut Vec<Fixture>) {
    use Fixture as F;
    let c = ORDINARY;
    for (flags, what) in [
        (SYN, "SYN"),
        (ACK, "ACK"),
        (FIN | ACK, "FIN+ACK"),
        (RST, "RST"),
        (RST | ACK, "RST+ACK"),
    ] {
        t.push(F::forwarded(
            c,
            &format!("TCP {what} client -> host:8080 goes to c1:3000"),
            c_tcp(flags),
            to_c1(c_tcp(flags), 3000),
            TCP_8080,
        ));
    }
    let data = c_tcp(PSH | ACK).payload(&payload(100));
    t.push(F::forwarded(
        c,
        "TCP PSH+ACK with 100 bytes of data goes to c1:3000",
        data.clone(),
        to_c1(data, 3000),
        TCP_8080,
    ));
    let odd = c_tcp(PSH | ACK).payload(&payload(33));
    t.push(F::forwarded(
        c,
        "TCP with an odd-length payload goes to c1:3000",
        odd.clone(),
        to_c1(odd, 3000),
        TCP_8080,
    ));
    let syn = c_tcp(SYN).tcp_options(&SYN_OPTIONS);
    t.push(F::forwarded(
        c,
        "TCP SYN with MSS/SACK/timestamp/window-scale options: options kept",
        syn.clone(),
        to_c1(syn, 3000),
        TCP_8080,
    ));
    let new = c_tcp(SYN).src(CLIENT, 50123);
    t.push(F::forwarded(
        c,
        "TCP SYN from a new client port creates its flow",
        new.clone(),
        to_c1(new, 3000),
        TCP_8080,
    ));
    let remote = c_tcp(SYN).src(REMOTE, 40003);
    t.push(F::forwarded(
        c,
        "TCP SYN from a client the host cannot route to is still forwarded",
        remote.clone(),
        to_c1(remote, 3000),
        TCP_8080,
    ));
    let tos = c_tcp(SYN).tos(0xb8);
    t.push(F::forwarded(
        c,
        "TCP with DSCP EF (TOS 0xb8): TOS kept",
        tos.clone(),
        to_c1(tos, 3000),
        TCP_8080,
    ));

    for (flags, what) in [
        (SYN | ACK, "SYN+ACK"),
        (ACK, "ACK"),
        (FIN | ACK, "FIN+ACK"),
        (RST, "RST"),
    ] {
        t.push(F::replied(
            c,
            &format!("TCP {what} c1:3000 -> client comes from host:8080"),
            r_tcp(flags),
            from_host(r_tcp(flags), 8080),
            TCP_8080,
        ));
    }
    let data = r_tcp(PSH | ACK).payload(&payload(512));
    t.push(F::replied(
        c,
        "TCP reply with 512 bytes of data comes from host:8080",
        data.clone(),
        from_host(data, 8080),
        TCP_8080,
    ));

    t.push(F::forwarded(
        c,
        "UDP client -> host:5353 goes to c1:53",
        c_udp(),
        to_c1(c_udp(), 53),
        UDP_5353,
    ));
    t.push(F::replied(
        c,
        "UDP c1:53 -> client comes from host:5353",
        r_udp(),
        from_host(r_udp(), 5353),
        UDP_5353,
    ));
    let empty = c_udp().payload(&[]);
    t.push(F::forwarded(
        c,
        "UDP with no payload (length 8) goes to c1:53",
        empty.clone(),
        to_c1(empty, 53),
        UDP_5353,
    ));
    let odd = c_udp().payload(&payload(41));
    t.push(F::forwarded(
        c,
        "UDP with an odd-length payload goes to c1:53",
        odd.clone(),
        to_c1(odd, 53),
        UDP_5353,
    ));
    let padded = c_udp().payload(b"q").padding(60 - (14 + 20 + 8 + 1));
    t.push(F::forwarded(
        c,
        "UDP in a frame with Ethernet padding to 60 bytes: padding kept",
        padded.clone(),
        to_c1(padded, 53),
        UDP_5353,
    ));

    let bound = c_tcp(SYN).dst(HOST, 8081);
    t.push(F::forwarded(
        c,
        "TCP to a forward bound to 10.77.0.1:8081 goes to c1:3001",
        bound.clone(),
        to_c1(bound, 3001),
        TCP_8081_BOUND,
    ));
    let exact = c_tcp(SYN).dst(HOST2, 8080);
    t.push(F::forwarded(
        c,
        "TCP to 10.77.0.10:8080: the forward bound to that address wins over *:8080",
        exact.clone(),
        to_c1(exact, 3002),
        TCP_8080_HOST2,
    ));
    let only = c_tcp(SYN).dst(HOST2, 8082);
    t.push(F::forwarded(
        c,
        "TCP to 10.77.0.10:8082 (bound to that address only) goes to c1:3003",
        only.clone(),
        to_c1(only, 3003),
        TCP_8082_HOST2_ONLY,
    ));
    let reply = Pkt::tcp((C1, 3002), (CLIENT, 40004), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "TCP reply of the flow to 10.77.0.10:8080 comes from 10.77.0.10:8080",
        reply.clone(),
        via_eth0(reply.src(HOST2, 8080)),
        TCP_8080_HOST2,
    ));
    let same = c_tcp(SYN).dst(HOST, 8443);
    t.push(F::forwarded(
        c,
        "TCP 8443 -> c1:8443: only the address changes",
        same.clone(),
        to_c1(same, 8443),
        TCP_8443_SAME_PORT,
    ));

    let unresolved = c_tcp(SYN).dst(HOST, 9090);
    let out = unresolved.clone().dst(C2, 80);
    let out = {
        let ttl = out.ttl - 1;
        out.ttl(ttl)
    };
    t.push(F::forwarded(c, "TCP to a target without a neighbour entry: translated, MACs left to bpf_redirect_neigh", unresolved, out, TCP_9090_NO_NEIGH).xdp(Reason::PassToTc));
    let reply = Pkt::tcp((C1, 3000), (CLIENT_NO_NEIGH, 40002), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    let out = reply.clone().src(HOST, 8080);
    let out = {
        let ttl = out.ttl - 1;
        out.ttl(ttl)
    };
    t.push(F::replied(c, "TCP reply to a client without a neighbour entry: translated, MACs left to bpf_redirect_neigh", reply, out, TCP_8080).xdp(Reason::PassToTc));

    t.push(F::drop(
        c,
        "UDP to a forward whose target has no route: dropped",
        Ingress::Eth0,
        c_udp().dst(HOST, 7070),
        Reason::DropNoRoute,
    ));
    let reply = Pkt::tcp((C1, 3000), (REMOTE, 40003), ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::drop(
        c,
        "TCP reply to a client the host has no route to: dropped",
        Ingress::Docker0,
        reply,
        Reason::DropNoRoute,
    ));

    // The egress MTU is 1500; a tc program may redirect frames up to MTU + 14 + 4 (a VLAN tag's
    // worth of slack in the kernel's is_skb_forwardable). XDP's FIB lookup compares the IPv4
    // length with the MTU: 1514-byte frames at most.
    let max = c_tcp(ACK).payload(&payload(1518 - 54));
    t.push(F::forwarded(c, "TCP in a 1518-byte frame (MTU + Ethernet + VLAN slack) is forwarded by tc; XDP: frag needed", max.clone(), to_c1(max, 3000), TCP_8080).xdp(Reason::DropFragNeeded));
    let max = c_tcp(ACK).payload(&payload(1514 - 54));
    t.push(F::forwarded(
        c,
        "TCP in a 1514-byte frame (IPv4 length = MTU) is forwarded",
        max.clone(),
        to_c1(max, 3000),
        TCP_8080,
    ));
    let over = c_tcp(ACK).payload(&payload(1515 - 54));
    t.push(
        F::forwarded(
            c,
            "TCP in a 1515-byte frame: tc forwards it (within the slack); XDP: frag needed",
            over.clone(),
            to_c1(over, 3000),
            TCP_8080,
        )
        .xdp(Reason::DropFragNeeded),
    );
    t.push(F::drop(
        c,
        "TCP in a 1519-byte frame does not fit the egress MTU",
        Ingress::Eth0,
        c_tcp(ACK).payload(&payload(1519 - 54)),
        Reason::DropFragNeeded,
    ));
    let big_reply = r_tcp(ACK).payload(&payload(1519 - 54));
    t.push(F::drop(
        c,
        "TCP reply in a 1519-byte frame does not fit the egress MTU",
        Ingress::Docker0,
        big_reply,
        Reason::DropFragNeeded,
    ));
}

fn not_ours(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0, Lo};
    let c = NOT_OURS;
    t.push(F::pass(
        c,
        "TCP to host:22 (not published)",
        Eth0,
        c_tcp(SYN).dst(HOST, 22),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "UDP to host:53 (not published)",
        Eth0,
        c_udp().dst(HOST, 53),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "UDP to host:8080 (published for TCP only)",
        Eth0,
        c_udp().dst(HOST, 8080),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "TCP to host:5353 (published for UDP only)",
        Eth0,
        c_tcp(SYN).dst(HOST, 5353),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "TCP to 10.77.0.1:8082 (published on 10.77.0.10 only)",
        Eth0,
        c_tcp(SYN).dst(HOST, 8082),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "TCP to 10.77.0.99:8080, not a host address",
        Eth0,
        c_tcp(SYN).dst(Ipv4Addr::new(10, 77, 0, 99), 8080),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "UDP to the LAN broadcast 10.77.0.255:5353",
        Eth0,
        c_udp().dst(Ipv4Addr::new(10, 77, 0, 255), 5353),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP to host:8080 arriving on docker0 (ports not exposed there)",
        Docker0,
        c_tcp(SYN).src(C1, 45000).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP to 172.17.0.1:8080 from a container",
        Docker0,
        c_tcp(SYN)
            .src(C1, 45000)
            .dst(BRIDGE, 8080)
            .macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP to host:8080 arriving on an interface portfwd does not know (lo)",
        Lo,
        c_tcp(SYN),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP c1:3000 -> client on a port with no flow",
        Docker0,
        r_tcp(ACK).dst(CLIENT, 40099),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "UDP c1:3000 -> client:40000 (the flow is TCP)",
        Docker0,
        Pkt::udp((C1, 3000), (CLIENT, CPORT)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP c1:3009 -> client:40000 (flows have other source ports)",
        Docker0,
        r_tcp(ACK).src(C1, 3009),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "ICMP echo request to the host",
        Eth0,
        Pkt::icmp(CLIENT, HOST, 8, 0, [0x12, 0x34, 0, 1])
            .macs(CLIENT_MAC, ETH0_MAC)
            .payload(b"ping"),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "ICMP echo reply from c1 to the client",
        Docker0,
        Pkt::icmp(C1, CLIENT, 0, 0, [0x12, 0x34, 0, 1]).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "GRE to the host",
        Eth0,
        Pkt::raw_ip(47, CLIENT, HOST, &[0, 0, 0x08, 0, 0x45, 0]).macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "SCTP to host:8080",
        Eth0,
        Pkt::raw_ip(
            132,
            CLIENT,
            HOST,
            &[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0],
        )
        .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotTcpUdp,
    ));
    let arp_req = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0x0a, 0x4d, 0, 2, 10, 77, 0, 2, 0, 0, 0, 0, 0, 0, 10, 77, 0,
        1,
    ];
    t.push(F::pass(
        c,
        "ARP request for the host",
        Eth0,
        Pkt::ether(ETH_P_ARP, &arp_req).macs(CLIENT_MAC, [0xff; 6]),
        Reason::PassNotIp,
    ));
    let mut arp_reply = arp_req;
    arp_reply[7] = 2;
    t.push(F::pass(
        c,
        "ARP reply",
        Eth0,
        Pkt::ether(ETH_P_ARP, &arp_reply).macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotIp,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP to [fd00::1]:8080, not a host address",
        Eth0,
        Pkt::tcp6(
            ("fd00::2".parse().unwrap(), 40000),
            ("fd00::1".parse().unwrap(), 8080),
            SYN,
        )
        .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotForUs,
    ));
    // In a test run the tag stays in the frame. On a real interface the stack strips it into
    // skb metadata before tc ingress; see the report on issue #5.
    t.push(F::pass(
        c,
        "802.1Q-tagged IPv4 TCP to host:8080 (tag in the frame)",
        Eth0,
        c_tcp(SYN).vlan(100),
        Reason::PassNotIp,
    ));
    t.push(F::pass(
        c,
        "802.1ad (QinQ) frame",
        Eth0,
        Pkt::ether(0x88a8, &[0, 100, 0x81, 0, 0, 200, 0x08, 0, 0x45]).macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotIp,
    ));
    t.push(F::pass(
        c,
        "LLDP frame",
        Eth0,
        Pkt::ether(0x88cc, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1, 0, 0])
            .macs(CLIENT_MAC, [0x01, 0x80, 0xc2, 0, 0, 0x0e]),
        Reason::PassNotIp,
    ));
    t.push(F::pass(
        c,
        "an IPv6 header in a frame typed IPv4 (version 6)",
        Eth0,
        c_tcp(SYN).version(6),
        Reason::PassMalformed,
    ));
}

fn ip_options(t: &mut Vec<Fixture>) {
    use Fixture as F;
    let c = OPTIONS;
    let nops = [1, 1, 1, 0]; // NOP NOP NOP EOL
    let syn = c_tcp(SYN).options(&nops);
    t.push(F::forwarded(
        c,
        "TCP SYN with IHL 6 (NOPs): L4 found after the options, options kept",
        syn.clone(),
        to_c1(syn, 3000),
        TCP_8080,
    ));
    // Record route with room for 9 addresses: 39 bytes + EOL = IHL 15, the longest header.
    let mut rr = vec![7, 39, 4];
    rr.extend_from_slice(&[0; 36]);
    rr.push(0);
    let udp = c_udp().options(&rr);
    t.push(F::forwarded(
        c,
        "UDP with IHL 15 (record route): options kept",
        udp.clone(),
        to_c1(udp, 53),
        UDP_5353,
    ));
    // Router alert (4 bytes) + timestamp (12 bytes) = IHL 9.
    let ra_ts = [0x94, 4, 0, 0, 0x44, 12, 5, 0, 0, 0, 0, 1, 0, 0, 0, 2];
    let reply = r_tcp(ACK).options(&ra_ts);
    t.push(F::replied(
        c,
        "TCP reply with IHL 9 (router alert, timestamp): options kept",
        reply.clone(),
        from_host(reply, 8080),
        TCP_8080,
    ));
    // EOL then padding bytes that, read as ports at the fixed-header offset, would say 8080.
    let decoy = [0, 0, 0x1f, 0x90];
    t.push(F::pass(
        c,
        "TCP to host:22 with IHL 6 whose option bytes look like port 8080",
        Ingress::Eth0,
        c_tcp(SYN).dst(HOST, 22).options(&decoy),
        Reason::PassNoForward,
    ));
    let decoy22 = [0, 0, 0, 22];
    let syn = c_tcp(SYN).options(&decoy22);
    t.push(F::forwarded(
        c,
        "TCP to host:8080 with IHL 6 whose option bytes look like port 22",
        syn.clone(),
        to_c1(syn, 3000),
        TCP_8080,
    ));
    let mut lsrr = vec![0x83, 7, 4, 10, 77, 0, 9];
    lsrr.push(0);
    t.push(F::forwarded(
        c,
        "UDP with loose source route option (IHL 7): kept, not acted on",
        c_udp().options(&lsrr),
        to_c1(c_udp().options(&lsrr), 53),
        UDP_5353,
    ));
}

fn fragments(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = FRAGMENTS;
    let first = c_tcp(ACK).payload(&payload(64)).fragment(true, 0);
    t.push(F::drop(
        c,
        "first fragment of a TCP datagram to host:8080",
        Eth0,
        first,
        Reason::DropFragment,
    ));
    // The UDP length is the whole datagram's (1200), the fragment carries 64 bytes of it.
    let first = c_udp()
        .payload(&payload(56))
        .udp_len(1200)
        .fragment(true, 0);
    t.push(F::drop(
        c,
        "first fragment of a UDP datagram to host:5353 (UDP length > fragment)",
        Eth0,
        first,
        Reason::DropFragment,
    ));
    let first = r_udp()
        .payload(&payload(56))
        .udp_len(1200)
        .fragment(true, 0);
    t.push(F::drop(
        c,
        "first fragment of a UDP reply c1:53 -> client",
        Docker0,
        first,
        Reason::DropFragment,
    ));
    let first = c_tcp(ACK).payload(&payload(16)).fragment(true, 0).ttl(1);
    t.push(F::drop(
        c,
        "first fragment to host:8080 with TTL 1: the fragment check comes first",
        Eth0,
        first,
        Reason::DropFragment,
    ));
    // A first fragment may end inside the TCP options: doff is checked against the datagram.
    let first = c_tcp(SYN).doff(15).fragment(true, 0);
    t.push(F::drop(
        c,
        "first fragment to host:8080 with TCP data offset beyond the fragment",
        Eth0,
        first,
        Reason::DropFragment,
    ));
    let first = c_tcp(ACK)
        .dst(HOST, 22)
        .payload(&payload(64))
        .fragment(true, 0);
    t.push(F::pass(
        c,
        "first fragment to host:22 (not published): the host reassembles it",
        Eth0,
        first,
        Reason::PassNoForward,
    ));
    let middle = Pkt::raw_ip(UDP, CLIENT, HOST, &payload(64))
        .macs(CLIENT_MAC, ETH0_MAC)
        .fragment(true, 185);
    t.push(F::pass(
        c,
        "middle fragment (offset 1480) of a UDP datagram to the host",
        Eth0,
        middle,
        Reason::PassFragment,
    ));
    let last = Pkt::raw_ip(UDP, CLIENT, HOST, &payload(40))
        .macs(CLIENT_MAC, ETH0_MAC)
        .fragment(false, 185);
    t.push(F::pass(
        c,
        "last fragment (offset 1480) of a UDP datagram to the host",
        Eth0,
        last,
        Reason::PassFragment,
    ));
    // Bytes that look like a UDP header to 5353 at the start of a later fragment.
    let decoy = Pkt::raw_ip(
        UDP,
        CLIENT,
        HOST,
        &[0x9c, 0x41, 0x14, 0xe9, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    )
    .macs(CLIENT_MAC, ETH0_MAC)
    .fragment(false, 1);
    t.push(F::pass(
        c,
        "later fragment whose data looks like a UDP header to 5353: no ports read",
        Eth0,
        decoy,
        Reason::PassFragment,
    ));
    let last = Pkt::raw_ip(TCP, C1, CLIENT, &payload(24))
        .macs(C1_MAC, DOCKER0_MAC)
        .fragment(false, 3);
    t.push(F::pass(
        c,
        "last fragment of a TCP reply c1 -> client",
        Docker0,
        last,
        Reason::PassFragment,
    ));
    let icmp_first = Pkt::icmp(CLIENT, HOST, 8, 0, [0, 1, 0, 1])
        .macs(CLIENT_MAC, ETH0_MAC)
        .payload(&payload(64))
        .fragment(true, 0);
    t.push(F::pass(
        c,
        "first fragment of an ICMP echo to the host",
        Eth0,
        icmp_first,
        Reason::PassFragment,
    ));
    let whole = c_tcp(SYN).fragment(false, 0);
    t.push(F::forwarded(
        c,
        "a whole datagram without DF (MF 0, offset 0) is forwarded, DF stays clear",
        whole.clone(),
        to_c1(whole, 3000),
        TCP_8080,
    ));
}

fn cut_short(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = SHORT;
    let m = Reason::PassMalformed;
    // Truncated at each header boundary; the IPv4 total length still says 40 (TCP) / 33 (UDP).
    // (BPF_PROG_TEST_RUN refuses IPv4 frames shorter than 14 + 20 bytes: see the sweep.)
    t.push(F::pass(
        c,
        "IPv4 TCP cut after the IPv4 header (14 + 20)",
        Eth0,
        c_tcp(SYN).cut(34),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 TCP cut inside the TCP header (14 + 20 + 12)",
        Eth0,
        c_tcp(SYN).cut(46),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 TCP cut one byte short of the TCP header (14 + 20 + 19)",
        Eth0,
        c_tcp(SYN).cut(53),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 UDP cut one byte short of the UDP header (14 + 20 + 7)",
        Eth0,
        c_udp().cut(41),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 UDP cut after the UDP header, before the payload",
        Eth0,
        c_udp().cut(42),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 with IHL 15 cut inside its options",
        Eth0,
        c_udp().options(&[1; 40]).cut(14 + 40),
        m,
    ));
    t.push(F::pass(
        c,
        "TCP reply cut inside the TCP header",
        Docker0,
        r_tcp(SYN | ACK).cut(50),
        m,
    ));
    t.push(F::pass(
        c,
        "ARP cut after the Ethernet header (14 bytes)",
        Eth0,
        Pkt::ether(ETH_P_ARP, &[]),
        Reason::PassNotIp,
    ));
    // Lengths consistent with the frame, but too short for the L4 header.
    t.push(F::pass(
        c,
        "IPv4 total length 30: a 10-byte TCP header",
        Eth0,
        c_tcp(SYN).cut(44).total_len(30),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 total length 24: a 4-byte UDP header",
        Eth0,
        c_udp().cut(38).total_len(24),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 header only (total length 20), protocol TCP",
        Eth0,
        c_tcp(SYN).cut(34).total_len(20),
        m,
    ));
    // Bad IPv4 header lengths.
    for ihl in [0u8, 1, 4] {
        t.push(F::pass(
            c,
            &format!("IHL {ihl} (< 5)"),
            Eth0,
            c_tcp(SYN).ihl(ihl),
            m,
        ));
    }
    t.push(F::pass(
        c,
        "IHL 15 with no options: the header would run into the TCP header",
        Eth0,
        c_tcp(SYN).ihl(15).total_len(40),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 total length 19 (< IHL)",
        Eth0,
        c_tcp(SYN).total_len(19),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 total length 0",
        Eth0,
        c_tcp(SYN).total_len(0),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 total length one byte beyond the frame",
        Eth0,
        c_tcp(SYN).total_len(41),
        m,
    ));
    t.push(F::pass(
        c,
        "IPv4 total length 65535 in a short frame",
        Eth0,
        c_udp().total_len(65535),
        m,
    ));
    // TCP data offset.
    for doff in [0u8, 4] {
        t.push(F::pass(
            c,
            &format!("TCP data offset {doff} (< 5)"),
            Eth0,
            c_tcp(SYN).doff(doff),
            m,
        ));
    }
    t.push(F::pass(
        c,
        "TCP data offset 15 beyond the segment",
        Eth0,
        c_tcp(SYN).doff(15),
        m,
    ));
    t.push(F::pass(
        c,
        "TCP data offset 6 with 20 bytes of segment",
        Docker0,
        r_tcp(ACK).doff(6),
        m,
    ));
    // UDP length.
    t.push(F::pass(
        c,
        "UDP length 7 (< header)",
        Eth0,
        c_udp().udp_len(7),
        m,
    ));
    t.push(F::pass(c, "UDP length 0", Eth0, c_udp().udp_len(0), m));
    t.push(F::pass(
        c,
        "UDP length one more than the IPv4 payload",
        Eth0,
        c_udp().udp_len(14),
        m,
    ));
    t.push(F::pass(
        c,
        "UDP length one less than the IPv4 payload",
        Eth0,
        c_udp().udp_len(12),
        m,
    ));
    t.push(F::pass(
        c,
        "UDP reply with a length beyond the IPv4 payload",
        Docker0,
        r_udp().udp_len(200),
        m,
    ));
}

fn special(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = SPECIAL;
    let zero = c_udp().l4_csum(Csum::Raw(0));
    t.push(F::forwarded(
        c,
        "UDP with checksum 0 (none) to host:5353: stays 0",
        zero.clone(),
        to_c1(zero, 53),
        UDP_5353,
    ));
    let zero = r_udp().l4_csum(Csum::Raw(0));
    t.push(F::replied(
        c,
        "UDP reply with checksum 0 (none): stays 0",
        zero.clone(),
        from_host(zero, 5353),
        UDP_5353,
    ));
    let (i, o) = payload_for_csum(c_udp().payload(b"abcd"), to_c1(c_udp(), 53), 0xffff);
    t.push(F::forwarded(
        c,
        "UDP whose translated checksum computes to 0 is sent as 0xffff",
        i,
        o,
        UDP_5353,
    ));
    let (i, o) = payload_for_csum(
        c_tcp(PSH | ACK).payload(b"abcd"),
        to_c1(c_tcp(PSH | ACK), 3000),
        0,
    );
    t.push(F::forwarded(
        c,
        "TCP whose translated checksum is 0x0000 (valid for TCP)",
        i,
        o,
        TCP_8080,
    ));
    let (i, o) = payload_for_csum(r_udp().payload(b"abcd"), from_host(r_udp(), 5353), 0xffff);
    t.push(F::replied(
        c,
        "UDP reply whose translated checksum computes to 0 is sent as 0xffff",
        i,
        o,
        UDP_5353,
    ));
    t.push(F::drop(
        c,
        "TCP to host:8080 with TTL 1",
        Eth0,
        c_tcp(SYN).ttl(1),
        Reason::DropTtlExceeded,
    ));
    t.push(F::drop(
        c,
        "TCP to host:8080 with TTL 0",
        Eth0,
        c_tcp(SYN).ttl(0),
        Reason::DropTtlExceeded,
    ));
    t.push(F::drop(
        c,
        "UDP to host:5353 with TTL 1",
        Eth0,
        c_udp().ttl(1),
        Reason::DropTtlExceeded,
    ));
    t.push(F::drop(
        c,
        "TCP reply with TTL 1",
        Docker0,
        r_tcp(ACK).ttl(1),
        Reason::DropTtlExceeded,
    ));
    let two = c_tcp(SYN).ttl(2);
    t.push(F::forwarded(
        c,
        "TCP with TTL 2 leaves with TTL 1",
        two.clone(),
        to_c1(two, 3000),
        TCP_8080,
    ));
    let max = c_tcp(SYN).ttl(255);
    t.push(F::forwarded(
        c,
        "TCP with TTL 255 leaves with TTL 254",
        max.clone(),
        to_c1(max, 3000),
        TCP_8080,
    ));
    t.push(F::pass(
        c,
        "TCP with TTL 1 to host:22 (the host's own traffic)",
        Eth0,
        c_tcp(SYN).dst(HOST, 22).ttl(1),
        Reason::PassNoForward,
    ));
    let high = c_tcp(SYN).src(CLIENT, 65535);
    t.push(F::forwarded(
        c,
        "TCP from client port 65535",
        high.clone(),
        to_c1(high, 3000),
        TCP_8080,
    ));
}

fn checksums(t: &mut Vec<Fixture>) {
    use Fixture as F;
    let c = CHECKSUMS;
    for k in [1u16, 0x1234, 0xfffe] {
        let bad = c_tcp(SYN).l4_csum(Csum::OffBy(k));
        t.push(F::forwarded(
            c,
            &format!("TCP checksum off by {k:#06x}: stays off by {k:#06x}"),
            bad.clone(),
            to_c1(bad, 3000),
            TCP_8080,
        ));
    }
    let bad = c_udp().l4_csum(Csum::OffBy(7));
    t.push(F::forwarded(
        c,
        "UDP checksum off by 7: stays off by 7",
        bad.clone(),
        to_c1(bad, 53),
        UDP_5353,
    ));
    let bad = c_tcp(SYN).ip_csum(Csum::OffBy(0x0101));
    t.push(F::forwarded(
        c,
        "IPv4 header checksum off by 0x0101: stays off by 0x0101",
        bad.clone(),
        to_c1(bad, 3000),
        TCP_8080,
    ));
    let bad = r_tcp(ACK)
        .ip_csum(Csum::OffBy(0x8000))
        .l4_csum(Csum::OffBy(0x00ff));
    t.push(F::replied(
        c,
        "TCP reply with both checksums wrong: both stay exactly as wrong",
        bad.clone(),
        from_host(bad, 8080),
        TCP_8080,
    ));
    let bad = r_udp().l4_csum(Csum::OffBy(0x4242));
    t.push(F::replied(
        c,
        "UDP reply checksum off by 0x4242: stays off by 0x4242",
        bad.clone(),
        from_host(bad, 5353),
        UDP_5353,
    ));
}

fn spoofing(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = SPOOFING;
    let lo = Ipv4Addr::LOCALHOST;
    let d = Reason::DropLoopbackDst;
    t.push(F::drop(
        c,
        "TCP to 127.0.0.1:8080 from outside",
        Eth0,
        c_tcp(SYN).dst(lo, 8080),
        d,
    ));
    t.push(F::drop(
        c,
        "UDP to 127.255.255.254:5353 from outside",
        Eth0,
        c_udp().dst(Ipv4Addr::new(127, 255, 255, 254), 5353),
        d,
    ));
    t.push(F::drop(
        c,
        "TCP to 127.0.0.1:22 (not published) from outside",
        Eth0,
        c_tcp(SYN).dst(lo, 22),
        d,
    ));
    t.push(F::drop(
        c,
        "ICMP echo to 127.0.0.1 from outside",
        Eth0,
        Pkt::icmp(CLIENT, lo, 8, 0, [0, 1, 0, 1]).macs(CLIENT_MAC, ETH0_MAC),
        d,
    ));
    t.push(F::drop(
        c,
        "TCP to 127.0.0.1:8080 from a container (docker0)",
        Docker0,
        c_tcp(SYN)
            .src(C1, 45000)
            .dst(lo, 8080)
            .macs(C1_MAC, DOCKER0_MAC),
        d,
    ));
    let frag = Pkt::raw_ip(UDP, CLIENT, lo, &payload(16))
        .macs(CLIENT_MAC, ETH0_MAC)
        .fragment(false, 10);
    t.push(F::drop(c, "later fragment to 127.0.0.1", Eth0, frag, d));
    t.push(F::pass(
        c,
        "TCP to 128.0.0.1:8080 (outside 127/8)",
        Eth0,
        c_tcp(SYN).dst(Ipv4Addr::new(128, 0, 0, 1), 8080),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "TCP to 126.255.255.255:8080 (outside 127/8)",
        Eth0,
        c_tcp(SYN).dst(Ipv4Addr::new(126, 255, 255, 255), 8080),
        Reason::PassNotForUs,
    ));
}

/// What an ICMP error quotes of `p`: its IPv4 packet (no Ethernet header), cut to `len` bytes.
fn quote(p: &Pkt, len: Option<usize>) -> Vec<u8> {
    let mut b = p.bytes()[14..].to_vec();
    if let Some(n) = len {
        b.truncate(n);
    }
    b
}

/// ICMP errors about translated flows. The quote is what the complaining host saw: the
/// translated packet (towards the client) or the translated reply (towards the target). Both
/// expected quotes are built as the packet the receiver sent, checksums computed from scratch,
/// so a correct translation restores them exactly (TTL as it was when quoted).
fn icmp_errors(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = ICMP_ERRORS;
    let frag_needed = |mtu: u16| {
        let m = mtu.to_be_bytes();
        [0, 0, m[0], m[1]]
    };
    let to_client = (TCP_8080, Direction::ToClient);
    // The client's segment as c1 received it (translated, TTL 63), and as the client sent it.
    let seen = Pkt::tcp((CLIENT, CPORT), (C1, 3000), ACK)
        .ttl(63)
        .payload(&payload(64));
    let sent = Pkt::tcp((CLIENT, CPORT), (HOST, 8080), ACK)
        .ttl(63)
        .payload(&payload(64));
    let err = |src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4], q: &[u8]| {
        Pkt::icmp(src, dst, kind, code, rest).payload(q)
    };

    let input =
        err(C1, CLIENT, 3, 4, frag_needed(1400), &quote(&seen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST,
        CLIENT,
        3,
        4,
        frag_needed(1400),
        &quote(&sent, None),
    ));
    t.push(F::icmp_translated(c, "frag needed (MTU 1400) from c1 about a forwarded TCP segment: quote reads client -> host:8080, source becomes the host", Docker0, input, output, to_client));

    let router = Ipv4Addr::new(172, 17, 0, 254);
    let input =
        err(router, CLIENT, 3, 4, frag_needed(1280), &quote(&seen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        router,
        CLIENT,
        3,
        4,
        frag_needed(1280),
        &quote(&sent, None),
    ));
    t.push(F::icmp_translated(c, "frag needed from a router before c1 about a forwarded TCP segment: quote translated, outer source kept", Docker0, input, output, to_client));

    let input =
        err(router, CLIENT, 11, 0, [0; 4], &quote(&seen, Some(28))).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(router, CLIENT, 11, 0, [0; 4], &quote(&sent, Some(28))));
    t.push(F::icmp_translated(c, "time exceeded quoting IPv4 header + 8 bytes (no TCP checksum quoted): addresses and ports translated", Docker0, input, output, to_client));

    let opts = [0x94, 4, 0, 0];
    let seen_opts = seen.clone().options(&opts);
    let sent_opts = sent.clone().options(&opts);
    let input = err(
        C1,
        CLIENT,
        3,
        4,
        frag_needed(1400),
        &quote(&seen_opts, Some(24 + 20)),
    )
    .macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST,
        CLIENT,
        3,
        4,
        frag_needed(1400),
        &quote(&sent_opts, Some(24 + 20)),
    ));
    t.push(F::icmp_translated(c, "frag needed quoting a segment with IPv4 options (quoted IHL 6): ports found after the options", Docker0, input, output, to_client));

    let useen = Pkt::udp((CLIENT, 40001), (C1, 53)).ttl(63);
    let usent = Pkt::udp((CLIENT, 40001), (HOST, 5353)).ttl(63);
    let input = err(C1, CLIENT, 3, 3, [0; 4], &quote(&useen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(HOST, CLIENT, 3, 3, [0; 4], &quote(&usent, None)));
    t.push(F::icmp_translated(c, "port unreachable from c1 about a forwarded UDP datagram: quoted UDP checksum translated back", Docker0, input, output, (UDP_5353, Direction::ToClient)));

    let z = |p: Pkt| p.l4_csum(Csum::Raw(0));
    let input =
        err(C1, CLIENT, 3, 3, [0; 4], &quote(&z(useen.clone()), None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST,
        CLIENT,
        3,
        3,
        [0; 4],
        &quote(&z(usent.clone()), None),
    ));
    t.push(F::icmp_translated(
        c,
        "port unreachable about a UDP datagram without checksum: quoted checksum stays 0",
        Docker0,
        input,
        output,
        (UDP_5353, Direction::ToClient),
    ));

    let seen2 = Pkt::tcp((CLIENT, 40004), (C1, 3002), SYN).ttl(63);
    let sent2 = Pkt::tcp((CLIENT, 40004), (HOST2, 8080), SYN).ttl(63);
    let input =
        err(C1, CLIENT, 3, 4, frag_needed(1400), &quote(&seen2, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST2,
        CLIENT,
        3,
        4,
        frag_needed(1400),
        &quote(&sent2, None),
    ));
    t.push(F::icmp_translated(
        c,
        "frag needed about the flow to 10.77.0.10:8080: quote and source say 10.77.0.10",
        Docker0,
        input,
        output,
        (TCP_8080_HOST2, Direction::ToClient),
    ));

    // Towards the target: the client complains about a reply it got from host:port.
    let rseen = Pkt::udp((HOST, 5353), (CLIENT, 40001))
        .ttl(63)
        .payload(b"answer");
    let rsent = Pkt::udp((C1, 53), (CLIENT, 40001))
        .ttl(63)
        .payload(b"answer");
    let input = err(CLIENT, HOST, 3, 3, [0; 4], &quote(&rseen, None)).macs(CLIENT_MAC, ETH0_MAC);
    let output = via_docker0(err(CLIENT, C1, 3, 3, [0; 4], &quote(&rsent, None)));
    t.push(F::icmp_translated(c, "port unreachable from the client about a UDP reply from host:5353: sent on to c1, quote reads c1:53 -> client", Eth0, input, output, (UDP_5353, Direction::ToTarget)));

    let rseen = Pkt::tcp((HOST, 8080), (CLIENT, CPORT), ACK)
        .ttl(63)
        .payload(&payload(200));
    let rsent = Pkt::tcp((C1, 3000), (CLIENT, CPORT), ACK)
        .ttl(63)
        .payload(&payload(200));
    let input = err(
        CLIENT,
        HOST,
        3,
        4,
        frag_needed(1200),
        &quote(&rseen, Some(128)),
    )
    .macs(CLIENT_MAC, ETH0_MAC);
    let output = via_docker0(err(
        CLIENT,
        C1,
        3,
        4,
        frag_needed(1200),
        &quote(&rsent, Some(128)),
    ));
    t.push(F::icmp_translated(c, "frag needed from the client about a TCP reply from host:8080: sent on to c1 (PMTU discovery on the target)", Eth0, input, output, (TCP_8080, Direction::ToTarget)));

    // Not ours, or not safe.
    let other = Pkt::tcp((CLIENT, CPORT), (C1, 3999), ACK).ttl(63);
    t.push(F::pass(
        c,
        "error quoting a flow portfwd never translated (client -> c1:3999)",
        Docker0,
        err(C1, CLIENT, 3, 3, [0; 4], &quote(&other, None)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    let unknown = Pkt::tcp((HOST, 8080), (CLIENT, 40999), ACK).ttl(63);
    t.push(F::pass(c, "error to the host about host:8080 -> client:40999 (no such flow): never forged into the target", Eth0, err(CLIENT, HOST, 3, 3, [0; 4], &quote(&unknown, None)).macs(CLIENT_MAC, ETH0_MAC), Reason::PassNoForward));
    let ssh = Pkt::tcp((HOST, 22), (CLIENT, CPORT), ACK).ttl(63);
    t.push(F::pass(
        c,
        "error to the host about its own traffic (host:22 -> client)",
        Eth0,
        err(CLIENT, HOST, 3, 4, frag_needed(1400), &quote(&ssh, None)).macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNoForward,
    ));
    let echo = Pkt::icmp(CLIENT, C1, 8, 0, [0, 1, 0, 1]).ttl(63);
    t.push(F::pass(
        c,
        "error quoting an ICMP echo",
        Docker0,
        err(C1, CLIENT, 3, 3, [0; 4], &quote(&echo, None)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "redirect (type 5) about a forwarded flow: not an error portfwd translates",
        Docker0,
        err(C1, CLIENT, 5, 1, [172, 17, 0, 9], &quote(&seen, None)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::drop(
        c,
        "frag needed about a forwarded flow with TTL 1",
        Docker0,
        err(C1, CLIENT, 3, 4, frag_needed(1400), &quote(&seen, None))
            .macs(C1_MAC, DOCKER0_MAC)
            .ttl(1),
        Reason::DropTtlExceeded,
    ));
    t.push(F::pass(
        c,
        "error whose quote ends inside the quoted ports (IPv4 header + 3 bytes)",
        Docker0,
        err(C1, CLIENT, 3, 4, frag_needed(1400), &quote(&seen, Some(23))).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "error whose quote has IHL 4",
        Docker0,
        err(
            C1,
            CLIENT,
            3,
            4,
            frag_needed(1400),
            &quote(&seen.clone().ihl(4), None),
        )
        .macs(C1_MAC, DOCKER0_MAC),
        Reason::PassMalformed,
    ));
}

/// What a router makes of `p` towards a target without a neighbour entry: TTL - 1, MACs left
/// to the kernel.
pub(crate) fn unresolved(p: Pkt) -> Pkt {
    let ttl = p.ttl - 1;
    p.ttl(ttl)
}

/// Port ranges (a range is stored as the prefixes covering it) and the lookup order: single
/// ports bound to the address, single ports on every address, ranges bound to the address,
/// ranges on every address.
fn ranges(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::Eth0;
    let c = RANGES;
    let to = |port: u16| c_tcp(SYN).dst(HOST, port);
    for (port, what) in [(9000, "first"), (9005, "middle"), (9010, "last")] {
        t.push(F::forwarded(
            c,
            &format!(
                "TCP to host:{port}, the {what} port of 9000-9010, goes to c1:{}",
                port - 2000
            ),
            to(port),
            to_c1(to(port), port - 2000),
            TCP_9000_RANGE,
        ));
    }
    for port in [8999, 9011] {
        t.push(F::pass(
            c,
            &format!("TCP to host:{port}, just outside 9000-9010"),
            Eth0,
            to(port),
            Reason::PassNoForward,
        ));
    }
    t.push(F::pass(
        c,
        "UDP to host:9005 (the range is published for TCP only)",
        Eth0,
        c_udp().dst(HOST, 9005),
        Reason::PassNoForward,
    ));
    let reply = Pkt::tcp((C1, 7005), (CLIENT, 40005), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "TCP reply c1:7005 -> client of the range flow comes from host:9005",
        reply.clone(),
        from_host(reply, 9005),
        TCP_9000_RANGE,
    ));
    for (port, what) in [(5000, "first"), (5042, "middle"), (5099, "last")] {
        let p = c_udp().dst(HOST, port).payload(b"query");
        t.push(F::forwarded(
            c,
            &format!(
                "UDP to host:{port}, the {what} port of 5000-5099, goes to c1:{}",
                port + 1000
            ),
            p.clone(),
            to_c1(p, port + 1000),
            UDP_5000_RANGE_ALLOW,
        ));
    }
    t.push(F::pass(
        c,
        "UDP to host:5100, just outside 5000-5099",
        Eth0,
        c_udp().dst(HOST, 5100),
        Reason::PassNoForward,
    ));
    let reply = Pkt::udp((C1, 6042), (CLIENT, 40008))
        .macs(C1_MAC, DOCKER0_MAC)
        .payload(b"answer");
    t.push(F::replied(
        c,
        "UDP reply c1:6042 -> client of the range flow comes from host:5042",
        reply.clone(),
        from_host(reply, 5042),
        UDP_5000_RANGE_ALLOW,
    ));

    // Lookup order. 9001 is published alone on every address and lies inside both ranges;
    // 10.77.0.10:9000-9003 is bound to one address inside *:9000-9010.
    let p = to(9001);
    t.push(F::forwarded(
        c,
        "TCP to host:9001: the single port *:9001 wins over the range *:9000-9010",
        p.clone(),
        to_c1(p, 3004),
        TCP_9001_SINGLE,
    ));
    let p = c_tcp(SYN).dst(HOST2, 9001);
    t.push(F::forwarded(
        c,
        "TCP to 10.77.0.10:9001: the single port on every address wins over the range bound to 10.77.0.10",
        p.clone(),
        to_c1(p, 3004),
        TCP_9001_SINGLE,
    ));
    for (port, target) in [(9002, 7102), (9003, 7103)] {
        let p = c_tcp(SYN).dst(HOST2, port);
        t.push(F::forwarded(
            c,
            &format!(
                "TCP to 10.77.0.10:{port}: the range bound to 10.77.0.10 wins over *:9000-9010"
            ),
            p.clone(),
            to_c1(p, target),
            TCP_9000_RANGE_HOST2,
        ));
    }
    let p = to(9002);
    t.push(F::forwarded(
        c,
        "TCP to 10.77.0.1:9002: the range bound to 10.77.0.10 does not apply, *:9000-9010 does",
        p.clone(),
        to_c1(p, 7002),
        TCP_9000_RANGE,
    ));
    let p = c_tcp(SYN).dst(HOST2, 9004);
    t.push(F::forwarded(
        c,
        "TCP to 10.77.0.10:9004, past the bound range: *:9000-9010",
        p.clone(),
        to_c1(p, 7004),
        TCP_9000_RANGE,
    ));
}

/// Source allowlists: checked before anything else for packets to a published port, never for
/// replies or ICMP errors.
fn allowlists(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::Eth0;
    let c = ALLOWLISTS;
    let d = Reason::DropSourceNotAllowed;
    let to = || c_tcp(SYN).dst(HOST, 8090);
    t.push(F::forwarded(
        c,
        "TCP to host:8090 from the client (allowed: 10.77.0.2/32) goes to c1:3005",
        to(),
        to_c1(to(), 3005),
        TCP_8090_ALLOW,
    ));
    let remote = to().src(REMOTE, 40003);
    t.push(F::forwarded(
        c,
        "TCP to host:8090 from 198.51.100.7 (allowed: 198.51.100.0/24) goes to c1:3005",
        remote.clone(),
        to_c1(remote, 3005),
        TCP_8090_ALLOW,
    ));
    let denied = to().src(CLIENT_NO_NEIGH, 40007);
    t.push(F::drop(
        c,
        "TCP to host:8090 from 10.77.0.3 (not allowed): dropped untouched",
        Eth0,
        denied.clone(),
        d,
    ));
    t.push(F::drop(
        c,
        "TCP to host:8090 from 198.51.101.7 (next to the allowed /24): dropped",
        Eth0,
        to().src(Ipv4Addr::new(198, 51, 101, 7), 40003),
        d,
    ));
    t.push(F::drop(
        c,
        "TCP with TTL 1 to host:8090 from a source not allowed: the allowlist comes first",
        Eth0,
        denied.clone().ttl(1),
        d,
    ));
    t.push(F::drop(
        c,
        "first fragment to host:8090 from a source not allowed: the allowlist comes first",
        Eth0,
        denied.payload(&payload(64)).fragment(true, 0),
        d,
    ));
    t.push(F::forwarded(
        c,
        "UDP to host:5042 from the client (allowed on the range 5000-5099) goes to c1:6042",
        c_udp().dst(HOST, 5042),
        to_c1(c_udp().dst(HOST, 5042), 6042),
        UDP_5000_RANGE_ALLOW,
    ));
    t.push(F::drop(
        c,
        "UDP to host:5042 (range with an allowlist) from 10.77.0.3: dropped",
        Eth0,
        c_udp().dst(HOST, 5042).src(CLIENT_NO_NEIGH, 40001),
        d,
    ));
    t.push(F::drop(
        c,
        "UDP to host:5099 from 198.51.100.7 (allowed on host:8090 only: lists are per forward): dropped",
        Eth0,
        c_udp().dst(HOST, 5099).src(REMOTE, 40001),
        d,
    ));
    t.push(F::pass(
        c,
        "TCP to host:22 (not published) from a source no allowlist has: passed",
        Eth0,
        c_tcp(SYN).dst(HOST, 22).src(CLIENT_NO_NEIGH, 40007),
        Reason::PassNoForward,
    ));

    // Replies come from the target, which no allowlist names.
    let reply = Pkt::tcp((C1, 3005), (CLIENT, 40006), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "TCP reply c1:3005 -> client of an allowlisted forward comes from host:8090",
        reply.clone(),
        from_host(reply, 8090),
        TCP_8090_ALLOW,
    ));
    let reply = Pkt::tcp((C1, 3005), (CLIENT_NO_NEIGH, 40007), ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(
        F::replied(
            c,
            "TCP reply to 10.77.0.3 (off the allowlist, flow from before it) still comes from host:8090",
            reply.clone(),
            unresolved(reply.src(HOST, 8090)),
            TCP_8090_ALLOW,
        )
        .xdp(Reason::PassToTc),
    );
    // An ICMP error from a source off the allowlist about a reply it got: sent on to c1.
    let rseen = Pkt::tcp((HOST, 8090), (CLIENT_NO_NEIGH, 40007), ACK).ttl(63);
    let rsent = Pkt::tcp((C1, 3005), (CLIENT_NO_NEIGH, 40007), ACK).ttl(63);
    let input = Pkt::icmp(CLIENT_NO_NEIGH, HOST, 3, 3, [0; 4])
        .payload(&quote(&rseen, None))
        .macs(CLIENT_MAC, ETH0_MAC);
    let output =
        via_docker0(Pkt::icmp(CLIENT_NO_NEIGH, C1, 3, 3, [0; 4]).payload(&quote(&rsent, None)));
    t.push(F::icmp_translated(
        c,
        "port unreachable from 10.77.0.3 (off the allowlist) about a reply from host:8090: sent on to c1",
        Eth0,
        input,
        output,
        (TCP_8090_ALLOW, Direction::ToTarget),
    ));
    // The allowlist is for packets to the published port, wherever they arrive.
    t.push(F::drop(
        c,
        "TCP to host:8090 from c1 itself (a hairpin; c1 is not allowed): dropped",
        Ingress::Port,
        to().src(C1, 45000).macs(C1_MAC, DOCKER0_MAC),
        d,
    ));
}

/// Hairpin: containers calling published ports through the host, arriving on the bridge port.
fn hairpin(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Port};
    let c = HAIRPIN;
    let c2_mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];
    // c1 calls its own published port: source becomes the address it called, so that c1's
    // answer comes back through the host.
    let call = |port: u16| Pkt::tcp((C1, 45000), (HOST, port), SYN).macs(C1_MAC, DOCKER0_MAC);
    let hp = |p: Pkt, from: Ipv4Addr, target_port: u16| {
        let sport = ports(&p).0;
        via_docker0(p.src(from, sport).dst(C1, target_port))
    };
    t.push(F::hairpinned(
        c,
        "TCP SYN c1 -> host:8080 (its own published port): 10.77.0.1 -> c1:3000",
        call(8080),
        hp(call(8080), HOST, 3000),
        TCP_8080,
    ));
    let data = call(8080).payload(&payload(77));
    t.push(F::hairpinned(
        c,
        "TCP with 77 bytes of data c1 -> host:8080: 10.77.0.1 -> c1:3000, checksums right",
        data.clone(),
        hp(data, HOST, 3000),
        TCP_8080,
    ));
    let bridge = Pkt::tcp((C1, 45005), (BRIDGE, 8080), SYN).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::hairpinned(
        c,
        "TCP c1 -> 172.17.0.1:8080 (the bridge's address): the source becomes 172.17.0.1",
        bridge.clone(),
        hp(bridge, BRIDGE, 3000),
        TCP_8080,
    ));
    let host2 = Pkt::tcp((C1, 45006), (HOST2, 8080), SYN).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::hairpinned(
        c,
        "TCP c1 -> 10.77.0.10:8080 (bound there, to c1:3002): the source becomes 10.77.0.10",
        host2.clone(),
        hp(host2, HOST2, 3002),
        TCP_8080_HOST2,
    ));
    let range = Pkt::tcp((C1, 45007), (HOST, 9010), SYN).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::hairpinned(
        c,
        "TCP c1 -> host:9010 (the last port of its range): 10.77.0.1 -> c1:7010",
        range.clone(),
        hp(range, HOST, 7010),
        TCP_9000_RANGE,
    ));
    let udp = Pkt::udp((C1, 45010), (HOST, 5353))
        .macs(C1_MAC, DOCKER0_MAC)
        .payload(b"self query");
    t.push(F::hairpinned(
        c,
        "UDP c1 -> host:5353: 10.77.0.1 -> c1:53",
        udp.clone(),
        hp(udp.clone(), HOST, 53),
        UDP_5353,
    ));
    let z = |p: Pkt| p.l4_csum(Csum::Raw(0));
    let udp0 = udp.src(C1, 45011);
    t.push(F::hairpinned(
        c,
        "UDP checksum 0 c1 -> host:5353, hairpinned: stays 0",
        z(udp0.clone()),
        z(hp(udp0, HOST, 53)),
        UDP_5353,
    ));
    t.push(F::drop(
        c,
        "TCP with TTL 1 c1 -> host:8080: dropped before any rewrite",
        Port,
        call(8080).src(C1, 45012).ttl(1),
        Reason::DropTtlExceeded,
    ));

    // c1's replies to the published address go back to c1 itself.
    let reply = Pkt::tcp((C1, 3000), (HOST, 45001), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    let back = |p: Pkt, port: u16| {
        let dport = ports(&p).1;
        via_docker0(p.src(HOST, port).dst(C1, dport))
    };
    t.push(F::hairpin_replied(
        c,
        "TCP SYN+ACK c1:3000 -> 10.77.0.1:45001 (hairpin flow): 10.77.0.1:8080 -> c1:45001",
        Port,
        reply.clone(),
        back(reply.clone(), 8080),
        TCP_8080,
    ));
    let data = reply.payload(&payload(300)).src(C1, 3000);
    t.push(F::hairpin_replied(
        c,
        "TCP reply with data c1:3000 -> 10.77.0.1:45001 arriving on docker0 (not exposed): translated the same",
        Docker0,
        data.clone(),
        back(data, 8080),
        TCP_8080,
    ));
    let ureply = Pkt::udp((C1, 53), (HOST, 45002))
        .macs(C1_MAC, DOCKER0_MAC)
        .payload(b"self answer");
    t.push(F::hairpin_replied(
        c,
        "UDP c1:53 -> 10.77.0.1:45002 (hairpin flow): 10.77.0.1:5353 -> c1:45002",
        Port,
        ureply.clone(),
        back(ureply, 5353),
        UDP_5353,
    ));

    // c2 calls c1's published port: forwarded, c2's address kept (c1's reply comes through the
    // host from c1's bridge port).
    let other = Pkt::tcp((C2, 45003), (HOST, 8080), SYN).macs(c2_mac, DOCKER0_MAC);
    t.push(
        F::forwarded(
            c,
            "TCP c2 -> host:8080 (c1's published port): c2 -> c1:3000, no source translation",
            other.clone(),
            to_c1(other, 3000),
            TCP_8080,
        )
        .on(Port),
    );
    let reply = Pkt::tcp((C1, 3000), (C2, 45004), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(
        F::replied(
            c,
            "TCP reply c1:3000 -> c2: comes from host:8080 (c2 has no neighbour entry)",
            reply.clone(),
            unresolved(reply.src(HOST, 8080)),
            TCP_8080,
        )
        .on(Port)
        .xdp(Reason::PassToTc),
    );

    // An ICMP error c1 sends about a hairpinned datagram it received: its own business.
    let seen = Pkt::udp((HOST, 45002), (C1, 53)).ttl(63).payload(b"q");
    t.push(F::pass(
        c,
        "port unreachable from c1 about a hairpinned datagram (10.77.0.1:45002 -> c1:53): not translated",
        Port,
        Pkt::icmp(C1, HOST, 3, 3, [0; 4])
            .payload(&quote(&seen, None))
            .macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNoForward,
    ));
}

/// Frames of every category, for seeding the fuzzer's mutations.
pub fn seeds() -> Vec<(Ingress, Vec<u8>)> {
    all().into_iter().map(|f| (f.ingress, f.input)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique() {
        let all = super::all();
        let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate fixture names");
    }
}
