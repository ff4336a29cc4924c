//! The grammar of a published port, shared by the command line and the config file.
//!
//! A forward is a [`Listen`] side on the host and a [`Target`] side in a container:
//!
//! ```text
//! LISTEN = [HOST_IP:]HOST_PORT[-END][/PROTO]   8080   8000-8010/udp   10.0.0.1:8080/tcp
//!                                              [::]:8080   [2001:db8::1]:8000-8010/udp
//! TARGET = IP:PORT[-END]                       172.17.0.2:3000   [fd00::2]:9000-9010
//! PROTO  = tcp | udp                           (default tcp, case-insensitive)
//! ALLOW  = IP[/LEN]                            10.0.0.0/8   192.0.2.7 (= /32)   2001:db8::/32
//! ```
//!
//! An IPv6 address is written in brackets before a port (`[fd00::2]:3000`, Docker's form);
//! without brackets it is refused, since `fd00::2:3000` is itself an IPv6 address.
//!
//! This is Docker's `-p` syntax. A range maps port by port (`8000-8010 -> 172.17.0.2:9000-9010`
//! sends 8005 to 9005), so the two sides of a forward must be the same length; a range with a
//! single target port (which Docker reads as "pick one free host port") is refused. Parsing is
//! split into small steps (protocol suffix, host/port split, address, port range).
//!
//! Recognised but refused with a clear one-line error, so that a Docker user learns why rather
//! than reading "not a port number": `sctp` (this portfwd forwards tcp and udp only).
//!
//! # Address families
//!
//! A forward is IPv4 or IPv6, and both its sides are of that family ([`Family`]): portfwd
//! translates addresses in place and does not translate between IPv4 and IPv6, so
//! `[::]:8080 -> 172.17.0.2:80` is refused with [`SpecError::FamilyMismatch`]. The same port
//! published for IPv4 and for IPv6 is two forwards, which do not overlap.
//!
//! Without a host address a forward listens on every host address of its target's family.
//! `0.0.0.0` is every IPv4 address: a forward keeps it as "no address"
//! ([`Listen::normalized`]), so `0.0.0.0:8080 -> 172.17.0.2:80` and `8080 -> 172.17.0.2:80` are
//! the same forward and print as `8080/tcp`. Unlike a bare port it is IPv4 only, as in Docker:
//! `0.0.0.0:8080 -> [fd00::2]:80` is refused. A forward to an IPv6 target stores "every IPv6
//! address" as `[::]` ([`Forward::new`] does it), so `8080 -> [fd00::2]:80` prints as
//! `[::]:8080/tcp -> [fd00::2]:80`.
//!
//! An allowlist may mix IPv4 and IPv6 prefixes (one list for a dual-stack service); a prefix of
//! the other family never matches a forward, and a list with no prefix of the forward's family
//! is refused ([`SpecError::AllowlistWithoutFamily`]), as an empty list is.
//!
//! Everything that parses also prints back to a string that parses to the same value
//! ([`Display`](fmt::Display) is canonical: the protocol is always written).

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    str::FromStr,
};

use ipnet::IpNet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transport protocol that can be published.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default when no protocol is given.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Every protocol, in the order they are listed in messages.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The lowercase name used in the grammar and the config (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = SpecError;

    /// Parses `tcp` or `udp`, in any case. `sctp` is recognised and refused
    /// ([`SpecError::SctpUnsupported`]).
    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.eq_ignore_ascii_case("sctp") {
            return Err(SpecError::SctpUnsupported);
        }
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SpecError::UnknownProtocol(s.to_owned()))
    }
}

/// An address family. Both sides of a forward are of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a forward, or one of its sides, does not parse. Every message is one line and quotes
/// the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The whole value is empty.
    #[error("empty value (expected {expected})")]
    Empty {
        /// The form that was expected, e.g. `[HOST_IP:]HOST_PORT[/PROTO]`.
        expected: &'static str,
    },
    /// A port that is a number but not in 1-65535.
    #[error("port {} is outside 1-65535", printable(.0))]
    PortOutOfRange(String),
    /// A port that is not a decimal number.
    #[error("'{}' is not a port number", printable(.0))]
    NotAPort(String),
    /// An address that is neither a dotted-quad IPv4 address nor an IPv6 address in brackets.
    #[error("'{}' is not an IP address", printable(.0))]
    NotAnAddress(String),
    /// An IPv6 address followed by a port without brackets (`fd00::2:3000`, itself a valid
    /// IPv6 address, so the port cannot be told apart).
    #[error(
        "'{}': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
        printable(.0)
    )]
    Ipv6WithoutBrackets(String),
    /// A protocol other than tcp or udp.
    #[error("unknown protocol '{}' (expected tcp or udp)", printable(.0))]
    UnknownProtocol(String),
    /// A target given as a bare address.
    #[error("'{}' needs a port: IP:PORT", printable(.0))]
    MissingPort(String),
    /// A target given as a bare port.
    #[error("'{}' needs an address: IP:PORT", printable(.0))]
    MissingAddress(String),
    /// A target that is neither `IP:PORT`, nor a bare address or port.
    #[error("'{}' is not IP:PORT (e.g. 172.17.0.2:3000 or [fd00::2]:3000)", printable(.0))]
    NotATarget(String),
    /// A target with a `/proto` suffix: the protocol belongs to the listen side.
    #[error(
        "'{}' carries a protocol; give it on the listen side instead (e.g. 8080/udp)",
        printable(.0)
    )]
    ProtocolOnTarget(String),
    /// A forward without the `->` between its sides.
    #[error("'{}' is not LISTEN -> TARGET", printable(.0))]
    NotAForward(String),
    /// A listen address that cannot receive a published port.
    #[error("listen address {addr} is {reason}")]
    BadListenAddress {
        /// The address as given.
        addr: IpAddr,
        /// Why it is refused, e.g. "multicast; a host address must be unicast".
        reason: &'static str,
    },
    /// A target address that cannot be forwarded to.
    #[error("target address {addr} is {reason}")]
    BadTargetAddress {
        /// The address as given.
        addr: IpAddr,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `sctp`: Docker accepts it, portfwd does not (yet). Its datapath would rewrite only the IP
    /// address (SCTP's CRC32c covers no pseudo-header), but the kernels portfwd is built and
    /// tested on have no SCTP stack to prove it with a real association.
    #[error("sctp is not supported yet: portfwd forwards tcp and udp")]
    SctpUnsupported,
    /// The two sides of a forward are of different families.
    #[error(
        "{listen} is {listen_family} but {to} is {to_family}; portfwd does not translate between IPv4 and IPv6: publish an {to_family} target on an {to_family} host address or a bare port, or give the container's {listen_family} address"
    )]
    FamilyMismatch {
        /// The listen side, canonical.
        listen: String,
        /// Its family.
        listen_family: Family,
        /// The target side, canonical.
        to: String,
        /// Its family.
        to_family: Family,
    },
    /// Something in brackets that is not an IPv6 address.
    #[error("'{}' is not an IPv6 address in brackets (e.g. [fd00::2])", printable(.0))]
    NotIpv6(String),
    /// `HIGH-LOW`.
    #[error("port range {0}-{1} is reversed (write LOW-HIGH)")]
    ReversedRange(u16, u16),
    /// The host and target sides cover a different number of ports.
    #[error(
        "{listen} covers {listen_len} port{} but {to} covers {to_len}; a range maps port by port, so both sides must be the same length",
        if *.listen_len == 1 { "" } else { "s" }
    )]
    RangeLengthMismatch {
        /// The listen side, canonical.
        listen: String,
        /// How many ports it covers.
        listen_len: u32,
        /// The target side, canonical.
        to: String,
        /// How many ports it covers.
        to_len: u32,
    },
    /// An allowlist entry that is not `IP[/LEN]`.
    #[error(
        "'{}' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
        printable(.0)
    )]
    NotAPrefix(String),
    /// An allowlist prefix with bits set after its length.
    #[error("'{given}' has bits set past /{len}: write the network, {network}", len = .network.prefix_len())]
    PrefixHostBits {
        /// As given.
        given: String,
        /// The network it is in.
        network: IpNet,
    },
    /// An allowlist none of whose prefixes is of the forward's family: it would drop every
    /// client, like an empty one.
    #[error(
        "no prefix of this allowlist is {0}, so it would drop every client of this {0} forward; add an {0} prefix or remove the allowlist"
    )]
    AllowlistWithoutFamily(Family),
    /// `allow: []`.
    #[error("an empty allowlist would drop every client; remove it to accept every source address")]
    EmptyAllowlist,
    /// The listen string's `/proto` suffix and a separately given protocol disagree.
    #[error("'{}' says {suffix} but the protocol is given as {given}", printable(.listen))]
    ProtocolMismatch {
        /// The listen string as given.
        listen: String,
        /// The protocol of its suffix.
        suffix: Protocol,
        /// The protocol given separately.
        given: Protocol,
    },
}

/// `s` with control characters (newlines, tabs, ...) escaped, so that a message quoting it
/// stays on one line.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

const LISTEN_FORM: &str = "[HOST_IP:]HOST_PORT[-END][/PROTO]";
const TARGET_FORM: &str = "IP:PORT[-END]";

/// The host side of a forward: `[HOST_IP:]HOST_PORT[-END][/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    /// The host address to match. `None` matches every host IPv4 address (a bare port;
    /// `0.0.0.0` parses to `None`); `[::]` matches every host IPv6 address. In a [`Forward`]
    /// to an IPv6 target a bare port is `[::]` (see [`Forward::new`]).
    pub addr: Option<IpAddr>,
    /// The host port, 1-65535; the first of a range.
    pub port: u16,
    /// The last host port of a range (inclusive); equal to `port` for a single port.
    pub end: u16,
    /// The protocol; also the protocol of the target.
    pub protocol: Protocol,
}

impl Listen {
    /// Parses `s`, with `protocol` given separately (a config file's `protocol:` key, a
    /// command-line flag). `s`'s own `/proto` suffix and `protocol` must agree when both are
    /// given; with neither the protocol is tcp.
    pub fn parse_with_protocol(s: &str, protocol: Option<Protocol>) -> Result<Listen, SpecError> {
        if s.is_empty() {
            return Err(SpecError::Empty {
                expected: LISTEN_FORM,
            });
        }
        let (rest, suffix) = split_protocol(s)?;
        let protocol = match (suffix, protocol) {
            (Some(suffix), Some(given)) if suffix != given => {
                return Err(SpecError::ProtocolMismatch {
                    listen: s.to_owned(),
                    suffix,
                    given,
                });
            }
            (suffix, given) => suffix.or(given).unwrap_or_default(),
        };
        let (host, ports) = split_host_port(rest)?;
        let addr = host.map(parse_listen_addr).transpose()?.flatten();
        let (port, end) = parse_port_range(ports)?;
        Ok(Listen {
            addr,
            port,
            end,
            protocol,
        })
    }

    /// The key of the first (for a single port, the only) port published.
    pub fn key(&self) -> ListenKey {
        ListenKey {
            addr: self.addr,
            port: self.port,
            protocol: self.protocol,
        }
    }

    /// Every (address, port, protocol) this listen side publishes, one per port.
    pub fn keys(&self) -> impl Iterator<Item = ListenKey> + '_ {
        self.ports().map(|port| ListenKey {
            addr: self.addr,
            port,
            protocol: self.protocol,
        })
    }

    /// The host ports, `port..=end`.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.port..=self.end
    }

    /// How many ports this publishes (1 for a single port).
    pub fn port_count(&self) -> u32 {
        u32::from(self.end) - u32::from(self.port) + 1
    }

    /// Whether this is a range of more than one port.
    pub fn is_range(&self) -> bool {
        self.end != self.port
    }

    /// The address family: that of the address, IPv4 without one (see [`Listen::addr`]).
    pub fn family(&self) -> Family {
        self.addr.map_or(Family::V4, Family::of)
    }

    /// The form a [`Forward`] keeps: `0.0.0.0:8080` is `8080` (every IPv4 address). Parsing
    /// keeps the `0.0.0.0` as written, so that a forward to an IPv6 target can refuse it.
    pub fn normalized(mut self) -> Listen {
        if self.addr == Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
            self.addr = None;
        }
        self
    }

    /// Whether this and `other` would claim the same packets: same protocol and family,
    /// overlapping ports, and the same address or one of them on every address. `8080`
    /// conflicts with `10.0.0.1:8080` and with `8000-8100`; `10.0.0.1:8080` does not conflict
    /// with `10.0.0.2:8080` nor with `8080/udp`, and `8080` does not conflict with `[::]:8080`.
    pub fn conflicts_with(&self, other: &Listen) -> bool {
        self.protocol == other.protocol
            && self.port <= other.end
            && other.port <= self.end
            && same_addresses(self.addr, other.addr)
    }
}

impl FromStr for Listen {
    type Err = SpecError;

    /// Parses `[HOST_IP:]HOST_PORT[/PROTO]`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Listen::parse_with_protocol(s, None)
    }
}

impl fmt::Display for Listen {
    /// `8080/tcp`, `10.0.0.1:8080/udp`, `8000-8010/tcp`, `[::]:8080/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(addr) = self.addr {
            write_addr(f, addr)?;
            f.write_str(":")?;
        }
        write_ports(f, self.port, self.end)?;
        write!(f, "/{}", self.protocol)
    }
}

/// Whether two listen addresses (see [`Listen::addr`]) can claim the same packets: the same
/// family, and the same address or one of them every address of that family.
fn same_addresses(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    let family = |a: Option<IpAddr>| a.map_or(Family::V4, Family::of);
    let every = |a: Option<IpAddr>| a.is_none_or(|a| a.is_unspecified());
    family(a) == family(b) && (a == b || every(a) || every(b))
}

/// An address as the grammar writes it: IPv6 in brackets.
fn write_addr(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    match addr {
        IpAddr::V4(a) => write!(f, "{a}"),
        IpAddr::V6(a) => write!(f, "[{a}]"),
    }
}

fn write_ports(f: &mut fmt::Formatter<'_>, port: u16, end: u16) -> fmt::Result {
    if end == port {
        write!(f, "{port}")
    } else {
        write!(f, "{port}-{end}")
    }
}

/// One published (address, port, protocol). A [`Listen`] covers one key per port
/// ([`Listen::keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    /// The host address, as in [`Listen::addr`].
    pub addr: Option<IpAddr>,
    /// The host port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl ListenKey {
    /// Whether the two keys would claim the same packets: same protocol and port, and the
    /// same address or one of them unbound.
    pub fn conflicts_with(&self, other: &ListenKey) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && same_addresses(self.addr, other.addr)
    }
}

impl fmt::Display for ListenKey {
    /// Same form as [`Listen`]: `8080/tcp`, `10.0.0.1:8080/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(addr) = self.addr {
            write_addr(f, addr)?;
            f.write_str(":")?;
        }
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// The container side of a forward: `IP:PORT[-END]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The container's address: unicast, not unspecified (nor link-local or IPv4-mapped for
    /// IPv6).
    pub addr: IpAddr,
    /// The container's port, 1-65535; the first of a range.
    pub port: u16,
    /// The last port of a range (inclusive); equal to `port` for a single port.
    pub end: u16,
}

impl Target {
    /// The address family, which is the forward's.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// How many ports this covers (1 for a single port).
    pub fn port_count(&self) -> u32 {
        u32::from(self.end) - u32::from(self.port) + 1
    }

    /// The target port for host port `port` of `listen` (port by port).
    pub fn port_for(&self, listen: &Listen, port: u16) -> u16 {
        self.port.wrapping_add(port.wrapping_sub(listen.port))
    }
}

impl FromStr for Target {
    type Err = SpecError;

    /// Parses `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() {
            return Err(SpecError::Empty {
                expected: TARGET_FORM,
            });
        }
        if s.contains('/') {
            return Err(SpecError::ProtocolOnTarget(s.to_owned()));
        }
        let (addr, port) = match split_host_port(s)? {
            (Some(addr), port) => (addr, port),
            (None, bare) => {
                return Err(if bare.parse::<Ipv4Addr>().is_ok() {
                    SpecError::MissingPort(s.to_owned())
                } else if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
                    SpecError::MissingAddress(s.to_owned())
                } else {
                    SpecError::NotATarget(s.to_owned())
                });
            }
        };
        let addr = parse_target_addr(addr)?;
        let (port, end) = parse_port_range(port)?;
        Ok(Target { addr, port, end })
    }
}

impl fmt::Display for Target {
    /// `172.17.0.2:3000`, `172.17.0.2:9000-9010`, `[fd00::2]:3000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_addr(f, self.addr)?;
        f.write_str(":")?;
        write_ports(f, self.port, self.end)
    }
}

/// A source prefix a forward accepts clients from: `10.0.0.0/8`, `192.0.2.7` (= `/32`),
/// `2001:db8::/32`, `2001:db8::7` (= `/128`). Bits past the length must be zero, so every
/// prefix has one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowPrefix(pub IpNet);

impl AllowPrefix {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length, 0-32 (IPv4) or 0-128 (IPv6).
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The prefix's family.
    pub fn family(&self) -> Family {
        Family::of(self.addr())
    }

    /// Whether `addr` is in this prefix (never for an address of the other family).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }
}

impl FromStr for AllowPrefix {
    type Err = SpecError;

    /// Parses `IP/LEN` or a bare `IP` (a single client, `/32`).
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let not_a_prefix = || SpecError::NotAPrefix(s.to_owned());
        let ip: IpAddr = addr.parse().map_err(|_| not_a_prefix())?;
        let len = match len {
            None => IpNet::from(ip).max_prefix_len(),
            Some(len)
                if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) =>
            {
                len.parse::<u8>().map_err(|_| not_a_prefix())?
            }
            Some(_) => return Err(not_a_prefix()),
        };
        let net = IpNet::new(ip, len).map_err(|_| not_a_prefix())?;
        if net.network() != ip {
            return Err(SpecError::PrefixHostBits {
                given: s.to_owned(),
                network: net.trunc(),
            });
        }
        Ok(AllowPrefix(net))
    }
}

impl fmt::Display for AllowPrefix {
    /// Always with its length: `10.0.0.0/8`, `192.0.2.7/32`, `2001:db8::/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

/// A published port or range: packets for `listen` on the host go to `to`, from the clients
/// in `allow` (every client when it is empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ForwardRepr")]
pub struct Forward {
    /// The host side, including the protocol.
    pub listen: Listen,
    /// The container side.
    pub to: Target,
    /// The source prefixes allowed to use this forward; empty: every source. Sources outside
    /// it are dropped (and counted) before any translation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowPrefix>,
}

/// What [`Forward`] deserialises from, before [`Forward::new`] checks it.
#[derive(Deserialize)]
struct ForwardRepr {
    listen: Listen,
    to: Target,
    #[serde(default)]
    allow: Vec<AllowPrefix>,
}

impl TryFrom<ForwardRepr> for Forward {
    type Error = SpecError;

    fn try_from(r: ForwardRepr) -> Result<Self, SpecError> {
        Forward::new(r.listen, r.to)?.with_allow(r.allow)
    }
}

impl Forward {
    /// A forward from `listen` to `to`, accepting every source. The two sides must be of one
    /// family and cover the same number of ports. A bare port (every host address) takes the
    /// target's family: for an IPv6 target it becomes `[::]`.
    pub fn new(mut listen: Listen, to: Target) -> Result<Forward, SpecError> {
        if listen.addr.is_none() && to.family() == Family::V6 {
            listen.addr = Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        // An explicit `0.0.0.0` is IPv4, as with `docker run -p 0.0.0.0:8080:80`.
        if listen.family() != to.family() {
            return Err(SpecError::FamilyMismatch {
                listen: listen.to_string(),
                listen_family: listen.family(),
                to: to.to_string(),
                to_family: to.family(),
            });
        }
        let listen = listen.normalized();
        if listen.port_count() != to.port_count() {
            return Err(SpecError::RangeLengthMismatch {
                listen: listen.to_string(),
                listen_len: listen.port_count(),
                to: to.to_string(),
                to_len: to.port_count(),
            });
        }
        Ok(Forward {
            listen,
            to,
            allow: Vec::new(),
        })
    }

    /// The same forward accepting only sources in `allow` (every source when `allow` is
    /// empty). Duplicates are dropped; the order is kept. Prefixes of both families may be
    /// mixed (those of the other family never match), but at least one must be of the
    /// forward's family ([`SpecError::AllowlistWithoutFamily`]).
    pub fn with_allow(mut self, allow: Vec<AllowPrefix>) -> Result<Forward, SpecError> {
        let mut unique: Vec<AllowPrefix> = Vec::with_capacity(allow.len());
        for p in allow {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if !unique.is_empty() && !unique.iter().any(|p| p.family() == self.family()) {
            return Err(SpecError::AllowlistWithoutFamily(self.family()));
        }
        self.allow = unique;
        Ok(self)
    }

    /// The forward's address family (both sides are of it).
    pub fn family(&self) -> Family {
        self.to.family()
    }

    /// The allowlist prefixes of the forward's family: those that can match a client.
    pub fn allow_of_family(&self) -> impl Iterator<Item = &AllowPrefix> + '_ {
        self.allow.iter().filter(|p| p.family() == self.family())
    }

    /// Whether a client at `source` may use this forward (a source of the other family never
    /// reaches it).
    pub fn allows(&self, source: IpAddr) -> bool {
        Family::of(source) == self.family()
            && (self.allow.is_empty() || self.allow_of_family().any(|p| p.contains(source)))
    }
}

impl FromStr for Forward {
    type Err = SpecError;

    /// Parses the [`Display`](fmt::Display) form `LISTEN -> TARGET [allow P1,P2]` (spaces
    /// around `->` optional), as printed in logs.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (listen, rest) = s
            .split_once("->")
            .ok_or_else(|| SpecError::NotAForward(s.to_owned()))?;
        let (to, allow) = match rest.trim().split_once(" allow ") {
            Some((to, allow)) => (to, Some(allow)),
            None => (rest, None),
        };
        let fwd = Forward::new(listen.trim().parse()?, to.trim().parse()?)?;
        match allow {
            None => Ok(fwd),
            Some(list) => {
                let allow = list
                    .split(',')
                    .map(|p| p.trim().parse())
                    .collect::<Result<Vec<AllowPrefix>, _>>()?;
                fwd.with_allow(allow)
            }
        }
    }
}

impl fmt::Display for Forward {
    /// `8080/tcp -> 172.17.0.2:3000`, `8000-8010/udp -> 172.17.0.2:9000-9010 allow 10.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.listen, self.to)?;
        for (i, p) in self.allow.iter().enumerate() {
            f.write_str(if i == 0 { " allow " } else { "," })?;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Serialised as its string form, e.g. `"10.0.0.0/8"`.
impl Serialize for AllowPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serialised as its string form, e.g. `"10.0.0.1:8080/udp"`.
impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serialised as its string form, e.g. `"172.17.0.2:3000"`.
impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Splits off a `/proto` suffix. (More protocols: extend [`Protocol`].)
fn split_protocol(s: &str) -> Result<(&str, Option<Protocol>), SpecError> {
    match s.rsplit_once('/') {
        Some((rest, proto)) => Ok((rest, Some(proto.parse()?))),
        None => Ok((s, None)),
    }
}

/// Splits `HOST:PORT` into the host's address and the port text; without a host the whole is
/// the port. An IPv6 host is bracketed (`[fd00::2]:3000`, Docker's form); an unbracketed one
/// is refused, since its last group cannot be told apart from a port.
fn split_host_port(s: &str) -> Result<(Option<IpAddr>, &str), SpecError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| SpecError::NotIpv6(s.to_owned()))?;
        let addr = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| SpecError::NotIpv6(format!("[{inner}]")))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((Some(IpAddr::V6(addr)), port)),
            None if after.is_empty() => Err(SpecError::MissingPort(s.to_owned())),
            None => Err(SpecError::NotIpv6(s.to_owned())),
        };
    }
    match s.rsplit_once(':') {
        Some((host, _))
            if host.contains(':')
                && (host.parse::<Ipv6Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok()) =>
        {
            Err(SpecError::Ipv6WithoutBrackets(s.to_owned()))
        }
        Some((host, port)) => Ok((Some(IpAddr::V4(parse_ipv4(host)?)), port)),
        None => Ok((None, s)),
    }
}

/// `PORT` or `LOW-HIGH`: the first and last port (equal for a single port).
fn parse_port_range(s: &str) -> Result<(u16, u16), SpecError> {
    match s.split_once('-') {
        // A leading '-' is not a range ("-1" is reported as not a port).
        Some((low, high)) if !low.is_empty() => {
            let (low, high) = (parse_port(low)?, parse_port(high)?);
            if high < low {
                return Err(SpecError::ReversedRange(low, high));
            }
            Ok((low, high))
        }
        _ => parse_port(s).map(|p| (p, p)),
    }
}

/// A decimal port in 1-65535.
fn parse_port(s: &str) -> Result<u16, SpecError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::NotAPort(s.to_owned()));
    }
    // Leading zeros are accepted (as Docker does) and dropped from messages.
    let digits = match s.trim_start_matches('0') {
        "" => "0",
        digits => digits,
    };
    match digits.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(SpecError::PortOutOfRange(digits.to_owned())),
    }
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, SpecError> {
    s.parse().map_err(|_| SpecError::NotAnAddress(s.to_owned()))
}

/// A host address to listen on: unicast, global or unique-local scope (or loopback); `0.0.0.0`
/// means every IPv4 address, `[::]` every IPv6 address (both kept as written; a [`Forward`]
/// keeps `0.0.0.0` as no address, see [`Listen::normalized`]).
fn parse_listen_addr(addr: IpAddr) -> Result<Option<IpAddr>, SpecError> {
    let reason = match addr {
        IpAddr::V4(a) if a.is_unspecified() => return Ok(Some(addr)),
        IpAddr::V4(a) if a.is_broadcast() => {
            "the broadcast address; a host address must be unicast"
        }
        IpAddr::V4(a) if a.is_multicast() => "multicast; a host address must be unicast",
        IpAddr::V4(_) => return Ok(Some(addr)),
        IpAddr::V6(a) if a.is_multicast() => "multicast; a host address must be unicast",
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            "link-local; publish a global or unique-local address, or [::] for every one"
        }
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => "IPv4-mapped; write the IPv4 address",
        IpAddr::V6(_) => return Ok(Some(addr)),
    };
    Err(SpecError::BadListenAddress { addr, reason })
}

/// A container address: unicast, not unspecified (nor, for IPv6, link-local or IPv4-mapped).
fn parse_target_addr(addr: IpAddr) -> Result<IpAddr, SpecError> {
    let reason = match addr {
        IpAddr::V4(a) if a.is_unspecified() => {
            "unspecified (0.0.0.0); give the container's address"
        }
        IpAddr::V4(a) if a.is_broadcast() => {
            "the broadcast address; give the container's unicast address"
        }
        IpAddr::V4(a) if a.is_multicast() => "multicast; give the container's unicast address",
        IpAddr::V4(_) => return Ok(addr),
        IpAddr::V6(a) if a.is_unspecified() => "unspecified (::); give the container's address",
        IpAddr::V6(a) if a.is_multicast() => "multicast; give the container's unicast address",
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            "link-local; give the container's global or unique-local address"
        }
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => "IPv4-mapped; write the IPv4 address",
        IpAddr::V6(_) => return Ok(addr),
    };
    Err(SpecError::BadTargetAddress { addr, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> Listen {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn listen_err(s: &str) -> String {
        match s.parse::<Listen>() {
            Ok(l) => panic!("{s} parsed as {l:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn target_err(s: &str) -> String {
        match s.parse::<Target>() {
            Ok(t) => panic!("{s} parsed as {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn listen_forms() {
        let cases = [
            ("8080", None, 8080, Protocol::Tcp),
            ("8080/udp", None, 8080, Protocol::Udp),
            ("8080/tcp", None, 8080, Protocol::Tcp),
            ("8080/UDP", None, 8080, Protocol::Udp),
            ("8080/Tcp", None, 8080, Protocol::Tcp),
            ("10.0.0.1:8080", Some(A), 8080, Protocol::Tcp),
            ("10.0.0.1:8080/tcp", Some(A), 8080, Protocol::Tcp),
            ("10.0.0.1:8080/udp", Some(A), 8080, Protocol::Udp),
            (
                "0.0.0.0:8080",
                Some(Ipv4Addr::UNSPECIFIED.into()),
                8080,
                Protocol::Tcp,
            ),
            (
                "127.0.0.1:1",
                Some(Ipv4Addr::LOCALHOST.into()),
                1,
                Protocol::Tcp,
            ),
            (
                "[::1]:8080",
                Some(Ipv6Addr::LOCALHOST.into()),
                8080,
                Protocol::Tcp,
            ),
            (
                "[::]:8080/udp",
                Some(Ipv6Addr::UNSPECIFIED.into()),
                8080,
                Protocol::Udp,
            ),
            (
                "[fd00::2]:3000",
                Some("fd00::2".parse().unwrap()),
                3000,
                Protocol::Tcp,
            ),
            ("65535", None, 65535, Protocol::Tcp),
            ("08080", None, 8080, Protocol::Tcp),
        ];
        for (s, addr, port, protocol) in cases {
            assert_eq!(
                listen(s),
                Listen {
                    addr,
                    port,
                    end: port,
                    protocol
                },
                "{s}"
            );
        }
    }

    #[test]
    fn listen_display_round_trips() {
        for (s, shown) in [
            ("8080", "8080/tcp"),
            ("8080/udp", "8080/udp"),
            ("10.0.0.1:8080", "10.0.0.1:8080/tcp"),
            ("10.0.0.1:8080/UDP", "10.0.0.1:8080/udp"),
            ("0.0.0.0:8080/udp", "0.0.0.0:8080/udp"),
            ("08080", "8080/tcp"),
            ("[::]:8080", "[::]:8080/tcp"),
            ("[2001:db8::1]:8000/udp", "[2001:db8::1]:8000/udp"),
            ("[FD00:0::2]:80", "[fd00::2]:80/tcp"),
        ] {
            let l = listen(s);
            assert_eq!(l.to_string(), shown);
            assert_eq!(listen(shown), l);
            assert_eq!(l.key().to_string(), shown);
        }
    }

    #[test]
    fn listen_errors() {
        for (s, message) in [
            ("0", "port 0 is outside 1-65535"),
            ("000", "port 0 is outside 1-65535"),
            ("70000", "port 70000 is outside 1-65535"),
            ("070000", "port 70000 is outside 1-65535"),
            (
                "99999999999999999999999",
                "port 99999999999999999999999 is outside 1-65535",
            ),
            ("abc", "'abc' is not a port number"),
            ("-1", "'-1' is not a port number"),
            ("+80", "'+80' is not a port number"),
            (" 80", "' 80' is not a port number"),
            ("10.0.0.1:", "'' is not a port number"),
            ("/udp", "'' is not a port number"),
            ("300.1.1.1:80", "'300.1.1.1' is not an IP address"),
            ("localhost:80", "'localhost' is not an IP address"),
            (":80", "'' is not an IP address"),
            ("1.2.3.4:80:90", "'1.2.3.4:80' is not an IP address"),
            ("010.0.0.1:80", "'010.0.0.1' is not an IP address"),
            ("8080/icmp", "unknown protocol 'icmp' (expected tcp or udp)"),
            ("8080/", "unknown protocol '' (expected tcp or udp)"),
            (
                "8080/sctp",
                "sctp is not supported yet: portfwd forwards tcp and udp",
            ),
            (
                "::1:8080",
                "'::1:8080': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
            ),
            (
                "fd00::2:3000/udp",
                "'fd00::2:3000': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
            ),
            ("[::1]", "'[::1]' needs a port: IP:PORT"),
            (
                "[::1]8080",
                "'[::1]8080' is not an IPv6 address in brackets (e.g. [fd00::2])",
            ),
            ("[::1]:", "'' is not a port number"),
            (
                "[ff02::1]:80",
                "listen address ff02::1 is multicast; a host address must be unicast",
            ),
            (
                "[fe80::1]:80",
                "listen address fe80::1 is link-local; publish a global or unique-local address, or [::] for every one",
            ),
            (
                "[::ffff:10.0.0.1]:80",
                "listen address ::ffff:10.0.0.1 is IPv4-mapped; write the IPv4 address",
            ),
            (
                "[10.0.0.1]:8080",
                "'[10.0.0.1]' is not an IPv6 address in brackets (e.g. [fd00::2])",
            ),
            (
                "[::1:8080",
                "'[::1:8080' is not an IPv6 address in brackets (e.g. [fd00::2])",
            ),
            (
                "8010-8000",
                "port range 8010-8000 is reversed (write LOW-HIGH)",
            ),
            ("8000-", "'' is not a port number"),
            ("8000-x", "'x' is not a port number"),
            ("8000-70000", "port 70000 is outside 1-65535"),
            ("0-10", "port 0 is outside 1-65535"),
            ("1-2-3", "'2-3' is not a port number"),
            ("80\n", "'80\\n' is not a port number"),
            (
                "80/tcp\t",
                "unknown protocol 'tcp\\t' (expected tcp or udp)",
            ),
            (
                "",
                "empty value (expected [HOST_IP:]HOST_PORT[-END][/PROTO])",
            ),
            (
                "224.0.0.1:80",
                "listen address 224.0.0.1 is multicast; a host address must be unicast",
            ),
            (
                "255.255.255.255:80",
                "listen address 255.255.255.255 is the broadcast address; a host address must be unicast",
            ),
        ] {
            assert_eq!(listen_err(s), message, "{s}");
        }
    }

    #[test]
    fn listen_with_separate_protocol() {
        let p = |s, proto| Listen::parse_with_protocol(s, proto);
        assert_eq!(
            p("8080", Some(Protocol::Udp)).unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!(p("8080", None).unwrap().protocol, Protocol::Tcp);
        assert_eq!(
            p("8080/udp", Some(Protocol::Udp)).unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!(
            p("8080/UDP", Some(Protocol::Udp)).unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!(
            p("8080/udp", Some(Protocol::Tcp)).unwrap_err().to_string(),
            "'8080/udp' says udp but the protocol is given as tcp"
        );
    }

    #[test]
    fn targets() {
        let t: Target = "172.17.0.2:3000".parse().unwrap();
        assert_eq!(
            t,
            Target {
                addr: Ipv4Addr::new(172, 17, 0, 2).into(),
                port: 3000,
                end: 3000,
            }
        );
        assert_eq!(t.to_string(), "172.17.0.2:3000");
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        assert_eq!("127.0.0.1:80".parse::<Target>().unwrap().port, 80);
        let t: Target = "[fd00:17::2]:9000-9010".parse().unwrap();
        assert_eq!(t.addr, "fd00:17::2".parse::<IpAddr>().unwrap());
        assert_eq!((t.port, t.end, t.family()), (9000, 9010, Family::V6));
        assert_eq!(t.to_string(), "[fd00:17::2]:9000-9010");
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
    }

    #[test]
    fn target_errors() {
        for (s, message) in [
            ("172.17.0.2", "'172.17.0.2' needs a port: IP:PORT"),
            ("3000", "'3000' needs an address: IP:PORT"),
            (
                "abc",
                "'abc' is not IP:PORT (e.g. 172.17.0.2:3000 or [fd00::2]:3000)",
            ),
            ("", "empty value (expected IP:PORT[-END])"),
            ("172.17.0.2:0", "port 0 is outside 1-65535"),
            ("172.17.0.2:70000", "port 70000 is outside 1-65535"),
            ("172.17.0.2:http", "'http' is not a port number"),
            ("300.1.1.1:80", "'300.1.1.1' is not an IP address"),
            ("db:5432", "'db' is not an IP address"),
            (":80", "'' is not an IP address"),
            (
                "172.17.0.2:3000/udp",
                "'172.17.0.2:3000/udp' carries a protocol; give it on the listen side instead (e.g. 8080/udp)",
            ),
            (
                "0.0.0.0:80",
                "target address 0.0.0.0 is unspecified (0.0.0.0); give the container's address",
            ),
            (
                "255.255.255.255:80",
                "target address 255.255.255.255 is the broadcast address; give the container's unicast address",
            ),
            (
                "239.1.2.3:80",
                "target address 239.1.2.3 is multicast; give the container's unicast address",
            ),
        ] {
            assert_eq!(target_err(s), message, "{s}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!("tcp".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("UDP".parse::<Protocol>().unwrap(), Protocol::Udp);
        assert_eq!(Protocol::Udp.as_str(), "udp");
        assert_eq!(Protocol::Tcp.to_string(), "tcp");
        assert_eq!(Protocol::default(), Protocol::Tcp);
        assert_eq!(
            "icmp".parse::<Protocol>().unwrap_err().to_string(),
            "unknown protocol 'icmp' (expected tcp or udp)"
        );
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), "\"udp\"");
        assert_eq!(
            serde_json::from_str::<Protocol>("\"tcp\"").unwrap(),
            Protocol::Tcp
        );
    }

    #[test]
    fn conflicts() {
        let c = |a: &str, b: &str| {
            let (a, b) = (listen(a), listen(b));
            assert_eq!(a.conflicts_with(&b), b.conflicts_with(&a), "symmetric");
            a.conflicts_with(&b)
        };
        assert!(c("8080", "8080"));
        assert!(c("8080", "8080/tcp"));
        assert!(c("8080", "10.0.0.1:8080"));
        assert!(c("0.0.0.0:8080", "10.0.0.1:8080/tcp"));
        assert!(c("10.0.0.1:8080", "10.0.0.1:8080"));
        assert!(!c("10.0.0.1:8080", "10.0.0.2:8080"));
        assert!(!c("8080", "8080/udp"));
        assert!(!c("10.0.0.1:8080/udp", "8080/tcp"));
        assert!(!c("8080", "8081"));
        assert!(c("8080/udp", "10.0.0.1:8080/udp"));
        // Ranges overlap single ports and other ranges, at either end or inside.
        assert!(c("8000-8010", "8005"));
        assert!(c("8000-8010", "8000"));
        assert!(c("8000-8010", "8010"));
        assert!(!c("8000-8010", "8011"));
        assert!(!c("8000-8010", "7999"));
        assert!(c("8000-8010", "8010-8020"));
        assert!(c("8000-8010", "7000-9000"));
        assert!(!c("8000-8010", "8011-8020"));
        assert!(c("8000-8010", "10.0.0.1:8005-8006"));
        assert!(!c("10.0.0.2:8000-8010", "10.0.0.1:8005-8006"));
        assert!(!c("8000-8010/udp", "8005/tcp"));
    }

    #[test]
    fn ranges() {
        let l = listen("10.0.0.1:8000-8010/udp");
        assert_eq!((l.port, l.end, l.port_count()), (8000, 8010, 11));
        assert!(l.is_range());
        assert_eq!(l.to_string(), "10.0.0.1:8000-8010/udp");
        assert_eq!(listen("8000-8000"), listen("8000"));
        assert!(!listen("8000-8000").is_range());
        assert_eq!(listen("1-65535").port_count(), 65535);
        assert_eq!(l.keys().count(), 11);
        assert_eq!(l.keys().last().unwrap().to_string(), "10.0.0.1:8010/udp");

        let f: Forward = "8000-8010 -> 172.17.0.2:9000-9010".parse().unwrap();
        assert_eq!(f.to.port_for(&f.listen, 8005), 9005);
        assert_eq!(f.to.port_for(&f.listen, 8000), 9000);
        assert_eq!(f.to.port_for(&f.listen, 8010), 9010);
        assert_eq!(f.to_string(), "8000-8010/tcp -> 172.17.0.2:9000-9010");
        assert_eq!(f.to_string().parse::<Forward>().unwrap(), f);

        let err = |s: &str| s.parse::<Forward>().unwrap_err().to_string();
        assert_eq!(
            err("8000-8010 -> 172.17.0.2:9000-9005"),
            "8000-8010/tcp covers 11 ports but 172.17.0.2:9000-9005 covers 6; a range maps port by port, so both sides must be the same length"
        );
        assert_eq!(
            err("8000-8010 -> 172.17.0.2:80"),
            "8000-8010/tcp covers 11 ports but 172.17.0.2:80 covers 1; a range maps port by port, so both sides must be the same length"
        );
        assert_eq!(
            err("8080 -> 172.17.0.2:80-81"),
            "8080/tcp covers 1 port but 172.17.0.2:80-81 covers 2; a range maps port by port, so both sides must be the same length"
        );
    }

    #[test]
    fn ipv6_target_errors() {
        for (s, message) in [
            ("[fd00::2]", "'[fd00::2]' needs a port: IP:PORT"),
            (
                "fd00::2",
                "'fd00::2': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
            ),
            (
                "fd00::2:3000",
                "'fd00::2:3000': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
            ),
            (
                "[nope]:80",
                "'[nope]' is not an IPv6 address in brackets (e.g. [fd00::2])",
            ),
            (
                "[::]:80",
                "target address :: is unspecified (::); give the container's address",
            ),
            (
                "[ff02::1]:80",
                "target address ff02::1 is multicast; give the container's unicast address",
            ),
            (
                "[fe80::2]:80",
                "target address fe80::2 is link-local; give the container's global or unique-local address",
            ),
            (
                "[::ffff:172.17.0.2]:80",
                "target address ::ffff:172.17.0.2 is IPv4-mapped; write the IPv4 address",
            ),
        ] {
            assert_eq!(target_err(s), message, "{s}");
        }
    }

    #[test]
    fn a_forward_is_of_one_family() {
        let fwd = |s: &str| s.parse::<Forward>();
        // A bare port takes the target's family; an IPv6 forward on every address is `[::]`.
        let f = fwd("8080 -> [fd00:17::2]:3000").unwrap();
        assert_eq!(f.listen.addr, Some(Ipv6Addr::UNSPECIFIED.into()));
        assert_eq!(f.family(), Family::V6);
        assert_eq!(f.to_string(), "[::]:8080/tcp -> [fd00:17::2]:3000");
        assert_eq!(fwd(&f.to_string()).unwrap(), f);
        assert_eq!(fwd("[::]:8080 -> [fd00:17::2]:3000").unwrap(), f);
        let f4 = fwd("8080 -> 172.17.0.2:3000").unwrap();
        assert_eq!((f4.listen.addr, f4.family()), (None, Family::V4));
        // The same port on IPv4 and IPv6 is two forwards that do not overlap.
        assert!(!f.listen.conflicts_with(&f4.listen));
        assert!(!f4.listen.key().conflicts_with(&f.listen.key()));
        assert!(f.listen.conflicts_with(&listen("[fd00::1]:8080")));
        assert!(!f4.listen.conflicts_with(&listen("[fd00::1]:8080")));
        let r = fwd("[2001:db8::1]:8000-8010/udp -> [fd00:17::2]:9000-9010").unwrap();
        assert_eq!(r.to.port_for(&r.listen, 8005), 9005);
        assert_eq!(fwd(&r.to_string()).unwrap(), r);

        let err = |s: &str| fwd(s).unwrap_err().to_string();
        assert_eq!(
            err("[::]:8080 -> 172.17.0.2:80"),
            "[::]:8080/tcp is IPv6 but 172.17.0.2:80 is IPv4; portfwd does not translate between IPv4 and IPv6: publish an IPv4 target on an IPv4 host address or a bare port, or give the container's IPv6 address"
        );
        assert_eq!(
            err("[::1]:8080 -> 127.0.0.1:80"),
            "[::1]:8080/tcp is IPv6 but 127.0.0.1:80 is IPv4; portfwd does not translate between IPv4 and IPv6: publish an IPv4 target on an IPv4 host address or a bare port, or give the container's IPv6 address"
        );
        assert_eq!(
            err("10.0.0.1:8080 -> [fd00::2]:80"),
            "10.0.0.1:8080/tcp is IPv4 but [fd00::2]:80 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address"
        );
        // `0.0.0.0` is every IPv4 address (Docker's `-p 0.0.0.0:8080:80` is IPv4 only): the same
        // forward as a bare port to an IPv4 target, refused for an IPv6 one.
        assert_eq!(fwd("0.0.0.0:8080 -> 172.17.0.2:3000").unwrap(), f4);
        assert_eq!(
            err("0.0.0.0:8080 -> [fd00::2]:80"),
            "0.0.0.0:8080/tcp is IPv4 but [fd00::2]:80 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address"
        );
        assert_eq!(listen("0.0.0.0:8080").normalized(), listen("8080"));
    }

    #[test]
    fn allow_prefixes() {
        let p = |s: &str| s.parse::<AllowPrefix>();
        assert_eq!(p("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(p("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(p("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(p("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(p("2001:DB8::7").unwrap().to_string(), "2001:db8::7/128");
        assert_eq!(p("::/0").unwrap().family(), Family::V6);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p("10.0.0.0/8").unwrap().contains(ip("10.1.2.3")));
        assert!(!p("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(p("2001:db8::/32").unwrap().contains(ip("2001:db8:1::9")));
        assert!(
            !p("::/0").unwrap().contains(ip("10.1.2.3")),
            "never across families"
        );
        assert!(!p("0.0.0.0/0").unwrap().contains(ip("::ffff:10.1.2.3")));
        for (s, message) in [
            (
                "10.0.0.1/8",
                "'10.0.0.1/8' has bits set past /8: write the network, 10.0.0.0/8",
            ),
            (
                "10.0.0.0/33",
                "'10.0.0.0/33' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "10.0.0.0/",
                "'10.0.0.0/' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "10.0.0.0/+8",
                "'10.0.0.0/+8' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "lan",
                "'lan' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "2001:db8::/129",
                "'2001:db8::/129' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "[2001:db8::]/32",
                "'[2001:db8::]/32' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
            ),
            (
                "2001:db8::1/32",
                "'2001:db8::1/32' has bits set past /32: write the network, 2001:db8::/32",
            ),
        ] {
            assert_eq!(p(s).unwrap_err().to_string(), message, "{s}");
        }
        let f: Forward = "8080 -> 172.17.0.2:80 allow 10.0.0.0/8,192.0.2.7"
            .parse()
            .unwrap();
        assert_eq!(
            f.to_string(),
            "8080/tcp -> 172.17.0.2:80 allow 10.0.0.0/8,192.0.2.7/32"
        );
        assert_eq!(f.to_string().parse::<Forward>().unwrap(), f);
        assert!(f.allows(ip("10.9.9.9")));
        assert!(f.allows(ip("192.0.2.7")));
        assert!(!f.allows(ip("192.0.2.8")));
        let open: Forward = "8080 -> 172.17.0.2:80".parse().unwrap();
        assert!(open.allows(ip("192.0.2.8")));
        let dup = open
            .clone()
            .with_allow(vec![p("10.0.0.0/8").unwrap(), p("10.0.0.0/8").unwrap()])
            .unwrap();
        assert_eq!(dup.allow.len(), 1);

        // Mixed lists (the issue's own example): each forward uses the prefixes of its family.
        let mixed = vec![p("10.0.0.0/8").unwrap(), p("2001:db8::/32").unwrap()];
        let f4 = open.clone().with_allow(mixed.clone()).unwrap();
        let f6: Forward = "[::]:8080 -> [fd00::2]:80".parse().unwrap();
        let f6 = f6.with_allow(mixed).unwrap();
        assert!(f4.allows(ip("10.1.1.1")) && !f4.allows(ip("2001:db8::1")));
        assert!(f6.allows(ip("2001:db8::1")) && !f6.allows(ip("10.1.1.1")));
        assert!(!f6.allows(ip("2001:db9::1")));
        assert_eq!(f6.allow_of_family().count(), 1);
        assert_eq!(
            f6.to_string(),
            "[::]:8080/tcp -> [fd00::2]:80 allow 10.0.0.0/8,2001:db8::/32"
        );
        assert_eq!(f6.to_string().parse::<Forward>().unwrap(), f6);
        // A list with no prefix of the forward's family would drop everyone.
        assert_eq!(
            open.with_allow(vec![p("2001:db8::/32").unwrap()])
                .unwrap_err()
                .to_string(),
            "no prefix of this allowlist is IPv4, so it would drop every client of this IPv4 forward; add an IPv4 prefix or remove the allowlist"
        );
    }

    #[test]
    fn forwards() {
        let f: Forward = "10.0.0.1:8080/udp -> 172.17.0.2:3000".parse().unwrap();
        assert_eq!(f.listen, listen("10.0.0.1:8080/udp"));
        assert_eq!(f.to.port, 3000);
        assert_eq!(f.to_string(), "10.0.0.1:8080/udp -> 172.17.0.2:3000");
        assert_eq!(f.to_string().parse::<Forward>().unwrap(), f);
        assert_eq!(
            "8080->172.17.0.2:3000"
                .parse::<Forward>()
                .unwrap()
                .listen
                .port,
            8080
        );
        assert_eq!(
            "8080".parse::<Forward>().unwrap_err().to_string(),
            "'8080' is not LISTEN -> TARGET"
        );
    }

    #[test]
    fn serde_as_strings() {
        let f: Forward = "8080 -> 172.17.0.2:3000".parse().unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"listen":"8080/tcp","to":"172.17.0.2:3000"}"#);
        assert_eq!(serde_json::from_str::<Forward>(&json).unwrap(), f);
        let f: Forward = "8000-8001/udp -> 172.17.0.2:9000-9001 allow 10.0.0.0/8"
            .parse()
            .unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"listen":"8000-8001/udp","to":"172.17.0.2:9000-9001","allow":["10.0.0.0/8"]}"#
        );
        assert_eq!(serde_json::from_str::<Forward>(&json).unwrap(), f);
        let uneven = serde_json::from_str::<Forward>(r#"{"listen":"8000-8001","to":"1.2.3.4:5"}"#);
        assert!(uneven.unwrap_err().to_string().contains("same length"));
        let bad = serde_json::from_str::<Forward>(r#"{"listen":"0","to":"1.2.3.4:5"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("port 0 is outside 1-65535")
        );
    }
}
