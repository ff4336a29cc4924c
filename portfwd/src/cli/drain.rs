//! `portfwd drain`
use std::path::Path;

use crate::{
    api::{Request, Response},
    publish::{Listen, Target},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[HOST_IP:]HOST_PORT[/tcp|/udp]` of a forward with several targets
    pub listen: String,
    /// `IP:PORT`: the target that takes no new flows (its weight becomes 0 in the config);
    /// its established flows go on until they end
    pub target: String,
    /// Let the target take new flows again (weight 1)
    #[arg(long)]
    pub undo: bool,
}

impl Args {
    pub fn request(&self) -> Result<Request, String> {
        let listen: Listen = self.listen.parse().map_err(|e| format!("{e}"))?;
        let target: Target = self.target.parse().map_err(|e| format!("{e}"))?;
        Ok(Request::Drain {
            listen: listen.to_string(),
            target: target.to_string(),
            undo: self.undo,
        })
    }
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    match super::call(socket, &args.request()?)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
