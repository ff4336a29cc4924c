//! portfwd: publish host ports to containers, translated in the kernel with eBPF.
//!
//! The binary is a thin shell over this library:
//! - `publish`: the publish grammar (`[HOST_IP:]PORT[/PROTO]`, `IP:PORT`, allowlists);
//! - `config`: the YAML config: load, validate, save;
//! - `dataplane`: the eBPF object, its attachments and maps;
//! - `daemon`: `portfwd daemon`;
//! - `api`: the control-socket protocol; `cli`: the client subcommands;
//! - `metrics`: the Prometheus endpoint;
//! - `error`: the daemon's error type.
pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod error;
pub mod metrics;
pub mod publish;
