//! `portfwd add`
use std::path::Path;

use crate::{
    api::{Request, Response},
    spec::{Listen, Target},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[HOST_IP:]HOST_PORT[/tcp|/udp]`, e.g. `8080`, `5353/udp`, `192.0.2.1:8080`
    pub listen: String,
    /// `TARGET_IP:PORT`, e.g. `172.17.0.2:3000`
    pub to: String,
}

pub fn run(socket: &Path, args: Args) -> Result<(), String> {
    // Validate here too, so a typo is reported even when the daemon is not running.
    let listen: Listen = args.listen.parse().map_err(|e| format!("{e}"))?;
    let to: Target = args.to.parse().map_err(|e| format!("{e}"))?;
    let req = Request::Add {
        listen: listen.to_string(),
        to: to.to_string(),
    };
    match super::call(socket, &req)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        r => Err(super::unexpected(&r)),
    }
}
