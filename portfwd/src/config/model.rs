//! The config's data model: [`Config`] and [`AttachMode`], the errors of loading, saving and
//! changing a config, and the checks of single values that a config built in memory also
//! passes ([`Config::validate`]). `schema` runs the same checks on a file, with line numbers.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use crate::publish::{AllowPrefix, Forward, Listen, NamedForward, printable};

/// Where the daemon reads its config unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/portfwd/portfwd.yaml";

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Where the daemon pins its programs, links and maps unless the config says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/portfwd";

/// The Docker Engine API socket followed when the config's `docker:` section names none.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The config's `docker:` section: follow Docker's published ports (see `crate::docker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// `socket:` the Engine API's Unix socket (default [`DEFAULT_DOCKER_SOCKET`]).
    pub socket: PathBuf,
    /// `allow:` the source prefixes allowed to use Docker's forwards; empty (the default):
    /// every source, as Docker publishes. portfwd's packets do not pass netfilter, so rules in
    /// Docker's `DOCKER-USER` chain do not apply to them: this list takes their place.
    pub allow: Vec<AllowPrefix>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            allow: Vec::new(),
        }
    }
}

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
    /// The published ports whose target is a container by name (`to: "web:3000"`), in file
    /// order; they need `docker`. No two forwards of either list conflict.
    pub named: Vec<NamedForward>,
    /// `mode:` how the datapath is attached (default [`AttachMode::Auto`]).
    pub mode: AttachMode,
    /// `pin_dir:` where programs, links and maps are pinned (default [`DEFAULT_PIN_DIR`]).
    /// Must be an absolute path (see [`check_pin_dir`]).
    pub pin_dir: PathBuf,
    /// `max_flows:` how many flows each flow table holds (both families' new and established
    /// flows, and the pools' affinity tables), in [`MAX_FLOWS_RANGE`]. `None` (absent, the
    /// default) keeps the built-in sizes: 131,072 IPv4 and 65,536 IPv6 flows per table. Read
    /// when the daemon starts (a reload only warns that a change waits for a restart).
    pub max_flows: Option<u32>,
    /// `metrics:` address of the Prometheus endpoint, e.g. `127.0.0.1:9369`; `None` (absent
    /// or null in the file, the default) means no endpoint. The port is never 0.
    pub metrics: Option<SocketAddr>,
    /// `socket_group:` the group (by name) allowed to use the control socket besides root;
    /// `None` (absent or null in the file, the default) means root only. Checked to be a
    /// plausible group name ([`check_socket_group`]), not that the group exists.
    pub socket_group: Option<String>,
    /// `docker:` follow Docker and serve the ports it publishes; `None` (absent or null in
    /// the file, the default) means Docker is not followed.
    pub docker: Option<DockerConfig>,
}

impl Default for Config {
    /// No interfaces (every one that is up), no forwards, and the documented defaults:
    /// `auto` mode, pinned under [`DEFAULT_PIN_DIR`], no metrics, control socket root only.
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            forwards: Vec::new(),
            named: Vec::new(),
            mode: AttachMode::default(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            max_flows: None,
            metrics: None,
            socket_group: None,
            docker: None,
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
    /// [`save`](super::save) was given a config that is itself invalid; the file was left alone.
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
    /// Checks what [`load`](super::load) checks beyond syntax: interface names are valid and unique,
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
        if let Some(n) = self.max_flows {
            check_max_flows(u64::from(n)).map_err(|m| invalid("max_flows", m))?;
        }
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
        for (i, n) in self.named.iter().enumerate() {
            let field = format!("forwards ({n})");
            if self.docker.is_none() {
                return Err(ValidationError {
                    field,
                    message: format!(
                        "'{}' is a container name, which needs the docker: section",
                        n.to.container
                    ),
                });
            }
            let by_forward = self
                .forwards
                .iter()
                .map(|f| &f.listen)
                .chain(self.named[..i].iter().map(|m| &m.listen))
                .find(|l| l.conflicts_with(&n.listen));
            if let Some(existing) = by_forward {
                return Err(ValidationError {
                    field,
                    message: conflict_message(&n.listen, existing, "another forward"),
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

/// What `max_flows` may be. Below, a CPU's share of an LRU flow table (the table divided by
/// the possible CPUs) would be a few flows, evicted by the next ones; above, the tables would
/// take more kernel memory than a host has to give them: the kernel allocates every entry when
/// it creates a table, and the six tables take about 685 MB per million flows (see the
/// README, "Map sizes").
pub const MAX_FLOWS_RANGE: std::ops::RangeInclusive<u64> = 1_024..=100_000_000;

/// Why `n` cannot be `max_flows`, or Ok.
pub fn check_max_flows(n: u64) -> Result<u32, String> {
    let (min, max) = (*MAX_FLOWS_RANGE.start(), *MAX_FLOWS_RANGE.end());
    if n < min {
        Err(format!(
            "{n} flows is too few: at least {min}, or each CPU's share of a flow table would be a handful of flows that evict each other"
        ))
    } else if n > max {
        Err(format!(
            "{n} flows is too many: at most {max} (100 million), since the kernel allocates every entry up front and the flow tables take about 685 MB per million flows"
        ))
    } else {
        Ok(n as u32)
    }
}

/// Parses `max_flows` (the config key and `--max-flows`): a whole number of flows in
/// [`MAX_FLOWS_RANGE`], digits with optional `_` between them (`1_000_000`).
pub fn parse_max_flows(text: &str) -> Result<u32, String> {
    let shown = printable(text);
    let digits = text.trim();
    let well_formed = digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.ends_with(|c: char| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
        && !digits.contains("__");
    let n = if well_formed {
        digits.replace('_', "").parse::<u64>().ok()
    } else {
        None
    };
    match n {
        Some(n) => check_max_flows(n),
        None => Err(format!(
            "'{shown}' is not a number of flows (e.g. 1000000 or 1_000_000)"
        )),
    }
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
pub(super) fn conflict_message(new: &Listen, existing: &Listen, by: &str) -> String {
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

/// `a`, `a or b`, `a, b or c`.
pub(super) fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::fwd;

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
}
