//! `portfwd list`
use std::path::Path;

use crate::api::{ForwardEntry, Request, Response};

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
    }
    out
}

/// The ALLOW column: the allowed source prefixes, or `any`.
fn allow(f: &ForwardEntry) -> String {
    if f.allow.is_empty() {
        "any".to_owned()
    } else {
        f.allow.join(",")
    }
}
