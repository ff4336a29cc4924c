//! The command line: one module per subcommand.
mod add;
mod check;
mod del;
mod drain;
mod list;
mod output;
mod reload;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::{self, Request, Response};

/// Publish host ports to containers, translated in the kernel with eBPF.
#[derive(Debug, Parser)]
#[command(name = "portfwd", version, about, long_about = None)]
pub struct Cli {
    /// Control socket of the daemon [env: PORTFWD_SOCKET] [default: /run/portfwd/portfwd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the programs, apply the config and serve the control socket.
    Daemon {
        /// Config file.
        #[arg(long, value_name = "PATH", default_value = "/etc/portfwd/portfwd.yaml")]
        config: PathBuf,
        /// How to attach: auto (native XDP on hardware NICs, tc elsewhere), tc, or xdp (native
        /// XDP required on exposed interfaces). Overrides the config's `mode:`.
        #[arg(long, value_name = "MODE")]
        mode: Option<crate::config::AttachMode>,
        /// bpffs directory for the pinned programs, links and maps (mounted if needed).
        /// Overrides the config's `pin_dir:` (default /sys/fs/bpf/portfwd).
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// Flows each flow table holds (IPv4 and IPv6, new and established flows, and the
        /// pools' affinity tables), 1024 to 100000000. Overrides the config's `max_flows:`
        /// (default 131072 IPv4 and 65536 IPv6 flows per table). Read at start only.
        #[arg(long, value_name = "N", value_parser = crate::config::parse_max_flows)]
        max_flows: Option<u32>,
        /// Remove everything pinned under the pin directory (detaching the programs and freeing
        /// the maps a stopped or killed daemon left behind), then exit.
        #[arg(long)]
        cleanup: bool,
    },
    /// Publish a host port or range: `portfwd add [HOST_IP:]HOST_PORT[-END][/tcp|/udp]
    /// TARGET_IP:PORT[-END] [--allow CIDR]...`, or balance a port over several targets:
    /// `portfwd add 8080 172.17.0.2:3000 172.17.0.3:3000*2 [--health tcp|/PATH]`.
    Add(add::Args),
    /// Stop publishing a host port: `portfwd del [HOST_IP:]HOST_PORT[/PROTO]`; or remove one
    /// of its targets: `portfwd del 8080 172.17.0.3:3000`.
    Del(del::Args),
    /// Stop sending new flows to one target of a port (its flows go on):
    /// `portfwd drain 8080 172.17.0.3:3000`; `--undo` to take it back.
    Drain(drain::Args),
    /// The published ports and their counters.
    List(list::Args),
    /// Where the programs are attached, the host addresses, map fill levels, and every counter.
    Status(status::Args),
    /// Make the daemon re-read its config file and apply the difference, all or nothing.
    Reload(reload::Args),
    /// Diagnose forwards: is the target reachable, does the app listen (on which address), is the
    /// host port taken; exits 1 unless all are OK.
    Check(check::Args),
}

/// Why a client command did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// What went wrong, for stderr; the command exits 1.
    Message(String),
    /// The reader of stdout went away (`portfwd status | head -1`): the command stops quietly
    /// and exits 0, as `head` asked for no more.
    StdoutClosed,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

/// Runs a client subcommand.
pub fn run_client(socket: Option<PathBuf>, command: Command) -> Result<(), Failure> {
    let socket = api::socket_path(socket.as_deref());
    match command {
        Command::Daemon { .. } => unreachable!("the daemon is started by main"),
        Command::Add(a) => add::run(&socket, a),
        Command::Del(a) => del::run(&socket, a),
        Command::Drain(a) => drain::run(&socket, a),
        Command::List(a) => list::run(&socket, a),
        Command::Status(a) => status::run(&socket, a),
        Command::Reload(a) => reload::run(&socket, a),
        Command::Check(a) => check::run(&socket, a),
    }
}

/// Sends `req`, turning a daemon-side error into this command's error.
fn call(socket: &std::path::Path, req: &Request) -> Result<Response, String> {
    match api::call(socket, req) {
        Ok(Response::Error { message }) => Err(message),
        Ok(r) => Ok(r),
        // The client's edge: the error and its causes, on one line.
        Err(e) => Err(crate::error::chain(&e)),
    }
}

fn unexpected(r: &Response) -> Failure {
    Failure::Message(format!("unexpected answer from the daemon: {r:?}"))
}

#[cfg(test)]
mod tests;
