//! The host side of a forward, `[HOST_IP:]HOST_PORT[-END][/PROTO]`: [`Listen`], the
//! [`ListenKey`]s it publishes, and which listen sides claim the same packets.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    str::FromStr,
};

use super::{
    error::PublishError,
    family::Family,
    protocol::Protocol,
    syntax::{parse_port_range, split_host_port, write_addr, write_ports},
};

const LISTEN_FORM: &str = "[HOST_IP:]HOST_PORT[-END][/PROTO]";

/// The host side of a forward: `[HOST_IP:]HOST_PORT[-END][/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    /// The host address to match. `None` matches every host IPv4 address (a bare port; a
    /// forward keeps `0.0.0.0` as `None`, see [`Listen::normalized`]); `[::]` matches every
    /// host IPv6 address. In a forward to an IPv6 target a bare port is `[::]` (see
    /// [`Forward::new`](super::Forward::new)).
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
    pub fn parse_with_protocol(
        s: &str,
        protocol: Option<Protocol>,
    ) -> Result<Listen, PublishError> {
        if s.is_empty() {
            return Err(PublishError::Empty {
                expected: LISTEN_FORM,
            });
        }
        let (rest, suffix) = split_protocol(s)?;
        let protocol = match (suffix, protocol) {
            (Some(suffix), Some(given)) if suffix != given => {
                return Err(PublishError::ProtocolMismatch {
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

    /// The form a [`Forward`](super::Forward) keeps: `0.0.0.0:8080` is `8080` (every IPv4
    /// address). Parsing keeps the `0.0.0.0` as written, so that a forward to an IPv6 target
    /// can refuse it.
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
    type Err = PublishError;

    /// Parses `[HOST_IP:]HOST_PORT[/PROTO]`.
    fn from_str(s: &str) -> Result<Self, PublishError> {
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

serde_as_string!(Listen);

/// Splits off a `/proto` suffix. (More protocols: extend [`Protocol`].)
fn split_protocol(s: &str) -> Result<(&str, Option<Protocol>), PublishError> {
    match s.rsplit_once('/') {
        Some((rest, proto)) => Ok((rest, Some(proto.parse()?))),
        None => Ok((s, None)),
    }
}

/// A host address to listen on: unicast, global or unique-local scope (or loopback); `0.0.0.0`
/// means every IPv4 address, `[::]` every IPv6 address (both kept as written; a forward keeps
/// `0.0.0.0` as no address, see [`Listen::normalized`]).
fn parse_listen_addr(addr: IpAddr) -> Result<Option<IpAddr>, PublishError> {
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
    Err(PublishError::BadListenAddress { addr, reason })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

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
}
