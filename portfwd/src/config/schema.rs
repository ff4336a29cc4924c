//! Reading the config text and checking it against the schema, every error located.
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
//! The tree of a file that passes is kept ([`Document`]): the editor finds the forwards list
//! in it.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DefaultMessageFormatter, DuplicateKeyPolicy, MessageFormatter as _, Spanned};

use super::model::{
    AttachMode, Config, ConfigError, DockerConfig, check_interface_name, check_pin_dir,
    check_socket_group, conflict_message, one_of, parse_max_flows, parse_metrics,
};
use crate::{
    health,
    publish::{
        AllDown, AllowPrefix, AnyTarget, ContainerTarget, Forward, HealthSpec, Listen,
        NamedForward, PoolError, PoolOptions, Protocol, PublishError, Weighted, address_targets,
        printable,
    },
};

/// A YAML node with spans everywhere; the input of the hand-written schema check.
#[derive(Debug)]
pub(super) enum Node {
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

/// A file that passed the schema: its config, and the YAML tree it was read from (`None`
/// for an empty document).
#[derive(Debug)]
pub(super) struct Document {
    pub(super) config: Config,
    pub(super) root: Option<Spanned<Node>>,
    /// Where each item of the file's `forwards` list went, in file order.
    pub(super) entries: Vec<Entry>,
}

/// An item of the `forwards` list: the index of a [`Forward`] in `Config::forwards`, or of a
/// forward to a container by name in `Config::named`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    Forward(usize),
    Named(usize),
}

/// A parsed item of the `forwards` list.
enum Parsed {
    Forward(Forward),
    Named(NamedForward),
}

impl Parsed {
    fn listen(&self) -> &Listen {
        match self {
            Parsed::Forward(f) => &f.listen,
            Parsed::Named(n) => &n.listen,
        }
    }
}

/// A checked mapping entry: the known key's name, the key node and the value node.
type Field<'n> = (&'static str, &'n Spanned<Node>, &'n Spanned<Node>);

/// The text being parsed and its name, for errors.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

/// The path of `key` under `at`: `at.key`, or `key` at the top level.
fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
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

    /// The whole document: a mapping of the top-level keys, or null (the empty config).
    fn config(&self, root: &Spanned<Node>) -> Result<(Config, Vec<Entry>), ConfigError> {
        let mut config = Config::default();
        let mut order = Vec::new();
        // The `to` of the first forward to a container by name, which needs `docker:`.
        let mut first_named = None;
        let entries = match &root.value {
            Node::Null => return Ok((config, order)),
            Node::Map(entries) => entries,
            other => {
                let found = other.kind();
                return Err(self.invalid(
                    root,
                    "top level",
                    format!("expected a mapping with interfaces and forwards, found {found}"),
                ));
            }
        };
        for (name, _, value) in self.fields(entries, "", &TOP_LEVEL_KEYS)? {
            match name {
                "interfaces" => config.interfaces = self.interfaces(value)?,
                "mode" => config.mode = self.mode(value)?,
                "pin_dir" => config.pin_dir = self.pin_dir(value)?,
                "max_flows" => config.max_flows = self.max_flows(value)?,
                "metrics" => config.metrics = self.metrics(value)?,
                "socket_group" => config.socket_group = self.socket_group(value)?,
                "docker" => config.docker = self.docker(value)?,
                _ => {
                    for (parsed, to_node) in self.forwards(value)? {
                        match parsed {
                            Parsed::Forward(f) => {
                                order.push(Entry::Forward(config.forwards.len()));
                                config.forwards.push(f);
                            }
                            Parsed::Named(n) => {
                                let i = order.len();
                                first_named.get_or_insert((i, to_node));
                                order.push(Entry::Named(config.named.len()));
                                config.named.push(n);
                            }
                        }
                    }
                }
            }
        }
        if let (Some((i, to_node)), None) = (first_named, &config.docker) {
            let name = &config.named[0].to.container;
            return Err(self.invalid(
                to_node,
                format!("forwards[{i}].to"),
                format!("'{name}' is a container name, which needs the docker: section (e.g. docker: {{}}) to be resolved"),
            ));
        }
        Ok((config, order))
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

    /// `max_flows: null` is the same as no `max_flows` key: the built-in sizes.
    fn max_flows(&self, node: &Spanned<Node>) -> Result<Option<u32>, ConfigError> {
        if let Node::Null = node.value {
            return Ok(None);
        }
        let text = self.string(node, "max_flows", "a number of flows")?;
        parse_max_flows(&text)
            .map(Some)
            .map_err(|message| self.invalid(node, "max_flows", message))
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

    /// `docker: null` is the same as no `docker` key: Docker is not followed; `docker: {}`
    /// follows it on the default socket.
    fn docker(&self, node: &Spanned<Node>) -> Result<Option<DockerConfig>, ConfigError> {
        let entries = match &node.value {
            Node::Null => return Ok(None),
            Node::Map(entries) => entries,
            other => {
                return Err(self.invalid(
                    node,
                    "docker",
                    format!("expected a mapping (e.g. {{}} or {{socket: /var/run/docker.sock}}) or null, found {}", other.kind()),
                ));
            }
        };
        let mut docker = DockerConfig::default();
        for (name, _, value) in self.fields(entries, "docker", &["socket", "allow"])? {
            if name == "allow" {
                docker.allow = self.allow(value, "docker.allow")?;
                continue;
            }
            let path = PathBuf::from(self.string(value, "docker.socket", "an absolute path")?);
            if !path.is_absolute() {
                return Err(self.invalid(
                    value,
                    "docker.socket",
                    format!(
                        "'{}' is not an absolute path",
                        printable(&path.to_string_lossy())
                    ),
                ));
            }
            docker.socket = path;
        }
        Ok(Some(docker))
    }

    fn forwards<'n>(
        &self,
        node: &'n Spanned<Node>,
    ) -> Result<Vec<(Parsed, &'n Spanned<Node>)>, ConfigError> {
        let items = self.list(node, "forwards", "forwards", true)?;
        let mut forwards: Vec<(Parsed, &Spanned<Node>)> = Vec::with_capacity(items.len());
        // The listen node of each forward, for the line of a conflict.
        let mut listen_nodes: Vec<&Spanned<Node>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("forwards[{i}]");
            let (fwd, listen_node, to_node) = self.forward(item, &at)?;
            if let Some(j) = forwards
                .iter()
                .position(|(f, _)| f.listen().conflicts_with(fwd.listen()))
            {
                let line = listen_nodes[j].referenced.line();
                let by = format!("forwards[{j}] (line {line})");
                return Err(self.invalid(
                    listen_node,
                    join(&at, "listen"),
                    conflict_message(fwd.listen(), forwards[j].0.listen(), &by),
                ));
            }
            forwards.push((fwd, to_node));
            listen_nodes.push(listen_node);
        }
        Ok(forwards)
    }

    /// One entry of `forwards` (at `at`, e.g. `forwards[1]`), and its `listen` and `to` nodes.
    fn forward<'n>(
        &self,
        item: &'n Spanned<Node>,
        at: &str,
    ) -> Result<(Parsed, &'n Spanned<Node>, &'n Spanned<Node>), ConfigError> {
        let Node::Map(entries) = &item.value else {
            let found = item.value.kind();
            return Err(self.invalid(
                item,
                at,
                format!("expected a mapping with listen and to, found {found}"),
            ));
        };
        let (mut listen, mut protocol, mut to, mut allow) = (None, None, None, None);
        // `health`, `all_down` and `grace`, in file order.
        let mut pool_keys: Vec<(&'static str, &Spanned<Node>)> = Vec::new();
        for (name, _, value) in self.fields(entries, at, &FORWARD_KEYS)? {
            match name {
                "listen" => listen = Some(value),
                "protocol" => protocol = Some(value),
                "allow" => allow = Some(value),
                "to" => to = Some(value),
                _ => pool_keys.push((name, value)),
            }
        }
        let missing = |key: &str, form: &str| {
            self.invalid(item, join(at, key), format!("missing (expected {form})"))
        };
        let listen_node =
            listen.ok_or_else(|| missing("listen", "[HOST_IP:]HOST_PORT[-END][/PROTO]"))?;
        let to_node = to.ok_or_else(|| missing("to", "IP:PORT[-END]"))?;

        let protocol_field = join(at, "protocol");
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

        let listen_field = join(at, "listen");
        let text = self.string(
            listen_node,
            &listen_field,
            "[HOST_IP:]HOST_PORT[-END][/PROTO]",
        )?;
        let listen = Listen::parse_with_protocol(&text, protocol.map(|(_, p)| p)).map_err(|e| {
            match (&e, protocol) {
                (PublishError::ProtocolMismatch { .. }, Some((node, _))) => {
                    self.invalid(node, &protocol_field, e.to_string())
                }
                _ => self.invalid(listen_node, &listen_field, e.to_string()),
            }
        })?;

        let to_field = join(at, "to");
        let targets = self.targets(to_node, &to_field)?;
        let allow = match allow {
            None => None,
            Some(node) => {
                let field = join(at, "allow");
                Some((node, field.clone(), self.allow(node, &field)?))
            }
        };
        let targets = match targets {
            Targets::Addrs(targets) => targets,
            Targets::Container(to) => {
                if let Some((key, node)) = pool_keys.first() {
                    return Err(self.invalid(
                        node,
                        join(at, key),
                        format!("{key} needs a list of IP:PORT targets; a forward to a container by name has none"),
                    ));
                }
                let prefixes = allow.map(|(_, _, p)| p).unwrap_or_default();
                let named = NamedForward::new(listen, to, prefixes)
                    .map_err(|e| self.invalid(to_node, &to_field, e.to_string()))?;
                return Ok((Parsed::Named(named), listen_node, to_node));
            }
        };
        let options = self.pool_options(&pool_keys, at)?;
        let fwd = Forward::with_targets(listen, targets, options).map_err(|e| match e {
            PublishError::Pool(PoolError::OptionWithoutPool(key)) => {
                let node = pool_keys
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or(to_node, |(_, n)| n);
                self.invalid(node, join(at, key), e.to_string())
            }
            _ => self.invalid(to_node, &to_field, e.to_string()),
        })?;
        let fwd = match allow {
            None => fwd,
            Some((node, field, prefixes)) => fwd
                .with_allow(prefixes)
                .map_err(|e| self.invalid(node, &field, e.to_string()))?,
        };
        Ok((Parsed::Forward(fwd), listen_node, to_node))
    }

    /// A forward's `to`: one target (an address or a container by name), or a list of
    /// addresses with weights (`["172.17.0.2:3000", "172.17.0.3:3000*2"]`, or the same as one
    /// string with commas).
    fn targets(&self, node: &Spanned<Node>, field: &str) -> Result<Targets, ConfigError> {
        let located = |e: PublishError| self.invalid(node, field, e.to_string());
        let Node::Seq(items) = &node.value else {
            let text = self.string(node, field, TO_FORM)?;
            if text.contains([',', '*']) {
                return address_targets(&text).map(Targets::Addrs).map_err(located);
            }
            return match text.parse::<AnyTarget>().map_err(located)? {
                AnyTarget::Addr(t) => Ok(Targets::Addrs(vec![Weighted::one(t)])),
                AnyTarget::Container(c) => Ok(Targets::Container(c)),
            };
        };
        if items.is_empty() {
            return Err(self.invalid(
                node,
                field,
                format!("expected {TO_FORM}, found an empty list"),
            ));
        }
        let mut targets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let text = self.string(item, &field, "IP:PORT[*WEIGHT]")?;
            let target = match address_targets(&text).as_deref() {
                Ok([one]) => *one,
                Ok(_) => {
                    let message = format!(
                        "'{}': write one IP:PORT[*WEIGHT] per item of the list",
                        printable(&text)
                    );
                    return Err(self.invalid(item, &field, message));
                }
                Err(e) => return Err(self.invalid(item, &field, e.to_string())),
            };
            if let Some(j) = targets
                .iter()
                .position(|t: &Weighted| t.target == target.target)
            {
                let line = items[j].referenced.line();
                return Err(self.invalid(
                    item,
                    &field,
                    format!(
                        "{} is already listed as {field_j} (line {line})",
                        target.target,
                        field_j = format_args!("to[{j}]")
                    ),
                ));
            }
            targets.push(target);
        }
        Ok(Targets::Addrs(targets))
    }

    /// `health`, `all_down` and `grace` of the forward at `at`, as given.
    fn pool_options(
        &self,
        keys: &[(&'static str, &Spanned<Node>)],
        at: &str,
    ) -> Result<PoolOptions, ConfigError> {
        let mut options = PoolOptions::default();
        for &(key, node) in keys {
            let field = join(at, key);
            match key {
                "health" => options.health = Some(self.health(node, &field)?),
                "all_down" => {
                    let text = self.string(node, &field, "serve or refuse")?;
                    let policy = text
                        .parse::<AllDown>()
                        .map_err(|e| self.invalid(node, &field, e.to_string()))?;
                    options.all_down = Some(policy);
                }
                _ => options.grace = Some(self.duration(node, &field)?),
            }
        }
        Ok(options)
    }

    /// `health: { interval: "1s", timeout: "500ms", fall: 2, rise: 2, http: "/healthz" }`,
    /// every key optional (`health: {}`: a TCP connect with the defaults).
    fn health(&self, node: &Spanned<Node>, field: &str) -> Result<HealthSpec, ConfigError> {
        let entries = match &node.value {
            Node::Map(entries) => entries,
            other => {
                return Err(self.invalid(
                    node,
                    field,
                    format!("expected a mapping (e.g. {{}} or {{interval: 1s, http: /healthz}}), found {}", other.kind()),
                ));
            }
        };
        let mut spec = HealthSpec {
            check: health::Check::Tcp,
            params: health::Params::default(),
        };
        for (name, _, value) in self.fields(entries, field, &HEALTH_KEYS)? {
            let at = join(field, name);
            let p = &mut spec.params;
            match name {
                "interval" => p.interval = self.duration(value, &at)?,
                "timeout" => p.timeout = self.duration(value, &at)?,
                "rise" => p.rise = self.count(value, &at)?,
                "fall" => p.fall = self.count(value, &at)?,
                _ => {
                    let path = self.string(value, &at, "a path (e.g. /healthz)")?;
                    spec.check = health::Check::http(&path)
                        .map_err(|message| self.invalid(value, &at, message))?;
                }
            }
        }
        spec.params
            .validate()
            .map_err(|message| self.invalid(node, field, message))?;
        Ok(spec)
    }

    /// A duration such as `1s`, `500ms`, `2m 30s`.
    fn duration(&self, node: &Spanned<Node>, field: &str) -> Result<Duration, ConfigError> {
        let text = self.string(node, field, "a duration (e.g. 1s or 500ms)")?;
        humantime::parse_duration(&text).map_err(|e| {
            self.invalid(
                node,
                field,
                format!(
                    "'{}' is not a duration (e.g. 1s or 500ms): {e}",
                    printable(&text)
                ),
            )
        })
    }

    /// A count of probes, 1 or more.
    fn count(&self, node: &Spanned<Node>, field: &str) -> Result<u32, ConfigError> {
        let text = self.string(node, field, "a number")?;
        text.parse::<u32>().map_err(|_| {
            self.invalid(
                node,
                field,
                format!(
                    "'{}' is not a number of probes (1 or more)",
                    printable(&text)
                ),
            )
        })
    }

    /// A forward's `allow:` list of source prefixes.
    fn allow(&self, node: &Spanned<Node>, field: &str) -> Result<Vec<AllowPrefix>, ConfigError> {
        let what = "source prefixes (e.g. [\"10.0.0.0/8\"])";
        let items = self.list(node, field, what, false)?;
        if items.is_empty() {
            return Err(self.invalid(node, field, PublishError::EmptyAllowlist.to_string()));
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

/// The keys of an entry of `forwards`, in the order error messages list them.
const FORWARD_KEYS: [&str; 7] = [
    "listen", "protocol", "to", "allow", "health", "all_down", "grace",
];

/// The keys of a forward's `health` mapping.
const HEALTH_KEYS: [&str; 5] = ["interval", "timeout", "rise", "fall", "http"];

/// What a forward's `to` may be.
const TO_FORM: &str = "IP:PORT[-END], CONTAINER:PORT[-END] or a list of IP:PORT[*WEIGHT]";

/// A forward's `to`: addresses with their weights, or a container by name.
enum Targets {
    Addrs(Vec<Weighted>),
    Container(ContainerTarget),
}

/// The keys of the top-level mapping, in the order error messages list them.
const TOP_LEVEL_KEYS: [&str; 8] = [
    "interfaces",
    "forwards",
    "mode",
    "pin_dir",
    "max_flows",
    "metrics",
    "socket_group",
    "docker",
];

/// Parses and checks `text` (from the file `path`, for the messages).
pub(super) fn parse_document(text: &str, path: &Path) -> Result<Document, ConfigError> {
    let options = serde_saphyr::options! {
        // Repeated keys reach the schema check, which names both lines.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    let root: Option<Spanned<Node>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| syntax_error(path, &e))?;
    let src = Source { text, path };
    let (config, entries) = match &root {
        None => (Config::default(), Vec::new()),
        Some(root) => src.config(root)?,
    };
    Ok(Document {
        config,
        root,
        entries,
    })
}

/// Parses and validates config text; `origin` is the file name used in error messages.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_document(text, origin).map(|doc| doc.config)
}

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;
