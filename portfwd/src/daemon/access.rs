//! Who may use the control socket: root, the daemon's own user, and members of `socket_group`
//! (primary or supplementary group). The socket file carries the same rule (mode 0660, owner
//! root, group `socket_group`); the daemon checks each caller's credentials (SO_PEERCRED) as
//! well, so that the socket stays closed if its mode or owner are changed behind its back.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use crate::{
    error::{Cause, Error},
    sys,
};

/// Why `socket_group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group '{0}' does not exist (create it with `groupadd --system {0}`)")]
    NotFound(String),
    #[error("looking up group '{name}'")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// A caller the control socket does not answer, and how to get access: what it is told.
#[derive(Debug, thiserror::Error)]
#[error("permission denied: the portfwd control socket does not accept uid {uid}; {}", self.how())]
pub struct Refused {
    uid: u32,
    group: Option<String>,
    config: PathBuf,
}

impl Refused {
    fn how(&self) -> String {
        match &self.group {
            Some(g) => format!(
                "run as root or add yourself to group '{g}' (socket_group in {})",
                self.config.display()
            ),
            None => format!(
                "run as root, or set socket_group in {} and add yourself to that group",
                self.config.display()
            ),
        }
    }
}

/// Who may use the control socket besides root: `socket_group`, resolved to its id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    group: Option<(String, u32)>,
}

impl Access {
    /// Looks `socket_group` up; a group that does not exist is an error.
    pub fn resolve(group: Option<&str>) -> Result<Access, GroupError> {
        let Some(name) = group else {
            return Ok(Access::default());
        };
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Access {
                group: Some((name.to_owned(), g.gid.as_raw())),
            }),
            Ok(None) => Err(GroupError::NotFound(name.to_owned())),
            Err(source) => Err(GroupError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The group's name, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_ref().map(|(n, _)| n.as_str())
    }

    /// Gives the socket file to root and the group (root's group without one), mode 0660.
    pub fn apply_to(&self, path: &Path) -> Result<(), Error> {
        let gid = self.group.as_ref().map_or(0, |(_, gid)| *gid);
        let err = |action: String| {
            move |source| Error::Socket {
                path: path.to_owned(),
                source: Cause::Io { action, source },
            }
        };
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid.into()))
            .map_err(|e| err(format!("giving it to group id {gid}"))(e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(err("setting mode 0660".to_owned()))
    }

    /// Whether the peer may send requests: root, the daemon's own user, or a member of the group.
    /// `config` is named in the refusal, as where `socket_group` is set.
    pub fn check(&self, peer: &tokio::net::unix::UCred, config: &Path) -> Result<(), Refused> {
        if peer.uid() == 0 || peer.uid() == sys::euid() {
            return Ok(());
        }
        if let Some((_, gid)) = &self.group
            && (peer.gid() == *gid || peer_groups(peer).contains(gid))
        {
            return Ok(());
        }
        Err(Refused {
            uid: peer.uid(),
            group: self.group_name().map(str::to_owned),
            config: config.to_owned(),
        })
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
