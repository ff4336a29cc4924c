use aya_build::Toolchain;

/// Builds `portfwd-pktgen-ebpf` for the BPF target with aya-build, into OUT_DIR, where
/// `src/main.rs` embeds it. Needs nightly's rust-src and bpf-linker: `cargo xtask setup` installs
/// both.
fn main() -> anyhow::Result<()> {
    let root_dir = format!("{}/../pktgen-ebpf", std::env::var("CARGO_MANIFEST_DIR")?);
    let package = aya_build::Package {
        name: "portfwd-pktgen-ebpf",
        root_dir: &root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
