//! `portfwd add`
use std::path::Path;

use crate::{
    api::{self, AddTargets, HealthRequest, Request, Response},
    publish::{AllowPrefix, AnyForward, Listen},
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
    /// restarts on another address (needs the config's `docker:` section). Several
    /// `IP:PORT[*WEIGHT]` (e.g. `172.17.0.2:3000 172.17.0.3:3000*2`) balance new flows over
    /// them, by weight (0-1000, default 1; 0: drained); single ports only.
    #[arg(required = true, num_args = 1.., value_name = "TARGET")]
    pub to: Vec<String>,
    /// Accept clients from this source prefix only (`10.0.0.0/8`, `192.0.2.7`,
    /// `2001:db8::/32`); repeat for more (prefixes of the other family never match). Without it every source may connect. Other sources are dropped and counted
    /// (`drop_source_not_allowed` in `portfwd status`).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Check each target's health: `tcp` (a TCP connect) or an HTTP path (`/healthz`: a GET
    /// expecting 2xx or 3xx). A target that fails gets no new flows.
    #[arg(long, value_name = "tcp|/PATH")]
    pub health: Option<String>,
    /// Time between two probes of a target (default 1s; needs --health).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// A probe not answered by then failed (default 500ms; needs --health).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Successes in a row that bring a target back (default 2; needs --health).
    #[arg(long, value_name = "N")]
    pub rise: Option<u32>,
    /// Failures in a row that take a target out (default 2; needs --health).
    #[arg(long, value_name = "N")]
    pub fall: Option<u32>,
    /// When every target is down: `serve` (hash over all of them anyway, the default) or
    /// `refuse` (new flows are refused).
    #[arg(long, value_name = "serve|refuse")]
    pub all_down: Option<String>,
    /// How long a removed target keeps its established TCP flows (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
}

impl Args {
    /// The health check the flags ask for; timing flags without `--health` are refused.
    fn health(&self) -> Result<Option<HealthRequest>, String> {
        let timing = [
            ("--interval", self.interval.is_some()),
            ("--timeout", self.timeout.is_some()),
            ("--rise", self.rise.is_some()),
            ("--fall", self.fall.is_some()),
        ];
        let Some(check) = &self.health else {
            return match timing.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(format!(
                    "{flag} sets the health check's timing: add --health tcp (or --health /PATH)"
                )),
                None => Ok(None),
            };
        };
        let http = match check.as_str() {
            "tcp" => None,
            path if path.starts_with('/') => Some(path.to_owned()),
            other => {
                return Err(format!(
                    "--health {}: expected tcp or an HTTP path such as /healthz",
                    crate::publish::printable(other)
                ));
            }
        };
        Ok(Some(HealthRequest {
            http,
            interval: self.interval.clone(),
            timeout: self.timeout.clone(),
            rise: self.rise,
            fall: self.fall,
        }))
    }

    /// The request, checked here too so that a typo is reported even when the daemon is not
    /// running.
    pub fn request(&self) -> Result<Request, String> {
        let listen: Listen = self.listen.parse().map_err(|e| format!("{e}"))?;
        let allow = self
            .allow
            .iter()
            .map(|p| {
                p.parse::<AllowPrefix>()
                    .map_err(|e| format!("--allow: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let health = self.health()?;
        let options = api::pool_options(
            health.as_ref(),
            self.all_down.as_deref(),
            self.grace.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let (listen, to, allow) =
            match AnyForward::new(listen, &self.to, allow, options).map_err(|e| e.to_string())? {
                AnyForward::Addr(fwd) => {
                    let to = match &fwd.pool {
                        None => vec![fwd.to.to_string()],
                        Some(pool) => pool.targets.iter().map(|t| t.to_string()).collect(),
                    };
                    (fwd.listen.to_string(), to, fwd.allow)
                }
                AnyForward::Named(n) => (n.listen.to_string(), vec![n.to.to_string()], n.allow),
            };
        Ok(Request::Add {
            listen,
            to: AddTargets::of(to),
            allow: allow.iter().map(|p| p.to_string()).collect(),
            health,
            all_down: self.all_down.clone(),
            grace: self.grace.clone(),
        })
    }
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    let req = args.request()?;
    match super::call(socket, &req)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
