//! Shared pieces of the end-to-end tests (the `e2e` binary; the datapath tests use the daemon):
//! the root check, a scenario builder ([`Scenario`]), the daemon under test, the CLI run against
//! it, the servers in the containers, and what the tests assert on.
#![allow(dead_code, reason = "the datapath tests use a small subset")]

mod assertions;
mod cli;
mod daemon;
pub mod pool;
mod scenario;
mod servers;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

pub use daemon::Daemon;
use portfwd_lab::Lab;
#[allow(unused_imports, reason = "the datapath tests use only the daemon")]
pub use {
    assertions::{assert_no_netfilter_nat, processes_in, sock_verdict, tcx_programs, verdict},
    cli::portfwd_bin,
    scenario::{Scenario, Setup, forward_yaml},
};

/// How long a request may take to be answered.
pub const T: Duration = Duration::from_secs(5);
/// How long to wait for something that must not arrive.
pub const SHORT: Duration = Duration::from_millis(700);

/// True when the test can run. Under `CI=true` a test that cannot run fails instead of skipping.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "this end-to-end test needs root (network namespaces, eBPF); under CI=true it must run, not skip"
        );
    }
    eprintln!("SKIPPED: this end-to-end test needs root (network namespaces, eBPF)");
    false
}

/// Returns from the test unless it can run as root (see [`require_root`]: under `CI=true` a
/// test that cannot run fails). In scope where `support` is declared with `#[macro_use]`.
#[allow(
    unused_macros,
    reason = "the datapath tests call require_root() themselves"
)]
macro_rules! require_root {
    () => {
        if !$crate::support::require_root() {
            return;
        }
    };
}

/// Polls `f` for up to 5 s.
pub fn eventually(mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("condition not met within 5 s".into())
}

/// The attach mode the end-to-end tests run the daemon in (`PORTFWD_E2E_MODE`), if set.
pub fn e2e_mode() -> Option<String> {
    std::env::var("PORTFWD_E2E_MODE")
        .ok()
        .filter(|m| !m.is_empty())
}

/// `addr:port`, either family.
pub fn at(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// The host's IPv4 address on the client's network, port `port`: a published port.
pub fn host_port(port: u16) -> SocketAddr {
    at(Lab::HOST_ADDR, port)
}

/// The host's IPv6 address on the client's network, port `port`.
pub fn host6(port: u16) -> SocketAddr {
    at(Lab::HOST_ADDR6, port)
}
