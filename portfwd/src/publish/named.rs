//! A forward whose target is a container by name, `NAME:PORT[-END]` (`web:3000`):
//! [`ContainerTarget`] and [`NamedForward`]. Docker resolves the name to the container's
//! address while it runs; the daemon follows it (see `daemon::docker`).
//!
//! A target that parses as `IP:PORT` is an address; otherwise a host part that is a Docker
//! container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, not only digits and dots, which is a
//! mistyped IPv4 address) names a container.

use std::{fmt, net::IpAddr, str::FromStr};

use super::{
    allow::AllowPrefix,
    error::{PoolError, PublishError},
    forward::{Forward, same_length, write_forward},
    listen::Listen,
    pool::{PoolOptions, Weighted, parse_targets},
    syntax::{parse_port_range, write_ports},
    target::Target,
};

/// The container side of a forward, by name: `web:3000`, `web:9000-9010`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerTarget {
    /// The container's name, as `docker ps` shows it.
    pub container: String,
    pub port: u16,
    pub end: u16,
}

impl ContainerTarget {
    /// The address target for the container at `addr`.
    pub fn at(&self, addr: IpAddr) -> Target {
        Target {
            addr,
            port: self.port,
            end: self.end,
        }
    }

    pub fn port_count(&self) -> u32 {
        u32::from(self.end) - u32::from(self.port) + 1
    }
}

/// Whether `s` is a Docker container name (and not a mistyped IPv4 address).
fn is_container_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl FromStr for ContainerTarget {
    type Err = PublishError;

    fn from_str(s: &str) -> Result<Self, PublishError> {
        let (name, ports) = s
            .rsplit_once(':')
            .ok_or_else(|| PublishError::NotATarget(s.to_owned()))?;
        if !is_container_name(name) {
            return Err(PublishError::NotATarget(s.to_owned()));
        }
        let (port, end) = parse_port_range(ports)?;
        Ok(ContainerTarget {
            container: name.to_owned(),
            port,
            end,
        })
    }
}

impl fmt::Display for ContainerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.container)?;
        write_ports(f, self.port, self.end)
    }
}

/// The two kinds of target a forward of the config may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyTarget {
    Addr(Target),
    Container(ContainerTarget),
}

impl FromStr for AnyTarget {
    type Err = PublishError;

    /// `IP:PORT[-END]`, else `NAME:PORT[-END]`; the address form's error when neither.
    fn from_str(s: &str) -> Result<Self, PublishError> {
        match s.parse::<Target>() {
            Ok(t) => Ok(AnyTarget::Addr(t)),
            Err(e) => s
                .parse::<ContainerTarget>()
                .map(AnyTarget::Container)
                .map_err(|_| e),
        }
    }
}

/// A forward of the config to a container by name: `8080 -> web:3000`. It becomes a
/// [`Forward`] to the container's address while the container runs ([`NamedForward::at`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedForward {
    pub listen: Listen,
    pub to: ContainerTarget,
    pub allow: Vec<AllowPrefix>,
}

impl NamedForward {
    /// Checks what can be checked without the container's address: both sides cover the
    /// same number of ports.
    pub fn new(
        listen: Listen,
        to: ContainerTarget,
        allow: Vec<AllowPrefix>,
    ) -> Result<NamedForward, PublishError> {
        let listen = listen.normalized();
        same_length(&listen, &to, to.port_count())?;
        Ok(NamedForward { listen, to, allow })
    }

    /// The forward to the container at `addr` (of the listen side's family).
    pub fn at(&self, addr: IpAddr) -> Result<Forward, PublishError> {
        Forward::new(self.listen, self.to.at(addr))?.with_allow(self.allow.clone())
    }

    /// The pool of the replicas at `addrs` (a compose service's, at least one, each weight 1,
    /// every replica taken as up, the default grace).
    pub fn pool_at(&self, addrs: &[IpAddr]) -> Result<Forward, PublishError> {
        let mut fwd = self.at(addrs[0])?;
        let targets = addrs
            .iter()
            .map(|a| super::Weighted {
                target: self.to.at(*a),
                weight: 1,
            })
            .collect();
        fwd.pool = Some(Box::new(super::Pool {
            targets,
            health: None,
            all_down: super::AllDown::Serve,
            grace: super::DEFAULT_GRACE,
        }));
        Ok(fwd)
    }
}

impl fmt::Display for NamedForward {
    /// `8080/tcp -> web:3000 allow 10.0.0.0/8`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_forward(f, &self.listen, &self.to, &self.allow)
    }
}

/// [`parse_targets`], with a clear error for a container name among them
/// ([`PoolError::NamedTargetInPool`]).
pub fn address_targets(s: &str) -> Result<Vec<Weighted>, PublishError> {
    parse_targets(s).map_err(|e| {
        let named = s.split(',').map(str::trim).find(|t| {
            let t = t.rsplit_once('*').map_or(*t, |(t, _)| t);
            t.parse::<Target>().is_err() && t.parse::<ContainerTarget>().is_ok()
        });
        match named {
            Some(t) => PoolError::NamedTargetInPool(t.to_owned()).into(),
            None => e,
        }
    })
}

/// A forward as `portfwd add` gives it: to addresses, or to one container by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyForward {
    Addr(Forward),
    Named(NamedForward),
}

impl AnyForward {
    /// The forward from `listen` to `to` (each `TARGET[*WEIGHT]`, or several separated by
    /// commas; or one `NAME:PORT[-END]` without pool options), for clients in `allow`.
    pub fn new(
        listen: Listen,
        to: &[String],
        allow: Vec<AllowPrefix>,
        options: PoolOptions,
    ) -> Result<AnyForward, PublishError> {
        if let ([one], true) = (to, options == PoolOptions::default())
            && !one.contains([',', '*'])
            && let AnyTarget::Container(c) = one.parse::<AnyTarget>()?
        {
            return NamedForward::new(listen, c, allow).map(AnyForward::Named);
        }
        let mut targets = Vec::with_capacity(to.len());
        for t in to {
            targets.extend(address_targets(t)?);
        }
        Forward::with_targets(listen, targets, options)?
            .with_allow(allow)
            .map(AnyForward::Addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let t = |s: &str| s.parse::<AnyTarget>();
        assert!(matches!(t("172.17.0.2:3000"), Ok(AnyTarget::Addr(_))));
        assert!(matches!(t("[fd00::2]:3000"), Ok(AnyTarget::Addr(_))));
        let Ok(AnyTarget::Container(c)) = t("web-1.blue_x:9000-9002") else {
            panic!()
        };
        assert_eq!(
            (c.container.as_str(), c.port, c.end),
            ("web-1.blue_x", 9000, 9002)
        );
        assert_eq!(c.to_string(), "web-1.blue_x:9000-9002");
        // A mistyped address stays an address error.
        assert_eq!(
            t("172.17.0:3000").unwrap_err().to_string(),
            "'172.17.0' is not an IP address"
        );
        assert!(t("-web:3000").is_err());
        assert!(t("web:0").is_err());
        assert!(t("web").is_err());
    }

    #[test]
    fn a_named_forward_resolves_to_an_address_forward() {
        let n = NamedForward::new(
            "8080".parse().unwrap(),
            "web:3000".parse().unwrap(),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(n.to_string(), "8080/tcp -> web:3000");
        let f = n.at("172.18.0.2".parse().unwrap()).unwrap();
        assert_eq!(f.to_string(), "8080/tcp -> 172.18.0.2:3000");
        assert!(
            NamedForward::new(
                "8080-8081".parse().unwrap(),
                "web:3000".parse().unwrap(),
                Vec::new()
            )
            .is_err()
        );
    }
}
