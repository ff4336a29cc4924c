//! `portfwd list`
use std::path::Path;

use crate::api::{BackendStatus, ForwardEntry, Request, Response};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    let forwards = match super::call(socket, &Request::List)? {
        Response::Forwards { forwards } => forwards,
        r => return Err(super::unexpected(&r)),
    };
    if args.json {
        super::output::json(&forwards)
    } else {
        super::output::print(&table(&forwards))
    }
}

/// The human table. The address columns are as wide as their longest entry (an IPv6 range is
/// longer than an IPv4 port), so that the counters stay under their headings.
pub fn table(forwards: &[ForwardEntry]) -> String {
    if forwards.is_empty() {
        return "no ports published (add one with `portfwd add HOST_PORT TARGET_IP:PORT`)\n".into();
    }
    let width =
        |col: fn(&ForwardEntry) -> &str| forwards.iter().map(|f| col(f).len()).fold(22, usize::max);
    let (l, t) = (width(|f| &f.listen), width(|f| &f.to));
    let a = forwards
        .iter()
        .map(|f| allow(f).len())
        .fold("ALLOW".len(), usize::max);
    let mut out = format!(
        "{:<l$} {:<t$} {:>10} {:>12} {:>10} {:>12} {:>8}  {:<a$}  {}\n",
        "LISTEN", "TO", "PKTS IN", "BYTES IN", "PKTS OUT", "BYTES OUT", "FLOWS", "ALLOW", "ORIGIN"
    );
    for f in forwards {
        let mut origin = f.origin.clone();
        if let Some(why) = &f.inactive {
            origin.push_str(&format!(" (inactive: {why})"));
        }
        out.push_str(&format!(
            "{:<l$} {:<t$} {:>10} {:>12} {:>10} {:>12} {:>8}  {:<a$}  {}\n",
            f.listen,
            f.to,
            f.packets_to_target,
            f.bytes_to_target,
            f.packets_to_client,
            f.bytes_to_client,
            f.new_flows,
            allow(f),
            origin,
        ));
        for b in &f.backends {
            out.push_str(&backend_line(b));
        }
    }
    out
}

/// One backend of a pool, indented under its forward:
/// `  -> 172.17.0.3:3000  weight 2  up  pkts 10 bytes 1200 new 3 live 1`.
fn backend_line(b: &BackendStatus) -> String {
    format!(
        "  -> {:<22} weight {:<4} {:<9} pkts {} bytes {} new flows {} live flows {}\n",
        b.target,
        b.weight,
        b.state.as_str(),
        b.packets,
        b.bytes,
        b.new_flows,
        b.live_flows
    )
}

/// The ALLOW column: the allowed source prefixes, or `any`.
fn allow(f: &ForwardEntry) -> String {
    if f.allow.is_empty() {
        "any".to_owned()
    } else {
        f.allow.join(",")
    }
}
