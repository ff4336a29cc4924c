//! A test's world in one expression: a lab, its containers, servers in them, and the daemon with
//! a config of forwards.
//!
//! ```ignore
//! let s = Scenario::new("tcp")
//!     .containers(1)
//!     .tcp_server("c1", 3000)
//!     .forward("8080", "c1:3000")
//!     .daemon();
//! let reply = s.client_tcp(host_port(8080), "hello").unwrap();
//! ```
//!
//! Addresses in forwards and server binds may name a container: `c1:3000` is its IPv4 address,
//! `[c1]:3000` its IPv6 one; any other address is taken as written.

use std::{net::SocketAddr, process::Output};

use portfwd_lab::{self as lab, Container, Lab};
use serde_json::Value;

use super::{Daemon, T, assertions, e2e_mode, servers::Servers};

/// A running scenario. Fields drop in order: the daemon, the servers, then the lab.
pub struct Scenario {
    pub d: Daemon,
    pub servers: Servers,
    pub lab: Lab,
    /// The config the daemon was started with (as built, before an XDP pass adds `interfaces:`).
    pub config: String,
}

/// A scenario being built: [`Scenario::new`], then containers, servers and config, then
/// [`Setup::daemon`] (or [`Setup::run_to_exit`]).
#[must_use]
pub struct Setup {
    lab: Lab,
    servers: Servers,
    /// Top-level config lines, before `forwards:`.
    top: Vec<String>,
    /// The forwards, as YAML items.
    forwards: Vec<String>,
    /// In XDP mode, name the containers' veths among the exposed interfaces.
    expose_containers: bool,
    /// `--mode`; when `None`, `PORTFWD_E2E_MODE` decides.
    mode: Option<String>,
    /// What runs the daemon (e.g. `setpriv ...`), empty for nothing.
    wrapper: Vec<String>,
}

/// One forward of a config, as YAML under `forwards:`.
pub fn forward_yaml(listen: &str, to: &str) -> String {
    format!("  - listen: \"{listen}\"\n    to: \"{to}\"\n")
}

impl Scenario {
    /// A new lab tagged `tag` (see [`Lab::new`]), nothing in it yet.
    #[expect(
        clippy::new_ret_no_self,
        reason = "a scenario is built: Scenario::new(..)...daemon() reads as what it makes"
    )]
    pub fn new(tag: &str) -> Setup {
        Setup {
            lab: Lab::new(tag).unwrap(),
            servers: Servers::default(),
            top: Vec::new(),
            forwards: Vec::new(),
            expose_containers: false,
            mode: None,
            wrapper: Vec::new(),
        }
    }

    /// The container named `name`.
    pub fn c(&self, name: &str) -> Container {
        container(&self.lab, name).clone()
    }

    /// Runs the CLI against the daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.d.cli(&self.lab, args)
    }

    /// `portfwd status --json`, parsed.
    pub fn status_json(&self) -> Value {
        self.d.status_json(&self.lab)
    }

    /// `portfwd list --json`, parsed.
    pub fn list_json(&self) -> Vec<Value> {
        self.d.list_json(&self.lab)
    }

    /// `portfwd list --json`'s listen column.
    pub fn listens(&self) -> Vec<String> {
        self.list_json()
            .iter()
            .map(|f| f["listen"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The datapath's verdict counter named `reason` (all hooks).
    pub fn verdict(&self, reason: &str) -> u64 {
        assertions::verdict(&self.status_json(), reason)
    }

    /// One request line over TCP from the client to `to`, within [`T`]: the server's reply.
    pub fn client_tcp(&self, to: SocketAddr, line: &str) -> anyhow::Result<String> {
        lab::tcp_request(self.lab.client(), to, line, T)
    }

    /// One datagram from the client to `to`, within [`T`]: the reply, which must come from `to`.
    pub fn client_udp(&self, to: SocketAddr, line: &str) -> anyhow::Result<String> {
        lab::udp_request(self.lab.client(), to, line, T)
    }
}

fn container<'a>(lab: &'a Lab, name: &str) -> &'a Container {
    lab.containers()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in the scenario"))
}

/// `c1:3000` -> the IPv4 address of container c1, `[c1]:3000` -> its IPv6 address; anything
/// else as it is.
fn resolve(lab: &Lab, addr: &str) -> String {
    let named = |name: &str| lab.containers().iter().find(|c| c.name == name);
    if let Some((name, rest)) = addr
        .strip_prefix('[')
        .and_then(|a| a.split_once(']'))
        .filter(|(name, _)| named(name).is_some())
    {
        return format!("[{}]{rest}", named(name).unwrap().addr6);
    }
    match addr.split_once(':') {
        Some((name, rest)) if named(name).is_some() => {
            format!("{}:{rest}", named(name).unwrap().addr)
        }
        _ => addr.to_owned(),
    }
}

impl Setup {
    /// Adds `n` containers, named `c1`, `c2`, … (continuing after those already there).
    pub fn containers(mut self, n: usize) -> Setup {
        for _ in 0..n {
            let name = format!("c{}", self.lab.containers().len() + 1);
            self.lab.add_container(&name).unwrap();
        }
        self
    }

    /// Adds a container named `name` (see [`Lab::add_container`]).
    pub fn container(mut self, name: &str) -> Setup {
        self.lab.add_container(name).unwrap();
        self
    }

    /// A TCP server in container `c` on its IPv4 address, port `port`, answering as `c:port`.
    pub fn tcp_server(self, c: &str, port: u16) -> Setup {
        let tag = format!("{c}:{port}");
        self.tcp_server_at(c, &tag, &tag)
    }

    /// A UDP server in container `c` on its IPv4 address, port `port`, answering as `c:port`.
    pub fn udp_server(self, c: &str, port: u16) -> Setup {
        let tag = format!("{c}:{port}");
        self.udp_server_at(c, &tag, &tag)
    }

    /// A TCP server in container `c` on its IPv6 address, port `port`, answering as `c:port`.
    pub fn tcp_server6(self, c: &str, port: u16) -> Setup {
        self.tcp_server_at(c, &format!("[{c}]:{port}"), &format!("{c}:{port}"))
    }

    /// A UDP server in container `c` on its IPv6 address, port `port`, answering as `c:port`.
    pub fn udp_server6(self, c: &str, port: u16) -> Setup {
        self.udp_server_at(c, &format!("[{c}]:{port}"), &format!("{c}:{port}"))
    }

    /// A TCP server in container `c` bound to `bind` (e.g. `0.0.0.0:3000`, `[::1]:3000`,
    /// `c1:3000`), answering as `tag`.
    pub fn tcp_server_at(mut self, c: &str, bind: &str, tag: &str) -> Setup {
        let bind = self.bind(bind);
        let server = lab::tcp_server(&container(&self.lab, c).ns, bind, tag).unwrap();
        self.servers.add_tcp(server);
        self
    }

    /// A UDP server in container `c` bound to `bind`, answering as `tag`.
    pub fn udp_server_at(mut self, c: &str, bind: &str, tag: &str) -> Setup {
        let bind = self.bind(bind);
        let server = lab::udp_server(&container(&self.lab, c).ns, bind, tag).unwrap();
        self.servers.add_udp(server);
        self
    }

    fn bind(&self, bind: &str) -> SocketAddr {
        let resolved = resolve(&self.lab, bind);
        resolved
            .parse()
            .unwrap_or_else(|e| panic!("server address {bind} ({resolved}): {e}"))
    }

    /// A top-level line of the config, before `forwards:` (e.g. `metrics: "127.0.0.1:9369"`,
    /// or a comment).
    pub fn yaml(mut self, line: &str) -> Setup {
        self.top.push(line.to_owned());
        self
    }

    /// A forward from `listen` to `to` (which may name a container, `c1:3000`).
    pub fn forward(mut self, listen: &str, to: &str) -> Setup {
        let to = resolve(&self.lab, to);
        self.forwards.push(forward_yaml(listen, &to));
        self
    }

    /// A forward of several targets (each may name a container, `c1:3000`, and carry a
    /// weight, `c2:3000*2`), with `extra` lines of the forward (`health: {...}`, `grace: "2s"`);
    /// see [`super::pool::pool_yaml`].
    pub fn pool(mut self, listen: &str, targets: &[&str], extra: &[&str]) -> Setup {
        let targets: Vec<String> = targets.iter().map(|t| resolve(&self.lab, t)).collect();
        self.forwards
            .push(super::pool::pool_yaml(listen, &targets, extra));
        self
    }

    /// A forward with a source allowlist.
    pub fn forward_allow(mut self, listen: &str, to: &str, allow: &[&str]) -> Setup {
        let to = resolve(&self.lab, to);
        let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        self.forwards.push(format!(
            "{}    allow: [{}]\n",
            forward_yaml(listen, &to),
            allow.join(", ")
        ));
        self
    }

    /// In XDP mode (`PORTFWD_E2E_MODE=xdp`), names the exposed interfaces in the config: the LAN
    /// side and the containers' bridge ports, which hairpin traffic enters by (a bridge has no
    /// native XDP).
    pub fn expose_containers_in_xdp(mut self) -> Setup {
        self.expose_containers = true;
        self
    }

    /// Runs the daemon with this `--mode`, whatever `PORTFWD_E2E_MODE` says.
    pub fn mode(mut self, mode: &str) -> Setup {
        self.mode = Some(mode.to_owned());
        self
    }

    /// Runs the daemon through `wrapper` (e.g. `setpriv ...`, `env VAR=...`).
    pub fn wrapper(mut self, wrapper: &[String]) -> Setup {
        self.wrapper = wrapper.to_vec();
        self
    }

    /// The lab, for what the builder does not say (routes, addresses, firewall rules) before the
    /// daemon starts.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The config as built.
    pub fn config_text(&self) -> String {
        let mut text = String::new();
        if self.expose_containers && e2e_mode().as_deref() == Some("xdp") {
            let mut ifaces = vec![Lab::ETH.to_owned()];
            ifaces.extend(self.lab.containers().iter().map(|c| c.host_veth.clone()));
            text.push_str(&format!("interfaces: [{}]\n", ifaces.join(", ")));
        }
        for line in &self.top {
            text.push_str(line);
            text.push('\n');
        }
        if self.forwards.is_empty() {
            text.push_str("forwards: []\n");
        } else {
            text.push_str("forwards:\n");
            text.extend(self.forwards.iter().map(String::as_str));
        }
        text
    }

    /// Starts the daemon with the config, in the mode `PORTFWD_E2E_MODE` says unless
    /// [`Setup::mode`] said one, and waits until it answers (see [`Daemon::start`]).
    pub fn daemon(mut self) -> Scenario {
        let config = self.config_text();
        let d = match &self.mode {
            Some(mode) => Daemon::start_wrapped(&mut self.lab, &config, Some(mode), &self.wrapper),
            None => Daemon::start_in_e2e_mode(&mut self.lab, &config, &self.wrapper),
        };
        Scenario {
            d,
            servers: self.servers,
            lab: self.lab,
            config,
        }
    }

    /// Runs the daemon with the config and `extra_args`, expecting it to exit by itself (see
    /// [`Daemon::run_to_exit`]).
    pub fn run_to_exit(mut self, extra_args: &[&str]) -> Output {
        let config = self.config_text();
        Daemon::run_to_exit(&mut self.lab, &config, extra_args)
    }
}
