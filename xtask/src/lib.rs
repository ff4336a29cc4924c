//! Library side of xtask: the network-namespace lab shared by `cargo xtask demo`/`bench` and by
//! portfwd's end-to-end tests (a dev-dependency there).
pub mod lab;
