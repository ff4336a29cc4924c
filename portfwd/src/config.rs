//! The config file (`/etc/portfwd/portfwd.yaml`): load, validate, save.
//!
//! ```yaml
//! # comments are allowed anywhere
//! interfaces: []              # empty or absent: every non-loopback interface that is up
//! mode: auto                  # auto, tc or xdp (any case): see AttachMode; absent: auto
//! pin_dir: /sys/fs/bpf/portfwd  # absolute; where programs, links and maps are pinned
//! metrics: "127.0.0.1:9369"   # Prometheus endpoint, IP:PORT or [IPv6]:PORT; absent/null: off
//! socket_group: portfwd       # may use the control socket besides root; absent/null: root only
//! forwards:
//!   - listen: "8080"          # [HOST_IP:]PORT[-END][/PROTO], see crate::publish
//!     protocol: tcp           # optional; must agree with a /PROTO suffix
//!     to: "172.17.0.2:3000"   # IP:PORT[-END]; a range is as long as the listen range
//!     allow: ["10.0.0.0/8"]   # optional; source prefixes allowed; absent: every source
//! ```
//!
//! Every key is optional: the empty file is [`Config::default`]. `mode` and `pin_dir` default
//! to `auto` and [`DEFAULT_PIN_DIR`]. `metrics` takes an IP address, never a host name, and a
//! port in 1-65535. `socket_group` is only checked to look like a group name (see
//! [`check_socket_group`]), not looked up: the group need not exist yet.
//!
//! # Errors and their locations
//!
//! The file is read with serde-saphyr into a small YAML tree in which every node (keys
//! included) is a [`serde_saphyr::Spanned`], so each node carries its line, column and byte
//! span. The schema is then checked by hand on that tree rather than by derived
//! `Deserialize` impls: that way every error, structural (unknown or repeated key, wrong
//! type) or semantic (bad port, conflicting forwards), names the file, the line and column
//! of the offending node, and its path in the document:
//!
//! ```text
//! /etc/portfwd/portfwd.yaml:7:9: forwards[1].to: '172.17.0.2' needs a port: IP:PORT
//! /etc/portfwd/portfwd.yaml:9:13: forwards[2].listen: 8080/tcp is already published by forwards[0] (line 4)
//! ```
//!
//! Only malformed YAML is reported by serde-saphyr itself ([`ConfigError::Syntax`], with its
//! line and column). Duplicate keys are passed through by the parser and reported here, with
//! the line of the first occurrence. Plain scalars that YAML would read as numbers or
//! booleans (`listen: 8080`, an interface named `123`) are taken as their source text.
//!
//! # Saving and comments
//!
//! [`save`] (through [`render`]) edits the existing file rather than re-serialising the
//! config, so that operators' comments survive `portfwd add` and `portfwd del`:
//!
//! - The file on disk is parsed again and its forwards are compared with the new list.
//!   Entries still in the list are left byte for byte where they are (with their own
//!   spelling, e.g. `listen: 8080` + `protocol: udp`, and their comments). Removed entries
//!   lose their lines and their comments: the comment lines directly above the entry (no
//!   blank line in between, not indented past its `-`) and those directly below it indented
//!   past its `-`. A comment separated from an entry by a blank line stays. New entries are
//!   appended after the last entry, in the canonical form `  - listen: "8080/tcp"` /
//!   `    to: "172.17.0.2:3000"`, with the indentation of the existing entries.
//!   `forwards: []` (or an empty `forwards:`) becomes a block list on the first add;
//!   removing the last entry writes `forwards: []`. Everything else in the file (other keys,
//!   their comments, blank lines, CRLF line ends) is untouched.
//! - This line edit applies when `forwards` is a top-level key of a block mapping, its
//!   entries are block list items (`- ` at the start of a line), and nothing but the
//!   forwards changed (`interfaces`, `mode`, `pin_dir`, `metrics` and `socket_group` are as
//!   in the file, whose lines for them are left as they are). The edited text is parsed
//!   again and must give exactly the new config.
//! - Otherwise (flow-style lists, a changed setting, a file that no longer parses, ...) the
//!   file is regenerated in canonical form, keeping only its leading comment block. The
//!   canonical form has `interfaces`, then `mode`, `pin_dir`, `metrics` and `socket_group`
//!   only where they differ from their defaults, then `forwards`.
//!
//! In both cases the result parses to the config that was saved, except that the forwards
//! come in file order (kept entries where they were, new ones last; the order of forwards
//! carries no meaning since no two overlap). Saving what was loaded leaves the file
//! unchanged, byte for byte. The file is replaced atomically (see [`save`]).

use std::{
    fmt,
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write as _},
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Component, Path, PathBuf},
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DefaultMessageFormatter, DuplicateKeyPolicy, MessageFormatter as _, Spanned};

use crate::publish::{AllowPrefix, Forward, Listen, Protocol, SpecError, Target, printable};

/// Where the daemon reads its config unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/portfwd/portfwd.yaml";

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Where the daemon pins its programs, links and maps unless the config says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/portfwd";

/// The longest group name [`check_socket_group`] accepts.
pub const MAX_GROUP_NAME_LEN: usize = 32;

/// How the datapath is attached to each interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native XDP (with tc behind it) on interfaces whose driver supports it and is not veth;
    /// tc elsewhere.
    #[default]
    Auto,
    /// tc only.
    Tc,
    /// Native XDP (with tc behind it) everywhere; an exposed interface without native XDP
    /// support is an error.
    Xdp,
}

impl AttachMode {
    /// Every mode, in the order they are listed in messages.
    pub const ALL: [AttachMode; 3] = [AttachMode::Auto, AttachMode::Tc, AttachMode::Xdp];

    /// The lowercase name used in the config (`auto`, `tc`, `xdp`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tc => "tc",
            AttachMode::Xdp => "xdp",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = ParseAttachModeError;

    /// Parses `auto`, `tc` or `xdp`, in any case.
    fn from_str(s: &str) -> Result<Self, ParseAttachModeError> {
        AttachMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseAttachModeError(s.to_owned()))
    }
}

/// A string that is not an [`AttachMode`]: `unknown mode 'foo' (expected auto, tc or xdp)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAttachModeError(String);

impl fmt::Display for ParseAttachModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = AttachMode::ALL.map(AttachMode::as_str);
        write!(
            f,
            "unknown mode '{}' (expected {})",
            printable(&self.0),
            one_of(&names)
        )
    }
}

impl std::error::Error for ParseAttachModeError {}

/// The daemon's configuration: what to publish, on which interfaces, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Interfaces to attach to; empty means every non-loopback interface that is up.
    pub interfaces: Vec<String>,
    /// The published ports, in file order. No two conflict (see [`Listen::conflicts_with`]).
    pub forwards: Vec<Forward>,
    /// `mode:` how the datapath is attached (default [`AttachMode::Auto`]).
    pub mode: AttachMode,
    /// `pin_dir:` where programs, links and maps are pinned (default [`DEFAULT_PIN_DIR`]).
    /// Must be an absolute path (see [`check_pin_dir`]).
    pub pin_dir: PathBuf,
    /// `metrics:` address of the Prometheus endpoint, e.g. `127.0.0.1:9369`; `None` (absent
    /// or null in the file, the default) means no endpoint. The port is never 0.
    pub metrics: Option<SocketAddr>,
    /// `socket_group:` the group (by name) allowed to use the control socket besides root;
    /// `None` (absent or null in the file, the default) means root only. Checked to be a
    /// plausible group name ([`check_socket_group`]), not that the group exists.
    pub socket_group: Option<String>,
}

impl Default for Config {
    /// No interfaces (every one that is up), no forwards, and the documented defaults:
    /// `auto` mode, pinned under [`DEFAULT_PIN_DIR`], no metrics, control socket root only.
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            forwards: Vec::new(),
            mode: AttachMode::default(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            metrics: None,
            socket_group: None,
        }
    }
}

/// Why a config could not be loaded or saved. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file does not exist (the daemon may start with an empty config).
    #[error("{}: no such file", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        /// The file (or, for `create the directory of`, the file whose directory it is).
        path: PathBuf,
        /// What was being done: "read", "write", "create the directory of".
        action: &'static str,
        /// The cause (part of the message, so not also chained as a source).
        error: io::Error,
    },
    /// The file is not well-formed YAML.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line; 0 when the parser gave no location.
        line: u64,
        /// 1-based column (in characters); 0 when unknown.
        column: u64,
        /// The parser's message.
        message: String,
    },
    /// The file is YAML, but not a valid config.
    #[error("{}:{line}:{column}: {field}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending node.
        line: u64,
        /// 1-based column (in characters) of the offending node.
        column: u64,
        /// Where in the document, e.g. `forwards[1].to`, `interfaces[0]`, `top level`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// [`save`] was given a config that is itself invalid; the file was left alone.
    #[error("{}: not saved: {reason}", .path.display())]
    Unsaved {
        /// The file.
        path: PathBuf,
        /// What is wrong with the config (part of the message, so not also a source).
        reason: ValidationError,
    },
}

/// A problem with a [`Config`] built in memory (no file, so no line): see [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Where, e.g. `forwards[2].listen`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// [`Config::insert`] refused a forward that overlaps one already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictError {
    /// The listen side that was refused.
    pub listen: Listen,
    /// The forward it conflicts with.
    pub existing: Forward,
}

impl fmt::Display for ConflictError {
    /// E.g. `8080/tcp is already published by 8080/tcp -> 172.17.0.2:3000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = self.existing.to_string();
        f.write_str(&conflict_message(&self.listen, &self.existing.listen, &by))
    }
}

impl std::error::Error for ConflictError {}

impl Config {
    /// Checks what [`load`] checks beyond syntax: interface names are valid and unique,
    /// `pin_dir` passes [`check_pin_dir`], the metrics port is not 0, `socket_group` passes
    /// [`check_socket_group`], and no two forwards conflict.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (i, name) in self.interfaces.iter().enumerate() {
            let field = || format!("interfaces[{i}]");
            check_interface_name(name).map_err(|message| ValidationError {
                field: field(),
                message,
            })?;
            if let Some(j) = self.interfaces[..i].iter().position(|n| n == name) {
                return Err(ValidationError {
                    field: field(),
                    message: format!("'{name}' is already listed as interfaces[{j}]"),
                });
            }
        }
        let invalid = |field: &str, message| ValidationError {
            field: field.to_owned(),
            message,
        };
        check_pin_dir(&self.pin_dir).map_err(|m| invalid("pin_dir", m))?;
        if let Some(addr) = self.metrics {
            check_metrics_port(addr.port()).map_err(|m| invalid("metrics", m))?;
        }
        if let Some(group) = &self.socket_group {
            check_socket_group(group).map_err(|m| invalid("socket_group", m))?;
        }
        for (i, fwd) in self.forwards.iter().enumerate() {
            let earlier = &self.forwards[..i];
            if let Some(j) = earlier
                .iter()
                .position(|f| f.listen.conflicts_with(&fwd.listen))
            {
                return Err(ValidationError {
                    field: format!("forwards[{i}].listen"),
                    message: conflict_message(
                        &fwd.listen,
                        &self.forwards[j].listen,
                        &format!("forwards[{j}]"),
                    ),
                });
            }
        }
        Ok(())
    }

    /// The forward whose listen side conflicts with `listen`, if any.
    pub fn find_conflict(&self, listen: &Listen) -> Option<&Forward> {
        self.forwards
            .iter()
            .find(|f| f.listen.conflicts_with(listen))
    }

    /// Appends `forward` unless it conflicts with a forward already there.
    pub fn insert(&mut self, forward: Forward) -> Result<(), ConflictError> {
        if let Some(existing) = self.find_conflict(&forward.listen) {
            return Err(ConflictError {
                listen: forward.listen,
                existing: existing.clone(),
            });
        }
        self.forwards.push(forward);
        Ok(())
    }

    /// Removes and returns the forward whose listen side is exactly `listen`.
    pub fn remove(&mut self, listen: &Listen) -> Option<Forward> {
        let i = self.forwards.iter().position(|f| f.listen == *listen)?;
        Some(self.forwards.remove(i))
    }
}

/// Reads and validates the config file at `path`. An empty file (or one with only comments)
/// is an empty config; a missing file is [`ConfigError::NotFound`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => parse_str(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            path: path.to_owned(),
        }),
        Err(error) => Err(ConfigError::Io {
            path: path.to_owned(),
            action: "read",
            error,
        }),
    }
}

/// Parses and validates config text; `origin` is the file name used in error messages.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_document(text, origin).map(|doc| doc.config)
}

/// Writes `config` to `path`, keeping the file's comments where it can (see the [module
/// documentation](self) for exactly what is kept).
///
/// The config is validated first ([`ConfigError::Unsaved`]). The write is atomic: the text
/// goes to a temporary file in the same directory, which is fsynced and renamed over `path`,
/// then the directory is fsynced. The parent directory is created if missing. An existing
/// file's permission bits (and, when allowed, owner and group) are kept; a new file gets
/// 0644. If `path` is a symlink, its target is replaced and the link kept.
pub fn save(path: &Path, config: &Config) -> Result<(), ConfigError> {
    config.validate().map_err(|reason| ConfigError::Unsaved {
        path: path.to_owned(),
        reason,
    })?;
    let target = resolve_symlink(path);
    let existing = match fs::read_to_string(&target) {
        Ok(text) => Some(text),
        // Nothing to keep: a new file, or one that is not text.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            None
        }
        Err(error) => {
            return Err(ConfigError::Io {
                path: target,
                action: "read",
                error,
            });
        }
    };
    let (text, edited) = render_inner(existing.as_deref(), config);
    if existing.is_some() && !edited {
        tracing::warn!(
            config = %target.display(),
            "rewriting the config file in canonical form; only its leading comments are kept"
        );
    }
    write_atomic(&target, text.as_bytes())
}

/// The text [`save`] would write for `config`, given the file's current text (`None` for a
/// new file). Does not validate `config`.
pub fn render(existing: Option<&str>, config: &Config) -> String {
    render_inner(existing, config).0
}

/// [`render`], and whether the existing text was edited in place (rather than regenerated).
fn render_inner(existing: Option<&str>, config: &Config) -> (String, bool) {
    if let Some(text) = existing
        && let Ok(doc) = parse_document(text, Path::new("<existing>"))
        && let Some(edited) = edit_in_place(text, &doc, config)
        && parse_str(&edited, Path::new("<edited>")).is_ok_and(|c| same_config(&c, config))
    {
        return (edited, true);
    }
    (regenerate(existing, config), false)
}

/// Equal up to the order of the forwards (which does not matter: no two overlap).
fn same_config(a: &Config, b: &Config) -> bool {
    let sorted = |c: &Config| {
        let mut forwards = c.forwards.clone();
        forwards.sort_unstable();
        forwards
    };
    same_settings(a, b) && sorted(a) == sorted(b)
}

/// Equal in everything but the forwards.
fn same_settings(a: &Config, b: &Config) -> bool {
    let Config {
        interfaces,
        forwards: _,
        mode,
        pin_dir,
        metrics,
        socket_group,
    } = a;
    *interfaces == b.interfaces
        && *mode == b.mode
        && *pin_dir == b.pin_dir
        && *metrics == b.metrics
        && *socket_group == b.socket_group
}

/// Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name` rules), or Ok.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_INTERFACE_NAME_LEN {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains(':') {
        "contains ':'"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(format!(
        "'{}' is not a valid interface name: {reason}",
        printable(name)
    ))
}

/// Why `path` cannot be the pin directory, or Ok: it must be an absolute path in UTF-8 (it is
/// written to the config file), without `..` or control characters, and not `/` itself.
pub fn check_pin_dir(path: &Path) -> Result<(), String> {
    let Some(text) = path.to_str() else {
        let shown = path.to_string_lossy();
        return Err(format!("'{}' is not valid UTF-8", printable(&shown)));
    };
    let shown = printable(text);
    Err(if text.is_empty() {
        format!("empty value (expected an absolute path, e.g. {DEFAULT_PIN_DIR})")
    } else if !path.is_absolute() {
        format!("'{shown}' is not an absolute path (e.g. {DEFAULT_PIN_DIR})")
    } else if text.chars().any(char::is_control) {
        format!("'{shown}' contains a control character")
    } else if path.components().any(|c| c == Component::ParentDir) {
        format!("'{shown}' contains '..'; give the directory itself")
    } else if path.components().all(|c| c == Component::RootDir) {
        format!(
            "'{shown}' is the root directory; give a directory of portfwd's own (e.g. {DEFAULT_PIN_DIR})"
        )
    } else {
        return Ok(());
    })
}

/// The example in messages about `metrics`.
const METRICS_EXAMPLE: &str = "e.g. 127.0.0.1:9369 or [::1]:9369";

/// Parses the `metrics` address: an IP address (IPv6 in brackets) and a port in 1-65535.
/// Host names are refused: the address is bound as written, never resolved.
pub fn parse_metrics(text: &str) -> Result<SocketAddr, String> {
    let shown = printable(text);
    if text.is_empty() {
        return Err(format!("empty value (expected IP:PORT, {METRICS_EXAMPLE})"));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        check_metrics_port(addr.port())?;
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if bare.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "'{shown}' needs a port: IP:PORT ({METRICS_EXAMPLE})"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(if text.bytes().all(|b| b.is_ascii_digit()) {
            format!("'{shown}' needs an address: IP:PORT ({METRICS_EXAMPLE})")
        } else {
            format!("'{shown}' is not IP:PORT ({METRICS_EXAMPLE})")
        });
    };
    let host_ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map_or_else(
            || host.parse::<std::net::Ipv4Addr>().map(IpAddr::from),
            |h| h.parse::<std::net::Ipv6Addr>().map(IpAddr::from),
        );
    if host_ip.is_err() {
        let name_like = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        return Err(if name_like {
            format!(
                "'{}' is not an IP address; host names are not resolved ({METRICS_EXAMPLE})",
                printable(host)
            )
        } else {
            format!("'{shown}' is not IP:PORT ({METRICS_EXAMPLE})")
        });
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{}' is not a port number", printable(port)));
    }
    // Only a port out of range is left: `SocketAddr` takes any decimal u16.
    Err(format!("port {port} is outside 1-65535"))
}

/// The metrics endpoint needs a fixed port that Prometheus can be pointed at.
fn check_metrics_port(port: u16) -> Result<(), String> {
    if port == 0 {
        Err("port 0 is outside 1-65535".to_owned())
    } else {
        Ok(())
    }
}

/// Why `name` cannot be a group name, or Ok. This is a plausibility check (not empty, at
/// most [`MAX_GROUP_NAME_LEN`] characters, no whitespace, `:`, `/` or control characters,
/// not a number), not a lookup: the group need not exist yet.
pub fn check_socket_group(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().count() > MAX_GROUP_NAME_LEN {
        "longer than 32 characters"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else if name.contains(':') {
        "contains ':'"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        "it is a number; give the group's name"
    } else {
        return Ok(());
    };
    Err(format!(
        "'{}' is not a valid group name: {reason}",
        printable(name)
    ))
}

/// The message for `new` conflicting with `existing`, which was published by `by`.
fn conflict_message(new: &Listen, existing: &Listen, by: &str) -> String {
    let every = |l: &Listen, other: &Listen| {
        let every = |l: &Listen| l.addr.is_none_or(|a| a.is_unspecified());
        if every(l) && !every(other) {
            " (every host address)"
        } else {
            ""
        }
    };
    if new == existing {
        format!("{new} is already published by {by}")
    } else {
        format!(
            "{new}{} overlaps {existing}{}, published by {by}",
            every(new, existing),
            every(existing, new)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A YAML node with spans everywhere; the input of the hand-written schema check.
#[derive(Debug)]
enum Node {
    Null,
    /// A string scalar (quoted, or plain that YAML reads as a string).
    Str(String),
    /// A plain scalar that YAML reads as a number, boolean or binary; its source text is
    /// recovered from the span when a string is wanted. `shown` is the resolved value, used
    /// when the span has no byte offsets.
    Typed {
        kind: &'static str,
        shown: String,
    },
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Str(_) => "a string",
            Node::Typed { kind, .. } => kind,
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn typed<E>(kind: &'static str, shown: impl fmt::Display) -> Result<Node, E> {
        Ok(Node::Typed {
            kind,
            shown: shown.to_string(),
        })
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Self::typed("a boolean", v)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Self::typed("a number", v)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Self::typed("a number", v)
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Self::typed("a number", v)
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Self::typed("a number", v)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Self::typed("a number", v)
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Self::typed("binary data", String::from_utf8_lossy(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Node>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A parsed file: the config, and where its parts are (for [`edit_in_place`]).
#[derive(Debug, Default)]
struct Document {
    config: Config,
    /// The top level is a flow mapping (`{...}`), which the line edit leaves alone.
    flow_top: bool,
    forwards: Option<ForwardsLayout>,
}

/// Byte positions of the `forwards` key and value.
#[derive(Debug)]
struct ForwardsLayout {
    key_start: usize,
    key_end: usize,
    value: ValueLayout,
}

#[derive(Debug)]
enum ValueLayout {
    /// `forwards:`, `forwards: ~`: the null scalar's bytes.
    Null { start: usize, len: usize },
    /// A list starting at `start`; each item's bytes, from its first to its last character.
    Seq {
        start: usize,
        items: Vec<(usize, usize)>,
    },
    /// Anything else (an error for the parser; never edited).
    Other,
}

/// A checked mapping entry: the known key's name, the key node and the value node.
type Field<'n> = (&'static str, &'n Spanned<Node>, &'n Spanned<Node>);

/// The text being parsed and its name, for errors.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn byte_span(node: &Spanned<Node>) -> Option<(usize, usize)> {
    let span = node.referenced.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    Some((start, start + len))
}

/// The byte just past the last character of `node` and its descendants.
fn byte_end(node: &Spanned<Node>) -> Option<usize> {
    let own = byte_span(node)?.1;
    let children = match &node.value {
        Node::Seq(items) => items.iter().map(byte_end).collect::<Option<Vec<_>>>()?,
        Node::Map(entries) => entries
            .iter()
            .flat_map(|(k, v)| [byte_end(k), byte_end(v)])
            .collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(children.into_iter().fold(own, usize::max))
}

impl Source<'_> {
    fn invalid(
        &self,
        at: &Spanned<Node>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The text of a scalar: a string as is, a number or boolean as written.
    fn scalar_text(&self, node: &Spanned<Node>) -> Option<String> {
        match &node.value {
            Node::Str(s) => Some(s.clone()),
            Node::Typed { shown, .. } => {
                let span = node.defined.span();
                let written = span
                    .byte_offset()
                    .zip(span.byte_len())
                    .and_then(|(start, len)| {
                        let start = usize::try_from(start).ok()?;
                        self.text.get(start..start + usize::try_from(len).ok()?)
                    });
                Some(
                    written
                        .filter(|w| !w.is_empty())
                        .unwrap_or(shown)
                        .to_owned(),
                )
            }
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// A scalar that must be a string of the form `expected`.
    fn string(
        &self,
        node: &Spanned<Node>,
        field: &str,
        expected: &str,
    ) -> Result<String, ConfigError> {
        self.scalar_text(node).ok_or_else(|| {
            self.invalid(
                node,
                field,
                format!("expected {expected}, found {}", node.value.kind()),
            )
        })
    }

    /// Checks a mapping's keys (strings, known, not repeated) and returns its entries by name.
    fn fields<'n>(
        &self,
        entries: &'n [(Spanned<Node>, Spanned<Node>)],
        at: &str,
        known: &[&'static str],
    ) -> Result<Vec<Field<'n>>, ConfigError> {
        let mut out: Vec<Field<'n>> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.scalar_text(key) else {
                let field = if at.is_empty() { "top level" } else { at };
                return Err(self.invalid(
                    key,
                    field,
                    format!("keys must be strings, found {}", key.value.kind()),
                ));
            };
            let field = join(at, &printable(&name));
            let Some(&name) = known.iter().find(|k| **k == name) else {
                return Err(self.invalid(
                    key,
                    field,
                    format!("unknown key (expected {})", one_of(known)),
                ));
            };
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == name) {
                let line = first.referenced.line();
                return Err(self.invalid(
                    key,
                    field,
                    format!("duplicate key (first at line {line})"),
                ));
            }
            out.push((name, key, value));
        }
        Ok(out)
    }

    /// The items of a list value; `null` is the empty list where `null_is_empty`, and any
    /// other value an error: `expected a list of WHAT, found ...`.
    fn list<'n>(
        &self,
        node: &'n Spanned<Node>,
        field: &str,
        what: &str,
        null_is_empty: bool,
    ) -> Result<&'n [Spanned<Node>], ConfigError> {
        match &node.value {
            Node::Null if null_is_empty => Ok(&[]),
            Node::Seq(items) => Ok(items),
            other => Err(self.invalid(
                node,
                field,
                format!("expected a list of {what}, found {}", other.kind()),
            )),
        }
    }

    fn interfaces(&self, node: &Spanned<Node>) -> Result<Vec<String>, ConfigError> {
        let items = self.list(node, "interfaces", "interface names", true)?;
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            let name = self.string(item, &field, "an interface name")?;
            check_interface_name(&name).map_err(|message| self.invalid(item, &field, message))?;
            if let Some(j) = names.iter().position(|n| *n == name) {
                let line = items[j].referenced.line();
                return Err(self.invalid(
                    item,
                    &field,
                    format!("'{name}' is already listed as interfaces[{j}] (line {line})"),
                ));
            }
            names.push(name);
        }
        Ok(names)
    }

    fn mode(&self, node: &Spanned<Node>) -> Result<AttachMode, ConfigError> {
        let text = self.string(node, "mode", "auto, tc or xdp")?;
        text.parse::<AttachMode>()
            .map_err(|e| self.invalid(node, "mode", e.to_string()))
    }

    fn pin_dir(&self, node: &Spanned<Node>) -> Result<PathBuf, ConfigError> {
        let path = PathBuf::from(self.string(node, "pin_dir", "an absolute path")?);
        check_pin_dir(&path).map_err(|message| self.invalid(node, "pin_dir", message))?;
        Ok(path)
    }

    /// `metrics: null` is the same as no `metrics` key: no endpoint.
    fn metrics(&self, node: &Spanned<Node>) -> Result<Option<SocketAddr>, ConfigError> {
        if let Node::Null = node.value {
            return Ok(None);
        }
        let text = self.string(node, "metrics", "IP:PORT or null")?;
        parse_metrics(&text)
            .map(Some)
            .map_err(|message| self.invalid(node, "metrics", message))
    }

    /// `socket_group: null` is the same as no `socket_group` key: root only.
    fn socket_group(&self, node: &Spanned<Node>) -> Result<Option<String>, ConfigError> {
        if let Node::Null = node.value {
            return Ok(None);
        }
        let name = self.string(node, "socket_group", "a group name or null")?;
        check_socket_group(&name).map_err(|message| self.invalid(node, "socket_group", message))?;
        Ok(Some(name))
    }

    fn forwards(&self, node: &Spanned<Node>) -> Result<Vec<Forward>, ConfigError> {
        let items = self.list(node, "forwards", "forwards", true)?;
        let mut forwards: Vec<Forward> = Vec::with_capacity(items.len());
        // The listen node of each forward, for the line of a conflict.
        let mut listen_nodes: Vec<&Spanned<Node>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("forwards[{i}]");
            let Node::Map(entries) = &item.value else {
                let found = item.value.kind();
                return Err(self.invalid(
                    item,
                    &at,
                    format!("expected a mapping with listen and to, found {found}"),
                ));
            };
            let (mut listen, mut protocol, mut to, mut allow) = (None, None, None, None);
            for (name, _, value) in
                self.fields(entries, &at, &["listen", "protocol", "to", "allow"])?
            {
                match name {
                    "listen" => listen = Some(value),
                    "protocol" => protocol = Some(value),
                    "allow" => allow = Some(value),
                    _ => to = Some(value),
                }
            }
            let missing = |key: &str, form: &str| {
                self.invalid(item, join(&at, key), format!("missing (expected {form})"))
            };
            let listen_node =
                listen.ok_or_else(|| missing("listen", "[HOST_IP:]HOST_PORT[-END][/PROTO]"))?;
            let to_node = to.ok_or_else(|| missing("to", "IP:PORT[-END]"))?;

            let protocol_field = join(&at, "protocol");
            let protocol = match protocol {
                None => None,
                Some(node) => {
                    let text = self.string(node, &protocol_field, "tcp or udp")?;
                    let protocol = text
                        .parse::<Protocol>()
                        .map_err(|e| self.invalid(node, &protocol_field, e.to_string()))?;
                    Some((node, protocol))
                }
            };

            let listen_field = join(&at, "listen");
            let text = self.string(
                listen_node,
                &listen_field,
                "[HOST_IP:]HOST_PORT[-END][/PROTO]",
            )?;
            let listen = Listen::parse_with_protocol(&text, protocol.map(|(_, p)| p)).map_err(
                |e| match (&e, protocol) {
                    (SpecError::ProtocolMismatch { .. }, Some((node, _))) => {
                        self.invalid(node, &protocol_field, e.to_string())
                    }
                    _ => self.invalid(listen_node, &listen_field, e.to_string()),
                },
            )?;

            let to_field = join(&at, "to");
            let text = self.string(to_node, &to_field, "IP:PORT[-END]")?;
            let to = text
                .parse::<Target>()
                .map_err(|e| self.invalid(to_node, &to_field, e.to_string()))?;
            let fwd = Forward::new(listen, to)
                .map_err(|e| self.invalid(to_node, &to_field, e.to_string()))?;
            let fwd = match allow {
                None => fwd,
                Some(node) => {
                    let field = join(&at, "allow");
                    fwd.with_allow(self.allow(node, &field)?)
                        .map_err(|e| self.invalid(node, &field, e.to_string()))?
                }
            };

            if let Some(j) = forwards
                .iter()
                .position(|f| f.listen.conflicts_with(&fwd.listen))
            {
                let line = listen_nodes[j].referenced.line();
                let by = format!("forwards[{j}] (line {line})");
                return Err(self.invalid(
                    listen_node,
                    &listen_field,
                    conflict_message(&fwd.listen, &forwards[j].listen, &by),
                ));
            }
            forwards.push(fwd);
            listen_nodes.push(listen_node);
        }
        Ok(forwards)
    }

    /// A forward's `allow:` list of source prefixes.
    fn allow(&self, node: &Spanned<Node>, field: &str) -> Result<Vec<AllowPrefix>, ConfigError> {
        let what = "source prefixes (e.g. [\"10.0.0.0/8\"])";
        let items = self.list(node, field, what, false)?;
        if items.is_empty() {
            return Err(self.invalid(node, field, SpecError::EmptyAllowlist.to_string()));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("{field}[{i}]");
                let text = self.string(item, &field, "IP/LEN")?;
                text.parse::<AllowPrefix>()
                    .map_err(|e| self.invalid(item, &field, e.to_string()))
            })
            .collect()
    }

    fn forwards_layout(
        &self,
        key: &Spanned<Node>,
        value: &Spanned<Node>,
    ) -> Option<ForwardsLayout> {
        let (key_start, key_end) = byte_span(key)?;
        let value = match &value.value {
            Node::Null => {
                let (start, end) = byte_span(value)?;
                ValueLayout::Null {
                    start,
                    len: end - start,
                }
            }
            Node::Seq(items) => ValueLayout::Seq {
                start: byte_span(value)?.0,
                items: items
                    .iter()
                    .map(|item| Some((byte_span(item)?.0, byte_end(item)?)))
                    .collect::<Option<_>>()?,
            },
            _ => ValueLayout::Other,
        };
        Some(ForwardsLayout {
            key_start,
            key_end,
            value,
        })
    }
}

fn syntax_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let message = DefaultMessageFormatter.format_message(error.without_snippet());
    let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    }
}

/// The keys of the top-level mapping, in the order error messages list them.
const TOP_LEVEL_KEYS: [&str; 6] = [
    "interfaces",
    "forwards",
    "mode",
    "pin_dir",
    "metrics",
    "socket_group",
];

fn parse_document(text: &str, path: &Path) -> Result<Document, ConfigError> {
    let options = serde_saphyr::options! {
        // Repeated keys reach the schema check, which names both lines.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    let root: Option<Spanned<Node>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| syntax_error(path, &e))?;
    let src = Source { text, path };
    let mut doc = Document::default();
    let Some(root) = root else {
        return Ok(doc);
    };
    let entries = match &root.value {
        Node::Null => return Ok(doc),
        Node::Map(entries) => entries,
        other => {
            let found = other.kind();
            return Err(src.invalid(
                &root,
                "top level",
                format!("expected a mapping with interfaces and forwards, found {found}"),
            ));
        }
    };
    doc.flow_top = byte_span(&root)
        .is_none_or(|(start, _)| text.get(start..).is_none_or(|t| t.starts_with('{')));
    for (name, key, value) in src.fields(entries, "", &TOP_LEVEL_KEYS)? {
        match name {
            "interfaces" => doc.config.interfaces = src.interfaces(value)?,
            "mode" => doc.config.mode = src.mode(value)?,
            "pin_dir" => doc.config.pin_dir = src.pin_dir(value)?,
            "metrics" => doc.config.metrics = src.metrics(value)?,
            "socket_group" => doc.config.socket_group = src.socket_group(value)?,
            _ => {
                doc.config.forwards = src.forwards(value)?;
                doc.forwards = src.forwards_layout(key, value);
            }
        }
    }
    Ok(doc)
}

// ---------------------------------------------------------------------------------------------
// Saving

const NEW_FILE_HEADER: &str = "\
# portfwd configuration: host ports published to containers.
# `portfwd add` and `portfwd del` edit the forwards list; comments are kept where possible.
";

/// One forward in canonical form, as list item lines. `dash` is the indentation of the `-`,
/// `content` the column (0-based) of the keys.
fn forward_lines(fwd: &Forward, dash: usize, content: usize, nl: &str) -> String {
    let gap = " ".repeat(content.saturating_sub(dash + 1).max(1));
    let dash = " ".repeat(dash);
    let indent = " ".repeat(dash.len() + 1 + gap.len());
    let mut out = format!(
        "{dash}-{gap}listen: \"{}\"{nl}{indent}to: \"{}\"{nl}",
        fwd.listen, fwd.to
    );
    if !fwd.allow.is_empty() {
        let list: Vec<String> = fwd.allow.iter().map(|p| format!("\"{p}\"")).collect();
        out.push_str(&format!("{indent}allow: [{}]{nl}", list.join(", ")));
    }
    out
}

/// `text` with the forwards changed in place to `new`; `None` when the file's form is not
/// one this handles (see the module documentation).
fn edit_in_place(text: &str, doc: &Document, new: &Config) -> Option<String> {
    if !same_settings(&doc.config, new) {
        return None;
    }
    // Entries still wanted stay where they are; the others go; new ones are appended.
    let old = &doc.config.forwards;
    let kept: Vec<bool> = old.iter().map(|f| new.forwards.contains(f)).collect();
    let added: Vec<&Forward> = new.forwards.iter().filter(|f| !old.contains(f)).collect();
    if added.is_empty() && kept.iter().all(|k| *k) {
        return Some(text.to_owned());
    }
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };

    let Some(layout) = &doc.forwards else {
        // No `forwards` key: append one (the old list was empty, so nothing to remove).
        if doc.flow_top {
            return None;
        }
        let mut out = text.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(nl);
        }
        out.push_str("forwards:");
        out.push_str(nl);
        added
            .iter()
            .for_each(|f| out.push_str(&forward_lines(f, 2, 4, nl)));
        return Some(out);
    };
    if doc.flow_top {
        return None;
    }

    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut line_starts = Vec::with_capacity(lines.len());
    let mut offset = 0;
    for line in &lines {
        line_starts.push(offset);
        offset += line.len();
    }
    let line_of = |byte: usize| line_starts.partition_point(|&s| s <= byte) - 1;

    // `forwards` must be a top-level key at the start of its line.
    let key_line = line_of(layout.key_start);
    if line_starts[key_line] != layout.key_start {
        return None;
    }
    let mut replace: Option<(usize, String)> = None;
    let mut removed = vec![false; lines.len()];
    let (insert_after, dash, content) = match &layout.value {
        ValueLayout::Null { start, len } if line_of(*start) == key_line => {
            // Drop `~` / `null`; the items go on the following lines.
            let line = lines[key_line];
            let at = start - line_starts[key_line];
            let before = line.get(..at)?.trim_end_matches([' ', '\t']);
            replace = Some((key_line, format!("{before}{}", line.get(at + len..)?)));
            (key_line, 2, 4)
        }
        ValueLayout::Seq { start, items } if items.is_empty() => {
            // `forwards: []`: drop the brackets.
            if line_of(*start) != key_line {
                return None;
            }
            let line = lines[key_line];
            let at = start - line_starts[key_line];
            let inner = line.get(at..)?.strip_prefix('[')?;
            let after = inner.trim_start_matches([' ', '\t']).strip_prefix(']')?;
            let end = line.len() - after.len();
            let before = line[..at].trim_end_matches([' ', '\t']);
            replace = Some((key_line, format!("{before}{}", &line[end..])));
            (key_line, 2, 4)
        }
        ValueLayout::Seq { items, .. } => {
            // Block items: `<spaces>-<spaces>` before each, each on lines of its own. An item
            // owns the comment lines right below it that are indented past its dash, and the
            // comment lines right above it that are not.
            let comment_indent = |i: usize| {
                let line = lines[i].trim_start_matches(' ');
                line.starts_with('#').then_some(lines[i].len() - line.len())
            };
            let mut extents = Vec::with_capacity(items.len());
            let mut floor = key_line;
            for &(start, end) in items {
                let first = line_of(start);
                let prefix = text.get(line_starts[first]..start)?;
                let dash = prefix.len() - prefix.trim_start_matches(' ').len();
                let after_dash = prefix[dash..].strip_prefix('-')?;
                if first <= floor
                    || after_dash.is_empty()
                    || !after_dash.trim_start_matches(' ').is_empty()
                {
                    return None;
                }
                let mut from = first;
                while from - 1 > floor && comment_indent(from - 1).is_some_and(|c| c <= dash) {
                    from -= 1;
                }
                let mut last = line_of(end.checked_sub(1)?.max(start));
                while last + 1 < lines.len() && comment_indent(last + 1).is_some_and(|c| c > dash) {
                    last += 1;
                }
                extents.push((from, last, dash, prefix.len()));
                floor = last;
            }
            for (&(from, last, _, _), kept) in extents.iter().zip(&kept) {
                if !kept {
                    removed[from..=last].iter_mut().for_each(|r| *r = true);
                }
            }
            if added.is_empty() && kept.iter().all(|k| !k) {
                // The list is now empty: `forwards: []`.
                let line = lines[key_line];
                let after_key = line.get(layout.key_end - layout.key_start..)?;
                let colon = line.len()
                    - after_key
                        .trim_start_matches([' ', '\t'])
                        .strip_prefix(':')?
                        .len();
                replace = Some((key_line, format!("{} []{}", &line[..colon], &line[colon..])));
            }
            let &(_, last, dash, content) = extents.last()?;
            (last, dash, content)
        }
        _ => return None,
    };

    let mut out = String::with_capacity(text.len() + 64 * added.len());
    for (i, line) in lines.iter().enumerate() {
        if !removed[i] {
            match &replace {
                Some((at, replacement)) if *at == i => out.push_str(replacement),
                _ => out.push_str(line),
            }
        }
        if i == insert_after && !added.is_empty() {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push_str(nl);
            }
            added
                .iter()
                .for_each(|f| out.push_str(&forward_lines(f, dash, content, nl)));
        }
    }
    Some(out)
}

/// The canonical file for `config`, under the leading comment block of `existing` (or a
/// short header for a new file): `interfaces`, then `mode`, `pin_dir`, `metrics` and
/// `socket_group` if they differ from their defaults, then `forwards`.
fn regenerate(existing: Option<&str>, config: &Config) -> String {
    let mut out = String::new();
    match existing {
        Some(text) => {
            for line in text.split_inclusive('\n') {
                let trimmed = line.trim();
                if !(trimmed.is_empty() || trimmed.starts_with('#')) {
                    break;
                }
                out.push_str(line.trim_end_matches(['\r', '\n']));
                out.push('\n');
            }
        }
        None => out.push_str(NEW_FILE_HEADER),
    }
    if config.interfaces.is_empty() {
        out.push_str("interfaces: []\n");
    } else {
        out.push_str("interfaces:\n");
        for name in &config.interfaces {
            out.push_str(&format!("  - {}\n", yaml_quoted(name)));
        }
    }
    // The other settings only when they differ from their defaults, so that a config that
    // leaves them alone is written as it was before they existed.
    let defaults = Config::default();
    if config.mode != defaults.mode {
        out.push_str(&format!("mode: {}\n", config.mode));
    }
    if config.pin_dir != defaults.pin_dir {
        let path = config.pin_dir.to_string_lossy();
        out.push_str(&format!("pin_dir: {}\n", yaml_quoted(&path)));
    }
    if let Some(addr) = config.metrics {
        out.push_str(&format!("metrics: \"{addr}\"\n"));
    }
    if let Some(group) = &config.socket_group {
        out.push_str(&format!("socket_group: {}\n", yaml_quoted(group)));
    }
    if config.forwards.is_empty() {
        out.push_str("forwards: []\n");
    } else {
        out.push_str("forwards:\n");
        config
            .forwards
            .iter()
            .for_each(|f| out.push_str(&forward_lines(f, 2, 4, "\n")));
    }
    out
}

/// `s` as a YAML double-quoted scalar (which a JSON string is).
fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The file a symlink points to (so that saving replaces the target, not the link).
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_error = |action, error| ConfigError::Io {
        path: path.to_owned(),
        action,
        error,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(
            "write",
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", e))?;
    let old = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", e)),
    };
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(old) = &old {
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid())
                && let Err(e) = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
            {
                tracing::debug!(file = %path.display(), "cannot keep the owner of the config file: {e}");
            }
        }
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", e));
    }
    // Make the rename itself durable. Some file systems cannot sync a directory; the data is
    // already safe, so this is not an error.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), "cannot sync the config directory: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, os::unix::fs::symlink};

    use super::*;

    const FILE: &str = "/etc/portfwd/test.yaml";

    fn parse(text: &str) -> Config {
        parse_str(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The whole error message for `text`, which must not parse.
    fn error(text: &str) -> String {
        match parse_str(text, Path::new(FILE)) {
            Ok(config) => panic!("parsed as {config:?}:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn fwd(s: &str) -> Forward {
        s.parse().unwrap()
    }

    #[test]
    fn dual_stack_forwards() {
        let text = "forwards:
  - listen: \"8080\"
    to: \"172.17.0.2:80\"
    allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]
  - listen: \"8080\"
    to: \"[fd00:17::2]:80\"
    allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]
  - listen: \"[::1]:9000-9001/udp\"
    to: \"[fd00:17::2]:9000-9001\"
";
        let c = parse(text);
        assert_eq!(
            c.forwards,
            [
                fwd("8080 -> 172.17.0.2:80 allow 10.0.0.0/8,2001:db8::/32"),
                fwd("[::]:8080 -> [fd00:17::2]:80 allow 10.0.0.0/8,2001:db8::/32"),
                fwd("[::1]:9000-9001/udp -> [fd00:17::2]:9000-9001"),
            ]
        );
        assert_eq!(
            render(Some(text), &c),
            text,
            "saving what was loaded changes nothing"
        );
        let fresh = render(None, &c);
        assert_eq!(parse(&fresh), c, "{fresh}");
        assert!(fresh.contains("\"[::]:8080/tcp\""), "{fresh}");
    }

    /// A fresh empty directory under the system temp dir.
    fn scratch_dir(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portfwd-config-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn example_files() {
        let installed = include_str!("../../config/portfwd.yaml");
        assert_eq!(parse(installed), Config::default());
        let demo = parse(include_str!("../../config/demo.yaml"));
        assert_eq!(
            demo,
            Config {
                interfaces: vec![],
                forwards: vec![fwd("8080/tcp -> 172.17.0.2:3000")],
                ..Config::default()
            }
        );
        assert_eq!(demo.forwards[0].to.addr, Ipv4Addr::new(172, 17, 0, 2));
    }

    #[test]
    fn empty_documents() {
        for text in [
            "",
            "\n",
            "# only a comment\n",
            "---\n",
            "~\n",
            "{}\n",
            "interfaces:\nforwards:\n",
            "forwards: []\n",
        ] {
            assert_eq!(parse(text), Config::default(), "{text:?}");
        }
    }

    #[test]
    fn full_document() {
        let config = parse(
            r#"# top
interfaces: [eth0, "ens3"]   # two
forwards:
  - listen: "8080"
    protocol: tcp
    to: "172.17.0.2:3000"
  - listen: 10.0.0.1:53/UDP
    to: 172.17.0.3:53
  - listen: 5353
    protocol: UDP
    to: 172.17.0.3:53
  - {listen: "0.0.0.0:9000", to: "172.17.0.4:9000"}
  - listen: "10.0.0.1:8080"
    protocol: udp
    to: '172.17.0.5:80'
"#,
        );
        assert_eq!(config.interfaces, ["eth0", "ens3"]);
        let want: Vec<Forward> = [
            "8080/tcp -> 172.17.0.2:3000",
            "10.0.0.1:53/udp -> 172.17.0.3:53",
            "5353/udp -> 172.17.0.3:53",
            "9000/tcp -> 172.17.0.4:9000",
            "10.0.0.1:8080/udp -> 172.17.0.5:80",
        ]
        .into_iter()
        .map(fwd)
        .collect();
        assert_eq!(config.forwards, want);
    }

    #[test]
    fn plain_scalars_are_taken_as_written() {
        // YAML reads these as numbers or booleans; the config wants their text.
        let config =
            parse("interfaces: [123, yes]\nforwards:\n  - listen: 8080\n    to: 1.2.3.4:80\n");
        assert_eq!(config.interfaces, ["123", "yes"]);
        assert_eq!(config.forwards[0].listen.port, 8080);
        assert_eq!(
            error("forwards:\n  - listen: 0x1F90\n    to: 1.2.3.4:80\n"),
            format!("{FILE}:2:13: forwards[0].listen: '0x1F90' is not a port number")
        );
        assert_eq!(
            error("forwards:\n  - listen: 8080.0\n    to: 1.2.3.4:80\n"),
            format!("{FILE}:2:13: forwards[0].listen: '8080.0' is not a port number")
        );
    }

    #[test]
    fn bad_values_are_located() {
        let cases: &[(&str, &str)] = &[
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"172.17.0.2:3000\"\n  - listen: \"8081\"\n    to: \"172.17.0.2\"\n",
                "5:9: forwards[1].to: '172.17.0.2' needs a port: IP:PORT",
            ),
            (
                "forwards:\n  - listen: \"0\"\n    to: \"172.17.0.2:3000\"\n",
                "2:13: forwards[0].listen: port 0 is outside 1-65535",
            ),
            (
                "forwards:\n  - listen: \"70000/udp\"\n    to: \"172.17.0.2:3000\"\n",
                "2:13: forwards[0].listen: port 70000 is outside 1-65535",
            ),
            (
                "forwards:\n  - listen: abc\n    to: \"172.17.0.2:3000\"\n",
                "2:13: forwards[0].listen: 'abc' is not a port number",
            ),
            (
                "forwards:\n  - listen: \"300.1.1.1:80\"\n    to: \"172.17.0.2:3000\"\n",
                "2:13: forwards[0].listen: '300.1.1.1' is not an IP address",
            ),
            (
                "forwards:\n  - listen: \"80/icmp\"\n    to: \"172.17.0.2:3000\"\n",
                "2:13: forwards[0].listen: unknown protocol 'icmp' (expected tcp or udp)",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    protocol: sctp\n    to: \"172.17.0.2:3000\"\n",
                "3:15: forwards[0].protocol: sctp is not supported yet: portfwd forwards tcp and udp",
            ),
            (
                "forwards:\n  - listen: \"80/udp\"\n    protocol: tcp\n    to: \"172.17.0.2:3000\"\n",
                "3:15: forwards[0].protocol: '80/udp' says udp but the protocol is given as tcp",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    to: \"0.0.0.0:80\"\n",
                "3:9: forwards[0].to: target address 0.0.0.0 is unspecified (0.0.0.0); give the container's address",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    to: \"224.0.0.1:80\"\n",
                "3:9: forwards[0].to: target address 224.0.0.1 is multicast; give the container's unicast address",
            ),
            (
                "forwards:\n  - listen: \"255.255.255.255:80\"\n    to: \"1.2.3.4:80\"\n",
                "2:13: forwards[0].listen: listen address 255.255.255.255 is the broadcast address; a host address must be unicast",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), format!("{FILE}:{want}"), "{text}");
        }
    }

    #[test]
    fn structure_errors_are_located() {
        let cases: &[(&str, &str)] = &[
            (
                "- 1\n",
                "1:1: top level: expected a mapping with interfaces and forwards, found a list",
            ),
            (
                "forward: []\n",
                "1:1: forward: unknown key (expected interfaces, forwards, mode, pin_dir, metrics or socket_group)",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    to: \"1.2.3.4:80\"\n    proto: tcp\n",
                "4:5: forwards[0].proto: unknown key (expected listen, protocol, to or allow)",
            ),
            (
                "forwards: \"8080\"\n",
                "1:11: forwards: expected a list of forwards, found a string",
            ),
            (
                "forwards: {listen: \"80\"}\n",
                "1:11: forwards: expected a mapping... ",
            ),
            (
                "forwards:\n  - \"8080\"\n",
                "2:5: forwards[0]: expected a mapping with listen and to, found a string",
            ),
            (
                "forwards:\n  - listen: [80]\n    to: \"1.2.3.4:80\"\n",
                "2:13: forwards[0].listen: expected [HOST_IP:]HOST_PORT[-END][/PROTO], found a list",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    to:\n",
                "3:7: forwards[0].to: expected IP:PORT[-END], found null",
            ),
            (
                "forwards:\n  - listen: \"80\"\n    protocol: [tcp]\n    to: \"1.2.3.4:80\"\n",
                "3:15: forwards[0].protocol: expected tcp or udp, found a list",
            ),
            (
                "forwards:\n  - listen: \"80\"\n",
                "2:5: forwards[0].to: missing (expected IP:PORT[-END])",
            ),
            (
                "forwards:\n  - to: \"1.2.3.4:80\"\n",
                "2:5: forwards[0].listen: missing (expected [HOST_IP:]HOST_PORT[-END][/PROTO])",
            ),
            (
                "interfaces: eth0\n",
                "1:13: interfaces: expected a list of interface names, found a string",
            ),
            (
                "interfaces: [[eth0]]\n",
                "1:14: interfaces[0]: expected an interface name, found a list",
            ),
            (
                "? [a]\n: 1\n",
                "1:3: top level: keys must be strings, found a list",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            if let Some(prefix) = want.strip_suffix("mapping... ") {
                // A flow mapping where a list belongs.
                assert!(got.starts_with(&format!("{FILE}:{prefix}")), "{got}");
                assert!(got.ends_with("found a mapping"), "{got}");
            } else {
                assert_eq!(got, format!("{FILE}:{want}"), "{text}");
            }
        }
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(
            error("forwards:\n  - listen: |\n      8080\n    to: 1.2.3.4:80\n"),
            format!("{FILE}:3:7: forwards[0].listen: '8080\\n' is not a port number")
        );
        assert_eq!(
            error("\"a\\nb\": 1\n"),
            format!(
                "{FILE}:1:1: a\\nb: unknown key (expected interfaces, forwards, mode, pin_dir, metrics or socket_group)"
            )
        );
        assert_eq!(
            error("interfaces: [\"eth\\t0\"]\n"),
            format!(
                "{FILE}:1:14: interfaces[0]: 'eth\\t0' is not a valid interface name: contains whitespace"
            )
        );
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            error("interfaces: []\nforwards: []\ninterfaces: []\n"),
            format!("{FILE}:3:1: interfaces: duplicate key (first at line 1)")
        );
        assert_eq!(
            error(
                "forwards:\n  - listen: \"80\"\n    to: \"1.2.3.4:80\"\n    to: \"1.2.3.4:81\"\n"
            ),
            format!("{FILE}:4:5: forwards[0].to: duplicate key (first at line 3)")
        );
    }

    #[test]
    fn ranges_and_allowlists() {
        let text = "\
forwards:
  - listen: \"8000-8010\"
    to: \"172.17.0.2:9000-9010\"
    allow: [\"10.0.0.0/8\", \"192.0.2.7\"]
  - listen: 9000-9001
    protocol: udp
    to: 172.17.0.3:53-54
";
        let c = parse(text);
        assert_eq!(
            c.forwards[0].to_string(),
            "8000-8010/tcp -> 172.17.0.2:9000-9010 allow 10.0.0.0/8,192.0.2.7/32"
        );
        assert_eq!(
            c.forwards[1].to_string(),
            "9000-9001/udp -> 172.17.0.3:53-54"
        );
        // Saved unchanged, then regenerated in canonical form: both parse back the same.
        assert_eq!(render(Some(text), &c), text);
        assert_eq!(parse(&render(None, &c)), c);
        let mut more = c.clone();
        more.forwards
            .push(fwd("7000-7001 -> 1.2.3.4:7000-7001 allow 198.51.100.0/24"));
        let saved = render(Some(text), &more);
        assert!(
            saved.ends_with(
                "  - listen: \"7000-7001/tcp\"\n    to: \"1.2.3.4:7000-7001\"\n    allow: [\"198.51.100.0/24\"]\n"
            ),
            "{saved}"
        );
        assert_eq!(parse(&saved), more);

        for (text, message) in [
            (
                "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:9000-9005\"\n",
                "3:9: forwards[0].to: 8000-8010/tcp covers 11 ports but 1.2.3.4:9000-9005 covers 6; a range maps port by port, so both sides must be the same length",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: [\"10.0.0.1/8\"]\n",
                "4:13: forwards[0].allow[0]: '10.0.0.1/8' has bits set past /8: write the network, 10.0.0.0/8",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: [\"2001:db8::/32\"]\n",
                "4:12: forwards[0].allow: no prefix of this allowlist is IPv4, so it would drop every client of this IPv4 forward; add an IPv4 prefix or remove the allowlist",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow:\n      - 10.0.0.0/8\n      - \"2001:db8::1/32\"\n",
                "6:9: forwards[0].allow[1]: '2001:db8::1/32' has bits set past /32: write the network, 2001:db8::/32",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: []\n",
                "4:12: forwards[0].allow: an empty allowlist would drop every client; remove it to accept every source address",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:80\"\n    allow: 10.0.0.0/8\n",
                "4:12: forwards[0].allow: expected a list of source prefixes (e.g. [\"10.0.0.0/8\"]), found a string",
            ),
            (
                "forwards:\n  - listen: \"[::1]:8080\"\n    to: \"1.2.3.4:80\"\n",
                "3:9: forwards[0].to: [::1]:8080/tcp is IPv6 but 1.2.3.4:80 is IPv4; portfwd does not translate between IPv4 and IPv6: publish an IPv4 target on an IPv4 host address or a bare port, or give the container's IPv6 address",
            ),
            (
                "forwards:\n  - listen: \"10.0.0.1:8080\"\n    to: \"[fd00::2]:3000\"\n",
                "3:9: forwards[0].to: 10.0.0.1:8080/tcp is IPv4 but [fd00::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
            ),
            (
                "forwards:\n  - listen: \"0.0.0.0:8080\"\n    to: \"[fd00::2]:3000\"\n",
                "3:9: forwards[0].to: 0.0.0.0:8080/tcp is IPv4 but [fd00::2]:3000 is IPv6; portfwd does not translate between IPv4 and IPv6: publish an IPv6 target on an IPv6 host address or a bare port, or give the container's IPv4 address",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"fd00::2:3000\"\n",
                "3:9: forwards[0].to: 'fd00::2:3000': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
            ),
            (
                "forwards:\n  - listen: \"8080\"\n    to: \"[fd00::2]:80\"\n  - listen: \"[fd00::1]:8080\"\n    to: \"[fd00::3]:80\"\n",
                "4:13: forwards[1].listen: [fd00::1]:8080/tcp overlaps [::]:8080/tcp (every host address), published by forwards[0] (line 2)",
            ),
            (
                "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n  - listen: \"10.0.0.1:8010-8020\"\n    to: \"1.2.3.4:1-11\"\n",
                "4:13: forwards[1].listen: 10.0.0.1:8010-8020/tcp overlaps 8000-8010/tcp (every host address), published by forwards[0] (line 2)",
            ),
            (
                "forwards:\n  - listen: \"8005\"\n    to: \"1.2.3.4:1\"\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n",
                "4:13: forwards[1].listen: 8000-8010/tcp overlaps 8005/tcp, published by forwards[0] (line 2)",
            ),
        ] {
            assert_eq!(error(text), format!("{FILE}:{message}"), "{text}");
        }
        // Different protocols, or different bound addresses, do not overlap.
        parse(
            "forwards:\n  - listen: \"8000-8010\"\n    to: \"1.2.3.4:8000-8010\"\n  - listen: \"8005/udp\"\n    to: \"1.2.3.4:1\"\n  - listen: \"10.0.0.1:7000-7010\"\n    to: \"1.2.3.4:1-11\"\n  - listen: \"10.0.0.2:7005\"\n    to: \"1.2.3.4:1\"\n",
        );
    }

    #[test]
    fn conflicts_name_both_lines() {
        let text = "\
interfaces: []
forwards:
  - listen: \"8080\"
    to: \"172.17.0.2:3000\"
  - listen: \"8080/udp\"
    to: \"172.17.0.2:3000\"
  - listen: \"8080/tcp\"
    to: \"172.17.0.3:3000\"
";
        assert_eq!(
            error(text),
            format!(
                "{FILE}:7:13: forwards[2].listen: 8080/tcp is already published by forwards[0] (line 3)"
            )
        );
        let text = "forwards:\n  - listen: \"8080\"\n    to: \"1.2.3.4:1\"\n  - listen: \"10.0.0.1:8080\"\n    to: \"1.2.3.4:2\"\n";
        assert_eq!(
            error(text),
            format!(
                "{FILE}:4:13: forwards[1].listen: 10.0.0.1:8080/tcp overlaps 8080/tcp (every host address), published by forwards[0] (line 2)"
            )
        );
        let text = "forwards:\n  - listen: \"10.0.0.1:8080\"\n    to: \"1.2.3.4:1\"\n  - listen: \"0.0.0.0:8080\"\n    to: \"1.2.3.4:2\"\n";
        assert_eq!(
            error(text),
            format!(
                "{FILE}:4:13: forwards[1].listen: 8080/tcp (every host address) overlaps 10.0.0.1:8080/tcp, published by forwards[0] (line 2)"
            )
        );
        // Different addresses, or protocols, do not conflict.
        parse(
            "forwards:\n  - {listen: \"10.0.0.1:80\", to: \"1.2.3.4:1\"}\n  - {listen: \"10.0.0.2:80\", to: \"1.2.3.4:1\"}\n  - {listen: \"80/udp\", to: \"1.2.3.4:1\"}\n",
        );
    }

    #[test]
    fn interface_names() {
        let cases: &[(&str, &str)] = &[
            (
                "interfaces:\n  - eth0\n  - ens3\n  - eth0\n",
                "4:5: interfaces[2]: 'eth0' is already listed as interfaces[0] (line 2)",
            ),
            (
                "interfaces: [abcdefghijklmnop]\n",
                "1:14: interfaces[0]: 'abcdefghijklmnop' is not a valid interface name: longer than 15 bytes",
            ),
            (
                "interfaces: [eth/0]\n",
                "1:14: interfaces[0]: 'eth/0' is not a valid interface name: contains '/'",
            ),
            (
                "interfaces: [\"eth 0\"]\n",
                "1:14: interfaces[0]: 'eth 0' is not a valid interface name: contains whitespace",
            ),
            (
                "interfaces: [\"\"]\n",
                "1:14: interfaces[0]: '' is not a valid interface name: it is empty",
            ),
            (
                "interfaces: [\"eth0:1\"]\n",
                "1:14: interfaces[0]: 'eth0:1' is not a valid interface name: contains ':'",
            ),
            (
                "interfaces: [~]\n",
                "1:14: interfaces[0]: expected an interface name, found null",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), format!("{FILE}:{want}"), "{text}");
        }
        assert_eq!(
            parse("interfaces: [abcdefghijklmno]\n").interfaces,
            ["abcdefghijklmno"]
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        assert_eq!(
            error("forwards: [\n"),
            format!("{FILE}:1:11: unclosed bracket '['")
        );
        let e = error("a: 1\n---\nb: 2\n");
        assert!(e.starts_with(&format!("{FILE}:3:1: ")), "{e}");
        let e = error("forwards:\n  - listen: \"80\"\n   to: \"1.2.3.4:80\"\n");
        assert!(e.starts_with(&format!("{FILE}:3:")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn load_errors() {
        let dir = scratch_dir("load");
        let missing = dir.join("missing.yaml");
        let e = load(&missing).unwrap_err();
        assert!(
            matches!(&e, ConfigError::NotFound { path } if *path == missing),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{}: no such file", missing.display())
        );

        let bad = dir.join("bad.yaml");
        fs::write(
            &bad,
            "# comment\nforwards:\n  - listen: \"80\"\n    to: \"1.2.3.4\"\n",
        )
        .unwrap();
        match load(&bad).unwrap_err() {
            ConfigError::Invalid {
                path,
                line,
                column,
                field,
                ..
            } => {
                assert_eq!(
                    (path, line, column, field.as_str()),
                    (bad.clone(), 4, 9, "forwards[0].to")
                );
            }
            e => panic!("{e:?}"),
        }
        let e = load(&dir).unwrap_err();
        assert!(matches!(e, ConfigError::Io { action: "read", .. }), "{e:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_methods() {
        let mut config = Config::default();
        config.insert(fwd("8080 -> 172.17.0.2:3000")).unwrap();
        config.insert(fwd("8080/udp -> 172.17.0.2:3000")).unwrap();
        let e = config
            .insert(fwd("10.0.0.1:8080 -> 172.17.0.3:80"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.0.0.1:8080/tcp overlaps 8080/tcp (every host address), published by 8080/tcp -> 172.17.0.2:3000"
        );
        assert_eq!(e.existing, fwd("8080 -> 172.17.0.2:3000"));
        assert_eq!(
            config.find_conflict(&"0.0.0.0:8080/udp".parse().unwrap()),
            Some(&fwd("8080/udp -> 172.17.0.2:3000"))
        );
        assert_eq!(config.remove(&"10.0.0.1:8080".parse().unwrap()), None);
        assert_eq!(
            config.remove(&"8080".parse().unwrap()),
            Some(fwd("8080 -> 172.17.0.2:3000"))
        );
        assert_eq!(config.forwards, [fwd("8080/udp -> 172.17.0.2:3000")]);
        config.validate().unwrap();

        config.forwards.push(fwd("8080/udp -> 1.2.3.4:5"));
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "forwards[1].listen: 8080/udp is already published by forwards[0]"
        );
        config.forwards.pop();
        config.interfaces = vec!["eth0".into(), "eth0".into()];
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "interfaces[1]: 'eth0' is already listed as interfaces[0]"
        );
        config.interfaces = vec!["a/b".into()];
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "interfaces[0]: 'a/b' is not a valid interface name: contains '/'"
        );
    }

    const COMMENTED: &str = "\
# Header comment.
# Second line.

# Interfaces comment.
interfaces:   # trailing on interfaces
  - eth0      # first interface

# Forwards comment.
forwards:
  # web: the demo app
  - listen: \"8080\"
    to: \"172.17.0.2:3000\"   # the app

  - listen: \"5353\"
    protocol: udp
    to: \"172.17.0.3:53\"
# Trailing comment.
";

    fn with(config: &Config, f: impl FnOnce(&mut Config)) -> Config {
        let mut config = config.clone();
        f(&mut config);
        config
    }

    #[test]
    fn render_keeps_comments_on_add_and_del() {
        let old = parse(COMMENTED);
        assert_eq!(
            render(Some(COMMENTED), &old),
            COMMENTED,
            "saving what was loaded changes nothing"
        );

        let added = with(&old, |c| {
            c.forwards.push(fwd("10.0.0.1:9000/udp -> 172.17.0.4:9000"))
        });
        let text = render(Some(COMMENTED), &added);
        assert_eq!(
            text,
            COMMENTED.replace(
                "# Trailing comment.\n",
                "  - listen: \"10.0.0.1:9000/udp\"\n    to: \"172.17.0.4:9000\"\n# Trailing comment.\n"
            )
        );
        assert_eq!(parse(&text), added);

        // Deleting the first entry takes the comment directly above it along.
        let deleted = with(&added, |c| {
            c.forwards.remove(0);
        });
        let text2 = render(Some(&text), &deleted);
        assert_eq!(parse(&text2), deleted);
        assert!(
            !text2.contains("web: the demo app") && !text2.contains("the app"),
            "{text2}"
        );
        for kept in [
            "# Header comment.\n# Second line.\n",
            "# Interfaces comment.\n",
            "interfaces:   # trailing on interfaces\n",
            "  - eth0      # first interface\n",
            "# Forwards comment.\n",
            "# Trailing comment.\n",
            "  - listen: \"5353\"\n    protocol: udp\n",
        ] {
            assert!(text2.contains(kept), "lost {kept:?}:\n{text2}");
        }

        // Deleting everything leaves an empty list and every other comment.
        let text3 = render(Some(&text2), &with(&deleted, |c| c.forwards.clear()));
        assert_eq!(
            text3,
            "# Header comment.\n# Second line.\n\n# Interfaces comment.\ninterfaces:   # trailing on interfaces\n  - eth0      # first interface\n\n# Forwards comment.\nforwards: []\n\n# Trailing comment.\n"
        );
        assert_eq!(parse(&text3).forwards, []);

        // And adding again turns `forwards: []` back into a block list.
        let again = with(&parse(&text3), |c| {
            c.forwards.push(fwd("8080 -> 172.17.0.2:3000"))
        });
        let text4 = render(Some(&text3), &again);
        assert!(
            text4.contains("# Forwards comment.\nforwards:\n  - listen: \"8080/tcp\"\n    to: \"172.17.0.2:3000\"\n\n# Trailing comment.\n"),
            "{text4}"
        );
        assert_eq!(parse(&text4), again);
    }

    #[test]
    fn render_installed_example() {
        let installed = include_str!("../../config/portfwd.yaml");
        let one = Config {
            interfaces: vec![],
            forwards: vec![fwd("8080 -> 172.17.0.2:3000")],
            ..Config::default()
        };
        let text = render(Some(installed), &one);
        assert_eq!(parse(&text), one);
        assert_eq!(
            text.lines().filter(|l| l.starts_with('#')).count(),
            installed.lines().filter(|l| l.starts_with('#')).count()
        );
        assert!(
            text.ends_with("forwards:\n  - listen: \"8080/tcp\"\n    to: \"172.17.0.2:3000\"\n"),
            "{text}"
        );
        // Deleting it gives the installed file back.
        assert_eq!(render(Some(&text), &Config::default()), installed);
        // The demo is already canonical.
        let demo = include_str!("../../config/demo.yaml");
        assert_eq!(render(Some(demo), &parse(demo)), demo);
    }

    #[test]
    fn render_edits_other_layouts() {
        // No forwards key; a null one; `~`; an indentless list; CRLF.
        for (before, after) in [
            (
                "# c\ninterfaces: []",
                "# c\ninterfaces: []\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
            ),
            (
                "# c\n",
                "# c\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
            ),
            (
                "",
                "forwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
            ),
            (
                "forwards:  # list\n# end\n",
                "forwards:  # list\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n# end\n",
            ),
            (
                "forwards: ~\n",
                "forwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
            ),
            (
                "forwards: [ ]  # none\n",
                "forwards:  # none\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n",
            ),
            (
                "forwards:\n- listen: 81\n  to: 1.2.3.4:81\n",
                "forwards:\n- listen: 81\n  to: 1.2.3.4:81\n- listen: \"80/tcp\"\n  to: \"1.2.3.4:80\"\n",
            ),
            (
                "forwards:\r\n  - listen: 81\r\n    to: 1.2.3.4:81\r\n",
                "forwards:\r\n  - listen: 81\r\n    to: 1.2.3.4:81\r\n  - listen: \"80/tcp\"\r\n    to: \"1.2.3.4:80\"\r\n",
            ),
        ] {
            let mut want = parse(before);
            want.forwards.push(fwd("80 -> 1.2.3.4:80"));
            assert_eq!(render(Some(before), &want), after, "{before:?}");
        }
        // Removing the only entry of an indentless list.
        assert_eq!(
            render(
                Some("forwards:\n- listen: 81\n  to: 1.2.3.4:81\n"),
                &Config::default()
            ),
            "forwards: []\n"
        );
        // Replacing a changed entry: removed in place, appended at the end.
        let text = "forwards:\n  - listen: \"81\"\n    to: \"1.2.3.4:81\"\n  # keep me\n\n  - listen: \"82\"\n    to: \"1.2.3.4:82\"\n";
        let mut want = parse(text);
        want.forwards[0].to.port = 8181;
        want.forwards[0].to.end = 8181;
        want.forwards.rotate_left(1);
        let out = render(Some(text), &want);
        assert_eq!(parse(&out), want);
        assert_eq!(
            out,
            "forwards:\n  # keep me\n\n  - listen: \"82\"\n    to: \"1.2.3.4:82\"\n  - listen: \"81/tcp\"\n    to: \"1.2.3.4:8181\"\n"
        );
    }

    #[test]
    fn render_keeps_file_order_and_entry_comments() {
        let text = "\
forwards:
  # above 80
  - listen: \"80\"
    to: \"1.2.3.4:80\"
    # below 80, indented: belongs to 80
  # above 81
  - listen: \"81\"
    to: \"1.2.3.4:81\"
    # below 81
# not an entry's
";
        let old = parse(text);
        // The daemon's order need not be the file's.
        let mut want = old.clone();
        want.forwards.reverse();
        assert_eq!(render(Some(text), &want), text);

        want.forwards.push(fwd("82 -> 1.2.3.4:82"));
        let added = render(Some(text), &want);
        assert_eq!(
            added,
            text.replace(
                "# not an entry's",
                "  - listen: \"82/tcp\"\n    to: \"1.2.3.4:82\"\n# not an entry's"
            )
        );
        assert!(same_config(&parse(&added), &want));

        want.forwards.retain(|f| f.listen.port != 80);
        assert_eq!(
            render(Some(&added), &want),
            "\
forwards:
  # above 81
  - listen: \"81\"
    to: \"1.2.3.4:81\"
    # below 81
  - listen: \"82/tcp\"
    to: \"1.2.3.4:82\"
# not an entry's
"
        );
    }

    #[test]
    fn render_regenerates_what_it_cannot_edit() {
        let want = Config {
            interfaces: vec!["eth0".into()],
            forwards: vec![fwd("80 -> 1.2.3.4:80"), fwd("81/udp -> 1.2.3.4:81")],
            ..Config::default()
        };
        let canonical = "interfaces:\n  - \"eth0\"\nforwards:\n  - listen: \"80/tcp\"\n    to: \"1.2.3.4:80\"\n  - listen: \"81/udp\"\n    to: \"1.2.3.4:81\"\n";
        // Flow style, a flow top level, changed interfaces, a broken file: the leading
        // comment block is kept, the rest regenerated.
        for before in [
            "# head\n\n# more\nforwards: [{listen: \"80\", to: \"1.2.3.4:80\"}]\ninterfaces: [eth0]\n",
            "# head\n\n# more\n{interfaces: [eth0], forwards: [{listen: \"80\", to: \"1.2.3.4:80\"}]}\n",
            "# head\n\n# more\ninterfaces: [eth1]  # gone\n",
            "# head\n\n# more\nforwards: [\n",
        ] {
            let out = render(Some(before), &want);
            assert_eq!(out, format!("# head\n\n# more\n{canonical}"), "{before:?}");
        }
        // A new file.
        let out = render(None, &want);
        assert_eq!(out, format!("{NEW_FILE_HEADER}{canonical}"));
        assert_eq!(parse(&out), want);
        assert_eq!(render(Some(&out), &want), out);
        // Odd interface names are quoted.
        let odd = Config {
            interfaces: vec!["a\"b".into(), "yes".into(), "1".into()],
            forwards: vec![],
            ..Config::default()
        };
        assert_eq!(parse(&render(None, &odd)), odd);
    }

    #[test]
    fn save_is_atomic_and_keeps_permissions() {
        let dir = scratch_dir("save");
        let path = dir.join("etc/portfwd/portfwd.yaml");
        let one = Config {
            interfaces: vec![],
            forwards: vec![fwd("8080 -> 172.17.0.2:3000")],
            ..Config::default()
        };
        // A new file, in a directory that does not exist yet.
        save(&path, &one).unwrap();
        assert_eq!(load(&path).unwrap(), one);
        assert_eq!(mode(&path), 0o644);

        // An existing file keeps its mode and its comments.
        fs::write(&path, "# mine\ninterfaces: []\nforwards: []\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        save(&path, &one).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# mine\ninterfaces: []\nforwards:\n"),
            "{text}"
        );
        assert_eq!(load(&path).unwrap(), one);

        // save(load(x)) leaves the file as it was.
        save(&path, &load(&path).unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["portfwd.yaml"]);

        // A symlink stays a symlink; its target is rewritten.
        let link = dir.join("link.yaml");
        symlink(&path, &link).unwrap();
        save(&link, &Config::default()).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(load(&path).unwrap(), Config::default());
        assert_eq!(mode(&path), 0o600);

        // An invalid config is refused and the file left alone.
        let before = fs::read_to_string(&path).unwrap();
        let bad = Config {
            interfaces: vec![],
            forwards: vec![fwd("80 -> 1.2.3.4:1"), fwd("80 -> 1.2.3.4:2")],
            ..Config::default()
        };
        let e = save(&path, &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: not saved: forwards[1].listen: 80/tcp is already published by forwards[0]",
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before);

        // A failed write reports the file and leaves nothing behind.
        let e = save(&dir.join("etc/portfwd/portfwd.yaml/sub.yaml"), &one).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
