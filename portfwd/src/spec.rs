//! The grammar of a published port, shared by the command line and the config file.
//!
//! A forward is a [`Listen`] side on the host and a [`Target`] side in a container:
//!
//! ```text
//! LISTEN = [HOST_IP:]HOST_PORT[/PROTO]      8080   8080/udp   10.0.0.1:8080/tcp
//! TARGET = IP:PORT                          172.17.0.2:3000
//! PROTO  = tcp | udp                        (default tcp, case-insensitive)
//! ```
//!
//! This is the IPv4, single-port subset of Docker's `-p` syntax. Parsing is split into small
//! steps (protocol suffix, host/port split, address, port) so that port ranges, bracketed IPv6
//! addresses and more protocols can each be added to one step.
//!
//! Without a host address a forward listens on every host address; `0.0.0.0` means the same
//! (as with Docker) and is normalised to "no address", so `0.0.0.0:8080` and `8080` are the
//! same [`Listen`] and print as `8080/tcp`.
//!
//! Everything that parses also prints back to a string that parses to the same value
//! ([`Display`](fmt::Display) is canonical: the protocol is always written).

use std::{borrow::Cow, fmt, net::Ipv4Addr, str::FromStr};

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

    /// Parses `tcp` or `udp`, in any case.
    fn from_str(s: &str) -> Result<Self, SpecError> {
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

const LISTEN_FORM: &str = "[HOST_IP:]HOST_PORT[/PROTO]";
const TARGET_FORM: &str = "IP:PORT";

/// The host side of a forward: `[HOST_IP:]HOST_PORT[/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    /// The host address to match; `None` matches every host address (`0.0.0.0` parses to
    /// `None`).
    pub addr: Option<Ipv4Addr>,
    /// The host port, 1-65535.
    pub port: u16,
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
        let (host, port) = split_host_port(rest);
        let addr = host.map(parse_listen_addr).transpose()?.flatten();
        let port = parse_port(port)?;
        Ok(Listen {
            addr,
            port,
            protocol,
        })
    }

    /// The key under which this listen side is published.
    pub fn key(&self) -> ListenKey {
        ListenKey {
            addr: self.addr,
            port: self.port,
            protocol: self.protocol,
        }
    }

    /// Whether this and `other` would claim the same packets: same protocol and port, and
    /// the same address or one of them on every address. `8080` conflicts with
    /// `10.0.0.1:8080`; `10.0.0.1:8080` does not conflict with `10.0.0.2:8080` nor with
    /// `8080/udp`.
    pub fn conflicts_with(&self, other: &Listen) -> bool {
        self.key().conflicts_with(&other.key())
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
    /// `8080/tcp`, `10.0.0.1:8080/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

/// One published (address, port, protocol): the unit of uniqueness among forwards.
///
/// A [`Listen`] has exactly one key today; once port ranges arrive a listen side will cover
/// several keys and conflict when any of them do.
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

/// The container side of a forward: `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The container's address: unicast, not 0.0.0.0.
    pub addr: Ipv4Addr,
    /// The container's port, 1-65535.
    pub port: u16,
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
        let (addr, port) = match split_host_port(s) {
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
        let port = parse_port(port)?;
        Ok(Target { addr, port })
    }
}

impl fmt::Display for Target {
    /// `172.17.0.2:3000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A published port: packets for `listen` on the host go to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Forward {
    /// The host side, including the protocol.
    pub listen: Listen,
    /// The container side.
    pub to: Target,
}

impl FromStr for Forward {
    type Err = SpecError;

    /// Parses the [`Display`](fmt::Display) form `LISTEN -> TARGET` (spaces optional), as
    /// printed in logs.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (listen, to) = s
            .split_once("->")
            .ok_or_else(|| SpecError::NotAForward(s.to_owned()))?;
        Ok(Forward {
            listen: listen.trim().parse()?,
            to: to.trim().parse()?,
        })
    }
}

impl fmt::Display for Forward {
    /// `8080/tcp -> 172.17.0.2:3000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.listen, self.to)
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

/// Splits `HOST:PORT` at the last colon; without a colon the whole is the port.
/// (IPv6: recognise `[ADDR]:PORT` here.)
fn split_host_port(s: &str) -> (Option<&str>, &str) {
    match s.rsplit_once(':') {
        Some((host, port)) => (Some(host), port),
        None => (None, s),
    }
}

/// A decimal port in 1-65535. (Ranges: parse `LOW-HIGH` next to this.)
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
            ("8080/sctp", "unknown protocol 'sctp' (expected tcp or udp)"),
            ("80\n", "'80\\n' is not a port number"),
            (
                "80/tcp\t",
                "unknown protocol 'tcp\\t' (expected tcp or udp)",
            ),
            ("", "empty value (expected [HOST_IP:]HOST_PORT[/PROTO])"),
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
                port: 3000
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
            ("", "empty value (expected IP:PORT)"),
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
        let bad = serde_json::from_str::<Forward>(r#"{"listen":"0","to":"1.2.3.4:5"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("port 0 is outside 1-65535")
        );
    }
}
