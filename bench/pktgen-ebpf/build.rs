use which::which;

/// Building this crate needs the `bpf-linker` binary (`cargo xtask setup` installs it). Rebuild
/// when it changes.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
