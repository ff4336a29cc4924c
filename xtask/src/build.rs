//! `cargo xtask build`: setup, then build the daemon. `portfwd`'s build script builds
//! `portfwd-ebpf` for the BPF target with aya-build (nightly, bpf-linker) and embeds the object.

use anyhow::Result;

use crate::{cmd, setup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build with the release profile
    #[arg(long)]
    pub release: bool,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    cmd::banner("build");
    let mut build = cmd::cargo();
    build.args(["build", "--package", "portfwd"]);
    if args.release {
        build.arg("--release");
    }
    cmd::run(&mut build)
}
