//! portfwd-cni: a chained CNI plugin that stands where `portmap` stood. Runtimes (podman with
//! CNI, containerd/nerdctl, CRI-O, the kubelet through them) call it after `bridge` and
//! `host-local`; it hands `runtimeConfig.portMappings` to the portfwd daemon over its control
//! socket (`portfwd::api::Request::Cni`), which publishes them in the kernel.
//!
//! - `spec`: the CNI spec's JSON (1.0.0 and 0.4.0): the network config on stdin, results,
//!   errors;
//! - `mappings`: a config's `portMappings` and `prevResult` turned into portfwd's mappings;
//! - `plugin`: the commands (VERSION, ADD, CHECK, DEL, STATUS, GC) and the environment;
//! - `conflist`: rewriting a node's conflist so that `portfwd-cni` stands where `portmap`
//!   stood (used by the Kubernetes init container).
pub mod conflist;
pub mod mappings;
pub mod plugin;
pub mod spec;
