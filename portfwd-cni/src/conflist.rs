//! Rewriting a node's CNI conflist so that `portfwd-cni` stands where `portmap` stood, and the
//! reverse (roll back). The Kubernetes init container runs it through `portfwd-cni
//! install-conflist` (see `deploy/kubernetes/` and README's "Kubernetes").
//!
//! The rewrite, on the `plugins` list of a `.conflist` in a version the plugin speaks
//! ([`SUPPORTED_VERSIONS`]: 0.3.x to 1.1.0):
//! - the `portmap` entry becomes `portfwd-cni` at the same position: its `type` changes, its
//!   `capabilities` (with `portMappings: true`) stay, the keys only portmap knows
//!   ([`PORTMAP_ONLY_KEYS`]) go, and `socket` is set when one is given. Every other plugin and
//!   key is kept, in its order;
//! - it is idempotent: on a conflist that already has `portfwd-cni` it changes nothing (except
//!   a different `socket` when one is given);
//! - a conflist without `portmap` is left unchanged (and says so), unless asked to append
//!   `portfwd-cni` at the end of the chain;
//! - roll back turns `portfwd-cni` into `portmap` (with portmap's defaults for the dropped
//!   keys; the backup written beside the file has the original ones).
//!
//! - `json`: a JSON tree that keeps key order; `files`: reading, the atomic write with its
//!   backup, the binary's installation; `cli`: the subcommand.
mod cli;
mod files;
mod json;

pub use cli::{Args, SUBCOMMAND, main};
pub use files::{
    BACKUP_SUFFIX, FileError, FileOutcome, ROLLBACK_BACKUP_SUFFIX, install_binary, rewrite_dir,
    rewrite_file,
};

use json::{Json, Object};

use crate::spec::SUPPORTED_VERSIONS;

/// The plugin this crate builds, as a conflist names it.
pub const PORTFWD_CNI: &str = "portfwd-cni";
/// The plugin it replaces.
pub const PORTMAP: &str = "portmap";
/// portmap's own settings, which mean nothing to portfwd-cni (SNAT, marks, chains,
/// conditions): dropped by the rewrite.
pub const PORTMAP_ONLY_KEYS: [&str; 6] = [
    "snat",
    "markMasqBit",
    "externalSetMarkChain",
    "conditionsV4",
    "conditionsV6",
    "masqAll",
];
/// What to do to a conflist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// portmap -> portfwd-cni.
    Install {
        /// The daemon's control socket, written as the entry's `socket` (absent: the plugin's
        /// default, `/run/portfwd/portfwd.sock`).
        socket: Option<String>,
        /// Append `portfwd-cni` to a chain that has no portmap.
        append: bool,
    },
    /// portfwd-cni -> portmap.
    Rollback,
}

/// What a rewrite did (or found nothing to do), for the log line of each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `plugins[index]` was portmap and is portfwd-cni now; `dropped` are the portmap-only
    /// keys it had.
    Replaced { index: usize, dropped: Vec<String> },
    /// portfwd-cni was appended as `plugins[index]` (no portmap, `append` asked).
    Appended { index: usize },
    /// `plugins[index]` was portfwd-cni already; its socket or capabilities were set.
    Updated { index: usize },
    /// `plugins[index]` is portfwd-cni already, as asked: nothing changed.
    AlreadyInstalled { index: usize },
    /// No portmap in the chain: nothing changed.
    NoPortmap,
    /// `plugins[index]` was portfwd-cni and is portmap again.
    RolledBack { index: usize },
    /// No portfwd-cni in the chain: nothing to roll back.
    NothingToRollBack,
}

impl Outcome {
    /// Whether the conflist's content changed.
    pub fn changed(&self) -> bool {
        matches!(
            self,
            Outcome::Replaced { .. }
                | Outcome::Appended { .. }
                | Outcome::Updated { .. }
                | Outcome::RolledBack { .. }
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Replaced { index, dropped } if dropped.is_empty() => {
                write!(f, "portmap (plugins[{index}]) replaced by {PORTFWD_CNI}")
            }
            Outcome::Replaced { index, dropped } => write!(
                f,
                "portmap (plugins[{index}]) replaced by {PORTFWD_CNI}; portmap's own keys dropped: {}",
                dropped.join(", ")
            ),
            Outcome::Appended { index } => {
                write!(f, "no portmap; {PORTFWD_CNI} appended as plugins[{index}]")
            }
            Outcome::Updated { index } => {
                write!(
                    f,
                    "{PORTFWD_CNI} (plugins[{index}]) already there; settings updated"
                )
            }
            Outcome::AlreadyInstalled { index } => {
                write!(
                    f,
                    "{PORTFWD_CNI} (plugins[{index}]) already there; unchanged"
                )
            }
            Outcome::NoPortmap => write!(
                f,
                "no portmap in the chain; unchanged (--append adds {PORTFWD_CNI} at its end)"
            ),
            Outcome::RolledBack { index } => {
                write!(f, "{PORTFWD_CNI} (plugins[{index}]) replaced by portmap")
            }
            Outcome::NothingToRollBack => write!(f, "no {PORTFWD_CNI} in the chain; unchanged"),
        }
    }
}

/// Why a conflist was not rewritten (it is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a conflist: {0}")]
    Shape(&'static str),
    #[error("plugins[{0}] is not an object with a string \"type\"")]
    Plugin(usize),
    #[error("{kind} appears {count} times in plugins; fix the chain by hand")]
    Repeated { kind: &'static str, count: usize },
    #[error(
        "both portmap (plugins[{portmap}]) and {PORTFWD_CNI} (plugins[{portfwd}]) are in the chain; fix it by hand"
    )]
    Both { portmap: usize, portfwd: usize },
    /// A conflist in a version the plugin does not speak: were it rewritten, every pod's
    /// network setup on the node would fail.
    #[error(
        "cniVersion {found:?} is not one portfwd-cni speaks ({}); unchanged (--allow-cni-version {found} to rewrite it anyway)",
        SUPPORTED_VERSIONS.join(", ")
    )]
    Version { found: String },
}

/// A rewritten conflist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub outcome: Outcome,
    /// The new text (in the file's own indentation), `None` when nothing changed.
    pub text: Option<String>,
}

/// Rewrites the conflist `text` as `change` asks. An install refuses a conflist whose
/// `cniVersion` the plugin does not speak ([`SUPPORTED_VERSIONS`]) unless it is in
/// `allowed_versions`; a roll back always restores portmap.
pub fn rewrite(
    text: &str,
    change: &Change,
    allowed_versions: &[String],
) -> Result<Rewritten, ConflistError> {
    let Json::Object(mut conf) = serde_json::from_str::<Json>(text)? else {
        return Err(ConflistError::Shape("the top level is not an object"));
    };
    let version = conf
        .get("cniVersion")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(Json::Array(plugins)) = conf.get_mut("plugins") else {
        return Err(ConflistError::Shape("no \"plugins\" list"));
    };
    let (portmap, portfwd) = find(plugins)?;
    let outcome = match change {
        Change::Install { socket, append } => {
            let served = SUPPORTED_VERSIONS.contains(&version.as_str())
                || allowed_versions.contains(&version);
            if !served && (portmap.is_some() || *append) && portfwd.is_none() {
                return Err(ConflistError::Version { found: version });
            }
            install(plugins, portmap, portfwd, socket.as_deref(), *append)?
        }
        Change::Rollback => rollback(plugins, portmap, portfwd)?,
    };
    let text = outcome.changed().then(|| {
        let mut new = json::to_pretty(&Json::Object(conf), json::indent_of(text));
        if text.ends_with('\n') {
            new.push('\n');
        }
        new
    });
    Ok(Rewritten { outcome, text })
}

/// The positions of portmap and portfwd-cni in the chain (each at most once).
fn find(plugins: &[Json]) -> Result<(Option<usize>, Option<usize>), ConflistError> {
    let mut types = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.iter().enumerate() {
        let kind = p
            .as_object()
            .and_then(|o| o.get("type"))
            .and_then(Json::as_str)
            .ok_or(ConflistError::Plugin(i))?;
        types.push(kind);
    }
    let only = |kind: &'static str| {
        let at: Vec<usize> = (0..types.len()).filter(|&i| types[i] == kind).collect();
        match at[..] {
            [] => Ok(None),
            [i] => Ok(Some(i)),
            _ => Err(ConflistError::Repeated {
                kind,
                count: at.len(),
            }),
        }
    };
    Ok((only(PORTMAP)?, only(PORTFWD_CNI)?))
}

fn install(
    plugins: &mut Vec<Json>,
    portmap: Option<usize>,
    portfwd: Option<usize>,
    socket: Option<&str>,
    append: bool,
) -> Result<Outcome, ConflistError> {
    match (portmap, portfwd) {
        (Some(portmap), Some(portfwd)) => Err(ConflistError::Both { portmap, portfwd }),
        (Some(index), None) => {
            let entry = object_mut(&mut plugins[index]);
            let dropped: Vec<String> = PORTMAP_ONLY_KEYS
                .iter()
                .filter(|k| entry.remove(k))
                .map(|k| (*k).to_owned())
                .collect();
            entry.insert("type", Json::String(PORTFWD_CNI.to_owned()));
            set_port_mappings(entry);
            if let Some(socket) = socket {
                entry.insert("socket", Json::String(socket.to_owned()));
            }
            Ok(Outcome::Replaced { index, dropped })
        }
        (None, Some(index)) => {
            let entry = object_mut(&mut plugins[index]);
            let before = entry.clone();
            set_port_mappings(entry);
            if let Some(socket) = socket {
                entry.insert("socket", Json::String(socket.to_owned()));
            }
            Ok(if *entry == before {
                Outcome::AlreadyInstalled { index }
            } else {
                Outcome::Updated { index }
            })
        }
        (None, None) if append => {
            let mut entry: Object = [("type".to_owned(), Json::String(PORTFWD_CNI.to_owned()))]
                .into_iter()
                .collect();
            set_port_mappings(&mut entry);
            if let Some(socket) = socket {
                entry.insert("socket", Json::String(socket.to_owned()));
            }
            plugins.push(Json::Object(entry));
            Ok(Outcome::Appended {
                index: plugins.len() - 1,
            })
        }
        (None, None) => Ok(Outcome::NoPortmap),
    }
}

fn rollback(
    plugins: &mut [Json],
    portmap: Option<usize>,
    portfwd: Option<usize>,
) -> Result<Outcome, ConflistError> {
    match (portmap, portfwd) {
        (Some(portmap), Some(portfwd)) => Err(ConflistError::Both { portmap, portfwd }),
        (_, None) => Ok(Outcome::NothingToRollBack),
        (None, Some(index)) => {
            let entry = object_mut(&mut plugins[index]);
            entry.insert("type", Json::String(PORTMAP.to_owned()));
            entry.remove("socket");
            set_port_mappings(entry);
            Ok(Outcome::RolledBack { index })
        }
    }
}

/// `capabilities.portMappings: true`, the other capabilities kept; a new `capabilities` goes
/// right after `type`.
fn set_port_mappings(entry: &mut Object) {
    match entry.get_mut("capabilities") {
        Some(Json::Object(caps)) => caps.insert("portMappings", Json::Bool(true)),
        _ => {
            let caps = [("portMappings".to_owned(), Json::Bool(true))]
                .into_iter()
                .collect();
            entry.insert_after("type", "capabilities", Json::Object(caps));
        }
    }
}

fn object_mut(plugin: &mut Json) -> &mut Object {
    match plugin {
        Json::Object(o) => o,
        _ => unreachable!("find() checked that every plugin is an object"),
    }
}

#[cfg(test)]
mod tests;
