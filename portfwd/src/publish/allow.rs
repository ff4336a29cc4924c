//! Allowlists: a source prefix a forward accepts clients from ([`AllowPrefix`]). The
//! [`Forward`](super::Forward) methods that set and apply a list of them are in `forward`.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use super::{error::PublishError, family::Family};

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
    type Err = PublishError;

    /// Parses `IP/LEN` or a bare `IP` (a single client, `/32`).
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let not_a_prefix = || PublishError::NotAPrefix(s.to_owned());
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
            return Err(PublishError::PrefixHostBits {
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

serde_as_string!(AllowPrefix);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Forward;

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
}
