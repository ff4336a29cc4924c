//! The daemon's errors. A variant says what failed; the error it carries as its source says
//! why. Errors are rendered once, at the edge (the control socket's answer, the log, the
//! metrics endpoint, `main`), as their whole chain on one line a user can act on: see
//! [`chain`].
use std::{io, path::PathBuf};

use aya::{maps::MapError, programs::ProgramError};
use portfwd_common::maps::Program;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF programs failed")]
    Load(#[source] Box<LoadError>),
    #[error("attaching to interface {interface} failed")]
    Attach {
        interface: String,
        #[source]
        source: Box<AttachError>,
    },
    /// The driver's refusal is part of the sentence, not a cause after it.
    #[error(
        "interface {interface} has no native XDP support ({refusal}); use mode: auto or mode: tc"
    )]
    XdpUnsupported {
        interface: String,
        refusal: Box<ProgramError>,
    },
    #[error("updating the {what} map failed")]
    Map {
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
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
    #[error(
        "{listen} is published by Docker for container {container} (origin docker:{container}); it goes when the container stops, or remove the -p from it"
    )]
    OwnedByDocker { listen: String, container: String },
    #[error("{listen} is published by {origin} ({existing} -> {to})")]
    PortTaken {
        listen: String,
        existing: String,
        to: String,
        origin: String,
    },
    #[error(
        "{listen} belongs to the CNI attachment {owner}; it goes when the runtime removes the container (CNI DEL); if the runtime lost that DEL, `portfwd del {listen} --owner {owner}` withdraws the attachment"
    )]
    OwnedByCni { listen: String, owner: String },
    #[error(
        "portfwd-cni speaks version {asked} of the daemon's CNI requests, this daemon {spoken}: install the portfwd-cni of the same release"
    )]
    CniVersion { asked: u32, spoken: u32 },
    #[error("{0} could not be published (see the daemon's log); nothing changed")]
    CniNotApplied(String),
    #[error("{owner} should have [{wanted}] but has [{running}]")]
    CniCheck {
        owner: String,
        wanted: String,
        running: String,
    },
    #[error("no running container named {0} (docker ps lists the names)")]
    UnknownContainer(String),
    #[error(
        "{0} is a container name, which needs the config's docker: section (e.g. docker: {{}})"
    )]
    NeedsDocker(String),
    #[error("no room for another forward (limit {0})")]
    TooManyForwards(u32),
    #[error("no room for another backend of a pool (limit {0} over every pool)")]
    TooManyBackends(u32),
    #[error("no room for another pool's table (limit {0} over every pool, one more during a swap)")]
    TooManyPools(u32),
    #[error("pool: {0}")]
    Pool(String),
    #[error("control socket {}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("pin directory {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("netlink")]
    Netlink(#[source] rtnetlink::Error),
    #[error("metrics endpoint {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A config setting that parsed but cannot be applied on this host (e.g. a group that does
    /// not exist); `location` is `FILE:LINE` (or `FILE` when the key cannot be found).
    #[error("{location}: {field}")]
    Setting {
        location: String,
        field: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reload rejected, nothing changed")]
    ReloadRejected(#[source] Box<Error>),
    #[error("cgroup v2 at {}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    /// A metrics scrape raced the daemon's shutdown.
    #[error("the daemon is stopping")]
    Stopping,
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        Error::Load(Box::new(e))
    }
}

/// Why loading the eBPF object, or one of its programs or maps, failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Object(#[from] aya::EbpfError),
    #[error("program {0} missing from the object")]
    MissingProgram(Program),
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program {0}")]
    Program(Program, #[source] ProgramError),
    #[error("verifier rejected {0}")]
    Verifier(Program, #[source] ProgramError),
    #[error("map {0}")]
    Map(&'static str, #[source] MapError),
    #[error("BPF_PROG_TEST_RUN")]
    TestRun(#[source] ProgramError),
    #[error("reading the network namespace cookie")]
    NetnsCookie(#[source] io::Error),
}

/// Why attaching a program to an interface failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// Attaching failed, and failed again after adding the clsact qdisc (`source`).
    #[error("{first}; after adding clsact")]
    Clsact {
        first: Box<ProgramError>,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("no pin directory")]
    NoPinDir,
    #[error("pinning the {kind} link at {}", path.display())]
    Pin {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{0} link cannot be pinned")]
    NotPinnable(&'static str, #[source] aya::programs::links::LinkError),
    #[error("pinned link")]
    Pinned(#[source] aya::programs::links::LinkError),
    #[error("no tc link for this interface")]
    NoTcLink,
    #[error("unknown link kind {0}")]
    UnknownKind(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Why a step on a file, socket or cgroup failed: the step and the system's answer, or a fact.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The system's answer alone.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// While doing `action` (e.g. "creating /run/portfwd").
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    /// Attaching `program` failed.
    #[error("attaching {program}")]
    Attach {
        program: Program,
        #[source]
        source: ProgramError,
    },
    /// Nothing failed, but something is in the way.
    #[error("{0}")]
    Refused(&'static str),
}

impl Cause {
    /// `error`, while doing `action`.
    pub fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> Cause {
        let action = action.into();
        move |source| Cause::Io { action, source }
    }
}

impl From<nix::Error> for Cause {
    fn from(e: nix::Error) -> Self {
        Cause::Os(e.into())
    }
}

/// `e` and its sources, `: `-separated: how an error is shown to a user, once, at the edge.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        // Some errors already end with their source's message: say it once.
        let message = inner.to_string();
        if !s.ends_with(&message) {
            s.push_str(": ");
            s.push_str(&message);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_rendered_once_in_order() {
        let e = Error::ReloadRejected(Box::new(Error::Socket {
            path: "/run/p.sock".into(),
            source: Cause::Io {
                action: "creating /run".into(),
                source: io::Error::from_raw_os_error(13),
            },
        }));
        assert_eq!(
            chain(&e),
            "reload rejected, nothing changed: control socket /run/p.sock: creating /run: \
             Permission denied (os error 13)"
        );
        let transparent = Cause::Os(io::Error::from_raw_os_error(2));
        assert_eq!(
            chain(&transparent),
            "No such file or directory (os error 2)"
        );
    }
}
