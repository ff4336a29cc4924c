//! `--profile DIR`: a system-wide `perf record` of a measurement window, and its top symbols.
//!
//! The bench's load runs in softirq on every CPU, so the profile is of all CPUs (`-a`) with call
//! graphs (`-g`); the report is flat (`--no-children`, by symbol), which names what a packet
//! spends its time in: the BPF programs (as `bpf_prog_..._portfwd_tc_ingress`), the map helpers
//! (`htab_lru_map_update_elem`, `bpf_lru_pop_free`, ...), the veth and the stack.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// Symbols below this share of the samples are left out of the text report.
const PERCENT_LIMIT: &str = "0.8";

/// Records `window` of the whole machine and writes `DIR/LABEL-N.txt` (the first free N) with
/// the top symbols; the raw `perf.data` is removed.
pub fn window(dir: &Path, label: &str, window: Duration) -> Result<()> {
    let (data, text) = free_names(dir, label);
    let secs = format!("{:.3}", window.as_secs_f64());
    let status = Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs])
        .status()
        .context("running perf record (is `perf` installed? `cargo xtask setup` installs it)")?;
    if !status.success() {
        bail!("perf record failed: {status}");
    }
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--sort",
            "symbol",
        ])
        .args(["--percent-limit", PERCENT_LIMIT, "-i"])
        .arg(&data)
        .output()
        .context("running perf report")?;
    let _ = std::fs::remove_file(&data);
    if !out.status.success() {
        bail!(
            "perf report failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(&text, &out.stdout).with_context(|| format!("writing {}", text.display()))
}

/// `LABEL-N.data` and `LABEL-N.txt` in `dir`, N the first number not yet used.
fn free_names(dir: &Path, label: &str) -> (PathBuf, PathBuf) {
    (1..)
        .map(|n| {
            (
                dir.join(format!("{label}-{n}.data")),
                dir.join(format!("{label}-{n}.txt")),
            )
        })
        .find(|(_, text)| !text.exists())
        .expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_up() {
        let dir = std::env::temp_dir().join(format!("pf-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, first) = free_names(&dir, "portfwd-tc-udp-unique");
        assert_eq!(first, dir.join("portfwd-tc-udp-unique-1.txt"));
        std::fs::write(&first, "").unwrap();
        let (data, second) = free_names(&dir, "portfwd-tc-udp-unique");
        assert_eq!(second, dir.join("portfwd-tc-udp-unique-2.txt"));
        assert_eq!(data, dir.join("portfwd-tc-udp-unique-2.data"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
