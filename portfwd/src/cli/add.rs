//! `portfwd add`
use std::path::Path;

use crate::{
    api::{Request, Response},
    publish::{AllowPrefix, AnyTarget, Forward, Listen, NamedForward},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[HOST_IP:]HOST_PORT[-END][/tcp|/udp]`, e.g. `8080`, `5353/udp`, `192.0.2.1:8080`,
    /// `8000-8010`, `[::]:8080`, `[2001:db8::1]:8080` (IPv6 in brackets; a bare port takes
    /// the target's family)
    pub listen: String,
    /// `TARGET_IP:PORT[-END]`, e.g. `172.17.0.2:3000`, `172.17.0.2:9000-9010`,
    /// `[fd00::2]:3000` (a range maps port by port and must be as long as the host range; the
    /// target is of the host address's family: IPv4 and IPv6 are not translated into each other),
    /// or `CONTAINER:PORT[-END]`, e.g. `web:3000`: a Docker container by name, followed when it
    /// restarts on another address (needs the config's `docker:` section)
    pub to: String,
    /// Accept clients from this source prefix only (`10.0.0.0/8`, `192.0.2.7`,
    /// `2001:db8::/32`); repeat for more (prefixes of the other family never match). Without it every source may connect. Other sources are dropped and counted
    /// (`drop_source_not_allowed` in `portfwd status`).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    // Validate here too, so a typo is reported even when the daemon is not running.
    let listen: Listen = args.listen.parse().map_err(|e| format!("{e}"))?;
    let allow = args
        .allow
        .iter()
        .map(|p| {
            p.parse::<AllowPrefix>()
                .map_err(|e| format!("--allow: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (listen, to, allow) = match args.to.parse::<AnyTarget>().map_err(|e| e.to_string())? {
        AnyTarget::Addr(to) => {
            let fwd = Forward::new(listen, to)
                .and_then(|f| f.with_allow(allow))
                .map_err(|e| e.to_string())?;
            (fwd.listen.to_string(), fwd.to.to_string(), fwd.allow)
        }
        AnyTarget::Container(to) => {
            let n = NamedForward::new(listen, to, allow).map_err(|e| e.to_string())?;
            (n.listen.to_string(), n.to.to_string(), n.allow)
        }
    };
    let req = Request::Add {
        listen,
        to,
        allow: allow.iter().map(|p| p.to_string()).collect(),
    };
    match super::call(socket, &req)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
