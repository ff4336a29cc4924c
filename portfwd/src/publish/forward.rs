//! [`Forward`]: a whole published port, its [`Listen`] and [`Target`] sides of one family,
//! and the allowlist that says which clients may use it.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::{
    allow::AllowPrefix,
    error::{PoolError, PublishError},
    family::Family,
    listen::Listen,
    pool::{DEFAULT_GRACE, MAX_POOL_TARGETS, Pool, PoolOptions, Targets, Weighted, parse_targets},
    target::Target,
};

/// A published port or range: packets for `listen` on the host go to `to`, from the clients
/// in `allow` (every client when it is empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ForwardRepr")]
pub struct Forward {
    /// The host side, including the protocol.
    pub listen: Listen,
    /// The container side: the only target, or a pool's first.
    pub to: Target,
    /// Several targets (or one with a health check), balanced per flow; `None`: `to` alone, as
    /// fast as a forward to one target has always been.
    #[serde(skip)]
    pub pool: Option<Box<Pool>>,
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
    type Error = PublishError;

    fn try_from(r: ForwardRepr) -> Result<Self, PublishError> {
        Forward::new(r.listen, r.to)?.with_allow(r.allow)
    }
}

impl Forward {
    /// A forward from `listen` to `to`, accepting every source. The two sides must be of one
    /// family and cover the same number of ports. A bare port (every host address) takes the
    /// target's family: for an IPv6 target it becomes `[::]`.
    pub fn new(mut listen: Listen, to: Target) -> Result<Forward, PublishError> {
        if listen.addr.is_none() && to.family() == Family::V6 {
            listen.addr = Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        // An explicit `0.0.0.0` is IPv4, as with `docker run -p 0.0.0.0:8080:80`.
        if listen.family() != to.family() {
            return Err(PublishError::FamilyMismatch {
                listen: listen.to_string(),
                listen_family: listen.family(),
                to: to.to_string(),
                to_family: to.family(),
            });
        }
        let listen = listen.normalized();
        same_length(&listen, &to, to.port_count())?;
        Ok(Forward {
            listen,
            to,
            pool: None,
            allow: Vec::new(),
        })
    }

    /// The forward's address family (both sides are of it).
    pub fn family(&self) -> Family {
        self.to.family()
    }

    /// A forward from `listen` to `targets`, balanced as `options` say, accepting every
    /// source. One target without a health check is [`Forward::new`]'s forward (no pool;
    /// its weight, above 0, does not matter). Otherwise a pool, whose targets are single
    /// ports (as is `listen`) of one family, each listed once, at most [`MAX_POOL_TARGETS`],
    /// at least one of weight above 0.
    pub fn with_targets(
        listen: Listen,
        targets: Vec<Weighted>,
        options: PoolOptions,
    ) -> Result<Forward, PublishError> {
        let Some(first) = targets.first() else {
            return Err(PublishError::Empty {
                expected: super::pool::TARGETS_FORM,
            });
        };
        if targets.len() > MAX_POOL_TARGETS {
            return Err(PoolError::TooManyTargets(targets.len(), MAX_POOL_TARGETS).into());
        }
        let mut fwd = Forward::new(listen, first.target)?;
        for (i, t) in targets.iter().enumerate().skip(1) {
            if t.target.family() != fwd.family() {
                return Err(PublishError::FamilyMismatch {
                    listen: fwd.listen.to_string(),
                    listen_family: fwd.listen.family(),
                    to: t.target.to_string(),
                    to_family: t.target.family(),
                });
            }
            if targets[..i].iter().any(|u| u.target == t.target) {
                return Err(PoolError::DuplicateTarget(t.target.to_string()).into());
            }
        }
        if targets.iter().all(|t| t.weight == 0) {
            return Err(PoolError::AllDrained.into());
        }
        if targets.len() == 1 && options.health.is_none() {
            if options.all_down.is_some() {
                return Err(PoolError::OptionWithoutPool("all_down").into());
            }
            if options.grace.is_some() {
                return Err(PoolError::OptionWithoutPool("grace").into());
            }
            return Ok(fwd);
        }
        if fwd.listen.is_range() || targets.iter().any(|t| t.target.port_count() > 1) {
            return Err(PoolError::RangeInPool {
                listen: fwd.listen.to_string(),
                to: Targets(&targets).to_string(),
            }
            .into());
        }
        fwd.pool = Some(Box::new(Pool {
            targets,
            health: options.health,
            all_down: options.all_down.unwrap_or_default(),
            grace: options.grace.unwrap_or(DEFAULT_GRACE),
        }));
        Ok(fwd)
    }

    /// The same forward (listen side, allowlist, balancing) to `targets`. Balancing that no
    /// longer applies (one target left, no health check) is dropped.
    pub fn retargeted(&self, targets: Vec<Weighted>) -> Result<Forward, PublishError> {
        let options = match self.pool_options() {
            o if targets.len() == 1 && o.health.is_none() => PoolOptions::default(),
            o => o,
        };
        Forward::with_targets(self.listen, targets, options)?.with_allow(self.allow.clone())
    }

    /// The position of `target` among the targets, or why it is not there.
    fn target_index(&self, targets: &[Weighted], target: &Target) -> Result<usize, PublishError> {
        targets
            .iter()
            .position(|t| t.target == *target)
            .ok_or_else(|| {
                PoolError::NotInPool {
                    target: target.to_string(),
                    listen: self.listen.to_string(),
                    targets: Targets(targets).to_string(),
                }
                .into()
            })
    }

    /// The same forward without `target` (`portfwd del LISTEN TARGET`); the last target is
    /// not removed ([`PoolError::LastTarget`]: the whole forward goes with `portfwd del LISTEN`).
    pub fn without_target(&self, target: &Target) -> Result<Forward, PublishError> {
        let mut targets = self.targets();
        let i = self.target_index(&targets, target)?;
        if targets.len() == 1 {
            return Err(PoolError::LastTarget {
                target: target.to_string(),
                listen: self.listen.to_string(),
            }
            .into());
        }
        targets.remove(i);
        self.retargeted(targets)
    }

    /// The same forward with `target` at `weight` (`portfwd drain`: 0, or 1 to undo).
    pub fn with_weight(&self, target: &Target, weight: u32) -> Result<Forward, PublishError> {
        let mut targets = self.targets();
        let i = self.target_index(&targets, target)?;
        targets[i].weight = weight;
        self.retargeted(targets)
    }

    /// The forward's targets: its pool's, or `to` with weight 1.
    pub fn targets(&self) -> Vec<Weighted> {
        match &self.pool {
            Some(pool) => pool.targets.clone(),
            None => vec![Weighted::one(self.to)],
        }
    }

    /// How the forward is balanced, as [`Forward::with_targets`] takes it back (all `None`
    /// without a pool).
    pub fn pool_options(&self) -> PoolOptions {
        match &self.pool {
            Some(pool) => PoolOptions {
                health: pool.health.clone(),
                all_down: Some(pool.all_down),
                grace: Some(pool.grace),
            },
            None => PoolOptions::default(),
        }
    }
}

impl FromStr for Forward {
    type Err = PublishError;

    /// Parses the [`Display`](fmt::Display) form `LISTEN -> TARGETS [allow P1,P2]` (spaces
    /// around `->` optional), as printed in logs. A pool parsed from it has no health check
    /// and the default `all_down` and grace (the string form does not carry them).
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let (listen, rest) = s
            .split_once("->")
            .ok_or_else(|| PublishError::NotAForward(s.to_owned()))?;
        let (to, allow) = match rest.trim().split_once(" allow ") {
            Some((to, allow)) => (to, Some(allow)),
            None => (rest, None),
        };
        let targets = parse_targets(to.trim())?;
        let fwd = Forward::with_targets(listen.trim().parse()?, targets, PoolOptions::default())?;
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
    /// `8080/tcp -> 172.17.0.2:3000`, `8000-8010/udp -> 172.17.0.2:9000-9010 allow 10.0.0.0/8`,
    /// `8080/tcp -> 172.17.0.2:3000,172.17.0.3:3000*2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            None => write_forward(f, &self.listen, &self.to, &self.allow),
            Some(pool) => write_forward(f, &self.listen, &Targets(&pool.targets), &self.allow),
        }
    }
}

/// `LISTEN -> TO [allow P1,P2]`, the form of every kind of forward (to an address or to a
/// container by name).
pub(super) fn write_forward(
    f: &mut fmt::Formatter<'_>,
    listen: &Listen,
    to: &dyn fmt::Display,
    allow: &[AllowPrefix],
) -> fmt::Result {
    write!(f, "{listen} -> {to}")?;
    for (i, p) in allow.iter().enumerate() {
        f.write_str(if i == 0 { " allow " } else { "," })?;
        write!(f, "{p}")?;
    }
    Ok(())
}

/// A range maps port by port: both sides cover the same number of ports.
pub(super) fn same_length(
    listen: &Listen,
    to: &dyn fmt::Display,
    to_len: u32,
) -> Result<(), PublishError> {
    if listen.port_count() != to_len {
        return Err(PublishError::RangeLengthMismatch {
            listen: listen.to_string(),
            listen_len: listen.port_count(),
            to: to.to_string(),
            to_len,
        });
    }
    Ok(())
}

impl Forward {
    /// The same forward accepting only sources in `allow` (every source when `allow` is
    /// empty). Duplicates are dropped; the order is kept. Prefixes of both families may be
    /// mixed (those of the other family never match), but at least one must be of the
    /// forward's family ([`PublishError::AllowlistWithoutFamily`]).
    pub fn with_allow(mut self, allow: Vec<AllowPrefix>) -> Result<Forward, PublishError> {
        let mut unique: Vec<AllowPrefix> = Vec::with_capacity(allow.len());
        for p in allow {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if !unique.is_empty() && !unique.iter().any(|p| p.family() == self.family()) {
            return Err(PublishError::AllowlistWithoutFamily(self.family()));
        }
        self.allow = unique;
        Ok(self)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Protocol;

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
