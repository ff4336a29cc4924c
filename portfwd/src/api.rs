//! The control protocol between the CLI and the daemon: one JSON request per line on a Unix
//! socket, one JSON response line back.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    health,
    publish::{AllDown, HealthSpec, PoolError, PoolOptions, PublishError, printable},
};

/// Default control socket path; `PORTFWD_SOCKET` overrides it for the daemon and the CLI.
pub const DEFAULT_SOCKET: &str = "/run/portfwd/portfwd.sock";
/// The environment variable naming the control socket.
pub const SOCKET_ENV: &str = "PORTFWD_SOCKET";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Publish `listen` (`[HOST_IP:]PORT[-END][/PROTO]`) to `to`, for clients in `allow`
    /// (IP[/LEN] each; empty: every client). `to` is one target (`IP:PORT[-END]` or
    /// `CONTAINER:PORT[-END]`, as every client sent it before pools), or a list of
    /// `IP:PORT[*WEIGHT]`; `health`, `all_down` and `grace` are as in the config file.
    Add {
        listen: String,
        to: AddTargets,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<HealthRequest>,
        /// `serve` or `refuse`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        all_down: Option<String>,
        /// A duration, e.g. `30s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace: Option<String>,
    },
    /// Stop publishing `listen`, or, with `target`, remove that one target of its pool.
    Del {
        listen: String,
        /// The forward's origin as `portfwd list` shows it (`cni:NETWORK/SHORT_ID`), given to
        /// withdraw a CNI attachment whose runtime will not (a DEL that failed and was never
        /// retried): all that attachment's forwards go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// `IP:PORT`: one target of the forward's pool (never its last).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// Set the weight of `target` (`IP:PORT`) of the pool of `listen` to 0 (it takes no new
    /// flows, and its flows drain), or back to 1 with `undo`.
    Drain {
        listen: String,
        target: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        undo: bool,
    },
    /// The forwards with their counters.
    List,
    /// Attachments, host addresses and verdict counters.
    Status,
    /// Re-read the config file and apply the difference, all or nothing.
    Reload,
    /// A CNI plugin's request (`portfwd-cni`): forwards owned by a container's attachment,
    /// kept by the daemon as its own state. `version` is [`CNI_API_VERSION`]; a daemon
    /// refuses another version, naming both.
    Cni { version: u32, request: CniRequest },
}

/// The targets of [`Request::Add`]: one string (`"172.17.0.2:3000"`, what clients sent
/// before pools, and what this one sends for a single target), or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddTargets {
    One(String),
    Many(Vec<String>),
}

impl AddTargets {
    /// One target as a string, several as a list.
    pub fn of(mut targets: Vec<String>) -> AddTargets {
        match targets.len() {
            1 => AddTargets::One(targets.remove(0)),
            _ => AddTargets::Many(targets),
        }
    }

    pub fn to_vec(&self) -> Vec<String> {
        match self {
            AddTargets::One(t) => vec![t.clone()],
            AddTargets::Many(ts) => ts.clone(),
        }
    }
}

/// A pool's health check in [`Request::Add`], as in the config file: a TCP connect, or an
/// HTTP GET of `http`; what is absent takes its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRequest {
    /// The path of an HTTP check (`/healthz`); absent: a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Durations, e.g. `1s`, `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

impl HealthRequest {
    /// The check and its timing, validated as the config file's `health:` is.
    pub fn spec(&self) -> Result<HealthSpec, PublishError> {
        let setting = |key, message| PoolError::Setting { key, message };
        let check = match &self.http {
            None => health::Check::Tcp,
            Some(path) => health::Check::http(path).map_err(|m| setting("health", m))?,
        };
        let mut params = health::Params::default();
        if let Some(d) = &self.interval {
            params.interval = parse_duration("interval", d)?;
        }
        if let Some(d) = &self.timeout {
            params.timeout = parse_duration("timeout", d)?;
        }
        params.rise = self.rise.unwrap_or(params.rise);
        params.fall = self.fall.unwrap_or(params.fall);
        params.validate().map_err(|m| setting("health", m))?;
        Ok(HealthSpec { check, params })
    }
}

/// A duration as the config file writes it (`1s`, `500ms`), for the setting `key`.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, PublishError> {
    humantime::parse_duration(text).map_err(|e| {
        PoolError::Setting {
            key,
            message: format!(
                "'{}' is not a duration (e.g. 1s or 500ms): {e}",
                printable(text)
            ),
        }
        .into()
    })
}

/// The balancing of [`Request::Add`], checked.
pub fn pool_options(
    health: Option<&HealthRequest>,
    all_down: Option<&str>,
    grace: Option<&str>,
) -> Result<PoolOptions, PublishError> {
    Ok(PoolOptions {
        health: health.map(HealthRequest::spec).transpose()?,
        all_down: all_down.map(str::parse::<AllDown>).transpose()?,
        grace: grace.map(|g| parse_duration("grace", g)).transpose()?,
    })
}

/// The version of the CNI requests ([`Request::Cni`]). Bumped when a request or its meaning
/// changes; a plugin and a daemon of different versions fail with a clear message instead
/// of misreading each other.
pub const CNI_API_VERSION: u32 = 1;

/// What `portfwd-cni` asks of the daemon. Every request is answered `done` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum CniRequest {
    /// Publish `mappings` for `owner`, all or none. Replaces what `owner` had (an ADD
    /// repeated by the runtime is not a conflict with itself). A mapping whose host port is
    /// already published by anyone else refuses the whole request, naming the port.
    Add {
        owner: CniOwner,
        mappings: Vec<CniMapping>,
    },
    /// Withdraw every forward of `owner`. Succeeds when there is none (DEL is idempotent).
    Del { owner: CniOwner },
    /// Succeeds when `owner` has exactly `mappings`, published and served.
    Check {
        owner: CniOwner,
        mappings: Vec<CniMapping>,
    },
    /// Withdraw the forwards of every attachment of `network` not in `keep` (CNI 1.1 GC).
    Gc {
        network: String,
        keep: Vec<CniOwner>,
    },
}

/// Who owns forwards made through CNI: an attachment of a container to a network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CniOwner {
    /// The network's name (the conflist's `name`).
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl CniOwner {
    /// `cni:NETWORK/SHORT_ID`, as `portfwd list` shows the origin (the first 12 characters of
    /// the container id, as runtimes show it).
    pub fn label(&self) -> String {
        let short = self.container_id.get(..12).unwrap_or(&self.container_id);
        format!("cni:{}/{short}", self.network)
    }
}

/// One port mapping, in portfwd's own grammar: `listen` is `[HOST_IP:]PORT/PROTO` (a bare
/// port: every host address of the target's family), `to` is `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CniMapping {
    pub listen: String,
    pub to: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Done { message: String },
    Forwards { forwards: Vec<ForwardEntry> },
    Status(Box<Status>),
    Error { message: String },
}

/// One forward and its counters, as `portfwd list --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardEntry {
    /// `[HOST_IP:]PORT/PROTO`
    pub listen: String,
    pub protocol: String,
    /// `IP:PORT[-END]`
    pub to: String,
    /// Source prefixes allowed (`IP/LEN`); empty: every source.
    #[serde(default)]
    pub allow: Vec<String>,
    pub packets_to_target: u64,
    pub bytes_to_target: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub new_flows: u64,
    /// Who made the forward: `config` (the YAML file or `portfwd add`), or `docker:NAME` for
    /// a port Docker publishes for container NAME (derived state, never written to the YAML).
    #[serde(default = "config_origin")]
    pub origin: String,
    /// The container the forward goes to, for Docker's forwards and for forwards of the config
    /// whose target is a container name (`to: "web:3000"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Why a forward of the config is not served now (its container is stopped, or has no
    /// address on its network); `None` while it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<String>,
    /// Each target of a forward with several (or with a health check), in the config's
    /// order; empty for a forward to one target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendStatus>,
}

/// One backend of a pool forward, as `portfwd list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendStatus {
    /// `IP:PORT`
    pub target: String,
    /// Its share of new flows, 0 (drained) to 1000.
    pub weight: u32,
    pub state: BackendState,
    /// Packets and bytes to the backend.
    pub packets: u64,
    pub bytes: u64,
    /// Flows sent to it since it joined.
    pub new_flows: u64,
    /// Flows to it now.
    pub live_flows: u64,
}

/// Whether a backend takes new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Its health check passes.
    Up,
    /// Its health check fails: no new flows.
    Down,
    /// Weight 0, or removed and within its grace period: no new flows, its flows go on.
    Draining,
    /// No health check: taken as up.
    Unchecked,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
            BackendState::Unchecked => "unchecked",
        }
    }
}

/// The origin of a forward made by the config file or `portfwd add`.
pub const CONFIG_ORIGIN: &str = "config";

fn config_origin() -> String {
    CONFIG_ORIGIN.to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub config: PathBuf,
    pub interfaces: Vec<InterfaceStatus>,
    pub host_addresses: Vec<String>,
    pub forwards: usize,
    /// Entries in the flow tables, both families, new and established, derived from the
    /// datapath's inserts, not walked (see [`FlowTableStatus`]). A flow that became established
    /// keeps its entry among the new flows until that table's LRU reuses it, so it may count
    /// twice.
    pub flows: usize,
    /// Each flow table's fill level and evictions.
    #[serde(default)]
    pub flow_tables: Vec<FlowTableStatus>,
    /// Every verdict the datapath took since it was loaded, by reason (all hooks).
    pub verdicts: Vec<VerdictCount>,
    /// The same per hook (`tc`, `xdp`): reason -> packets. In XDP mode a packet XDP hands to tc
    /// is counted by both (`pass_to_tc`, then tc's verdict).
    pub verdicts_by_hook:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Each forward with its counters (what `portfwd list` shows).
    #[serde(default)]
    pub forward_counters: Vec<ForwardEntry>,
    /// How full each map is.
    #[serde(default)]
    pub maps: Vec<MapFill>,
    /// The daemon's version (`portfwd --version`).
    #[serde(default)]
    pub version: String,
    /// The Prometheus endpoint, when enabled.
    #[serde(default)]
    pub metrics: Option<String>,
    /// The socket hooks that give processes on the host access to published ports.
    #[serde(default)]
    pub host_local: HostLocalStatus,
    /// The published ports the daemon keeps out of the kernel's ephemeral port choice
    /// (`net.ipv4.ip_local_reserved_ports` syntax, "" for none), or `None` when it cannot.
    #[serde(default)]
    pub reserved_ports: Option<String>,
    /// Following Docker (the config's `docker:` section); `None` when it is off.
    #[serde(default)]
    pub docker: Option<DockerStatus>,
    /// Forwards with several backends; `None` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<PoolsStatus>,
}

/// The forwards with several backends, as `portfwd status` sums them up (each backend is in
/// `forward_counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolsStatus {
    pub pools: usize,
    pub backends: usize,
    /// Backends whose health check fails.
    pub down: usize,
    /// Backends draining (weight 0, or removed and within their grace).
    pub draining: usize,
    /// Backends probed by the health checks.
    pub checked: usize,
    /// The listen sides refusing new flows: every backend down and `all_down: refuse`.
    pub refusing: Vec<String>,
}

/// The Docker follower, as `portfwd status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerStatus {
    /// The Engine API socket followed.
    pub socket: PathBuf,
    /// Whether the event stream is connected now.
    pub connected: bool,
    /// Since when (Unix seconds) it is connected, or disconnected.
    pub since: u64,
    /// The API version negotiated with dockerd, while connected.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Docker's own version, while connected.
    #[serde(default)]
    pub engine_version: Option<String>,
    /// The last connection error, while disconnected.
    #[serde(default)]
    pub error: Option<String>,
    /// Running containers with published ports.
    pub containers: usize,
    /// Forwards Docker's bindings make (served now).
    pub forwards: usize,
    /// Bindings not served by portfwd, and why: a collision with a forward of the config (the
    /// config wins), or `[::]:PORT` of a container without IPv6 (left to docker-proxy).
    #[serde(default)]
    pub not_served: Vec<DockerBinding>,
}

/// One of Docker's port bindings that portfwd does not serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerBinding {
    /// The container's name.
    pub container: String,
    /// `[HOST_IP:]PORT[-END]/PROTO`, as Docker publishes it.
    pub listen: String,
    /// Why portfwd leaves it.
    pub reason: String,
}

/// The fill level of one eBPF map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MapFill {
    /// The map's name in the object, e.g. `PF_FLOWS`.
    pub name: String,
    /// Entries in use (for arrays: slots in use).
    pub entries: u64,
    /// The map's capacity as the kernel reports it.
    pub max_entries: u64,
}

/// One flow table: `PF_FLOWS`/`PF_FLOWS6` hold new flows (what a flood fills), `PF_FLOWS_EST`/
/// `PF_FLOWS6_EST` the flows answered beyond a handshake. Counted from the datapath's inserts
/// per CPU, each CPU holding at most its share of the capacity (an LRU list per CPU), so
/// `entries` may be up to 3 per CPU more than the table holds after evictions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowTableStatus {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
    /// Flows the datapath inserted since the table was created (pinned: across restarts).
    pub inserted: u64,
    /// Flows the table's LRU evicted to make room for newer ones.
    pub evicted: u64,
}

/// Host-local access (the cgroup socket hooks).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostLocalStatus {
    /// Whether the socket hooks are attached.
    pub attached: bool,
    /// The cgroup v2 directory they are attached to.
    pub cgroup: Option<PathBuf>,
    /// Why they are not attached.
    pub error: Option<String>,
    /// Socket hook verdicts since load: verdict -> calls.
    pub verdicts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    /// `tc`, or `xdp+tc` when native XDP is in front of tc.
    pub attach: String,
    /// Whether published ports are reachable through it.
    pub exposed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictCount {
    pub reason: String,
    pub packets: u64,
}

/// Why a CLI call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the portfwd daemon is not running (no control socket at {0}; start it with `portfwd daemon`, or set {SOCKET_ENV})"
    )]
    NotRunning(PathBuf),
    #[error("permission denied on {}: {}", .0.display(), access_hint(.0))]
    PermissionDenied(PathBuf),

    #[error("talking to the daemon at {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon at {}: the daemon closed the connection without answering", path.display())]
    Closed { path: PathBuf },
    #[error("talking to the daemon at {}: malformed answer", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// How to get access to the control socket at `socket`: run as root, or join the group that
/// owns it (the daemon sets it from `socket_group`).
pub fn access_hint(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let group = std::fs::metadata(socket)
        .ok()
        .map(|m| m.gid())
        .filter(|gid| *gid != 0)
        .and_then(|gid| nix::unistd::Group::from_gid(gid.into()).ok().flatten())
        .map(|g| g.name);
    match group {
        Some(g) => format!(
            "run as root or add yourself to group '{g}' (socket_group in {}), then log in again",
            crate::config::DEFAULT_PATH
        ),
        None => format!(
            "run as root, or set socket_group in {} and add yourself to that group",
            crate::config::DEFAULT_PATH
        ),
    }
}

/// The socket path from `PORTFWD_SOCKET`, or the default.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Sends one request and waits for its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(socket.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket.to_owned()),
        _ => io(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| io(e.into()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    if reply.is_empty() {
        return Err(ClientError::Closed {
            path: socket.to_owned(),
        });
    }
    serde_json::from_str(&reply).map_err(|source| ClientError::Malformed {
        path: socket.to_owned(),
        source,
    })
}
