//! portfwd: publish host ports to containers, translated in the kernel with eBPF.
//!
//! The binary (`main.rs`) is a thin shell over this library:
//! - `balance`: choosing a backend among several: Maglev tables and the flow hash;
//! - `publish`: the publish grammar (`[HOST_IP:]PORT[/PROTO]`, `IP:PORT`, allowlists);
//! - `config`: the YAML config: load, validate, save;
//! - `datapath`: the eBPF object, its programs, attachments, pins and maps;
//! - `docker`: Docker's containers and the forwards their published ports make;
//! - `daemon`: `portfwd daemon`: state, control socket, reloads, the host's interfaces;
//! - `api`: the control-socket protocol; `cli`: the client subcommands;
//! - `check`: `portfwd check`, the diagnosis of forwards;
//! - `health`: backend health checks (TCP connect, HTTP GET; rise/fall; their scheduler);
//! - `metrics`: the Prometheus endpoint;
//! - `error`: the daemon's errors, rendered as one chain at the edge;
//! - `sock_diag`: the kernel's socket diagnostics (list and destroy connected UDP sockets);
//! - `sys`: the system calls beyond `std`, through `nix`.
pub mod api;
pub mod balance;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod docker;
pub mod error;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod sock_diag;
pub mod sys;
