//! `portfwd check`
use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::output;
use crate::{
    api::{ForwardEntry, Request, Response, Status},
    check::{self, Options, report},
    publish::{Forward, Listen, PoolOptions, Target, Weighted},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
For each forward, one block: a verdict per finding (INFO, OK, WARN, FAIL), the reason, the facts, and \
the fix. It probes the target from this host (a TCP connect; UDP targets get a TCP probe for \
reachability and a look at the container's sockets), looks for the container's network namespace \
and what listens in it, and for other owners of the host port (local processes, iptables or \
nftables DNAT rules). A container engine's own holder of the port (docker-proxy, dockerd, \
podman's conmon) is its reservation: an INFO line, not a conflict. Forwards the daemon does not \
serve now (their container is stopped) are warnings with the daemon's reason; when the config \
follows Docker, whether it is connected.

Run it as root where the daemon runs (its network namespace).

Exit status: 0 when every checked forward is OK, 1 otherwise (or when the check cannot run).")]
pub struct Args {
    /// The forwards to check: a published host port (`8080`, `8080/udp`, `192.0.2.1:8080`), or
    /// `all`
    #[arg(value_name = "HOST_PORT|all", default_value = "all")]
    pub which: String,
    /// Time limit of each connection probe: `500ms`, `2s`, `1.5` (seconds)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

/// `500ms`, `2s`, `1.5` (seconds); more than 0 and at most 60 s.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| format!("'{s}' is not a duration (e.g. 500ms, 2s)"))?;
    if secs <= 0.0 || secs > 60.0 {
        return Err(format!("{s} is out of range (more than 0, at most 60s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Which forwards to check.
#[derive(Debug, PartialEq, Eq)]
enum Filter {
    All,
    /// A host port; the protocol and address only when given.
    Port {
        listen: Listen,
        protocol_given: bool,
        addr_given: bool,
    },
}

impl Filter {
    fn parse(s: &str) -> Result<Filter, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Filter::All);
        }
        // `0.0.0.0:8080` names the IPv4 forward on every address, kept without an address.
        let listen = s
            .parse::<Listen>()
            .map_err(|e| format!("{e}"))?
            .normalized();
        Ok(Filter::Port {
            listen,
            protocol_given: s.contains('/'),
            addr_given: s.contains(':'),
        })
    }

    fn matches(&self, l: &Listen) -> bool {
        match self {
            Filter::All => true,
            Filter::Port {
                listen,
                protocol_given,
                addr_given,
            } => {
                l.port <= listen.end
                    && listen.port <= l.end
                    && (!protocol_given || l.protocol == listen.protocol)
                    && (!addr_given || l.addr == listen.addr)
            }
        }
    }
}

pub fn run(socket: &Path, args: Args) -> Result<(), super::Failure> {
    let filter = Filter::parse(&args.which)?;
    let entries = match super::call(socket, &Request::List)? {
        Response::Forwards { forwards } => forwards,
        r => return Err(super::unexpected(&r)),
    };
    // The forwards to probe, and every selected entry of the list (those not served now too).
    let mut forwards = Vec::new();
    let mut listed: Vec<&ForwardEntry> = Vec::new();
    for e in &entries {
        let listed_err =
            |err: crate::publish::PublishError| format!("the daemon listed {}: {err}", e.listen);
        let listen: Listen = e.listen.parse().map_err(listed_err)?;
        if e.inactive.is_some() {
            // Its target may be a container's name without an address: nothing to probe.
            if filter.matches(&listen.normalized()) {
                listed.push(e);
            }
            continue;
        }
        let allow = e
            .allow
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(listed_err)?;
        // A pool is checked backend by backend: those that take new flows.
        let targets: Vec<Weighted> = e
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| {
                let target = b.target.parse::<Target>().map_err(listed_err)?;
                Ok(Weighted {
                    target,
                    weight: b.weight,
                })
            })
            .collect::<Result<_, String>>()?;
        let f = if targets.is_empty() {
            Forward::new(
                listen,
                e.to.parse::<Target>()
                    .map_err(|err| format!("the daemon listed {}: {err}", e.to))?,
            )
        } else {
            Forward::with_targets(listen, targets, PoolOptions::default())
        }
        .and_then(|f| f.with_allow(allow))
        .map_err(listed_err)?;
        if filter.matches(&f.listen) {
            forwards.push(f);
            listed.push(e);
        }
    }
    if listed.is_empty() && filter != Filter::All {
        return Err(format!(
            "no forward publishes host port {} (see `portfwd list`)",
            args.which
        )
        .into());
    }

    let report = check::check(
        &forwards,
        &Options {
            timeout: args.timeout,
        },
    );
    let status = match super::call(socket, &Request::Status) {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let docker = status.as_ref().and_then(|s| s.docker.as_ref());
    let mut report = check::docker::complete(report, &listed, docker, now);
    if let Some(note) = status.as_deref().and_then(namespace_mismatch) {
        report.notes.insert(0, note);
    }

    if args.json {
        output::json(&report)?;
    } else if entries.is_empty() {
        output::println(
            "no ports published (add one with `portfwd add HOST_PORT TARGET_IP:PORT`)",
        )?;
        // Whether Docker is followed still matters with nothing published.
        output::print(&report::notes(&report))?;
    } else {
        output::print(&report::text(&report))?;
    }
    if report.healthy {
        Ok(())
    } else {
        let bad = report
            .forwards
            .iter()
            .filter(|f| f.verdict != check::Verdict::Ok)
            .count();
        Err(super::Failure::Message(format!(
            "{bad} of {} forward{} not OK",
            report.forwards.len(),
            if report.forwards.len() == 1 {
                " is"
            } else {
                "s are"
            }
        )))
    }
}

/// A note when the daemon's host addresses are not this namespace's: then the check looks at the
/// wrong network stack.
fn namespace_mismatch(status: &Status) -> Option<String> {
    let local: Vec<IpAddr> = check::netns::interfaces()
        .ok()?
        .into_iter()
        .flat_map(|i| i.addrs)
        .collect();
    let foreign: Vec<&str> = status
        .host_addresses
        .iter()
        .filter(|a| a.parse::<IpAddr>().is_ok_and(|a| !local.contains(&a)))
        .map(String::as_str)
        .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "the daemon's host addresses ({}) are not in this network namespace: run portfwd \
             check where the daemon runs, or the results describe the wrong network stack",
            foreign.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("61s").is_err());
        assert!(
            parse_timeout("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_timeout("NaN").is_err());
    }

    #[test]
    fn filters() {
        let l = |s: &str| s.parse::<Listen>().unwrap();
        let f = Filter::parse("8080").unwrap();
        assert!(f.matches(&l("8080/tcp")) && f.matches(&l("8080/udp")));
        assert!(f.matches(&l("10.0.0.1:8080")));
        assert!(!f.matches(&l("8081")));
        let f = Filter::parse("8080/udp").unwrap();
        assert!(!f.matches(&l("8080/tcp")) && f.matches(&l("8080/udp")));
        let f = Filter::parse("10.0.0.1:8080").unwrap();
        assert!(f.matches(&l("10.0.0.1:8080")) && !f.matches(&l("8080")));
        // Forwards keep `0.0.0.0` as no address; the filter names them all the same.
        let f = Filter::parse("0.0.0.0:8080").unwrap();
        assert!(f.matches(&l("8080")) && !f.matches(&l("10.0.0.1:8080")));
        assert_eq!(Filter::parse("ALL").unwrap(), Filter::All);
        assert!(Filter::parse("http").is_err());
    }
}
