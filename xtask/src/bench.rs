//! `cargo xtask bench`: measure portfwd's forwarding against the kernel's own paths. Not yet implemented: a placeholder in its own file, to be
//! written independently of the other tasks (it will likely build on `xtask::lab`).

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`cargo xtask bench` is not yet implemented")
}
