//! A forward with several backends (issue #16): [`Pool`], its [`Weighted`] targets, its
//! health check and what it does when every backend is down.
//!
//! ```text
//! TARGETS = TARGET[*WEIGHT][,TARGET[*WEIGHT]...]   172.17.0.2:3000,172.17.0.3:3000*2
//! ```
//!
//! A pool's targets are single ports of the forward's family, each listed once; a weight is
//! 1-1000 (default 1). A forward of one target with a health check is a pool of one.

use std::{fmt, time::Duration};

use super::target::Target;
use crate::health;

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
    /// 1 to [`MAX_WEIGHT`].
    pub weight: u32,
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
    pub fn as_str(self) -> &'static str {
        match self {
            AllDown::Serve => "serve",
            AllDown::Refuse => "refuse",
        }
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
