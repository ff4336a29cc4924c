//! A named network namespace, and running code inside it: a thread that joins the namespace,
//! so that the sockets it creates live there.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::sys;

/// Directory where iproute2 keeps its named network namespaces (bind mounts of `/proc/PID/ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace (a file in `/run/netns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ns {
    /// The namespace's name, as `ip netns list` shows it and `ip netns exec NAME` takes it.
    pub name: String,
}

impl Ns {
    /// A handle on the existing named namespace `name` (nothing is created).
    pub fn new(name: impl Into<String>) -> Ns {
        Ns { name: name.into() }
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Runs `f` on a new thread whose network namespace is this one (`setns` on `/run/netns/NAME`
    /// with `CLONE_NEWNET`) and returns its result; a panic in `f` is resumed on the caller's thread.
    /// Sockets created inside stay in this namespace for their whole life and can be used from any
    /// thread afterwards. Only the network namespace changes: mounts (and so `/sys`) stay the caller's.
    ///
    /// # Panics
    /// If the namespace cannot be entered (see [`Ns::try_run`] for the fallible form).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.try_run(f) {
            Ok(v) => v,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`Ns::run`], but returns an error instead of panicking when the namespace cannot be
    /// entered (e.g. it does not exist, or we are not root).
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.path();
        let file = File::open(&path)
            .with_context(|| format!("opening network namespace {}", path.display()))?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, move || -> Result<T> {
                    // Only this fresh thread changes its network namespace.
                    sys::enter_netns(&file)
                        .with_context(|| format!("setns into {}", path.display()))?;
                    drop(file);
                    Ok(f())
                })
                .context("spawning a thread to enter a network namespace")?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// This namespace's cookie (`SO_NETNS_COOKIE`), the value `bpf_get_netns_cookie` returns for
    /// sockets and packets in it: what an eBPF program compares to act on one namespace only.
    pub fn cookie(&self) -> Result<u64> {
        self.try_run(netns_cookie_of_current_thread)?
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

fn netns_cookie_of_current_thread() -> Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("socket for SO_NETNS_COOKIE")?;
    sys::netns_cookie(&sock).context("getsockopt(SO_NETNS_COOKIE)")
}
