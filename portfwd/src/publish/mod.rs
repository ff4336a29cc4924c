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
//!
//! # Files
//!
//! - this file: [`Protocol`], [`Family`], a whole [`Forward`], and the address and port
//!   syntax both sides share;
//! - `listen`: the host side, [`Listen`] and [`ListenKey`], and which ones conflict;
//! - `target`: the container side, [`Target`];
//! - `allow`: allowlists, [`AllowPrefix`] and the [`Forward`] methods that use them;
//! - `error`: [`SpecError`], every message of the grammar.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// Serde for a type through its canonical string form ([`Display`](fmt::Display) out,
/// [`FromStr`] in, with the parse error as the message), e.g. `"10.0.0.1:8080/udp"`.
macro_rules! serde_as_string {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod allow;
mod error;
mod listen;
mod target;

pub use allow::AllowPrefix;
pub use error::SpecError;
pub(crate) use error::printable;
pub use listen::{Listen, ListenKey};
pub use target::Target;

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

    /// The forward's address family (both sides are of it).
    pub fn family(&self) -> Family {
        self.to.family()
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

// ---------------------------------------------------------------------------------------------
// Address and port syntax shared by both sides

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

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> Listen {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
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
