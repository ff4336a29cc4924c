//! `portfwd del`
use std::path::Path;

use crate::{
    api::{Request, Response},
    publish::{Listen, Target},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[HOST_IP:]HOST_PORT[-END][/tcp|/udp]` as it was published (a range is removed whole)
    pub listen: String,
    /// `IP:PORT`: remove only this target of the forward's targets (its established TCP flows
    /// go on for the forward's grace period); the last one is not removed.
    pub target: Option<String>,
    /// Withdraw a CNI attachment's forwards (all of them) whose runtime did not: give the
    /// ORIGIN that `portfwd list` shows, e.g. `--owner cni:podman/0123456789ab`. Only for a
    /// runtime that lost its DEL; the runtime's own DEL is the normal way.
    #[arg(long, value_name = "ORIGIN", conflicts_with = "target")]
    pub owner: Option<String>,
}

impl Args {
    pub fn request(&self) -> Result<Request, String> {
        let listen: Listen = self.listen.parse().map_err(|e| format!("{e}"))?;
        let target = self
            .target
            .as_deref()
            .map(|t| t.parse::<Target>().map(|t| t.to_string()))
            .transpose()
            .map_err(|e| format!("{e}"))?;
        Ok(Request::Del {
            listen: listen.to_string(),
            owner: self.owner.clone(),
            target,
        })
    }
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    match super::call(socket, &args.request()?)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
