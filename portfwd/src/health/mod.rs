//! Health checks of a forward's backends (issue #16, item 3), run by the daemon from its own
//! network namespace (the host's), on its tokio runtime.
//!
//! - `probe`: one check of one backend: a TCP connect, or an HTTP GET of a path whose answer
//!   must be 2xx or 3xx; the scheduler bounds each by the check's timeout;
//! - `state`: the pure state machine of one backend (up/down, `rise`, `fall`), which reports
//!   each transition exactly once;
//! - `schedule`: the task set that probes every backend at its interval (starts spread over
//!   the interval, a bound on probes in flight) and sends each transition on a channel;
//!   backends are added and removed without disturbing the others.
//!
//! # A new backend starts up
//!
//! A backend is **up until proven down**, but only provisionally: its first failed probe takes
//! it down at once, not `fall` of them; once a probe has succeeded, `fall` consecutive failures
//! are needed. This is HAProxy's default (`init-state up`: "immediately available", and "a
//! health check that can turn it to the DOWN state immediately if it fails"). Why not down
//! until `rise` probes pass (HAProxy's `init-state fully-down`, Kubernetes' readiness)?
//! - A daemon restart or a reload must not take working backends out of service: with down
//!   first, every backend of every forward would be down for `rise × interval` after each
//!   start, i.e. `all_down: refuse` would refuse every new connection for 2 s, and flows
//!   could not "stay on their backend across daemon restarts" as #16 asks.
//! - A backend that is dead at start is still found quickly: its first probe (within one
//!   interval of its start, see the spread below) plus the timeout, less than `fall × interval`.
//!
//! The cost: a container added by a scale-up that does not listen yet gets new flows until its
//! first probe fails (at most `interval + timeout`).
//!
//! # Timing
//!
//! Probes start on a fixed schedule (every `interval`, not `interval` after the previous one
//! ended), so a backend that dies is declared down at most `fall × interval + timeout` after
//! its death, and one that comes back up at most `rise × interval + timeout` after (a refused
//! connect or an HTTP answer ends a probe long before its timeout). A probe that takes longer
//! than the interval delays the next one rather than overlapping it.

mod probe;
mod schedule;
mod state;

use std::{fmt, net::SocketAddr, time::Duration};

pub use probe::{Failure, Outcome, attempt, http_exchange, probe, status_outcome};
pub use schedule::{DEFAULT_MAX_IN_FLIGHT, Event, NetProber, Prober, Scheduler, start_offset};
pub use state::{Health, Tracker};

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// A TCP connect: up when the handshake completes (the connection is closed at once).
    Tcp,
    /// An HTTP/1.1 `GET` of this path (with its query, if any): up when the status is 2xx or
    /// 3xx (a redirect is not followed).
    Http {
        /// Starts with `/` (see [`Check::http`]).
        path: String,
    },
}

impl Check {
    /// An HTTP check of `path`, which must be an origin-form request target (`/healthz`,
    /// `/ready?full=1`).
    pub fn http(path: &str) -> Result<Check, String> {
        if !path.starts_with('/') {
            return Err(format!("HTTP check path {path:?} must start with '/'"));
        }
        hyper::http::uri::PathAndQuery::try_from(path)
            .map_err(|e| format!("HTTP check path {path:?}: {e}"))?;
        Ok(Check::Http { path: path.into() })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp => f.write_str("tcp"),
            Check::Http { path } => write!(f, "http GET {path}"),
        }
    }
}

/// One backend as the checker knows it: its address and its check. Two forwards sharing a
/// backend with the same check share its probes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub check: Check,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.check)
    }
}

/// How often and how strictly a backend is checked. Defaults: the YAML example of #16
/// (`interval: 1s, timeout: 500ms, fall: 2, rise: 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Params {
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// A probe not finished by then failed.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down (a new backend: one, see the module).
    pub fall: u32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        }
    }
}

impl Params {
    /// Refuses what the scheduler cannot honour: a zero interval, timeout, rise or fall, and a
    /// timeout longer than the interval (probes would pile up behind each other).
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("health check interval and timeout must be more than 0".into());
        }
        if self.timeout > self.interval {
            return Err(format!(
                "health check timeout {:?} is longer than its interval {:?}",
                self.timeout, self.interval
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("health check rise and fall must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issues_example_and_valid() {
        let p = Params::default();
        assert_eq!(
            (p.interval, p.timeout, p.rise, p.fall),
            (Duration::from_secs(1), Duration::from_millis(500), 2, 2)
        );
        p.validate().unwrap();
    }

    #[test]
    fn invalid_params_are_refused() {
        let p = Params::default();
        for bad in [
            Params {
                interval: Duration::ZERO,
                ..p
            },
            Params {
                timeout: Duration::ZERO,
                ..p
            },
            Params {
                timeout: Duration::from_secs(2),
                ..p
            },
            Params { rise: 0, ..p },
            Params { fall: 0, ..p },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_paths() {
        assert_eq!(
            Check::http("/healthz?full=1").unwrap(),
            Check::Http {
                path: "/healthz?full=1".into()
            }
        );
        assert!(Check::http("healthz").is_err());
        assert!(Check::http("/a b").is_err());
        assert!(Check::http("").is_err());
        assert_eq!(Check::Tcp.to_string(), "tcp");
    }
}
