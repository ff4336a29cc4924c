//! What the tests read off the daemon and the host, and assert: verdict counters in
//! `status --json`, NAT rules in netfilter, processes in a namespace.

use std::fs;

use portfwd_lab::{Lab, Ns};
use serde_json::Value;

/// The datapath's verdict counter `reason` (all hooks) in a `status --json` report.
pub fn verdict(status: &Value, reason: &str) -> u64 {
    status["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["reason"] == reason)
        .unwrap_or_else(|| panic!("no verdict counter {reason}: {status}"))["packets"]
        .as_u64()
        .unwrap()
}

/// The socket hooks' verdict counter `name` in a `status --json` report.
pub fn sock_verdict(status: &Value, name: &str) -> u64 {
    status["host_local"]["verdicts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no socket verdict {name}: {status}"))
}

/// Netfilter must not be doing the work: no NAT rule in iptables or nftables in the host.
pub fn assert_no_netfilter_nat(lab: &Lab) {
    let ipt = lab.sh(lab.host(), "iptables-save -t nat").unwrap();
    assert!(
        !ipt.contains("DNAT") && !ipt.contains("MASQUERADE") && !ipt.contains("SNAT"),
        "iptables has NAT rules: {ipt}"
    );
    let nft = lab.sh(lab.host(), "nft list ruleset").unwrap();
    assert!(
        !nft.contains("dnat") && !nft.contains("snat") && !nft.contains("masquerade"),
        "nftables has NAT rules: {nft}"
    );
}

/// The processes whose network namespace is `ns` (by the namespace file's inode).
pub fn processes_in(ns: &Ns) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let want = fs::metadata(ns.path()).unwrap().ino();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want) {
            pids.push(pid);
        }
    }
    pids
}

/// The names of the tcx programs attached to `iface` in `ns` at `side` (the kernel keeps the
/// first 15 bytes of a program's name).
pub fn tcx_programs(ns: &Ns, iface: &str, side: aya::programs::TcAttachType) -> Vec<String> {
    let (_, programs) = ns
        .run(|| aya::programs::SchedClassifier::query_tcx(iface, side))
        .unwrap();
    programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}
