//! `cargo xtask lint`: setup, then rustfmt and clippy (warnings denied) on every crate.
//!
//! The eBPF crates (`portfwd-ebpf`, and the bench generator's `portfwd-pktgen-ebpf`) are linted
//! apart, for the target they are built for: `bpfel-unknown-none` with nightly and
//! `-Z build-std=core` (nightly's rust-src, which setup installs). They need no extra
//! RUSTFLAGS: aya-ebpf's build scripts emit `--cfg bpf_target_arch` themselves, from the host's
//! architecture when the target is `bpf`.

use anyhow::{Result, bail};

use crate::{cmd, setup};

pub fn run() -> Result<()> {
    setup::run()?;
    checks()
}

/// The checks without setup, for `cargo xtask test`, which has run setup already. Runs every
/// check, then fails if any did, so that one report shows all of them.
pub fn checks() -> Result<()> {
    let mut fmt = cmd::cargo();
    fmt.args(["fmt", "--all", "--check"]);

    let mut clippy = cmd::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "portfwd-ebpf",
        "--exclude",
        "portfwd-pktgen-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);

    let mut clippy_ebpf = cmd::cargo();
    clippy_ebpf.args([
        "+nightly",
        "clippy",
        "--package",
        "portfwd-ebpf",
        "--package",
        "portfwd-pktgen-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);

    let mut failed = Vec::new();
    for (name, mut check) in [
        ("rustfmt", fmt),
        ("clippy", clippy),
        ("clippy (eBPF crates, bpfel-unknown-none)", clippy_ebpf),
    ] {
        if let Err(err) = cmd::run(&mut check) {
            eprintln!("lint: {name}: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}
