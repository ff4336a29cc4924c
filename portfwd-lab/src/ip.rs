//! iproute2 and sysctl calls that build a lab's namespaces, and delete them.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ns::Ns;
use crate::proc;

/// Kills every process inside `ns` and deletes it; never fails (what is gone is gone).
pub(crate) fn teardown_ns(ns: &Ns) {
    proc::kill_processes_in(ns);
    if let Err(e) = ip(&["netns", "delete", &ns.name])
        && ns.path().exists()
    {
        eprintln!("lab: could not delete namespace {ns}: {e:#}");
    }
}

/// Writes a sysctl of `ns` (`net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`) from a thread
/// inside it (`/proc/sys/net` shows the namespace of the task that looks it up).
pub(crate) fn set_sysctl(ns: &Ns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.try_run(|| std::fs::write(&path, value))?
        .with_context(|| format!("setting {key}={value} in namespace {ns}"))
}

/// IPv6 settings of every lab namespace, before its interfaces exist (so they inherit them):
/// router advertisements ignored, no duplicate address detection (link-local addresses
/// included), so that addresses are usable as soon as they are added.
pub(crate) fn ipv6_defaults(ns: &Ns) -> Result<()> {
    for conf in ["all", "default"] {
        set_sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_ra"), "0")?;
        set_sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_dad"), "0")?;
    }
    Ok(())
}

/// Adds the IPv6 address `cidr` to `dev` in `ns`, usable at once (`nodad`).
pub(crate) fn add_addr6(ns: &Ns, cidr: &str, dev: &str) -> Result<()> {
    ip(&["-n", &ns.name, "addr", "add", cidr, "dev", dev, "nodad"])
}

/// Runs `ip ARGS…` (at most 30 s) and fails with its stderr if it exits non-zero.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let what = format!("`ip {}`", args.join(" "));
    let out = proc::output_with_timeout(&mut cmd, Duration::from_secs(30))
        .with_context(|| format!("running {what}"))?;
    proc::check_status(&what, out).map(drop)
}
