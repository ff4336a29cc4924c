//! A forward with several backends (issue #16): [`Pool`], its [`Weighted`] targets, its
//! health check and what it does when every backend is down.
//!
//! ```text
//! TARGETS = TARGET[*WEIGHT][,TARGET[*WEIGHT]...]   172.17.0.2:3000,172.17.0.3:3000*2
//! ```
//!
//! A pool's targets are single ports of the forward's family, each listed once, at most
//! [`MAX_POOL_TARGETS`]; a weight is 0-1000 (default 1), 0 meaning drained (no new flows, its
//! flows drain), and at least one target takes new flows. A forward of one target with a
//! health check is a pool of one; one target without is no pool (`Forward.pool` is `None`).
//! [`Forward::with_targets`](super::Forward::with_targets) checks all of it.

use std::{fmt, str::FromStr, time::Duration};

use super::{
    error::{PoolError, PublishError},
    target::Target,
};
use crate::health;

/// The form of a forward's targets, for messages.
pub(super) const TARGETS_FORM: &str = "TARGET[*WEIGHT][,TARGET[*WEIGHT]...]";

/// The most backends one forward may have (the Maglev table holds each about 100 times).
pub const MAX_POOL_TARGETS: usize = portfwd_common::pool::MAX_POOL_BACKENDS;
/// The largest weight of a target.
pub const MAX_WEIGHT: u32 = 1000;
/// How long a removed backend keeps its established TCP flows, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// One target of a pool, with its share of new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weighted {
    pub target: Target,
    /// 0 (drained: no new flows) to [`MAX_WEIGHT`].
    pub weight: u32,
}

impl Weighted {
    /// `target` with weight 1.
    pub fn one(target: Target) -> Weighted {
        Weighted { target, weight: 1 }
    }
}

impl FromStr for Weighted {
    type Err = PublishError;

    /// `IP:PORT[-END]` or `IP:PORT[-END]*WEIGHT`.
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let Some((target, weight)) = s.rsplit_once('*') else {
            return s.parse().map(Weighted::one);
        };
        let target = target.parse()?;
        if weight.is_empty() || !weight.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PoolError::NotAWeight(weight.to_owned()).into());
        }
        match weight.parse::<u32>() {
            Ok(weight) if weight <= MAX_WEIGHT => Ok(Weighted { target, weight }),
            _ => Err(PoolError::WeightOutOfRange(weight.to_owned()).into()),
        }
    }
}

/// `TARGET[*WEIGHT][,TARGET[*WEIGHT]...]`, spaces around the commas allowed; each target as
/// [`Weighted`] parses it (the checks of a whole forward's targets are
/// [`Forward::with_targets`](super::Forward::with_targets)'s).
pub fn parse_targets(s: &str) -> Result<Vec<Weighted>, PublishError> {
    s.split(',')
        .map(|t| match t.trim() {
            "" => Err(PublishError::Empty {
                expected: TARGETS_FORM,
            }),
            t => t.parse(),
        })
        .collect()
}

/// Targets written as [`parse_targets`] reads them: `172.17.0.2:3000,172.17.0.3:3000*2`.
pub struct Targets<'a>(pub &'a [Weighted]);

impl fmt::Display for Targets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Weighted {
    /// `172.17.0.2:3000`, or `172.17.0.2:3000*2` for a weight other than 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        if self.weight != 1 {
            write!(f, "*{}", self.weight)?;
        }
        Ok(())
    }
}

/// What a pool does for a new flow when every backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AllDown {
    /// Hash over every backend anyway (a health check that is wrong does not take the
    /// service down).
    #[default]
    Serve,
    /// Refuse: TCP and UDP get an ICMP port unreachable (counted).
    Refuse,
}

impl AllDown {
    pub const ALL: [AllDown; 2] = [AllDown::Serve, AllDown::Refuse];

    pub fn as_str(self) -> &'static str {
        match self {
            AllDown::Serve => "serve",
            AllDown::Refuse => "refuse",
        }
    }
}

impl FromStr for AllDown {
    type Err = PublishError;

    /// `serve` or `refuse`, in any case.
    fn from_str(s: &str) -> Result<Self, PublishError> {
        AllDown::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PoolError::UnknownAllDown(s.to_owned()).into())
    }
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pool's health check: what each probe does, and how often and how strictly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthSpec {
    pub check: health::Check,
    pub params: health::Params,
}

/// How a forward's targets are balanced, as given (`None`: not given). A pool takes the
/// defaults of what is not given; a forward that is no pool refuses `all_down` and `grace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolOptions {
    pub health: Option<HealthSpec>,
    pub all_down: Option<AllDown>,
    pub grace: Option<Duration>,
}

/// The targets of a forward with several backends, and how they are balanced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pool {
    /// At least one, at most [`MAX_POOL_TARGETS`], each address:port once; the first is the
    /// forward's `to`.
    pub targets: Vec<Weighted>,
    /// `None`: every target is taken as up.
    pub health: Option<HealthSpec>,
    pub all_down: AllDown,
    /// How long a removed target keeps its established TCP flows.
    pub grace: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Forward;

    fn fwd(s: &str) -> Forward {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<Forward>() {
            Ok(f) => panic!("{s} parsed as {f}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn several_targets_round_trip() {
        let f = fwd("8080 -> 172.17.0.2:3000, 172.17.0.3:3000*2,172.17.0.4:3000*0");
        let pool = f.pool.as_deref().unwrap();
        assert_eq!(f.to, pool.targets[0].target);
        assert_eq!(
            pool.targets.iter().map(|t| t.weight).collect::<Vec<_>>(),
            [1, 2, 0]
        );
        assert_eq!(
            (pool.health.clone(), pool.all_down, pool.grace),
            (None, AllDown::Serve, DEFAULT_GRACE)
        );
        let text = "8080/tcp -> 172.17.0.2:3000,172.17.0.3:3000*2,172.17.0.4:3000*0";
        assert_eq!(f.to_string(), text);
        assert_eq!(fwd(text), f);
        let v6 = fwd("[::]:53/udp -> [fd00::2]:53*1000,[fd00::3]:53 allow 10.0.0.0/8,fd00::/8");
        assert_eq!(
            v6.to_string(),
            "[::]:53/udp -> [fd00::2]:53*1000,[fd00::3]:53 allow 10.0.0.0/8,fd00::/8"
        );
        assert_eq!(fwd(&v6.to_string()), v6);
    }

    #[test]
    fn one_target_is_no_pool() {
        let f = fwd("8080 -> 172.17.0.2:3000*5");
        assert!(f.pool.is_none());
        assert_eq!(f, fwd("8080 -> 172.17.0.2:3000"));
        assert_eq!(f.to_string(), "8080/tcp -> 172.17.0.2:3000");
        assert_eq!(f.targets(), [Weighted::one(f.to)]);
        assert_eq!(f.pool_options(), PoolOptions::default());
        // A range with one target stays a forward as it always was.
        assert!(fwd("8000-8001 -> 172.17.0.2:9000-9001").pool.is_none());
    }

    #[test]
    fn one_target_with_a_health_check_is_a_pool_of_one() {
        let health = HealthSpec {
            check: health::Check::Tcp,
            params: health::Params::default(),
        };
        let options = PoolOptions {
            health: Some(health.clone()),
            ..PoolOptions::default()
        };
        let to = Weighted::one("172.17.0.2:3000".parse().unwrap());
        let f = Forward::with_targets("8080".parse().unwrap(), vec![to], options.clone()).unwrap();
        let pool = f.pool.as_deref().unwrap();
        assert_eq!(
            (pool.targets.len(), pool.health.as_ref()),
            (1, Some(&health))
        );
        assert_eq!(f.pool_options().health, Some(health));
        let range = Forward::with_targets(
            "8000-8001".parse().unwrap(),
            vec![Weighted::one("172.17.0.2:9000-9001".parse().unwrap())],
            options,
        );
        assert_eq!(
            range.unwrap_err().to_string(),
            "8000-8001/tcp -> 172.17.0.2:9000-9001: a forward with several targets or a health check publishes single ports; publish a port range with one target, or one forward per port"
        );
    }

    #[test]
    fn options_without_a_pool_are_refused() {
        let one = || vec![Weighted::one("172.17.0.2:3000".parse().unwrap())];
        let with = |options| Forward::with_targets("8080".parse().unwrap(), one(), options);
        let all_down = PoolOptions {
            all_down: Some(AllDown::Refuse),
            ..PoolOptions::default()
        };
        assert_eq!(
            with(all_down).unwrap_err().to_string(),
            "all_down applies to a forward with several targets or a health check only"
        );
        let grace = PoolOptions {
            grace: Some(Duration::from_secs(5)),
            ..PoolOptions::default()
        };
        assert_eq!(
            with(grace).unwrap_err().to_string(),
            "grace applies to a forward with several targets or a health check only"
        );
    }

    #[test]
    fn all_down_policies() {
        assert_eq!("REFUSE".parse::<AllDown>().unwrap(), AllDown::Refuse);
        assert_eq!("serve".parse::<AllDown>().unwrap(), AllDown::Serve);
        assert_eq!(AllDown::Refuse.to_string(), "refuse");
        assert_eq!(
            "drop".parse::<AllDown>().unwrap_err().to_string(),
            "unknown all_down policy 'drop' (expected serve or refuse)"
        );
    }

    #[test]
    fn pool_errors() {
        let many: Vec<String> = (0..=MAX_POOL_TARGETS)
            .map(|i| format!("10.0.{}.{}:80", i / 200, i % 200 + 1))
            .collect();
        assert_eq!(
            err(&format!("8080 -> {}", many.join(","))),
            "129 targets; a forward has at most 128"
        );
        assert!(
            fwd(&format!("8080 -> {}", many[1..].join(",")))
                .pool
                .is_some()
        );
        for (s, message) in [
            (
                "8080 -> 172.17.0.2:3000,172.17.0.2:3000*2",
                "172.17.0.2:3000 is listed twice; list each target once (give it a weight, e.g. 172.17.0.2:3000*2, for a larger share)",
            ),
            (
                "8080 -> 172.17.0.2:3000*0,172.17.0.3:3000*0",
                "every target has weight 0 (drained): at least one must take new flows",
            ),
            (
                "8080 -> 172.17.0.2:3000*0",
                "every target has weight 0 (drained): at least one must take new flows",
            ),
            (
                "8080 -> 172.17.0.2:3000*1001",
                "weight 1001 is outside 0-1000",
            ),
            (
                "8080 -> 172.17.0.2:3000*99999999999",
                "weight 99999999999 is outside 0-1000",
            ),
            (
                "8080 -> 172.17.0.2:3000*x",
                "'x' is not a weight: write TARGET*WEIGHT with WEIGHT a number 0-1000, e.g. 172.17.0.3:3000*2",
            ),
            (
                "8080 -> 172.17.0.2:3000*",
                "'' is not a weight: write TARGET*WEIGHT with WEIGHT a number 0-1000, e.g. 172.17.0.3:3000*2",
            ),
            (
                "8080 -> 172.17.0.2:3000,",
                "empty value (expected TARGET[*WEIGHT][,TARGET[*WEIGHT]...])",
            ),
            (
                "8080 -> 172.17.0.2:3000,[fd00::3]:3000",
                "8080/tcp is IPv4 but [fd00::3]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
            ),
            (
                "8000-8001 -> 172.17.0.2:9000-9001,172.17.0.3:9000-9001",
                "8000-8001/tcp -> 172.17.0.2:9000-9001,172.17.0.3:9000-9001: a forward with several targets or a health check publishes single ports; publish a port range with one target, or one forward per port",
            ),
            (
                "8080 -> 172.17.0.2:3000,172.17.0.3",
                "'172.17.0.3' needs a port: IP:PORT",
            ),
        ] {
            assert_eq!(err(s), message, "{s}");
        }
    }

    #[test]
    fn one_target_removed_or_drained() {
        let t = |s: &str| s.parse::<Target>().unwrap();
        let f = fwd("8080 -> 172.17.0.2:3000,172.17.0.3:3000*2 allow 10.0.0.0/8");
        let drained = f.with_weight(&t("172.17.0.3:3000"), 0).unwrap();
        assert_eq!(
            drained.to_string(),
            "8080/tcp -> 172.17.0.2:3000,172.17.0.3:3000*0 allow 10.0.0.0/8"
        );
        assert_eq!(
            drained
                .with_weight(&t("172.17.0.2:3000"), 0)
                .unwrap_err()
                .to_string(),
            "every target has weight 0 (drained): at least one must take new flows"
        );
        let one = f.without_target(&t("172.17.0.2:3000")).unwrap();
        assert_eq!(
            one.to_string(),
            "8080/tcp -> 172.17.0.3:3000 allow 10.0.0.0/8"
        );
        assert!(one.pool.is_none(), "one target without a check is no pool");
        assert_eq!(
            one.without_target(&t("172.17.0.3:3000"))
                .unwrap_err()
                .to_string(),
            "172.17.0.3:3000 is the last target of 8080/tcp; to stop publishing the port, run `portfwd del 8080/tcp`"
        );
        assert_eq!(
            f.without_target(&t("172.17.0.9:3000"))
                .unwrap_err()
                .to_string(),
            "172.17.0.9:3000 is not a target of 8080/tcp (its targets: 172.17.0.2:3000,172.17.0.3:3000*2)"
        );
        // A pool with a health check keeps it, and its policies, down to one target.
        let checked = Forward::with_targets(
            f.listen,
            f.targets(),
            PoolOptions {
                health: Some(HealthSpec {
                    check: health::Check::Tcp,
                    params: health::Params::default(),
                }),
                all_down: Some(AllDown::Refuse),
                grace: Some(Duration::from_secs(5)),
            },
        )
        .unwrap();
        let left = checked.without_target(&t("172.17.0.2:3000")).unwrap();
        assert_eq!(left.pool_options(), checked.pool_options());
        assert_eq!(left.targets().len(), 1);
    }
}
