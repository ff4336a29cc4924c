//! The container side of a forward, `IP:PORT[-END]`: [`Target`].

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use super::{
    error::PublishError,
    family::Family,
    listen::Listen,
    syntax::{parse_port_range, split_host_port, write_addr, write_ports},
};

const TARGET_FORM: &str = "IP:PORT[-END]";

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
    type Err = PublishError;

    /// Parses `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, PublishError> {
        if s.is_empty() {
            return Err(PublishError::Empty {
                expected: TARGET_FORM,
            });
        }
        if s.contains('/') {
            return Err(PublishError::ProtocolOnTarget(s.to_owned()));
        }
        let (addr, port) = match split_host_port(s)? {
            (Some(addr), port) => (addr, port),
            (None, bare) => {
                return Err(if bare.parse::<Ipv4Addr>().is_ok() {
                    PublishError::MissingPort(s.to_owned())
                } else if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
                    PublishError::MissingAddress(s.to_owned())
                } else {
                    PublishError::NotATarget(s.to_owned())
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

serde_as_string!(Target);

/// A container address: unicast, not unspecified (nor, for IPv6, link-local or IPv4-mapped).
fn parse_target_addr(addr: IpAddr) -> Result<IpAddr, PublishError> {
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
    Err(PublishError::BadTargetAddress { addr, reason })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn target_err(s: &str) -> String {
        match s.parse::<Target>() {
            Ok(t) => panic!("{s} parsed as {t:?}"),
            Err(e) => e.to_string(),
        }
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
}
