//! The grammar of a published port, shared by the command line and the config file.
//!
//! A forward is a [`Listen`] side on the host and a [`Target`] side in a container:
//!
//! ```text
//! LISTEN = [HOST_IP:]HOST_PORT[-END][/PROTO]   8080   8000-8010/udp   10.0.0.1:8080/tcp
//! TARGET = IP:PORT[-END]                       172.17.0.2:3000   172.17.0.2:9000-9010
//! PROTO  = tcp | udp                           (default tcp, case-insensitive)
//! ALLOW  = IP[/LEN]                            10.0.0.0/8   192.0.2.7 (= /32)
//! ```
//!
//! This is Docker's `-p` syntax. A range maps port by port (`8000-8010 -> 172.17.0.2:9000-9010`
//! sends 8005 to 9005), so the two sides of a forward must be the same length; a range with a
//! single target port (which Docker reads as "pick one free host port") is refused. Parsing is
//! split into small steps (protocol suffix, host/port split, address, port range).
//!
//! Recognised but refused with a clear one-line error, so that a Docker user learns why rather
//! than reading "not a port number": IPv6 host and target addresses (`[::1]:8080`,
//! `[fd00::2]:3000`: "IPv6 forwarding is not supported yet"), IPv6 allowlist prefixes, and
//! `sctp` (this portfwd forwards tcp and udp only).
//!
//! Without a host address a forward listens on every host address; `0.0.0.0` means the same
//! (as with Docker) and is normalised to "no address", so `0.0.0.0:8080` and `8080` are the
//! same [`Listen`] and print as `8080/tcp`.
//!
//! Everything that parses also prints back to a string that parses to the same value
//! ([`Display`](fmt::Display) is canonical: the protocol is always written).

use std::{
    borrow::Cow,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    str::FromStr,
};

use ipnet::Ipv4Net;

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
    /// An address that is not a dotted-quad IPv4 address.
    #[error("'{}' is not an IPv4 address", printable(.0))]
    NotIpv4(String),
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
    #[error("'{}' is not IP:PORT (e.g. 172.17.0.2:3000)", printable(.0))]
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
        addr: Ipv4Addr,
        /// Why it is refused, e.g. "multicast; a host address must be unicast".
        reason: &'static str,
    },
    /// A target address that cannot be forwarded to.
    #[error("target address {addr} is {reason}")]
    BadTargetAddress {
        /// The address as given.
        addr: Ipv4Addr,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `sctp`: Docker accepts it, portfwd does not (yet). Its datapath would rewrite only the IP
    /// address (SCTP's CRC32c covers no pseudo-header), but the kernels portfwd is built and
    /// tested on have no SCTP stack to prove it with a real association.
    #[error("sctp is not supported yet: portfwd forwards tcp and udp")]
    SctpUnsupported,
    /// An IPv6 address on either side (bracketed or not).
    #[error("'{}': IPv6 forwarding is not supported yet (publish an IPv4 address)", printable(.0))]
    Ipv6Unsupported(String),
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
    #[error("'{}' is not an IPv4 address or prefix (e.g. 10.0.0.0/8)", printable(.0))]
    NotAPrefix(String),
    /// An allowlist prefix with bits set after its length.
    #[error("'{given}' has bits set past /{len}: write the network, {network}", len = .network.prefix_len())]
    PrefixHostBits {
        /// As given.
        given: String,
        /// The network it is in.
        network: Ipv4Net,
    },
    /// An IPv6 allowlist prefix.
    #[error("'{}' is an IPv6 prefix; IPv6 forwarding is not supported yet", printable(.0))]
    Ipv6Prefix(String),
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
    /// The host address to match; `None` matches every host address (`0.0.0.0` parses to
    /// `None`).
    pub addr: Option<Ipv4Addr>,
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

    /// Whether this and `other` would claim the same packets: same protocol, overlapping
    /// ports, and the same address or one of them on every address. `8080` conflicts with
    /// `10.0.0.1:8080` and with `8000-8100`; `10.0.0.1:8080` does not conflict with
    /// `10.0.0.2:8080` nor with `8080/udp`.
    pub fn conflicts_with(&self, other: &Listen) -> bool {
        self.protocol == other.protocol
            && self.port <= other.end
            && other.port <= self.end
            && (self.addr == other.addr || self.addr.is_none() || other.addr.is_none())
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
    /// `8080/tcp`, `10.0.0.1:8080/udp`, `8000-8010/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(addr) = self.addr {
            write!(f, "{addr}:")?;
        }
        write_ports(f, self.port, self.end)?;
        write!(f, "/{}", self.protocol)
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
    /// The host address; `None` for every host address.
    pub addr: Option<Ipv4Addr>,
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
            && (self.addr == other.addr || self.addr.is_none() || other.addr.is_none())
    }
}

impl fmt::Display for ListenKey {
    /// Same form as [`Listen`]: `8080/tcp`, `10.0.0.1:8080/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{addr}:{}/{}", self.port, self.protocol),
            None => write!(f, "{}/{}", self.port, self.protocol),
        }
    }
}

/// The container side of a forward: `IP:PORT[-END]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The container's address: unicast, not 0.0.0.0.
    pub addr: Ipv4Addr,
    /// The container's port, 1-65535; the first of a range.
    pub port: u16,
    /// The last port of a range (inclusive); equal to `port` for a single port.
    pub end: u16,
}

impl Target {
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
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
            && inner.parse::<Ipv6Addr>().is_ok()
        {
            return Err(SpecError::Ipv6Unsupported(s.to_owned()));
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
    /// `172.17.0.2:3000`, `172.17.0.2:9000-9010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.addr)?;
        write_ports(f, self.port, self.end)
    }
}

/// A source prefix a forward accepts clients from: `10.0.0.0/8`, `192.0.2.7` (= `/32`).
/// Bits past the length must be zero, so every prefix has one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowPrefix(pub Ipv4Net);

impl AllowPrefix {
    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length, 0-32.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `addr` is in this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
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
        if addr.parse::<Ipv6Addr>().is_ok() {
            return Err(SpecError::Ipv6Prefix(s.to_owned()));
        }
        let not_a_prefix = || SpecError::NotAPrefix(s.to_owned());
        let ip: Ipv4Addr = addr.parse().map_err(|_| not_a_prefix())?;
        let len = match len {
            None => 32,
            Some(len)
                if !len.is_empty() && len.len() <= 2 && len.bytes().all(|b| b.is_ascii_digit()) =>
            {
                len.parse::<u8>().map_err(|_| not_a_prefix())?
            }
            Some(_) => return Err(not_a_prefix()),
        };
        let net = Ipv4Net::new(ip, len).map_err(|_| not_a_prefix())?;
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
    /// Always with its length: `10.0.0.0/8`, `192.0.2.7/32`.
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
        Ok(Forward::new(r.listen, r.to)?.with_allow(r.allow))
    }
}

impl Forward {
    /// A forward from `listen` to `to`, accepting every source. The two sides must cover the
    /// same number of ports.
    pub fn new(listen: Listen, to: Target) -> Result<Forward, SpecError> {
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
    /// empty). Duplicates are dropped; the order is kept.
    pub fn with_allow(mut self, allow: Vec<AllowPrefix>) -> Forward {
        let mut unique: Vec<AllowPrefix> = Vec::with_capacity(allow.len());
        for p in allow {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        self.allow = unique;
        self
    }

    /// Whether a client at `source` may use this forward.
    pub fn allows(&self, source: Ipv4Addr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|p| p.contains(source))
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
                Ok(fwd.with_allow(allow))
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

/// Splits `HOST:PORT` at the last colon; without a colon the whole is the port. An IPv6 host,
/// bracketed (`[fd00::2]:3000`, Docker's form) or not, is refused here.
fn split_host_port(s: &str) -> Result<(Option<&str>, &str), SpecError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, _) = rest
            .split_once(']')
            .ok_or_else(|| SpecError::NotIpv6(s.to_owned()))?;
        return Err(match inner.parse::<Ipv6Addr>() {
            Ok(_) => SpecError::Ipv6Unsupported(format!("[{inner}]")),
            Err(_) => SpecError::NotIpv6(format!("[{inner}]")),
        });
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') && host.parse::<Ipv6Addr>().is_ok() => {
            Err(SpecError::Ipv6Unsupported(host.to_owned()))
        }
        Some((host, port)) => Ok((Some(host), port)),
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
    s.parse().map_err(|_| SpecError::NotIpv4(s.to_owned()))
}

/// A host address to listen on: unicast; `0.0.0.0` means every address (`None`).
fn parse_listen_addr(s: &str) -> Result<Option<Ipv4Addr>, SpecError> {
    let addr = parse_ipv4(s)?;
    let reason = if addr.is_unspecified() {
        return Ok(None);
    } else if addr.is_broadcast() {
        "the broadcast address; a host address must be unicast"
    } else if addr.is_multicast() {
        "multicast; a host address must be unicast"
    } else {
        return Ok(Some(addr));
    };
    Err(SpecError::BadListenAddress { addr, reason })
}

/// A container address: unicast, not `0.0.0.0`.
fn parse_target_addr(s: &str) -> Result<Ipv4Addr, SpecError> {
    let addr = parse_ipv4(s)?;
    let reason = if addr.is_unspecified() {
        "unspecified (0.0.0.0); give the container's address"
    } else if addr.is_broadcast() {
        "the broadcast address; give the container's unicast address"
    } else if addr.is_multicast() {
        "multicast; give the container's unicast address"
    } else {
        return Ok(addr);
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

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

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
            ("0.0.0.0:8080", None, 8080, Protocol::Tcp),
            ("127.0.0.1:1", Some(Ipv4Addr::LOCALHOST), 1, Protocol::Tcp),
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
            ("0.0.0.0:8080/udp", "8080/udp"),
            ("08080", "8080/tcp"),
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
            ("300.1.1.1:80", "'300.1.1.1' is not an IPv4 address"),
            ("localhost:80", "'localhost' is not an IPv4 address"),
            (":80", "'' is not an IPv4 address"),
            ("1.2.3.4:80:90", "'1.2.3.4:80' is not an IPv4 address"),
            ("010.0.0.1:80", "'010.0.0.1' is not an IPv4 address"),
            ("8080/icmp", "unknown protocol 'icmp' (expected tcp or udp)"),
            ("8080/", "unknown protocol '' (expected tcp or udp)"),
            (
                "8080/sctp",
                "sctp is not supported yet: portfwd forwards tcp and udp",
            ),
            (
                "[::1]:8080",
                "'[::1]': IPv6 forwarding is not supported yet (publish an IPv4 address)",
            ),
            (
                "[fd00::2]:3000/udp",
                "'[fd00::2]': IPv6 forwarding is not supported yet (publish an IPv4 address)",
            ),
            (
                "::1:8080",
                "'::1': IPv6 forwarding is not supported yet (publish an IPv4 address)",
            ),
            (
                "[::]:8080",
                "'[::]': IPv6 forwarding is not supported yet (publish an IPv4 address)",
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
                addr: Ipv4Addr::new(172, 17, 0, 2),
                port: 3000,
                end: 3000,
            }
        );
        assert_eq!(t.to_string(), "172.17.0.2:3000");
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        assert_eq!("127.0.0.1:80".parse::<Target>().unwrap().port, 80);
    }

    #[test]
    fn target_errors() {
        for (s, message) in [
            ("172.17.0.2", "'172.17.0.2' needs a port: IP:PORT"),
            ("3000", "'3000' needs an address: IP:PORT"),
            ("abc", "'abc' is not IP:PORT (e.g. 172.17.0.2:3000)"),
            ("", "empty value (expected IP:PORT[-END])"),
            ("172.17.0.2:0", "port 0 is outside 1-65535"),
            ("172.17.0.2:70000", "port 70000 is outside 1-65535"),
            ("172.17.0.2:http", "'http' is not a port number"),
            ("300.1.1.1:80", "'300.1.1.1' is not an IPv4 address"),
            ("db:5432", "'db' is not an IPv4 address"),
            (":80", "'' is not an IPv4 address"),
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
    fn ipv6_targets_are_refused_clearly() {
        for s in ["[fd00::2]:3000", "[::1]:80", "fd00::2:3000", "[fd00::2]"] {
            assert!(
                target_err(s).contains("IPv6 forwarding is not supported yet"),
                "{s}: {}",
                target_err(s)
            );
        }
        assert_eq!(
            target_err("[nope]:80"),
            "'[nope]' is not an IPv6 address in brackets (e.g. [fd00::2])"
        );
    }

    #[test]
    fn allow_prefixes() {
        let p = |s: &str| s.parse::<AllowPrefix>();
        assert_eq!(p("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(p("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(p("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert!(
            p("10.0.0.0/8")
                .unwrap()
                .contains(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert!(
            !p("10.0.0.0/8")
                .unwrap()
                .contains(Ipv4Addr::new(11, 0, 0, 1))
        );
        for (s, message) in [
            (
                "10.0.0.1/8",
                "'10.0.0.1/8' has bits set past /8: write the network, 10.0.0.0/8",
            ),
            (
                "10.0.0.0/33",
                "'10.0.0.0/33' is not an IPv4 address or prefix (e.g. 10.0.0.0/8)",
            ),
            (
                "10.0.0.0/",
                "'10.0.0.0/' is not an IPv4 address or prefix (e.g. 10.0.0.0/8)",
            ),
            (
                "10.0.0.0/+8",
                "'10.0.0.0/+8' is not an IPv4 address or prefix (e.g. 10.0.0.0/8)",
            ),
            (
                "lan",
                "'lan' is not an IPv4 address or prefix (e.g. 10.0.0.0/8)",
            ),
            (
                "2001:db8::/32",
                "'2001:db8::/32' is an IPv6 prefix; IPv6 forwarding is not supported yet",
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
        assert!(f.allows(Ipv4Addr::new(10, 9, 9, 9)));
        assert!(f.allows(Ipv4Addr::new(192, 0, 2, 7)));
        assert!(!f.allows(Ipv4Addr::new(192, 0, 2, 8)));
        let open: Forward = "8080 -> 172.17.0.2:80".parse().unwrap();
        assert!(open.allows(Ipv4Addr::new(192, 0, 2, 8)));
        let dup = open
            .clone()
            .with_allow(vec![p("10.0.0.0/8").unwrap(), p("10.0.0.0/8").unwrap()]);
        assert_eq!(dup.allow.len(), 1);
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
