//! End-to-end tests: a lab of network namespaces (a client, a host with a docker0-like bridge,
//! containers), real TCP/UDP servers in the containers, the real daemon and CLI in the host. One
//! module per feature; each test builds its world with [`support::Scenario`].
//!
//! These need root. Under `CI=true` a test that cannot run fails; elsewhere it says it skipped.
//! With `PORTFWD_E2E_MODE=xdp` the daemon runs in XDP mode: `cargo xtask test` runs `forwarding`,
//! `ranges`, `hostlocal`, `ipv6`, `fragments`, `path_mtu`, `replies` and `reload` a second time so.

// Beside this directory, not in it: the datapath tests use its daemon too.
#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod check;
mod cni;
mod cni_measure;
mod cni_podman;
mod docker;
mod docker_check;
mod docker_coexist;
mod docker_compose;
mod docker_follow;
mod docker_measure;
mod docker_named;
mod docker_outage;
mod forwarding;
mod fragments;
mod health;
mod hostlocal;
mod ipv6;
mod load;
mod ops;
mod path_mtu;
mod pool;
mod pool_drain;
mod pool_health;
mod pool_host;
mod ranges;
mod reload;
mod replies;
mod service;
mod udp_follow;
