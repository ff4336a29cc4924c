//! The daemon's error type. Every message is one line a user can act on.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching to interface {interface} failed: {message}")]
    Attach { interface: String, message: String },
    #[error(
        "interface {interface} has no native XDP support ({message}); use mode: auto or mode: tc"
    )]
    XdpUnsupported { interface: String, message: String },
    #[error("updating the {what} map failed: {message}")]
    Map { what: &'static str, message: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Spec(#[from] crate::publish::SpecError),
    #[error("port {listen} is already published to {to}")]
    AlreadyPublished { listen: String, to: String },
    #[error("{listen} overlaps {existing}, already published to {to}")]
    Overlaps {
        listen: String,
        existing: String,
        to: String,
    },
    #[error("port {0} is not published")]
    NotPublished(String),
    #[error("no room for another forward (limit {0})")]
    TooManyForwards(u32),
    #[error("control socket {path}: {message}")]
    Socket { path: PathBuf, message: String },
    #[error("pin directory {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("metrics endpoint {addr}: {message}")]
    Metrics {
        addr: std::net::SocketAddr,
        message: String,
    },
    /// A config setting that parsed but cannot be applied on this host (e.g. a group that does
    /// not exist); `location` is `FILE:LINE` (or `FILE` when the key cannot be found).
    #[error("{location}: {field}: {message}")]
    Setting {
        location: String,
        field: &'static str,
        message: String,
    },
    #[error("reload rejected, nothing changed: {0}")]
    ReloadRejected(Box<Error>),
    #[error("cgroup v2 at {path}: {message}")]
    Cgroup { path: PathBuf, message: String },
}
