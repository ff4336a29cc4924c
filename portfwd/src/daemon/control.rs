//! The control socket: a filesystem Unix socket (never abstract: CVE-2020-15257), one JSON
//! request per connection.
//!
//! Who may use it is checked twice: by the file (mode 0660, owner root, group `socket_group`)
//! and by the daemon, which reads each caller's credentials with SO_PEERCRED and answers only
//! root, its own user, and members of `socket_group` (primary or supplementary group). The
//! second check keeps the socket closed if its mode or owner are changed behind the daemon's
//! back.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

use super::State;
use crate::{
    api::{Request, Response},
    error::Error,
};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Binds the control socket at `path`, refusing to steal it from a running daemon.
pub fn bind(path: &Path, access: &Access) -> Result<UnixListener, Error> {
    let err = |message: String| Error::Socket {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another portfwd daemon is already serving it".into()));
        }
        // Left behind by a daemon that did not exit cleanly.
        std::fs::remove_file(path).map_err(|e| err(format!("removing stale socket: {e}")))?;
    }
    // Created 0600 (umask), then opened to the group: never accessible to others in between.
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| err(e.to_string()))?;
    access.apply_to(path)?;
    Ok(listener)
}

/// Who may use the control socket besides root: `socket_group`, resolved to its id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    group: Option<(String, u32)>,
}

impl Access {
    /// Looks `socket_group` up; a group that does not exist is an error.
    pub fn resolve(group: Option<&str>) -> Result<Access, String> {
        let Some(name) = group else {
            return Ok(Access::default());
        };
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Access {
                group: Some((name.to_owned(), g.gid.as_raw())),
            }),
            Ok(None) => Err(format!(
                "group '{name}' does not exist (create it with `groupadd --system {name}`)"
            )),
            Err(e) => Err(format!("looking up group '{name}': {e}")),
        }
    }

    /// The group's name, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_ref().map(|(n, _)| n.as_str())
    }

    /// Gives the socket file to root and the group (root's group without one), mode 0660.
    pub fn apply_to(&self, path: &Path) -> Result<(), Error> {
        let gid = self.group.as_ref().map_or(0, |(_, gid)| *gid);
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid.into())).map_err(
            |e| Error::Socket {
                path: path.to_owned(),
                message: format!("giving it to group id {gid}: {e}"),
            },
        )?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
            Error::Socket {
                path: path.to_owned(),
                message: format!("setting mode 0660: {e}"),
            }
        })
    }

    /// Whether the peer may send requests: root, the daemon's own user, or a member of the group.
    pub fn check(&self, peer: &tokio::net::unix::UCred, config: &Path) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if peer.uid() == 0 || peer.uid() == me {
            return Ok(());
        }
        if let Some((_, gid)) = &self.group
            && (peer.gid() == *gid || peer_groups(peer).contains(gid))
        {
            return Ok(());
        }
        let how = match self.group_name() {
            Some(g) => format!(
                "run as root or add yourself to group '{g}' (socket_group in {})",
                config.display()
            ),
            None => format!(
                "run as root, or set socket_group in {} and add yourself to that group",
                config.display()
            ),
        };
        Err(format!(
            "permission denied: the portfwd control socket does not accept uid {}; {how}",
            peer.uid()
        ))
    }
}

/// The peer's supplementary groups, from /proc/PID/status (the set the process really has, not
/// what /etc/group says); from the group database when that cannot be read.
fn peer_groups(peer: &tokio::net::unix::UCred) -> Vec<u32> {
    if let Some(pid) = peer.pid()
        && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(line) = status.lines().find_map(|l| l.strip_prefix("Groups:"))
    {
        return line
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(peer.uid().into()) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, peer.gid().into())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
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
        Err(message) => {
            tracing::warn!(
                uid = peer.uid(),
                pid = peer.pid(),
                "control socket: caller refused"
            );
            Response::Error { message }
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

/// Removes the socket file when the daemon stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
