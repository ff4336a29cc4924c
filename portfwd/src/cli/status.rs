//! `portfwd status`
use std::{
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use crate::api::{Request, Response, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    let status = match super::call(socket, &Request::Status)? {
        Response::Status(s) => s,
        r => return Err(super::unexpected(&r)),
    };
    if args.json {
        super::output::json(&status)
    } else {
        super::output::print(&text(&status))
    }
}

/// Narrowest name column of the counter and map tables.
const MIN_NAME_WIDTH: usize = 22;
/// Width of a number column.
const NUMBER_WIDTH: usize = 12;

/// The human form. Verdict, socket hook verdict, map and flow table names share one column, as wide as the
/// longest of them (the datapath gains counters over time), so that every number stays under its
/// heading.
/// `pools: 2 forwards with several backends, 5 backends (1 down, 1 draining), 4 checked;
/// refusing new flows: 8081/tcp`.
fn pools_line(p: &crate::api::PoolsStatus) -> String {
    let mut out = format!(
        "pools:      {} forward{} with several backends, {} backends ({} down, {} draining), {} health-checked",
        p.pools,
        if p.pools == 1 { "" } else { "s" },
        p.backends,
        p.down,
        p.draining,
        p.checked
    );
    if !p.refusing.is_empty() {
        out.push_str(&format!(
            "; every backend down, refusing new flows: {}",
            p.refusing.join(", ")
        ));
    }
    out
}

/// `docker: followed on SOCKET (API 1.41, Docker 20.10.24), connected since ..., 2
/// containers, 3 forwards`, or why it is not connected.
fn docker_line(d: &crate::api::DockerStatus) -> String {
    let since = format_unix(d.since);
    let state = if d.connected {
        format!(
            "connected since {since} (API {}, Docker {})",
            d.api_version.as_deref().unwrap_or("?"),
            d.engine_version.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "NOT connected since {since}: {}; Docker's forwards kept as last seen",
            d.error.as_deref().unwrap_or("unknown error")
        )
    };
    format!(
        "docker:     {} on {}, {} containers publishing, {} forwards",
        state,
        d.socket.display(),
        d.containers,
        d.forwards
    )
}

/// Unix seconds as RFC 3339 (`2026-12-03T15:30:22Z`).
fn format_unix(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn text(status: &Status) -> String {
    let hl = &status.host_local;
    let w = status
        .verdicts
        .iter()
        .map(|v| v.reason.len())
        .chain(status.maps.iter().map(|m| m.name.len()))
        .chain(status.flow_tables.iter().map(|t| t.name.len()))
        .chain(hl.verdicts.keys().map(String::len))
        .fold(MIN_NAME_WIDTH, usize::max);
    let n = NUMBER_WIDTH;
    // A heading takes the place of an indented name: two spaces and the name column.
    let h = w + 2;
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("version:    {}", status.version));
    line(format!("config:     {}", status.config.display()));
    line(format!(
        "metrics:    {}",
        status
            .metrics
            .as_deref()
            .map_or("off".to_owned(), |a| format!("http://{a}/metrics"))
    ));
    line(format!("forwards:   {}", status.forwards));
    if let Some(p) = &status.pools {
        line(pools_line(p));
    }
    if let Some(d) = &status.docker {
        line(docker_line(d));
        for b in &d.not_served {
            line(format!(
                "            not served: {} of {}: {}",
                b.listen, b.container, b.reason
            ));
        }
    }
    // Published ports the kernel will not pick as a local port for an outgoing connection.
    line(format!(
        "reserved:   {}",
        match status.reserved_ports.as_deref() {
            None => "not reserved (see the daemon's log)",
            Some("") => "none",
            Some(ports) => ports,
        }
    ));
    // Derived from the datapath's inserts per CPU, not a walk of the tables (see the table
    // "flow tables:" below and README "How it works").
    let entries = |est: bool| -> u64 {
        let est_table = |name: &str| name.ends_with("_EST");
        status
            .flow_tables
            .iter()
            .filter(|t| est_table(&t.name) == est)
            .map(|t| t.entries)
            .sum()
    };
    line(format!(
        "live flows: {} ({} new, {} established)",
        status.flows,
        entries(false),
        entries(true)
    ));
    line(format!(
        "host addresses: {}",
        status.host_addresses.join(", ")
    ));
    line("interfaces:".to_owned());
    for i in &status.interfaces {
        line(format!(
            "  {:<16} ifindex {:<5} {:<4} {}",
            i.name,
            i.ifindex,
            i.attach,
            if i.exposed { "exposed" } else { "replies only" }
        ));
    }
    line(match (&hl.cgroup, &hl.error) {
        (Some(cg), _) if hl.attached => format!("host-local: socket hooks on {}", cg.display()),
        (_, Some(e)) => format!("host-local: off ({e})"),
        _ => "host-local: off".to_owned(),
    });
    line(format!("{:<h$} {:>n$} {:>n$}", "verdicts:", "tc", "xdp"));
    let by = |hook: &str, reason: &str| {
        status
            .verdicts_by_hook
            .get(hook)
            .and_then(|m| m.get(reason))
            .copied()
            .unwrap_or(0)
    };
    for v in &status.verdicts {
        line(format!(
            "  {:<w$} {:>n$} {:>n$}",
            v.reason,
            by("tc", &v.reason),
            by("xdp", &v.reason)
        ));
    }
    line(format!(
        "{:<h$} {:>n$} {:>n$} {:>7}",
        "maps:", "entries", "capacity", "fill"
    ));
    for m in &status.maps {
        let pct = if m.max_entries == 0 {
            0.0
        } else {
            100.0 * m.entries as f64 / m.max_entries as f64
        };
        line(format!(
            "  {:<w$} {:>n$} {:>n$} {:>6.1}%",
            m.name, m.entries, m.max_entries, pct
        ));
    }
    line(format!(
        "{:<h$} {:>n$} {:>n$} {:>n$} {:>n$}",
        "flow tables:", "entries", "capacity", "inserted", "evicted"
    ));
    for t in &status.flow_tables {
        line(format!(
            "  {:<w$} {:>n$} {:>n$} {:>n$} {:>n$}",
            t.name, t.entries, t.max_entries, t.inserted, t.evicted
        ));
    }
    if hl.attached {
        line(format!("{:<h$} {:>n$}", "socket hook verdicts:", "calls"));
        for (name, calls) in &hl.verdicts {
            line(format!("  {name:<w$} {calls:>n$}"));
        }
    }
    if !status.forward_counters.is_empty() {
        line("forwards:".to_owned());
        for l in super::list::table(&status.forward_counters).lines() {
            line(format!("  {l}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status with the counter name `long` in every table.
    fn status(long: &str) -> Status {
        serde_json::from_value(serde_json::json!({
            "config": "/etc/portfwd/portfwd.yaml",
            "interfaces": [],
            "host_addresses": [],
            "forwards": 0,
            "flows": 0,
            "flow_tables": [
                { "name": "PF_FLOWS", "entries": 65536, "max_entries": 65536, "inserted": 123456789, "evicted": 123391253 },
                { "name": long, "entries": 1, "max_entries": 10, "inserted": 1, "evicted": 0 },
            ],
            "verdicts": [
                { "reason": "forwarded", "packets": 7 },
                { "reason": "drop_source_not_allowed", "packets": 1234567 },
                { "reason": long, "packets": 1 },
            ],
            "verdicts_by_hook": {
                "tc": { "forwarded": 7, "drop_source_not_allowed": 1234567, long: 1 },
                "xdp": { long: 123456789012u64 },
            },
            "maps": [
                { "name": "PF_FLOWS", "entries": 3, "max_entries": 65536 },
                { "name": long, "entries": 1, "max_entries": 10 },
            ],
            "host_local": {
                "attached": true,
                "cgroup": "/sys/fs/cgroup",
                "verdicts": { "connect4_translated": 5, long: 99 },
            },
        }))
        .unwrap()
    }

    /// The lines of the table headed `heading`, the heading first.
    fn table<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(heading));
        let head = lines
            .next()
            .unwrap_or_else(|| panic!("no {heading}\n{text}"));
        std::iter::once(head)
            .chain(lines.take_while(|l| l.starts_with("  ")))
            .collect()
    }

    /// Whether a word ends at byte `i` of `line`.
    fn ends_word(line: &str, i: usize) -> bool {
        let b = line.as_bytes();
        b.get(i).is_some_and(|c| *c != b' ') && b.get(i + 1).is_none_or(|c| *c == b' ')
    }

    #[test]
    fn numbers_stay_under_their_headings_whatever_the_longest_name() {
        for long in ["x", "drop_a_counter_named_longer_than_any_column_was"] {
            let text = text(&status(long));
            for heading in [
                "verdicts:",
                "maps:",
                "flow tables:",
                "socket hook verdicts:",
            ] {
                let rows = table(&text, heading);
                assert!(rows.len() >= 3, "{heading} table: {rows:#?}");
                // Numbers are right-aligned under right-aligned headings: each ends in the
                // column its heading ends in.
                let head = rows[0];
                let ends: Vec<usize> = (heading.len()..head.len())
                    .filter(|&i| ends_word(head, i))
                    .collect();
                assert!(!ends.is_empty(), "{head}");
                for row in &rows[1..] {
                    for &i in &ends {
                        assert!(ends_word(row, i), "{heading}\n{}", rows.join("\n"));
                    }
                }
            }
        }
    }
}
