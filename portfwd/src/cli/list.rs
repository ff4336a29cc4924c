//! `portfwd list`
use std::path::Path;

use crate::api::{ForwardEntry, Request, Response};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, args: Args) -> Result<(), String> {
    let forwards = match super::call(socket, &Request::List)? {
        Response::Forwards { forwards } => forwards,
        r => return Err(super::unexpected(&r)),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&forwards).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", table(&forwards));
    }
    Ok(())
}

/// The human table.
pub fn table(forwards: &[ForwardEntry]) -> String {
    if forwards.is_empty() {
        return "no ports published (add one with `portfwd add HOST_PORT TARGET_IP:PORT`)\n".into();
    }
    let mut out = format!(
        "{:<22} {:<22} {:>10} {:>12} {:>10} {:>12} {:>8}  {}\n",
        "LISTEN", "TO", "PKTS IN", "BYTES IN", "PKTS OUT", "BYTES OUT", "FLOWS", "ALLOW"
    );
    for f in forwards {
        out.push_str(&format!(
            "{:<22} {:<22} {:>10} {:>12} {:>10} {:>12} {:>8}  {}\n",
            f.listen,
            f.to,
            f.packets_to_target,
            f.bytes_to_target,
            f.packets_to_client,
            f.bytes_to_client,
            f.new_flows,
            if f.allow.is_empty() {
                "any".to_owned()
            } else {
                f.allow.join(",")
            }
        ));
    }
    out
}
