//! Following Docker: the forwards Docker's published ports make, kept in step with its
//! containers while the config has a `docker:` section.
//!
//! - this module: [`DockerFollow`], what the daemon knows of Docker (the running containers,
//!   the connection), and how it changes the published forwards ([`State::sync_docker`]);
//! - `follower`: the task that talks to dockerd: connects with backoff, lists, then follows
//!   events;
//! - `saved`: the containers kept on disk, so that a restarted daemon serves Docker's ports
//!   from its first packet, before dockerd answers (or while it is down).
//!
//! Docker's forwards are derived state: never written to the config, shown with the origin
//! `docker:NAME`, refused by `portfwd del`. The config wins a collision: a binding that
//! overlaps a forward of the config is not served, and shown as such.
mod follower;
mod saved;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    follow::Change,
    state::{Active, Origin, State},
};
use crate::{
    api::{DockerBinding, DockerStatus},
    config::DockerConfig,
    docker::{Container, forwards_of},
    error::{Error, chain},
    publish::{Forward, Listen},
};

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

impl DockerFollow {
    /// Docker as a previous daemon left it (saved under `state_dir`), not connected yet.
    pub(super) fn new(cfg: DockerConfig, state_dir: &Path) -> DockerFollow {
        let saved = saved::path(state_dir);
        let containers = saved::load(&saved);
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

    /// Docker's forwards that do not collide with `config` (the config's forwards) nor with
    /// each other (the container first by name keeps the port). The bindings left are noted
    /// for `portfwd status`.
    pub(super) fn wanted(&mut self, config: &[Forward]) -> Vec<(Forward, Origin)> {
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
                if let Some(cf) = config.iter().find(|cf| cf.listen.conflicts_with(&f.listen)) {
                    not_served.push(note(
                        &f.listen,
                        format!("collides with the config's forward {cf} (the config wins)"),
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
                    let origin = Origin::Docker {
                        id: c.id.clone(),
                        name: c.name.clone(),
                    };
                    out.push((f, origin));
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
            let mut d = DockerFollow::new(cfg.clone(), &self.state_dir());
            d.task = Some(follower::spawn(self.weak_self.clone(), cfg.socket.clone()));
            self.docker = Some(d);
        }
        self.sync_docker();
    }

    /// Loads what a previous daemon saved of Docker, before the forwards are first applied.
    pub(super) fn restore_docker(&mut self, cfg: Option<&DockerConfig>) {
        self.docker = cfg.map(|c| DockerFollow::new(c.clone(), &self.state_dir()));
    }

    /// Where the daemon keeps state of its own: beside its control socket (`/run/portfwd`).
    fn state_dir(&self) -> PathBuf {
        self.socket
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Publishes and withdraws Docker's forwards to match the containers known (each one
    /// appears or goes as a whole, like `portfwd add`/`del`), lets existing UDP flows follow,
    /// and saves the containers.
    pub(super) fn sync_docker(&mut self) {
        let config = self.config_forwards();
        let wanted = match &mut self.docker {
            Some(d) => d.wanted(&config),
            None => Vec::new(),
        };
        let stale: Vec<Listen> = self
            .forwards
            .iter()
            .filter(|a| matches!(a.origin, Origin::Docker { .. }))
            .filter(|a| !wanted.iter().any(|(f, o)| *f == a.fwd && *o == a.origin))
            .map(|a| a.fwd.listen)
            .collect();
        for listen in stale {
            match self.unpublish(&listen) {
                Ok(a) => {
                    tracing::info!(forward = %a.fwd, origin = %a.origin.label(), "withdrawn");
                    self.follow(&[Change::Removed(&a.fwd)]);
                }
                Err(e) => tracing::error!("withdrawing Docker's {listen}: {}", chain(&e)),
            }
        }
        for (fwd, origin) in wanted {
            if self
                .forwards
                .iter()
                .any(|a| a.fwd == fwd && a.origin == origin)
            {
                continue;
            }
            let label = origin.label();
            match self.publish(fwd.clone(), origin) {
                Ok(()) => {
                    tracing::info!(forward = %fwd, origin = %label, "published");
                    self.follow(&[Change::Added(&fwd)]);
                }
                Err(e) => tracing::error!(forward = %fwd, origin = %label, "{}", chain(&e)),
            }
        }
        if let Some(d) = &self.docker
            && let Err(e) = saved::store(&d.saved, &d.containers)
        {
            tracing::warn!("{}", chain(&e));
        }
    }

    /// Withdraws Docker's forwards that overlap `listen`, which a forward of the config is
    /// about to take (the config wins).
    pub(super) fn displace_docker(&mut self, listen: &Listen) -> Result<Vec<Active>, Error> {
        let in_the_way: Vec<Listen> = self
            .forwards
            .iter()
            .filter(|a| matches!(a.origin, Origin::Docker { .. }))
            .filter(|a| a.fwd.listen.conflicts_with(listen))
            .map(|a| a.fwd.listen)
            .collect();
        in_the_way.iter().map(|l| self.unpublish(l)).collect()
    }
}
