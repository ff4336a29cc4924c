//! The control socket: a filesystem Unix socket (never abstract: CVE-2020-15257), one JSON
//! request per connection, and what each request does to the daemon's state.
//!
//! Who may use it is checked twice: by the file (mode 0660, owner root, group `socket_group`)
//! and by the daemon, for each caller ([`Access::check`]).
use std::{
    net::Ipv6Addr,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

use super::{
    access::Access,
    follow::Change,
    reload::Trigger,
    state::{Origin, State},
};
use crate::{
    api::{self, Request, Response},
    config,
    error::{Cause, Error, chain},
    publish::{
        AllowPrefix, AnyForward, Forward, Listen, NamedForward, PoolError, PoolOptions,
        PublishError, Target,
    },
    sys,
};

/// What `retarget` does to one target of a pool.
#[derive(Debug, Clone, Copy)]
enum Retarget {
    /// `portfwd del LISTEN TARGET`.
    Remove,
    /// `portfwd drain` (0) and `portfwd drain --undo` (1).
    Weight(u32),
}

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Binds the control socket at `path`, refusing to steal it from a running daemon.
pub fn bind(path: &Path, access: &Access) -> Result<UnixListener, Error> {
    let err = |source: Cause| Error::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(Cause::io(format!("creating {}", dir.display()))(e)))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(Cause::Refused(
                "another portfwd daemon is already serving it",
            )));
        }
        // Left behind by a daemon that did not exit cleanly.
        std::fs::remove_file(path).map_err(|e| err(Cause::io("removing stale socket")(e)))?;
    }
    // Created 0600 (umask), then opened to the group: never accessible to others in between.
    let listener =
        sys::with_umask(0o177, || UnixListener::bind(path)).map_err(|e| err(e.into()))?;
    access.apply_to(path)?;
    Ok(listener)
}

/// Serves requests until the task is dropped. Requests are handled one at a time, under the
/// state lock, so concurrent CLI calls are serialised.
pub async fn serve(listener: UnixListener, state: Arc<Mutex<State>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, state).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    // The request is read before the caller is checked, so that a refused caller reads the
    // refusal instead of a broken pipe.
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let allowed = {
        let st = state.lock().await;
        st.access.check(&peer, &st.config_path)
    };
    let response = match allowed {
        Err(refused) => {
            tracing::warn!(
                uid = peer.uid(),
                pid = peer.pid(),
                "control socket: caller refused"
            );
            Response::Error {
                message: refused.to_string(),
            }
        }
        Ok(()) => match serde_json::from_str::<Request>(&line) {
            // One request at a time, under the state lock: concurrent calls are serialised.
            Ok(req) => state.lock().await.handle(req),
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!(r#"{{"result":"error","message":"cannot encode the answer: {e}"}}"#)
    });
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

impl State {
    /// Handles one control request.
    pub(super) fn handle(&mut self, req: Request) -> Response {
        let result = match req {
            Request::Add {
                listen,
                to,
                allow,
                health,
                all_down,
                grace,
            } => api::pool_options(health.as_ref(), all_down.as_deref(), grace.as_deref())
                .map_err(Error::from)
                .and_then(|options| self.add(&listen, &to.to_vec(), &allow, options)),
            Request::Del {
                listen,
                owner,
                target: None,
            } => self.del(&listen, owner.as_deref()),
            Request::Del {
                listen,
                target: Some(target),
                ..
            } => self.retarget(&listen, &target, Retarget::Remove),
            Request::Drain {
                listen,
                target,
                undo,
            } => self.retarget(&listen, &target, Retarget::Weight(u32::from(undo))),
            Request::List => return self.list(),
            Request::Status => return self.status(),
            Request::Cni { version, request } => return self.cni(version, request),
            Request::Reload => self
                .reload(Trigger::Request)
                .map(|summary| format!("reloaded {}: {summary}", self.config_path.display())),
        };
        match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error { message: chain(&e) },
        }
    }

    fn add(
        &mut self,
        listen: &str,
        to: &[String],
        allow: &[String],
        options: PoolOptions,
    ) -> Result<String, Error> {
        let allow = allow
            .iter()
            .map(|p| p.parse::<AllowPrefix>())
            .collect::<Result<Vec<_>, _>>()?;
        let listen = listen.parse::<Listen>()?;
        let fwd = match AnyForward::new(listen, to, allow, options)? {
            AnyForward::Addr(fwd) => fwd,
            AnyForward::Named(n) => return self.add_named(n),
        };
        if let Some(n) = self.named_conflict(&fwd.listen) {
            return Err(Error::Overlaps {
                listen: fwd.listen.to_string(),
                existing: n.listen.to_string(),
                to: n.to.to_string(),
            });
        }
        // The config wins over Docker: a binding of Docker's in the way gives way (and is
        // shown as not served while the forward is there).
        let displaced = self.displace_docker(&fwd.listen)?;
        if let Err(e) = self.publish(fwd.clone(), Origin::Config) {
            self.sync_derived();
            return Err(e);
        }
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            // Keep the running state and the file in step: undo.
            let _ = self.unpublish(&fwd.listen);
            self.sync_derived();
            return Err(e.into());
        }
        tracing::info!(forward = %fwd, "published");
        for d in &displaced {
            tracing::warn!(forward = %d.fwd, origin = %d.origin.label(), "Docker's binding gives way to the config's forward {fwd}");
        }
        self.follow(&[Change::Added(&fwd)]);
        self.sync_derived();
        Ok(format!("published {fwd}"))
    }

    /// `portfwd add LISTEN NAME:PORT`: a forward of the config to a container by name. The
    /// container must run now (an unknown name is refused); it is followed from then on.
    fn add_named(&mut self, n: NamedForward) -> Result<String, Error> {
        let name = n.to.container.clone();
        let Some(d) = &self.docker else {
            return Err(Error::NeedsDocker(name));
        };
        if !d.is_running(&name) {
            return Err(Error::UnknownContainer(name));
        }
        let listens = self
            .forwards
            .iter()
            .map(|a| (a.fwd.listen, a.fwd.to.to_string()));
        let named = self.cfg.named.iter().map(|m| (m.listen, m.to.to_string()));
        if let Some((existing, to)) = listens
            .filter(|(l, _)| !self.is_docker_listen(l))
            .chain(named)
            .find(|(l, _)| l.conflicts_with(&n.listen))
        {
            return Err(if existing == n.listen {
                Error::AlreadyPublished {
                    listen: existing.to_string(),
                    to,
                }
            } else {
                Error::Overlaps {
                    listen: n.listen.to_string(),
                    existing: existing.to_string(),
                    to,
                }
            });
        }
        let displaced = self.displace_docker(&n.listen)?;
        self.cfg.named.push(n.clone());
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            self.cfg.named.pop();
            self.sync_derived();
            return Err(e.into());
        }
        self.sync_derived();
        for d in &displaced {
            tracing::warn!(forward = %d.fwd, origin = %d.origin.label(), "Docker's binding gives way to the config's forward {n}");
        }
        let to = self
            .forwards
            .iter()
            .find(|a| a.fwd.listen == n.listen)
            .map(|a| a.fwd.to.to_string())
            .unwrap_or_else(|| "not served: see the daemon's log".into());
        tracing::info!(forward = %n, to, "published");
        Ok(format!("published {n} (now {to})"))
    }

    /// The config's forward to a container by name whose listen side overlaps `listen`.
    fn named_conflict(&self, listen: &Listen) -> Option<&NamedForward> {
        self.cfg
            .named
            .iter()
            .find(|n| n.listen.conflicts_with(listen))
    }

    fn is_docker_listen(&self, listen: &Listen) -> bool {
        self.forwards
            .iter()
            .any(|a| &a.fwd.listen == listen && matches!(a.origin, Origin::Docker { .. }))
    }

    /// The listen side a request names. A bare port names the IPv4 forward on it, or the IPv6
    /// one (`[::]`) when only that is published: a bare port takes its target's family when
    /// it is added. `0.0.0.0:PORT` names the IPv4 one only.
    fn named_listen(&self, listen: &str) -> Result<Listen, Error> {
        let mut listen = listen.parse::<Listen>()?;
        let v6_any = Listen {
            addr: Some(Ipv6Addr::UNSPECIFIED.into()),
            ..listen
        };
        let published = |l: &Listen| self.forwards.iter().any(|a| a.fwd.listen == *l);
        if listen.addr.is_none() && !published(&listen) && published(&v6_any) {
            listen = v6_any;
        }
        Ok(listen.normalized())
    }

    /// `portfwd del LISTEN TARGET` and `portfwd drain LISTEN TARGET [--undo]`: one target of
    /// a forward of the config changes; the config file is edited, then the forward is
    /// applied again.
    fn retarget(&mut self, listen: &str, target: &str, how: Retarget) -> Result<String, Error> {
        let listen = self.named_listen(listen)?;
        let target = target.parse::<Target>()?;
        let old = self.config_forward(&listen)?;
        let new = match how {
            Retarget::Remove => old.without_target(&target)?,
            Retarget::Weight(w) => old.with_weight(&target, w)?,
        };
        if new != old {
            self.replace_forward(&old, &new)?;
        }
        tracing::info!(forward = %new, was = %old, "changed");
        Ok(match how {
            Retarget::Remove => format!("removed {target} from {listen} (now {new})"),
            Retarget::Weight(0) => {
                format!("draining {target} of {listen}: no new flows, its flows go on")
            }
            Retarget::Weight(_) => format!("{target} of {listen} takes new flows again"),
        })
    }

    /// The forward of the config published on `listen`; why not when it is not one.
    fn config_forward(&self, listen: &Listen) -> Result<Forward, Error> {
        if let Some(n) = self.cfg.named.iter().find(|n| n.listen == *listen) {
            return Err(PublishError::from(PoolError::Setting {
                key: "target",
                message: format!(
                    "{listen} goes to the container {} by name, its only target; to stop publishing the port, run `portfwd del {listen}`",
                    n.to
                ),
            })
            .into());
        }
        if let Some(cni) = self.cni_owner_of(listen) {
            return Err(Error::OwnedByCni {
                listen: listen.to_string(),
                owner: cni.label(),
            });
        }
        let a = self
            .forwards
            .iter()
            .find(|a| a.fwd.listen == *listen)
            .ok_or_else(|| Error::NotPublished(listen.to_string()))?;
        match &a.origin {
            Origin::Docker { name, .. } => Err(Error::OwnedByDocker {
                listen: listen.to_string(),
                container: name.clone(),
            }),
            _ => Ok(a.fwd.clone()),
        }
    }

    /// Publishes `new` in place of `old` (same listen side) and saves the config; on failure
    /// `old` is published again and the file left as it was. A pool that stays a pool (same
    /// allowlist) is changed in place: its flows stay on their backends and a backend it no
    /// longer has drains (`super::pools`).
    fn replace_forward(&mut self, old: &Forward, new: &Forward) -> Result<(), Error> {
        if old.pool.is_some() && new.pool.is_some() && old.allow == new.allow {
            self.repool(new, &Origin::Config)?;
            if let Err(e) = config::save(&self.config_path, &self.config()) {
                let _ = self.repool(old, &Origin::Config);
                return Err(e.into());
            }
            return Ok(());
        }
        self.unpublish(&old.listen)?;
        if let Err(e) = self.publish(new.clone(), Origin::Config) {
            let _ = self.publish(old.clone(), Origin::Config);
            self.sync_derived();
            return Err(e);
        }
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            let _ = self.unpublish(&new.listen);
            let _ = self.publish(old.clone(), Origin::Config);
            self.sync_derived();
            return Err(e.into());
        }
        self.sync_derived();
        Ok(())
    }

    fn del(&mut self, listen: &str, owner: Option<&str>) -> Result<String, Error> {
        let listen = self.named_listen(listen)?;
        if let Some(i) = self.cfg.named.iter().position(|n| n.listen == listen) {
            let n = self.cfg.named.remove(i);
            if let Err(e) = config::save(&self.config_path, &self.config()) {
                self.cfg.named.insert(i, n);
                return Err(e.into());
            }
            self.sync_derived();
            tracing::info!(forward = %n, "unpublished");
            return Ok(format!("unpublished {} (was -> {})", n.listen, n.to));
        }
        if let Some(cni) = self.cni_owner_of(&listen).cloned() {
            if owner == Some(cni.label().as_str()) {
                return Ok(self.cni_release(&cni));
            }
            return Err(Error::OwnedByCni {
                listen: listen.to_string(),
                owner: cni.label(),
            });
        }
        if let Some(a) = self.forwards.iter().find(|a| a.fwd.listen == listen)
            && let Origin::Docker { name, .. } = &a.origin
        {
            return Err(Error::OwnedByDocker {
                listen: listen.to_string(),
                container: name.clone(),
            });
        }
        let active = self.unpublish(&listen)?;
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            let _ = self.publish(active.fwd.clone(), Origin::Config);
            return Err(e.into());
        }
        tracing::info!(listen = %active.fwd.listen, to = %active.fwd.to, "unpublished");
        self.follow(&[Change::Removed(&active.fwd)]);
        // A binding of Docker's that the forward held back can be served now.
        self.sync_derived();
        Ok(format!(
            "unpublished {} (was -> {})",
            active.fwd.listen, active.fwd.to
        ))
    }

    fn list(&self) -> Response {
        match self.forward_entries() {
            Ok(forwards) => Response::Forwards { forwards },
            Err(e) => Response::Error { message: chain(&e) },
        }
    }

    fn status(&self) -> Response {
        match self.status_report() {
            Ok(s) => Response::Status(Box::new(s)),
            Err(e) => Response::Error { message: chain(&e) },
        }
    }
}

/// Removes the socket file when the daemon stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
