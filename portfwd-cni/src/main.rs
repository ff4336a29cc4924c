//! `portfwd-cni`: see the library's documentation.
fn main() {
    std::process::exit(portfwd_cni::plugin::main());
}
