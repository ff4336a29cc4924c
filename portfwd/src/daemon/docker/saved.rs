//! The running containers, kept in a file beside the control socket (`/run/portfwd`, a tmpfs:
//! gone at reboot, like the pinned maps). A daemon that restarts, or crashes, serves Docker's
//! ports from its saved view at once and reconciles when dockerd answers; while dockerd is down
//! the forwards stay as they were.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{config::ConfigError, docker::Container};

const FILE: &str = "docker-containers.json";

pub(super) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The saved containers; none when the file is missing or unreadable (logged).
pub(super) fn load(path: &Path) -> BTreeMap<String, Container> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "ignoring the saved Docker containers: {e}");
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<Vec<Container>>(&text) {
        Ok(list) => list.into_iter().map(|c| (c.id.clone(), c)).collect(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "ignoring the saved Docker containers: {e}");
            BTreeMap::new()
        }
    }
}

/// Saves `containers` (written whole, then renamed over the old file).
pub(super) fn store(
    path: &Path,
    containers: &BTreeMap<String, Container>,
) -> Result<(), ConfigError> {
    let io = |action, error| ConfigError::Io {
        path: path.to_owned(),
        action,
        error,
    };
    let list: Vec<&Container> = containers.values().collect();
    let text = serde_json::to_vec(&list).map_err(|e| io("encode", e.into()))?;
    let tmp = path.with_extension("json.new");
    std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("write", e))
}
