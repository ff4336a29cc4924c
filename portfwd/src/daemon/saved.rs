//! State the daemon keeps of its own in files beside its control socket (`/run/portfwd`, a
//! tmpfs kept across restarts by the systemd unit and gone at reboot, like the pinned maps):
//! Docker's containers as last seen (`daemon::docker`) and the forwards of CNI attachments
//! (`daemon::cni`). A restarted or crashed daemon serves them from its first packet.
//!
//! A file is written whole, then renamed over the old one, so a crash leaves the old or the
//! new state, never half of one.
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::config::ConfigError;

/// The saved value; `None` when the file is missing, or unreadable (logged: the daemon then
/// starts from nothing rather than not at all).
pub(super) fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), "ignoring the saved {what}: {e}");
            return None;
        }
    };
    serde_json::from_str(&text)
        .map_err(|e| tracing::warn!(file = %path.display(), "ignoring the saved {what}: {e}"))
        .ok()
}

/// Saves `value` as JSON (written whole, then renamed over the old file).
pub(super) fn store<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let io = |action, error| ConfigError::Io {
        path: path.to_owned(),
        action,
        error,
    };
    let text = serde_json::to_vec(value).map_err(|e| io("encode", e.into()))?;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("write", e))
}
