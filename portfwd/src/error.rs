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
    Spec(#[from] crate::spec::SpecError),
    #[error("port {listen} is already published to {to}")]
    AlreadyPublished { listen: String, to: String },
    #[error("port {0} is not published")]
    NotPublished(String),
    #[error("no room for another forward (limit {0})")]
    TooManyForwards(u32),
    #[error("control socket {path}: {message}")]
    Socket { path: PathBuf, message: String },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("cgroup v2 at {path}: {message}")]
    Cgroup { path: PathBuf, message: String },
}
