//! Namespace names: every lab's prefix `pf{pid}x{n}-{tag}` is unique, and names the process that
//! owns the lab, so that what a killed process left behind can be found and deleted.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::ip::teardown_ns;
use crate::ns::{NETNS_DIR, Ns};

/// Per-process counter that makes lab prefixes unique within one process.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A prefix `pf{pid}x{n}-{tag}` (or `pf{pid}x{n}` without a tag) not used by any namespace yet.
pub(crate) fn unique_prefix(tag: &str) -> String {
    let pid = std::process::id();
    let existing = list_netns();
    loop {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = if tag.is_empty() {
            format!("pf{pid}x{n}")
        } else {
            format!("pf{pid}x{n}-{tag}")
        };
        // A namespace left by an earlier process with our pid would collide: skip its prefix.
        let dash = format!("{prefix}-");
        if !existing.iter().any(|name| name.starts_with(&dash)) {
            return prefix;
        }
    }
}

/// Names of the namespaces in `/run/netns`.
fn list_netns() -> Vec<String> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The pid that created a lab namespace, from its name `pf{pid}x…`.
pub(crate) fn lab_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pf")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 || !rest[digits..].starts_with('x') {
        return None;
    }
    rest[..digits].parse().ok()
}

/// Deletes the namespaces (and kills the processes inside them) of labs whose process is gone.
pub fn cleanup_stale() {
    for name in list_netns() {
        if let Some(pid) = lab_owner_pid(&name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            teardown_ns(&Ns::new(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_parsed() {
        assert_eq!(lab_owner_pid("pf123x0-e2e-host"), Some(123));
        assert_eq!(lab_owner_pid("pf123x17-client"), Some(123));
        assert_eq!(lab_owner_pid("pfx0-host"), None);
        assert_eq!(lab_owner_pid("pf12-host"), None);
        assert_eq!(lab_owner_pid("other"), None);
    }
}
