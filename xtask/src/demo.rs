//! `cargo xtask demo`: show portfwd publishing a port in a network-namespace lab. Not yet implemented: a placeholder in its own file, to be
//! written independently of the other tasks (it will likely build on `xtask::lab`).

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`cargo xtask demo` is not yet implemented")
}
