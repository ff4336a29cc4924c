//! Following Docker: the forwards Docker's published ports make, kept in step with its
//! containers while the config has a `docker:` section.
//!
//! - this module: [`DockerFollow`], what the daemon knows of Docker (the running containers,
//!   the connection), and how it changes the published forwards ([`State::sync_derived`]);
//! - `follower`: the task that talks to dockerd: connects with backoff, lists, then follows
//!   events;
//!
//! The containers are saved (`daemon::saved`), so that a restarted daemon serves Docker's
//! ports from its first packet, before dockerd answers (or while it is down).
//!
//! Docker's forwards are derived state: never written to the config, shown with the origin
//! `docker:NAME`, refused by `portfwd del`. The config wins a collision: a binding that
//! overlaps a forward of the config is not served, and shown as such.
mod follower;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    saved,
    state::{Active, Origin, State, state_dir},
};
use crate::{
    api::{DockerBinding, DockerStatus},
    config::DockerConfig,
    docker::{Container, forwards_of},
    error::chain,
    publish::{Family, Forward, Listen, NamedForward},
};

/// The file (in the daemon's state directory) holding the running containers.
const SAVED: &str = "docker-containers.json";

/// What the daemon knows of Docker.
pub(super) struct DockerFollow {
    pub(super) cfg: DockerConfig,
    /// Running containers by id.
    containers: BTreeMap<String, Container>,
    link: Link,
    /// Bindings not served, as of the last [`DockerFollow::wanted`].
    not_served: Vec<DockerBinding>,
    /// Where the containers are kept across restarts.
    saved: PathBuf,
    /// The follower task.
    task: Option<tokio::task::AbortHandle>,
}

/// The connection to dockerd, as `portfwd status` shows it.
#[derive(Default)]
struct Link {
    connected: bool,
    since: u64,
    api_version: Option<String>,
    engine_version: Option<String>,
    error: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The address of `c` that `n` forwards to (of its listen side's family), or why it has none.
fn address_of(c: &Container, n: &NamedForward) -> Result<IpAddr, String> {
    let addr = match n.listen.family() {
        Family::V4 => c.ipv4.map(IpAddr::V4),
        Family::V6 => c.ipv6.map(IpAddr::V6),
    };
    addr.ok_or_else(|| {
        let network = c.network.as_deref().unwrap_or("any network");
        format!(
            "container {} has no {} address on {network}",
            c.name,
            n.listen.family()
        )
    })
}

impl DockerFollow {
    /// Docker as a previous daemon left it (saved under `state_dir`), not connected yet.
    pub(super) fn new(cfg: DockerConfig, state_dir: &Path) -> DockerFollow {
        let saved = state_dir.join(SAVED);
        let containers: BTreeMap<String, Container> =
            saved::load::<Vec<Container>>(&saved, "Docker containers")
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        if !containers.is_empty() {
            tracing::info!(
                containers = containers.len(),
                "serving Docker's ports as last seen until dockerd answers"
            );
        }
        DockerFollow {
            cfg,
            containers,
            link: Link {
                since: unix_now(),
                error: Some("not connected yet".into()),
                ..Link::default()
            },
            not_served: Vec::new(),
            saved,
            task: None,
        }
    }

    /// The config's forwards to containers by name whose container runs, resolved to its
    /// address.
    pub(super) fn named(&self, named: &[NamedForward]) -> Vec<(Forward, Origin)> {
        named
            .iter()
            .filter_map(|n| {
                let fwd = self.resolve(n).ok()?;
                let name = n.to.container.clone();
                Some((fwd, Origin::Container { name }))
            })
            .collect()
    }

    /// Docker's forwards that do not collide with what goes ahead of them (`ahead`: each
    /// forward of the config, running or not, and of CNI, as shown and its listen side) nor
    /// with each other (the container first by name keeps the port). The bindings left are
    /// noted for `portfwd status`, and logged once.
    pub(super) fn bindings(&mut self, ahead: &[(String, Listen)]) -> Vec<(Forward, Origin)> {
        let mut out: Vec<(Forward, Origin)> = Vec::new();
        let mut not_served = Vec::new();
        let mut containers: Vec<&Container> = self.containers.values().collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        for c in containers.into_iter().filter(|c| c.is_running()) {
            let derived = forwards_of(c);
            let note = |listen: &Listen, reason: String| DockerBinding {
                container: c.name.clone(),
                listen: listen.to_string(),
                reason,
            };
            for n in derived.not_served {
                not_served.push(DockerBinding {
                    container: c.name.clone(),
                    listen: n.listen,
                    reason: n.reason,
                });
            }
            for f in derived.forwards {
                if let Some((cf, _)) = ahead.iter().find(|(_, l)| l.conflicts_with(&f.listen)) {
                    not_served.push(note(
                        &f.listen,
                        format!("collides with {cf}, which goes first (the config, then CNI, then Docker)"),
                    ));
                } else if let Some((of, o)) = out
                    .iter()
                    .find(|(of, _)| of.listen.conflicts_with(&f.listen))
                {
                    not_served.push(note(
                        &f.listen,
                        format!("collides with {} of {}", of.listen, o.label()),
                    ));
                } else {
                    let listen = f.listen;
                    match f.with_allow(self.cfg.allow.clone()) {
                        Ok(f) => {
                            let origin = Origin::Docker {
                                id: c.id.clone(),
                                name: c.name.clone(),
                            };
                            out.push((f, origin));
                        }
                        // docker.allow has no prefix of this family: no client may use it.
                        Err(e) => not_served.push(note(&listen, format!("docker.allow: {e}"))),
                    }
                }
            }
        }
        if not_served != self.not_served {
            for b in not_served.iter().filter(|b| !self.not_served.contains(b)) {
                tracing::warn!(container = %b.container, listen = %b.listen, "Docker's binding not served: {}", b.reason);
            }
            self.not_served = not_served;
        }
        out
    }

    /// The forward `n` makes with its container's address now, or why there is none. A name
    /// that is no container's but a compose service's makes a pool of the service's running
    /// replicas (even of one: the pool then follows a scale-up without moving a flow).
    fn resolve(&self, n: &NamedForward) -> Result<Forward, String> {
        let name = &n.to.container;
        if let Some(c) = self
            .containers
            .values()
            .find(|c| &c.name == name && c.is_running())
        {
            return n.at(address_of(c, n)?).map_err(|e| e.to_string());
        }
        let mut replicas: Vec<&Container> = self
            .containers
            .values()
            .filter(|c| c.service.as_deref() == Some(name.as_str()) && c.is_running())
            .collect();
        if replicas.is_empty() {
            return Err(format!(
                "container {name} is not running (stopped, restarting or removed), nor is a replica of a compose service {name}"
            ));
        }
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        // A replica without an address of the family is left out; with none, why not.
        let (addrs, missing): (Vec<_>, Vec<_>) = replicas
            .iter()
            .map(|c| address_of(c, n))
            .partition(Result::is_ok);
        if addrs.is_empty() {
            let why = missing.into_iter().find_map(Result::err);
            return Err(why.unwrap_or_default());
        }
        let addrs: Vec<IpAddr> = addrs.into_iter().filter_map(Result::ok).collect();
        n.pool_at(&addrs).map_err(|e| e.to_string())
    }

    /// Why `n` is not served now.
    pub(super) fn inactive(&self, n: &NamedForward) -> String {
        match self.resolve(n) {
            Err(why) => why,
            Ok(_) => "its port is taken (see the daemon's log)".to_owned(),
        }
    }

    /// Whether a container by that name (or a replica of a compose service by that name)
    /// runs now.
    pub(super) fn is_running(&self, name: &str) -> bool {
        self.containers
            .values()
            .any(|c| (c.name == name || c.service.as_deref() == Some(name)) && c.is_running())
    }

    /// Saves the containers known (for a restarted daemon).
    pub(super) fn save(&self) {
        let list: Vec<&Container> = self.containers.values().collect();
        if let Err(e) = saved::store(&self.saved, &list) {
            tracing::warn!("{}", chain(&e));
        }
    }

    pub(super) fn status(&self, forwards: &[Active]) -> DockerStatus {
        DockerStatus {
            socket: self.cfg.socket.clone(),
            connected: self.link.connected,
            since: self.link.since,
            api_version: self.link.api_version.clone(),
            engine_version: self.link.engine_version.clone(),
            error: self.link.error.clone(),
            containers: self
                .containers
                .values()
                .filter(|c| c.is_running() && !c.bindings.is_empty())
                .count(),
            forwards: forwards
                .iter()
                .filter(|a| matches!(a.origin, Origin::Docker { .. }))
                .count(),
            not_served: self.not_served.clone(),
        }
    }
}

impl State {
    /// Starts or stops following Docker as the config's `docker:` section says (at start-up
    /// and after a reload). Docker's forwards go with the section.
    pub(super) fn configure_docker(&mut self, cfg: Option<&DockerConfig>) {
        if self.docker.as_ref().map(|d| &d.cfg) == cfg {
            if let Some(d) = &mut self.docker
                && d.task.is_none()
            {
                d.task = Some(follower::spawn(
                    self.weak_self.clone(),
                    d.cfg.socket.clone(),
                ));
            }
            return;
        }
        if let Some(task) = self.docker.take().and_then(|d| d.task) {
            task.abort();
            tracing::info!("no longer following Docker");
        }
        if let Some(cfg) = cfg {
            let mut d = DockerFollow::new(cfg.clone(), &state_dir(&self.socket));
            d.task = Some(follower::spawn(self.weak_self.clone(), cfg.socket.clone()));
            self.docker = Some(d);
        }
        self.sync_derived();
    }

    /// Loads what a previous daemon saved of Docker, before the forwards are first applied.
    pub(super) fn restore_docker(&mut self, cfg: Option<&DockerConfig>) {
        self.docker = cfg.map(|c| DockerFollow::new(c.clone(), &state_dir(&self.socket)));
    }
}
