//! The config file (`/etc/portfwd/portfwd.yaml`): the data model, and its load, check and save.
//!
//! ```yaml
//! # comments are allowed anywhere
//! interfaces: []              # empty or absent: every non-loopback interface that is up
//! mode: auto                  # auto, tc or xdp (any case): see AttachMode; absent: auto
//! pin_dir: /sys/fs/bpf/portfwd  # absolute; where programs, links and maps are pinned
//! max_flows: 1_000_000        # flows per flow table, 1024-100M; absent: 131072 IPv4, 65536 IPv6
//! metrics: "127.0.0.1:9369"   # Prometheus endpoint, IP:PORT or [IPv6]:PORT; absent/null: off
//! socket_group: portfwd       # may use the control socket besides root; absent/null: root only
//! forwards:
//!   - listen: "8080"          # [HOST_IP:]PORT[-END][/PROTO], see crate::publish
//!     protocol: tcp           # optional; must agree with a /PROTO suffix
//!     to: "172.17.0.2:3000"   # IP:PORT[-END]; a range is as long as the listen range
//!     allow: ["10.0.0.0/8"]   # optional; source prefixes allowed; absent: every source
//!   - listen: "8081"
//!     to: ["172.17.0.2:3000", "172.17.0.3:3000*2"]   # several IP:PORT[*WEIGHT], balanced
//!     health: { interval: "1s", timeout: "500ms", fall: 2, rise: 2, http: "/healthz" }
//!     all_down: serve         # or refuse; needs several targets or a health check
//!     grace: "30s"            # likewise
//! ```
//!
//! Every key is optional: the empty file is [`Config::default`]. `mode` and `pin_dir` default
//! to `auto` and [`DEFAULT_PIN_DIR`]. `metrics` takes an IP address, never a host name, and a
//! port in 1-65535. `socket_group` is only checked to look like a group name (see
//! [`check_socket_group`]), not looked up: the group need not exist yet.
//!
//! Every error in a file names the file, the line and column of the offending node, and its
//! path in the document ([`ConfigError::Invalid`]):
//!
//! ```text
//! /etc/portfwd/portfwd.yaml:7:9: forwards[1].to: '172.17.0.2' needs a port: IP:PORT
//! ```
//!
//! [`save`] keeps the operators' comments: it edits the forwards list in the file rather
//! than writing the config anew, and replaces the file atomically.
//!
//! # Files
//!
//! From the bottom up (each file uses only those above it):
//!
//! - `model`: the data model ([`Config`], [`AttachMode`], the errors) and the checks of
//!   single values that a config built in memory also passes ([`Config::validate`]);
//! - `schema`: reading the YAML text and checking it against the schema, each error located
//!   ([`parse_str`]);
//! - `edit`: the text a save writes, the existing file edited so that its comments stay
//!   ([`render`]);
//! - `file`: the file itself: [`load`], and [`save`] with its atomic replace;
//! - `tests`: helpers the files' tests share;
//! - this file: the module list and the public names.

mod edit;
mod file;
mod model;
mod schema;
#[cfg(test)]
mod tests;

pub use edit::render;
pub use file::{load, save};
pub use model::{
    AttachMode, Config, ConfigError, ConflictError, DEFAULT_DOCKER_SOCKET, DEFAULT_PATH,
    DEFAULT_PIN_DIR, DockerConfig, MAX_FLOWS_RANGE, MAX_GROUP_NAME_LEN, MAX_INTERFACE_NAME_LEN,
    ParseAttachModeError, ValidationError, check_interface_name, check_max_flows, check_pin_dir,
    check_socket_group, parse_max_flows, parse_metrics,
};
pub use schema::parse_str;
