use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds `portfwd-ebpf` for the BPF target with aya-build, into OUT_DIR, where `src/datapath`
/// embeds it. Needs nightly's rust-src and bpf-linker: `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "portfwd-ebpf")
        .ok_or_else(|| anyhow!("portfwd-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("portfwd-ebpf has no directory"))?
        .as_str()
        .to_owned();
    let package = aya_build::Package {
        name: "portfwd-ebpf",
        root_dir: &root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
