//! Reading the kernel's counters: interface packets of a namespace, listening sockets, CPU time.
//!
//! Namespaced files are read from a thread that entered the namespace ([`Ns::try_run`]) through
//! `/proc/thread-self/net/...`, which shows the reading thread's own network namespace (a plain
//! `/proc/net` would show the process's main thread's). That costs tens of microseconds, where
//! `ip netns exec NS cat /sys/...` costs milliseconds and blurs the time window.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use portfwd_lab::Ns;

/// `rx_packets` of `iface` in `ns` (from `/proc/thread-self/net/dev`).
pub fn rx_packets(ns: &Ns, iface: &str) -> Result<u64> {
    let text = ns
        .try_run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?
        .with_context(|| format!("reading /proc/net/dev in namespace {ns}"))?;
    parse_rx_packets(&text, iface)
        .with_context(|| format!("no interface {iface} in namespace {ns}"))
}

/// `rx_packets` (the second number after `IFACE:`) from `/proc/net/dev` text.
fn parse_rx_packets(text: &str, iface: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Whether a TCP socket listens on `port` in `ns` (IPv4 or IPv6).
pub fn tcp_listening(ns: &Ns, port: u16) -> Result<bool> {
    let tables = ns.try_run(|| {
        ["tcp", "tcp6"].map(|t| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{t}")).unwrap_or_default()
        })
    })?;
    Ok(tables.iter().any(|t| parse_listening(t, port)))
}

/// Whether `/proc/net/tcp[6]` text has a socket in state LISTEN (0A) on `port`.
fn parse_listening(text: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        local.ends_with(&want) && state == "0A"
    })
}

/// Polls until a TCP socket listens on `port` in `ns`.
pub fn wait_tcp_listening(ns: &Ns, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !tcp_listening(ns, port)? {
        if Instant::now() > deadline {
            bail!("nothing listens on TCP port {port} in namespace {ns} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// CPU time spent by all CPUs, from the `cpu` line of `/proc/stat`, in USER_HZ ticks (1/100 s on
/// Linux whatever the kernel's HZ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// system + irq + softirq: the kernel's work, where forwarding happens.
    pub kernel: u64,
    /// Everything but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

/// The length of a USER_HZ tick.
pub const TICK: Duration = Duration::from_millis(10);

pub fn cpu_ticks() -> Result<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_cpu_ticks(&text).context("no `cpu` line in /proc/stat")
}

fn parse_cpu_ticks(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is within user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(get).sum();
    Some(CpuTicks {
        kernel: get(2) + get(5) + get(6),
        busy: total - get(3) - get(4),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                    lo:       0       0    0    0    0     0          0         0        0\n  \
                    eth0: 9810543  163509    0    0    0     0          0         0     1464\n";
        assert_eq!(parse_rx_packets(text, "eth0"), Some(163_509));
        assert_eq!(parse_rx_packets(text, "lo"), Some(0));
        assert_eq!(parse_rx_packets(text, "eth1"), None);
    }

    #[test]
    fn parses_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                    0: 020011AC:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
                    1: 020011AC:0BB8 0200004D:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert!(parse_listening(text, 3000));
        assert!(!parse_listening(text, 80));
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  146423 0 30186 1859829 1421 0 7023 1204 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = parse_cpu_ticks(text).unwrap();
        assert_eq!(t.kernel, 30186 + 7023);
        assert_eq!(t.total, 146423 + 30186 + 1859829 + 1421 + 7023 + 1204);
        assert_eq!(t.busy, t.total - 1859829 - 1421);
    }
}
