//! `portfwd-cni`: see the library's documentation. Runtimes start the plugin without
//! arguments; `portfwd-cni install-conflist ...` is the Kubernetes init container's installer.
fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == portfwd_cni::conflist::SUBCOMMAND)
    {
        std::process::exit(portfwd_cni::conflist::main());
    }
    std::process::exit(portfwd_cni::plugin::main());
}
