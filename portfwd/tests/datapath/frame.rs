//! A small frame builder for the fixtures: Ethernet (optionally VLAN-tagged), IPv4 with options
//! or IPv6 with extension headers (the family is the addresses'), TCP, UDP, ICMP/ICMPv6 or raw
//! payloads, with every length and checksum computed from scratch here (RFC 1071), independently
//! of the code under test, unless a fixture overrides it.
//!
//! Expected outputs are built the same way, from a description of what the translated packet
//! must be (new addresses and ports, TTL - 1, new MACs), never by editing the input's bytes, so a
//! checksum in an expected frame is a full recomputation.
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;
/// IPv6 extension headers.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;

/// How a checksum field is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// The correct value (for UDP, a computed 0 is sent as 0xffff).
    Valid,
    /// Wrong by `k` in one's-complement arithmetic: the field holds the checksum of a message
    /// whose sum is `k` more than this one's. A correct incremental update keeps it exactly as
    /// wrong, so an expected output says `OffBy(k)` too.
    OffBy(u16),
    /// This exact value (e.g. 0: "no UDP checksum").
    Raw(u16),
}

/// The transport part of a packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: Vec<u8>,
        /// Data offset override, in 32-bit words (otherwise computed).
        doff: Option<u8>,
        csum: Csum,
    },
    Udp {
        sport: u16,
        dport: u16,
        /// Length override (otherwise header + payload).
        len: Option<u16>,
        csum: Csum,
    },
    Icmp {
        kind: u8,
        code: u8,
        /// The 4 bytes after the checksum (identifier and sequence for an echo).
        rest: [u8; 4],
        csum: Csum,
    },
    /// Bytes as they are (a later fragment, an unknown protocol).
    Raw,
}

/// A frame description; [`Pkt::bytes`] lays it out.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub ethertype: u16,
    pub version: u8,
    pub tos: u8,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub ttl: u8,
    pub proto: u8,
    /// The addresses; their family is the packet's.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 options.
    pub options: Vec<u8>,
    /// IHL override, in 32-bit words.
    pub ihl: Option<u8>,
    /// IP length field override: the IPv4 total length, the IPv6 payload length.
    pub total_len: Option<u16>,
    pub ip_csum: Csum,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// Bytes after the IPv4 datagram (Ethernet padding).
    pub padding: usize,
    /// Cut the laid-out frame to this many bytes.
    pub cut: Option<usize>,
    /// IPv6: the flow label (`tos` is the traffic class, `ttl` the hop limit; `id`, `df`,
    /// `options`, `ihl` and `ip_csum` are IPv4's).
    pub flow_label: u32,
    /// IPv6 extension headers in order: (type, the bytes after its next-header byte), each a
    /// whole number of 8-byte units.
    pub ext: Vec<(u8, Vec<u8>)>,
}

impl Pkt {
    fn ip(proto: u8, src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        let v6 = src.is_ipv6();
        Pkt {
            dst_mac: [0xff; 6],
            src_mac: [0x02, 0, 0, 0, 0, 0xee],
            vlan: None,
            ethertype: if v6 { ETH_P_IPV6 } else { ETH_P_IPV4 },
            version: if v6 { 6 } else { 4 },
            tos: 0,
            id: 0x1c46,
            df: true,
            mf: false,
            frag_offset: 0,
            ttl: 64,
            proto,
            src,
            dst,
            options: Vec::new(),
            ihl: None,
            total_len: None,
            ip_csum: Csum::Valid,
            l4,
            payload: Vec::new(),
            padding: 0,
            cut: None,
            flow_label: if v6 { 0x12345 } else { 0 },
            ext: Vec::new(),
        }
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// Appends an 8-byte IPv6 extension header of type `kind` (options: one PadN).
    pub fn ext6(mut self, kind: u8) -> Pkt {
        assert!(self.is_v6(), "extension headers are IPv6's");
        self.ext.push((kind, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }

    /// The source and destination addresses, as pseudo-header bytes.
    fn addr_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let octets = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        (octets(self.src), octets(self.dst))
    }

    pub fn tcp(src: (IpAddr, u16), dst: (IpAddr, u16), flags: u8) -> Pkt {
        let l4 = L4::Tcp {
            sport: src.1,
            dport: dst.1,
            seq: 0x0102_0304,
            ack: if flags & ACK != 0 { 0x0a0b_0c0d } else { 0 },
            flags,
            window: 64240,
            options: Vec::new(),
            doff: None,
            csum: Csum::Valid,
        };
        Pkt::ip(TCP, src.0, dst.0, l4)
    }

    pub fn udp(src: (IpAddr, u16), dst: (IpAddr, u16)) -> Pkt {
        let l4 = L4::Udp {
            sport: src.1,
            dport: dst.1,
            len: None,
            csum: Csum::Valid,
        };
        Pkt::ip(UDP, src.0, dst.0, l4).payload(b"query")
    }

    /// An ICMP message (ICMPv6 between IPv6 addresses).
    pub fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8, rest: [u8; 4]) -> Pkt {
        let l4 = L4::Icmp {
            kind,
            code,
            rest,
            csum: Csum::Valid,
        };
        let proto = if src.is_ipv6() { ICMPV6 } else { ICMP };
        Pkt::ip(proto, src, dst, l4)
    }

    /// An IP packet of protocol (next header) `proto` carrying `payload` as it is.
    pub fn raw_ip(proto: u8, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Pkt {
        Pkt::ip(proto, src, dst, L4::Raw).payload(payload)
    }

    /// A non-IPv4 frame: `ethertype` then `body` right after the Ethernet header.
    pub fn ether(ethertype: u16, body: &[u8]) -> Pkt {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut p = Pkt::ip(0, any, any, L4::Raw);
        p.ethertype = ethertype;
        p.payload = body.to_vec();
        p
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Pkt {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn src(mut self, addr: impl Into<IpAddr>, port: u16) -> Pkt {
        self.src = addr.into();
        match &mut self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
            _ => {}
        }
        self
    }

    pub fn dst(mut self, addr: impl Into<IpAddr>, port: u16) -> Pkt {
        self.dst = addr.into();
        match &mut self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
            _ => {}
        }
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    pub fn tos(mut self, tos: u8) -> Pkt {
        self.tos = tos;
        self
    }

    pub fn vlan(mut self, id: u16) -> Pkt {
        self.vlan = Some(id);
        self
    }

    pub fn version(mut self, v: u8) -> Pkt {
        self.version = v;
        self
    }

    /// Fragment flags and offset (in 8-byte units): IPv4's header fields (DF is cleared), or
    /// an IPv6 fragment header appended.
    pub fn fragment(mut self, more: bool, offset: u16) -> Pkt {
        if self.is_v6() {
            let bits = (offset << 3) | u16::from(more);
            let mut b = vec![0];
            b.extend_from_slice(&bits.to_be_bytes());
            b.extend_from_slice(&0x1c46_0001u32.to_be_bytes());
            self.ext.push((FRAGMENT, b));
            return self;
        }
        self.df = false;
        self.mf = more;
        self.frag_offset = offset;
        self
    }

    /// The IP identification: IPv4's 16-bit field, or the 32 bits of the IPv6 fragment header
    /// (added by [`Pkt::fragment`] first).
    pub fn ident(mut self, id: u32) -> Pkt {
        if self.is_v6() {
            let (_, body) = self
                .ext
                .iter_mut()
                .find(|(kind, _)| *kind == FRAGMENT)
                .expect("an IPv6 fragment header");
            body[3..7].copy_from_slice(&id.to_be_bytes());
        } else {
            self.id = u16::try_from(id).expect("a 16-bit IPv4 identification");
        }
        self
    }

    pub fn options(mut self, opts: &[u8]) -> Pkt {
        self.options = opts.to_vec();
        self
    }

    pub fn ihl(mut self, words: u8) -> Pkt {
        self.ihl = Some(words);
        self
    }

    /// The IP length field (IPv4 total length, IPv6 payload length) set to `len`.
    pub fn total_len(mut self, len: u16) -> Pkt {
        self.total_len = Some(len);
        self
    }

    /// The IP length field set so that the datagram carries `n` bytes after its IP header(s).
    pub fn l4_len(self, n: u16) -> Pkt {
        // IPv6's payload length leaves out the fixed header.
        let counted = self.ip_header_len() - if self.is_v6() { 40 } else { 0 };
        self.total_len(counted as u16 + n)
    }

    /// Length of the IP header(s): where the L4 header starts after the Ethernet header.
    pub fn ip_header_len(&self) -> usize {
        if self.is_v6() {
            40 + self.ext.iter().map(|(_, b)| b.len() + 1).sum::<usize>()
        } else {
            20 + self.options.len()
        }
    }

    pub fn ip_csum(mut self, c: Csum) -> Pkt {
        self.ip_csum = c;
        self
    }

    pub fn l4_csum(mut self, c: Csum) -> Pkt {
        match &mut self.l4 {
            L4::Tcp { csum, .. } | L4::Udp { csum, .. } | L4::Icmp { csum, .. } => *csum = c,
            L4::Raw => panic!("a raw payload has no checksum"),
        }
        self
    }

    pub fn tcp_options(mut self, opts: &[u8]) -> Pkt {
        match &mut self.l4 {
            L4::Tcp { options, .. } => *options = opts.to_vec(),
            _ => panic!("not TCP"),
        }
        self
    }

    pub fn doff(mut self, words: u8) -> Pkt {
        match &mut self.l4 {
            L4::Tcp { doff, .. } => *doff = Some(words),
            _ => panic!("not TCP"),
        }
        self
    }

    pub fn udp_len(mut self, l: u16) -> Pkt {
        match &mut self.l4 {
            L4::Udp { len, .. } => *len = Some(l),
            _ => panic!("not UDP"),
        }
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Pkt {
        self.payload = p.to_vec();
        self
    }

    pub fn padding(mut self, n: usize) -> Pkt {
        self.padding = n;
        self
    }

    pub fn cut(mut self, len: usize) -> Pkt {
        self.cut = Some(len);
        self
    }

    /// The L4 header and payload, checksum included.
    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let csum_at;
        let csum_kind;
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                options,
                doff,
                csum,
            } => {
                assert!(
                    options.len().is_multiple_of(4),
                    "TCP options are whole words"
                );
                let words = doff.unwrap_or(5 + (options.len() / 4) as u8);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.push(words << 4);
                b.push(*flags);
                b.extend_from_slice(&window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                b.extend_from_slice(options);
                csum_at = 16;
                csum_kind = *csum;
            }
            L4::Udp {
                sport,
                dport,
                len,
                csum,
            } => {
                let l = len.unwrap_or((8 + self.payload.len()) as u16);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&l.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                csum_at = 6;
                csum_kind = *csum;
            }
            L4::Icmp {
                kind,
                code,
                rest,
                csum,
            } => {
                b.extend_from_slice(&[*kind, *code, 0, 0]);
                b.extend_from_slice(rest);
                csum_at = 2;
                csum_kind = *csum;
            }
            L4::Raw => return self.payload.clone(),
        }
        b.extend_from_slice(&self.payload);
        let (src, dst) = self.addr_bytes();
        let sum = match &self.l4 {
            // ICMP has no pseudo-header (ICMPv6 has).
            L4::Icmp { .. } if !self.is_v6() => ones_sum(&[&b]),
            _ if self.is_v6() => {
                // RFC 8200 8.1: addresses, 32-bit upper-layer length, 3 zero bytes, next header.
                let mut pseudo = Vec::with_capacity(40);
                pseudo.extend_from_slice(&src);
                pseudo.extend_from_slice(&dst);
                pseudo.extend_from_slice(&(b.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, self.proto]);
                ones_sum(&[&pseudo, &b])
            }
            _ => {
                let mut pseudo = Vec::with_capacity(12);
                pseudo.extend_from_slice(&src);
                pseudo.extend_from_slice(&dst);
                pseudo.extend_from_slice(&[0, self.proto]);
                pseudo.extend_from_slice(&(b.len() as u16).to_be_bytes());
                ones_sum(&[&pseudo, &b])
            }
        };
        let udp = matches!(self.l4, L4::Udp { .. });
        let c = match csum_kind {
            Csum::Raw(v) => v,
            Csum::Valid => finish(sum, udp),
            Csum::OffBy(k) => finish(add1(sum, k), udp),
        };
        b[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        b
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(id) = self.vlan {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        if let (ETH_P_IPV6, IpAddr::V6(src), IpAddr::V6(dst)) = (self.ethertype, self.src, self.dst)
        {
            let l4 = self.l4_bytes();
            let mut ext = Vec::new();
            let mut next = self.proto;
            for (kind, body) in self.ext.iter().rev() {
                let mut h = vec![next];
                h.extend_from_slice(body);
                assert!(
                    h.len().is_multiple_of(8),
                    "extension headers are 8-byte units"
                );
                if *kind != FRAGMENT {
                    h[1] = (h.len() / 8 - 1) as u8;
                }
                h.extend_from_slice(&ext);
                ext = h;
                next = *kind;
            }
            let payload_len = self.total_len.unwrap_or((ext.len() + l4.len()) as u16);
            let first = (u32::from(self.version) << 28)
                | (u32::from(self.tos) << 20)
                | (self.flow_label & 0xf_ffff);
            f.extend_from_slice(&first.to_be_bytes());
            f.extend_from_slice(&payload_len.to_be_bytes());
            f.push(next);
            f.push(self.ttl);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&dst.octets());
            f.extend_from_slice(&ext);
            f.extend_from_slice(&l4);
        } else if let (ETH_P_IPV4, IpAddr::V4(src), IpAddr::V4(dst)) =
            (self.ethertype, self.src, self.dst)
        {
            let l4 = self.l4_bytes();
            assert!(
                self.options.len().is_multiple_of(4),
                "IPv4 options are whole words"
            );
            let hdr_len = 20 + self.options.len();
            let ihl = self.ihl.unwrap_or((hdr_len / 4) as u8);
            let total = self.total_len.unwrap_or((hdr_len + l4.len()) as u16);
            let frag = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | self.frag_offset;
            let mut h = Vec::with_capacity(hdr_len);
            h.push((self.version << 4) | (ihl & 0x0f));
            h.push(self.tos);
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&self.id.to_be_bytes());
            h.extend_from_slice(&frag.to_be_bytes());
            h.push(self.ttl);
            h.push(self.proto);
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(&src.octets());
            h.extend_from_slice(&dst.octets());
            h.extend_from_slice(&self.options);
            let sum = ones_sum(&[&h]);
            let c = match self.ip_csum {
                Csum::Raw(v) => v,
                Csum::Valid => finish(sum, false),
                Csum::OffBy(k) => finish(add1(sum, k), false),
            };
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
            f.extend_from_slice(&l4);
        } else {
            f.extend_from_slice(&self.payload);
        }
        f.resize(f.len() + self.padding, 0);
        if let Some(n) = self.cut {
            f.truncate(n);
        }
        f
    }
}

/// One's-complement addition with end-around carry, on values up to 0xffff.
fn add1(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// RFC 1071: the one's-complement sum of big-endian 16-bit words of the concatenated parts
/// (each part here has an even length except possibly the last, which is padded with a zero).
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum += hi | lo;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field for a message whose sum is `sum` (a UDP checksum that computes to 0 is
/// sent as 0xffff, RFC 768).
fn finish(sum: u16, udp: bool) -> u16 {
    match !sum {
        0 if udp => 0xffff,
        c => c,
    }
}

/// A hex dump of `frame`, 16 bytes a line, with the bytes that differ from `other` marked.
pub fn hexdump(frame: &[u8], other: Option<&[u8]>) -> String {
    let mut s = String::new();
    for (line, chunk) in frame.chunks(16).enumerate() {
        let _ = write!(s, "    {:04x}:", line * 16);
        for (i, b) in chunk.iter().enumerate() {
            let off = line * 16 + i;
            let differs = other.is_some_and(|o| o.get(off) != Some(b));
            let _ = write!(s, "{}{b:02x}", if differs { '*' } else { ' ' });
        }
        s.push('\n');
    }
    if let Some(o) = other
        && o.len() != frame.len()
    {
        let _ = writeln!(s, "    (length {} vs {})", frame.len(), o.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            ones_sum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0xddf2
        );
    }
}
