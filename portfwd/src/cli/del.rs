//! `portfwd del`
use std::path::Path;

use crate::{
    api::{Request, Response},
    publish::Listen,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[HOST_IP:]HOST_PORT[-END][/tcp|/udp]` as it was published (a range is removed whole)
    pub listen: String,
    /// Withdraw a CNI attachment's forwards (all of them) whose runtime did not: give the
    /// ORIGIN that `portfwd list` shows, e.g. `--owner cni:podman/0123456789ab`. Only for a
    /// runtime that lost its DEL; the runtime's own DEL is the normal way.
    #[arg(long, value_name = "ORIGIN")]
    pub owner: Option<String>,
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    let listen: Listen = args.listen.parse().map_err(|e| format!("{e}"))?;
    let req = Request::Del {
        listen: listen.to_string(),
        owner: args.owner,
    };
    match super::call(socket, &req)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
