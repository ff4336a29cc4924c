//! IPv6 fixtures: the same translation as IPv4 (`fixtures.rs`), in the IPv6 half of the world
//! (`world6.rs`). Expected frames are built from a description of the translated packet by
//! `frame.rs` (checksums over the IPv6 pseudo-header, computed from scratch).
//!
//! What is IPv6's own: no header checksum (only the L4 and ICMPv6 checksums change), the hop
//! limit, the fragment header (first fragment dropped, later ones passed, an atomic fragment
//! translated), other extension headers passed untouched (`pass_ipv6_ext_header`), UDP checksum
//! 0 (invalid over IPv6: `pass_malformed`), ::1, and ICMPv6 errors, whose checksum covers a
//! pseudo-header and absorbs the quoted address change (there is no quoted header checksum).
use std::net::Ipv6Addr;

use portfwd_common::reason::Reason;
use portfwd_model::Direction;

use super::fixtures::{Expect, Fixture, payload, unresolved, via_docker0, via_eth0};
use super::frame::{ACK, Csum, DEST_OPTS, FIN, HOP_BY_HOP, PSH, Pkt, ROUTING, SYN, TCP, UDP};
use super::world::{C1_MAC, CLIENT_MAC, DOCKER0_MAC, ETH0_MAC, Ingress};
use super::world6::{
    C1_6, C2_6, CLIENT6, HOST6, HOST6_2, REMOTE6, TCP6_8080, TCP6_8081_HOST2, TCP6_8090_ALLOW,
    TCP6_9000_RANGE, TCP6_9090_NO_NEIGH, UDP6_5353, flow6_key, flow6_value, hairpin_flow6_value,
};
use portfwd_model::FlowEntry;

const ORDINARY: &str = "IPv6 ordinary traffic";
const PARSING: &str = "IPv6 not ours, headers, malformed";
const ICMPV6_ERRORS: &str = "ICMPv6 errors";
const POLICY: &str = "IPv6 ranges, allowlists, hairpin";

const CPORT: u16 = 40000;

fn ports(p: &Pkt) -> (u16, u16) {
    match p.l4 {
        super::frame::L4::Tcp { sport, dport, .. } | super::frame::L4::Udp { sport, dport, .. } => {
            (sport, dport)
        }
        _ => panic!("no ports"),
    }
}

fn addrs(p: &Pkt) -> (Ipv6Addr, Ipv6Addr) {
    let v6 = p.v6.as_ref().expect("an IPv6 packet");
    (v6.src, v6.dst)
}

/// Client -> published port, arriving on `ingress`, becomes `output`; the flow remembers the
/// published address and port (and the caller, for a hairpin to itself).
fn forwarded(
    category: &'static str,
    name: &str,
    ingress: Ingress,
    input: Pkt,
    output: Pkt,
    slot: u32,
) -> Fixture {
    let (isport, idport) = ports(&input);
    let (osport, odport) = ports(&output);
    let (isrc, idst) = addrs(&input);
    let (osrc, odst) = addrs(&output);
    assert_eq!(isport, osport, "{name}: the client's port is kept");
    let hairpin = isrc == odst;
    let value = if hairpin {
        hairpin_flow6_value((idst, idport), slot, isrc)
    } else {
        flow6_value((idst, idport), slot)
    };
    Fixture {
        category,
        name: name.to_owned(),
        ingress,
        input: input.bytes(),
        expect: Expect::Output(output.bytes()),
        reason: if hairpin {
            Reason::Hairpinned
        } else {
            Reason::Forwarded
        },
        count: Some((slot, Direction::ToTarget)),
        flow: Some(FlowEntry::V6(
            flow6_key((odst, odport), (osrc, osport), input.proto),
            value,
        )),
        xdp: None,
    }
}

/// A TCP segment from the client to [host]:8080, as it arrives on eth0.
fn c_tcp(flags: u8) -> Pkt {
    Pkt::tcp6((CLIENT6, CPORT), (HOST6, 8080), flags).macs(CLIENT_MAC, ETH0_MAC)
}

fn c_udp() -> Pkt {
    Pkt::udp6((CLIENT6, 40001), (HOST6, 5353)).macs(CLIENT_MAC, ETH0_MAC)
}

/// A TCP segment from [c1]:3000 to the client, as it arrives on docker0.
fn r_tcp(flags: u8) -> Pkt {
    Pkt::tcp6((C1_6, 3000), (CLIENT6, CPORT), flags).macs(C1_MAC, DOCKER0_MAC)
}

fn r_udp() -> Pkt {
    Pkt::udp6((C1_6, 53), (CLIENT6, 40001))
        .macs(C1_MAC, DOCKER0_MAC)
        .payload(b"answer")
}

fn to_c1(p: Pkt, port: u16) -> Pkt {
    via_docker0(p.dst6(C1_6, port))
}

fn from_host(p: Pkt, port: u16) -> Pkt {
    via_eth0(p.src6(HOST6, port))
}

pub fn all(t: &mut Vec<Fixture>) {
    ordinary(t);
    parsing(t);
    icmp_errors(t);
    policy(t);
}

fn ordinary(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = ORDINARY;
    for (flags, what) in [(SYN, "SYN"), (ACK, "ACK"), (FIN | ACK, "FIN+ACK")] {
        t.push(forwarded(
            c,
            &format!("IPv6 TCP {what} to [host]:8080 -> [c1]:3000, client address kept"),
            Eth0,
            c_tcp(flags),
            to_c1(c_tcp(flags), 3000),
            TCP6_8080,
        ));
    }
    let data = c_tcp(PSH | ACK).payload(&payload(1000));
    t.push(forwarded(
        c,
        "IPv6 TCP with 1000 bytes of data",
        Eth0,
        data.clone(),
        to_c1(data, 3000),
        TCP6_8080,
    ));
    let marked = c_tcp(SYN).tos(0xb8);
    t.push(forwarded(
        c,
        "IPv6 TCP with traffic class EF and a flow label: both kept",
        Eth0,
        marked.clone(),
        to_c1(marked, 3000),
        TCP6_8080,
    ));
    t.push(forwarded(
        c,
        "IPv6 UDP to [host]:5353 -> [c1]:53",
        Eth0,
        c_udp(),
        to_c1(c_udp(), 53),
        UDP6_5353,
    ));
    let odd = c_udp().payload(b"odd");
    t.push(forwarded(
        c,
        "IPv6 UDP with an odd-length payload",
        Eth0,
        odd.clone(),
        to_c1(odd, 53),
        UDP6_5353,
    ));
    let bound = Pkt::tcp6((CLIENT6, 40004), (HOST6_2, 8081), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(forwarded(
        c,
        "IPv6 TCP to [fd77::10]:8081, bound to that address",
        Eth0,
        bound.clone(),
        to_c1(bound, 3001),
        TCP6_8081_HOST2,
    ));
    let padded = c_tcp(ACK).padding(6);
    t.push(forwarded(
        c,
        "IPv6 TCP with Ethernet padding after the payload: padding kept",
        Eth0,
        padded.clone(),
        to_c1(padded, 3000),
        TCP6_8080,
    ));
    let atomic = c_tcp(SYN).frag6(false, 0);
    t.push(forwarded(
        c,
        "IPv6 atomic fragment (offset 0, M clear) to [host]:8080: a whole datagram, translated",
        Eth0,
        atomic.clone(),
        to_c1(atomic, 3000),
        TCP6_8080,
    ));
    let no_neigh = Pkt::tcp6((CLIENT6, CPORT), (HOST6, 9090), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(
        forwarded(
            c,
            "IPv6 TCP to [host]:9090 -> [fd17::3]:80, no neighbour entry: the kernel resolves it",
            Eth0,
            no_neigh.clone(),
            unresolved(no_neigh.dst6(C2_6, 80)),
            TCP6_9090_NO_NEIGH,
        )
        .xdp(Reason::PassToTc),
    );

    for (flags, what) in [(SYN | ACK, "SYN+ACK"), (ACK, "ACK"), (FIN | ACK, "FIN+ACK")] {
        t.push(F::replied(
            c,
            &format!("IPv6 TCP {what} reply from [c1]:3000 -> from [host]:8080"),
            r_tcp(flags),
            from_host(r_tcp(flags), 8080),
            TCP6_8080,
        ));
    }
    t.push(F::replied(
        c,
        "IPv6 UDP reply from [c1]:53 -> from [host]:5353",
        r_udp(),
        from_host(r_udp(), 5353),
        UDP6_5353,
    ));
    let r2 = Pkt::tcp6((C1_6, 3001), (CLIENT6, 40004), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "IPv6 reply of the flow to [fd77::10]:8081: source is that address",
        r2.clone(),
        via_eth0(r2.src6(HOST6_2, 8081)),
        TCP6_8081_HOST2,
    ));
    t.push(F::drop(
        c,
        "IPv6 reply to a client the host has no route to",
        Docker0,
        Pkt::tcp6((C1_6, 3000), (REMOTE6, 40003), ACK).macs(C1_MAC, DOCKER0_MAC),
        Reason::DropNoRoute,
    ));
}

fn parsing(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = PARSING;
    let other = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x99);
    t.push(F::pass(
        c,
        "IPv6 TCP to [fd77::99]:8080, not a host address",
        Eth0,
        c_tcp(SYN).dst6(other, 8080),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP to [host]:1234, no forward",
        Eth0,
        c_tcp(SYN).dst6(HOST6, 1234),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP to [host]:8080 arriving on docker0 (not exposed)",
        Docker0,
        c_tcp(SYN).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    t.push(F::pass(
        c,
        "ICMPv6 echo request to the host",
        Eth0,
        Pkt::icmp6(CLIENT6, HOST6, 128, 0, [0, 1, 0, 1])
            .payload(b"ping")
            .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotTcpUdp,
    ));
    let mut ns = vec![0u8; 4];
    ns.extend_from_slice(&HOST6.octets());
    t.push(F::pass(
        c,
        "ICMPv6 neighbour solicitation for the host",
        Eth0,
        Pkt::icmp6(CLIENT6, "ff02::1:ff00:1".parse().unwrap(), 135, 0, [0; 4])
            .payload(&ns[4..])
            .ttl(255)
            .macs(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 1]),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "IPv6 next header 132 (SCTP) to the host",
        Eth0,
        Pkt::raw_ip6(132, CLIENT6, HOST6, &[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 0])
            .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNotTcpUdp,
    ));
    for (kind, what) in [
        (HOP_BY_HOP, "hop-by-hop options"),
        (ROUTING, "routing header"),
        (DEST_OPTS, "destination options"),
    ] {
        t.push(F::pass(
            c,
            &format!("IPv6 TCP to [host]:8080 behind a {what} header: passed untouched"),
            Eth0,
            c_tcp(SYN).ext6(kind),
            Reason::PassIpv6ExtHeader,
        ));
    }
    t.push(F::pass(
        c,
        "IPv6 fragment header followed by destination options: passed untouched",
        Eth0,
        c_tcp(SYN).frag6(false, 0).ext6(DEST_OPTS),
        Reason::PassIpv6ExtHeader,
    ));
    t.push(F::drop(
        c,
        "IPv6 first fragment (offset 0, M set) of a TCP segment to [host]:8080",
        Eth0,
        c_tcp(ACK).payload(&payload(64)).frag6(true, 0),
        Reason::DropFragment,
    ));
    t.push(F::drop(
        c,
        "IPv6 first fragment of a UDP datagram to [host]:5353",
        Eth0,
        c_udp().payload(&payload(64)).frag6(true, 0),
        Reason::DropFragment,
    ));
    t.push(F::pass(
        c,
        "IPv6 later fragment (offset 8) to the host",
        Eth0,
        Pkt::raw_ip6(UDP, CLIENT6, HOST6, &payload(48))
            .frag6(true, 8)
            .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassFragment,
    ));
    t.push(F::pass(
        c,
        "IPv6 last fragment (offset 185, M clear)",
        Eth0,
        Pkt::raw_ip6(TCP, CLIENT6, HOST6, &payload(20))
            .frag6(false, 185)
            .macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassFragment,
    ));
    t.push(F::pass(
        c,
        "IPv6 first fragment to [host]:1234, no forward",
        Eth0,
        c_tcp(ACK)
            .dst6(HOST6, 1234)
            .payload(&payload(64))
            .frag6(true, 0),
        Reason::PassNoForward,
    ));
    t.push(F::pass(
        c,
        "IPv6 payload length 1000 in a 74-byte frame",
        Eth0,
        c_tcp(SYN).total_len(1000),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 payload length 12: a 12-byte TCP header",
        Eth0,
        c_tcp(SYN).total_len(12),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP cut inside its header",
        Eth0,
        c_tcp(SYN).cut(14 + 40 + 10),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 fragment header cut short by the payload length",
        Eth0,
        c_tcp(SYN).frag6(false, 0).total_len(4),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "version 4 in a frame typed IPv6",
        Eth0,
        c_tcp(SYN).version(4),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP data offset 4",
        Eth0,
        c_tcp(SYN).doff(4),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 UDP length 9 for an 8-byte payload",
        Eth0,
        c_udp().payload(b"8 bytes!").udp_len(17),
        Reason::PassMalformed,
    ));
    t.push(F::pass(
        c,
        "IPv6 UDP checksum 0 (invalid over IPv6, RFC 8200): never rewritten",
        Eth0,
        c_udp().l4_csum(Csum::Raw(0)),
        Reason::PassMalformed,
    ));
    t.push(F::drop(
        c,
        "IPv6 hop limit 1 to [host]:8080",
        Eth0,
        c_tcp(SYN).ttl(1),
        Reason::DropTtlExceeded,
    ));
    t.push(F::drop(
        c,
        "IPv6 hop limit 0 on a reply",
        Docker0,
        r_tcp(ACK).ttl(0),
        Reason::DropTtlExceeded,
    ));
    t.push(F::drop(
        c,
        "IPv6 TCP to [::1]:8080 from eth0",
        Eth0,
        c_tcp(SYN).dst6(Ipv6Addr::LOCALHOST, 8080),
        Reason::DropLoopbackDst,
    ));
    let bad = c_tcp(ACK).l4_csum(Csum::OffBy(0x1234));
    t.push(forwarded(
        c,
        "IPv6 TCP with a wrong checksum: stays exactly as wrong",
        Eth0,
        bad.clone(),
        to_c1(bad, 3000),
        TCP6_8080,
    ));
}

/// What an ICMPv6 error quotes of `p`: its IPv6 packet (no Ethernet header), cut to `len`.
fn quote(p: &Pkt, len: Option<usize>) -> Vec<u8> {
    let mut b = p.bytes()[14..].to_vec();
    if let Some(n) = len {
        b.truncate(n);
    }
    b
}

fn err(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, rest: [u8; 4], q: &[u8]) -> Pkt {
    Pkt::icmp6(src, dst, kind, code, rest).payload(q)
}

fn mtu(m: u32) -> [u8; 4] {
    m.to_be_bytes()
}

fn icmp_errors(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Docker0, Eth0};
    let c = ICMPV6_ERRORS;
    // Towards the client: the client's packet as c1 saw it (translated, hop limit 63) and as
    // the client sent it.
    let seen = Pkt::tcp6((CLIENT6, CPORT), (C1_6, 3000), ACK)
        .ttl(63)
        .payload(&payload(200));
    let sent = Pkt::tcp6((CLIENT6, CPORT), (HOST6, 8080), ACK)
        .ttl(63)
        .payload(&payload(200));
    let to_client = (TCP6_8080, Direction::ToClient);
    let input = err(C1_6, CLIENT6, 2, 0, mtu(1280), &quote(&seen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(HOST6, CLIENT6, 2, 0, mtu(1280), &quote(&sent, None)));
    t.push(F::icmp_translated(
        c,
        "packet too big from [c1] about a forwarded TCP segment: source and quote say [host]:8080",
        Docker0,
        input,
        output,
        to_client,
    ));
    let input =
        err(C1_6, CLIENT6, 2, 0, mtu(1400), &quote(&seen, Some(40 + 8))).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST6,
        CLIENT6,
        2,
        0,
        mtu(1400),
        &quote(&sent, Some(40 + 8)),
    ));
    t.push(F::icmp_translated(
        c,
        "packet too big quoting only 8 bytes of TCP (no quoted checksum)",
        Docker0,
        input,
        output,
        to_client,
    ));
    let router = Ipv6Addr::new(0xfd17, 0, 0, 0, 0, 0, 0, 0xfe);
    let input = err(router, CLIENT6, 3, 0, [0; 4], &quote(&seen, Some(96)))
        .macs([0x02, 0x42, 0xac, 0x11, 0, 0xfe], DOCKER0_MAC);
    let output = via_eth0(err(router, CLIENT6, 3, 0, [0; 4], &quote(&sent, Some(96))));
    t.push(F::icmp_translated(
        c,
        "time exceeded from a router before [c1]: its source is kept, the quote translated",
        Docker0,
        input,
        output,
        to_client,
    ));
    let useen = Pkt::udp6((CLIENT6, 40001), (C1_6, 53)).ttl(63);
    let usent = Pkt::udp6((CLIENT6, 40001), (HOST6, 5353)).ttl(63);
    let input = err(C1_6, CLIENT6, 1, 4, [0; 4], &quote(&useen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(HOST6, CLIENT6, 1, 4, [0; 4], &quote(&usent, None)));
    t.push(F::icmp_translated(
        c,
        "port unreachable from [c1] about a forwarded UDP datagram: quoted UDP checksum translated",
        Docker0,
        input,
        output,
        (UDP6_5353, Direction::ToClient),
    ));
    let input =
        err(C1_6, CLIENT6, 4, 0, [0, 0, 0, 6], &quote(&useen, None)).macs(C1_MAC, DOCKER0_MAC);
    let output = via_eth0(err(
        HOST6,
        CLIENT6,
        4,
        0,
        [0, 0, 0, 6],
        &quote(&usent, None),
    ));
    t.push(F::icmp_translated(
        c,
        "parameter problem from [c1] about a forwarded UDP datagram",
        Docker0,
        input,
        output,
        (UDP6_5353, Direction::ToClient),
    ));

    // Towards the target: the client complains about a reply it got from [host]:port.
    let rseen = Pkt::udp6((HOST6, 5353), (CLIENT6, 40001))
        .ttl(63)
        .payload(b"answer");
    let rsent = Pkt::udp6((C1_6, 53), (CLIENT6, 40001))
        .ttl(63)
        .payload(b"answer");
    let input = err(CLIENT6, HOST6, 1, 4, [0; 4], &quote(&rseen, None)).macs(CLIENT_MAC, ETH0_MAC);
    let output = via_docker0(err(CLIENT6, C1_6, 1, 4, [0; 4], &quote(&rsent, None)));
    t.push(F::icmp_translated(
        c,
        "port unreachable from the client about a UDP reply from [host]:5353: sent on to [c1]",
        Eth0,
        input,
        output,
        (UDP6_5353, Direction::ToTarget),
    ));
    let rseen = Pkt::tcp6((HOST6, 8080), (CLIENT6, CPORT), ACK)
        .ttl(63)
        .payload(&payload(300));
    let rsent = Pkt::tcp6((C1_6, 3000), (CLIENT6, CPORT), ACK)
        .ttl(63)
        .payload(&payload(300));
    let input =
        err(CLIENT6, HOST6, 2, 0, mtu(1280), &quote(&rseen, Some(200))).macs(CLIENT_MAC, ETH0_MAC);
    let output = via_docker0(err(
        CLIENT6,
        C1_6,
        2,
        0,
        mtu(1280),
        &quote(&rsent, Some(200)),
    ));
    t.push(F::icmp_translated(
        c,
        "packet too big from the client about a TCP reply from [host]:8080: sent on to [c1]",
        Eth0,
        input,
        output,
        (TCP6_8080, Direction::ToTarget),
    ));

    // Not about a translated flow.
    let stranger = Pkt::tcp6((CLIENT6, 41000), (C1_6, 3000), ACK).ttl(63);
    t.push(F::pass(
        c,
        "ICMPv6 error about a flow portfwd does not know",
        Docker0,
        err(C1_6, CLIENT6, 1, 4, [0; 4], &quote(&stranger, None)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotForUs,
    ));
    let forged = Pkt::tcp6((HOST6, 8080), (CLIENT6, 41000), ACK).ttl(63);
    t.push(F::pass(
        c,
        "ICMPv6 error from the client about a reply of no remembered flow: never forged into [c1]",
        Eth0,
        err(CLIENT6, HOST6, 1, 4, [0; 4], &quote(&forged, None)).macs(CLIENT_MAC, ETH0_MAC),
        Reason::PassNoForward,
    ));
    let echo = Pkt::icmp6(CLIENT6, C1_6, 128, 0, [0, 1, 0, 1]).ttl(63);
    t.push(F::pass(
        c,
        "ICMPv6 error quoting an echo request",
        Docker0,
        err(C1_6, CLIENT6, 1, 4, [0; 4], &quote(&echo, None)).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassNotTcpUdp,
    ));
    t.push(F::pass(
        c,
        "ICMPv6 error whose quote is cut inside the quoted IPv6 header",
        Docker0,
        err(C1_6, CLIENT6, 1, 4, [0; 4], &quote(&seen, Some(30))).macs(C1_MAC, DOCKER0_MAC),
        Reason::PassMalformed,
    ));
}

fn policy(t: &mut Vec<Fixture>) {
    use Fixture as F;
    use Ingress::{Eth0, Port};
    let c = POLICY;
    let r = Pkt::tcp6((CLIENT6, CPORT), (HOST6, 9005), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(forwarded(
        c,
        "IPv6 TCP to [host]:9005 in the range 9000-9010 -> [c1]:7005",
        Eth0,
        r.clone(),
        to_c1(r, 7005),
        TCP6_9000_RANGE,
    ));
    let r = Pkt::tcp6((CLIENT6, CPORT), (HOST6, 9010), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(forwarded(
        c,
        "IPv6 TCP to [host]:9010, the range's last port -> [c1]:7010",
        Eth0,
        r.clone(),
        to_c1(r, 7010),
        TCP6_9000_RANGE,
    ));
    t.push(F::pass(
        c,
        "IPv6 TCP to [host]:9011, just past the range",
        Eth0,
        c_tcp(SYN).dst6(HOST6, 9011),
        Reason::PassNoForward,
    ));
    let rr = Pkt::tcp6((C1_6, 7005), (CLIENT6, 40005), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "IPv6 reply from [c1]:7005 -> from [host]:9005",
        rr.clone(),
        from_host(rr, 9005),
        TCP6_9000_RANGE,
    ));

    let a = Pkt::tcp6((CLIENT6, CPORT), (HOST6, 8090), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(forwarded(
        c,
        "IPv6 TCP to [host]:8090 from fd77::2, in its allowlist",
        Eth0,
        a.clone(),
        to_c1(a, 3005),
        TCP6_8090_ALLOW,
    ));
    let remote = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0xffff, 0, 0, 0, 1);
    let a = Pkt::tcp6((remote, CPORT), (HOST6, 8090), SYN).macs(CLIENT_MAC, ETH0_MAC);
    t.push(forwarded(
        c,
        "IPv6 TCP to [host]:8090 from 2001:db8:100:ffff::1, inside the allowed /48",
        Eth0,
        a.clone(),
        to_c1(a, 3005),
        TCP6_8090_ALLOW,
    ));
    for (src, what) in [
        (
            Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3),
            "fd77::3, next to the allowed fd77::2/128",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0, 0, 0, 0, 1),
            "2001:db8:101::1, just outside the /48",
        ),
    ] {
        t.push(F::drop(
            c,
            &format!("IPv6 TCP to [host]:8090 from {what}: dropped"),
            Eth0,
            Pkt::tcp6((src, CPORT), (HOST6, 8090), SYN).macs(CLIENT_MAC, ETH0_MAC),
            Reason::DropSourceNotAllowed,
        ));
    }
    let rr = Pkt::tcp6((C1_6, 3005), (CLIENT6, 40006), ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::replied(
        c,
        "IPv6 reply of an allowlisted forward: replies are not held against the allowlist",
        rr.clone(),
        from_host(rr, 8090),
        TCP6_8090_ALLOW,
    ));

    // Hairpin: c1 calls its own published port through the host.
    let h = Pkt::tcp6((C1_6, 45001), (HOST6, 8080), SYN).macs(C1_MAC, DOCKER0_MAC);
    t.push(forwarded(
        c,
        "IPv6 hairpin: [c1] calls [host]:8080 -> [c1]:3000 from [host]:45001",
        Port,
        h.clone(),
        via_docker0(h.src6(HOST6, 45001).dst6(C1_6, 3000)),
        TCP6_8080,
    ));
    let hr = Pkt::tcp6((C1_6, 3000), (HOST6, 45001), SYN | ACK).macs(C1_MAC, DOCKER0_MAC);
    t.push(F::hairpin_replied(
        c,
        "IPv6 hairpin reply: [c1]:3000 -> [host]:45001 becomes [host]:8080 -> [c1]:45001",
        Port,
        hr.clone(),
        via_docker0(hr.src6(HOST6, 8080).dst6(C1_6, 45001)),
        TCP6_8080,
    ));
    let from_c2 = Pkt::tcp6((C2_6, 45004), (HOST6, 8080), SYN).macs(C1_MAC, DOCKER0_MAC);
    t.push(forwarded(
        c,
        "IPv6 hairpin between containers: [fd17::3] calls [host]:8080, its address kept",
        Port,
        from_c2.clone(),
        via_docker0(from_c2.dst6(C1_6, 3000)),
        TCP6_8080,
    ));
}
