//! `portfwd status`
use std::path::Path;

use crate::api::{Request, Response};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, args: Args) -> Result<(), String> {
    let status = match super::call(socket, &Request::Status)? {
        Response::Status(s) => s,
        r => return Err(super::unexpected(&r)),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("version:    {}", status.version);
    println!("config:     {}", status.config.display());
    println!(
        "metrics:    {}",
        status
            .metrics
            .as_deref()
            .map_or("off".to_owned(), |a| format!("http://{a}/metrics"))
    );
    println!("forwards:   {}", status.forwards);
    // Published ports the kernel will not pick as a local port for an outgoing connection.
    println!(
        "reserved:   {}",
        match status.reserved_ports.as_deref() {
            None => "not reserved (see the daemon's log)",
            Some("") => "none",
            Some(ports) => ports,
        }
    );
    println!("live flows: {}", status.flows);
    println!("host addresses: {}", status.host_addresses.join(", "));
    println!("interfaces:");
    for i in &status.interfaces {
        println!(
            "  {:<16} ifindex {:<5} {:<4} {}",
            i.name,
            i.ifindex,
            i.attach,
            if i.exposed { "exposed" } else { "replies only" }
        );
    }
    let hl = &status.host_local;
    match (&hl.cgroup, &hl.error) {
        (Some(cg), _) if hl.attached => {
            println!("host-local: socket hooks on {}", cg.display())
        }
        (_, Some(e)) => println!("host-local: off ({e})"),
        _ => println!("host-local: off"),
    }
    println!("verdicts:{:>26}{:>13}", "tc", "xdp");
    let by = |hook: &str, reason: &str| {
        status
            .verdicts_by_hook
            .get(hook)
            .and_then(|m| m.get(reason))
            .copied()
            .unwrap_or(0)
    };
    for v in &status.verdicts {
        println!(
            "  {:<22} {:>12} {:>12}",
            v.reason,
            by("tc", &v.reason),
            by("xdp", &v.reason)
        );
    }
    println!("maps:{:>31}{:>13}{:>8}", "entries", "capacity", "fill");
    for m in &status.maps {
        let pct = if m.max_entries == 0 {
            0.0
        } else {
            100.0 * m.entries as f64 / m.max_entries as f64
        };
        println!(
            "  {:<22} {:>12} {:>12} {:>6.1}%",
            m.name, m.entries, m.max_entries, pct
        );
    }
    if hl.attached {
        println!("socket hook verdicts:");
        for (name, n) in &hl.verdicts {
            println!("  {name:<22} {n:>12}");
        }
    }
    if !status.forward_counters.is_empty() {
        println!("forwards:");
        for line in super::list::table(&status.forward_counters).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}
