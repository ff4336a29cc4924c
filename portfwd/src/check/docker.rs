//! What the daemon says about Docker, in a check's report: the container each forward belongs
//! to (`docker:web` for a port Docker publishes), the forwards it does not serve now (their
//! container is stopped, restarting, or has no address on its network), and whether Docker is
//! followed at all (`status.docker`).
//!
//! The daemon's own words are taken as they are (`api::ForwardEntry`, `api::DockerStatus`);
//! only their rendering is decided here.

use super::{ForwardReport, Report, Verdict, findings, worst};
use crate::api::{CONFIG_ORIGIN, DockerStatus, ForwardEntry};

/// The origin prefix of a port Docker publishes (`docker:NAME`).
const DOCKER_ORIGIN: &str = "docker:";

/// Completes `report` (of the served forwards among `listed`, in their order) with what the
/// daemon listed: each forward's origin and container, a warning for each forward in `listed`
/// that it does not serve now, in its place, and the notes on `docker` (the follower's status,
/// when the config follows Docker). `now` is the time in Unix seconds.
pub fn complete(
    mut report: Report,
    listed: &[&ForwardEntry],
    docker: Option<&DockerStatus>,
    now: u64,
) -> Report {
    let mut checked = std::mem::take(&mut report.forwards).into_iter();
    for entry in listed {
        let forward = match &entry.inactive {
            Some(why) => inactive(entry, why),
            None => match checked.next() {
                Some(mut f) => {
                    name(&mut f, entry);
                    f
                }
                None => break,
            },
        };
        report.forwards.push(forward);
    }
    report.forwards.extend(checked);
    report.healthy = report.forwards.iter().all(|f| f.verdict == Verdict::Ok);
    if let Some(d) = docker {
        report.notes.extend(status_notes(d, now));
    }
    report.notes.extend(docker_user_note(listed));
    report
}

/// Docker's forwards open to every source: Docker's own firewall chain (`DOCKER-USER`) does
/// not see their packets, so its rules do not restrict them; `docker.allow` does.
fn docker_user_note(listed: &[&ForwardEntry]) -> Option<String> {
    let open: Vec<&str> = listed
        .iter()
        .filter(|e| e.origin.starts_with(DOCKER_ORIGIN) && e.allow.is_empty())
        .map(|e| e.listen.as_str())
        .collect();
    (!open.is_empty()).then(|| {
        format!(
            "{}Docker's forwards {} take every source: portfwd carries them before netfilter, so \
             rules in Docker's DOCKER-USER chain do not apply to them; list the sources to allow \
             in the config's `docker: {{allow: [...]}}`",
            findings::WARNING,
            open.join(", ")
        )
    })
}

/// The report of a forward the daemon does not serve now, for `why`.
fn inactive(entry: &ForwardEntry, why: &str) -> ForwardReport {
    let finding = findings::inactive(&entry.listen, entry.container.as_deref(), why);
    ForwardReport {
        listen: entry.listen.clone(),
        to: entry.to.clone(),
        verdict: worst(std::slice::from_ref(&finding)),
        container: None,
        origin: entry.origin.clone(),
        container_name: entry.container.clone(),
        findings: vec![finding],
    }
}

/// Names the forward's origin and container in its report; a port Docker publishes is changed
/// with Docker, not `portfwd del`, so the findings that are not OK say so.
fn name(f: &mut ForwardReport, entry: &ForwardEntry) {
    f.origin = entry.origin.clone();
    f.container_name = entry.container.clone();
    let Some(container) = entry.origin.strip_prefix(DOCKER_ORIGIN) else {
        return;
    };
    for finding in f.findings.iter_mut().filter(|x| x.verdict > Verdict::Ok) {
        finding.details.push(format!(
            "Docker publishes this port for container {container} ({})",
            entry.origin
        ));
        if let Some(fix) = &mut finding.fix {
            *fix = fix
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("portfwd del ") {
                        format!(
                            "  recreate container {container} with the right `-p` (or compose \
                             `ports:`): the port is Docker's ({}), `portfwd del` refuses it",
                            entry.origin
                        )
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
}

/// `(docker:web)` or `(container web)` after a forward's `LISTEN -> TO` line; empty for a
/// forward of the config to an address.
pub fn label(f: &ForwardReport) -> String {
    if f.origin != CONFIG_ORIGIN {
        format!(" ({})", f.origin)
    } else if let Some(c) = &f.container_name {
        format!(" (container {c})")
    } else {
        String::new()
    }
}

/// A warning when Docker is not followed now, and a note per binding of Docker's that portfwd
/// leaves to Docker.
pub fn status_notes(d: &DockerStatus, now: u64) -> Vec<String> {
    let mut notes = Vec::new();
    if !d.connected {
        let error = d
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        notes.push(format!(
            "{}Docker is not followed right now: not connected to {} for {}{error}; the \
             forwards of its containers stay as they were, and containers started or stopped \
             meanwhile are not seen until it reconnects",
            findings::WARNING,
            d.socket.display(),
            age(now.saturating_sub(d.since)),
        ));
    }
    for b in &d.not_served {
        notes.push(format!(
            "Docker's binding {} of container {} (docker:{}) is not served by portfwd: {}",
            b.listen, b.container, b.container, b.reason
        ));
    }
    notes
}

/// `42 s`, `3 min`, `2 h`, `5 days`.
fn age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DockerBinding;
    use crate::check::{Finding, Kind, report};

    fn entry(listen: &str, to: &str, origin: &str) -> ForwardEntry {
        ForwardEntry {
            listen: listen.into(),
            protocol: "tcp".into(),
            to: to.into(),
            allow: vec![],
            packets_to_target: 0,
            bytes_to_target: 0,
            packets_to_client: 0,
            bytes_to_client: 0,
            new_flows: 0,
            origin: origin.into(),
            container: None,
            inactive: None,
            backends: Vec::new(),
        }
    }

    fn checked(listen: &str, to: &str, finding: Finding) -> ForwardReport {
        ForwardReport {
            listen: listen.into(),
            to: to.into(),
            verdict: worst(std::slice::from_ref(&finding)),
            container: None,
            origin: CONFIG_ORIGIN.into(),
            container_name: None,
            findings: vec![finding],
        }
    }

    fn ok(to: &str) -> Finding {
        Finding {
            verdict: Verdict::Ok,
            kind: Kind::Healthy { rtt_ms: 0.1 },
            reason: format!("{to} accepted a connection in 0.10 ms"),
            details: vec![],
            fix: None,
        }
    }

    fn status(connected: bool) -> DockerStatus {
        DockerStatus {
            socket: "/var/run/docker.sock".into(),
            connected,
            since: 1_000,
            error: (!connected).then(|| "connection refused".to_owned()),
            not_served: vec![DockerBinding {
                container: "web".into(),
                listen: "[::]:8080/tcp".into(),
                reason: "the container has no IPv6 address: left to docker-proxy".into(),
            }],
            ..DockerStatus::default()
        }
    }

    #[test]
    fn inactive_forwards_are_warnings_in_their_place_naming_the_container() {
        let a = entry("8080/tcp", "172.18.0.2:3000", "docker:web");
        let mut b = entry("8081/tcp", "db:5432", CONFIG_ORIGIN);
        b.container = Some("db".into());
        b.inactive = Some("container db is stopped".into());
        let c = entry("8082/tcp", "172.17.0.9:80", CONFIG_ORIGIN);
        let report = Report {
            healthy: true,
            forwards: vec![
                checked("8080/tcp", "172.18.0.2:3000", ok("172.18.0.2:3000")),
                checked("8082/tcp", "172.17.0.9:80", ok("172.17.0.9:80")),
            ],
            notes: vec![],
        };
        let r = complete(report, &[&a, &b, &c], None, 0);
        assert!(!r.healthy, "an inactive forward is not OK");
        let listens: Vec<&str> = r.forwards.iter().map(|f| f.listen.as_str()).collect();
        assert_eq!(listens, ["8080/tcp", "8081/tcp", "8082/tcp"]);
        assert_eq!(r.forwards[0].origin, "docker:web");
        assert_eq!(r.forwards[1].verdict, Verdict::Warn);
        assert_eq!(r.forwards[1].container_name.as_deref(), Some("db"));

        let t = report::text(&r);
        assert!(
            t.starts_with("8080/tcp -> 172.18.0.2:3000 (docker:web)\n  OK    "),
            "{t}"
        );
        assert!(
            t.contains(
                "8081/tcp -> db:5432 (container db)\n  WARN  8081/tcp (container db) is not \
                 served now: container db is stopped\n"
            ),
            "{t}"
        );
        assert!(t.contains("  fix   start the container:\n          docker start db\n"));
        assert!(t.contains("8082/tcp -> 172.17.0.9:80\n  OK"), "{t}");
        assert!(t.contains("3 forwards checked: 2 OK, 1 WARN"), "{t}");

        let json = serde_json::to_value(&r).unwrap();
        let f = &json["forwards"][1];
        assert_eq!(f["verdict"], "warn");
        assert_eq!(f["findings"][0]["kind"], "inactive");
        assert_eq!(
            f["findings"][0]["reason"],
            "8081/tcp (container db) is not served now: container db is stopped"
        );
        assert_eq!(json["forwards"][0]["origin"], "docker:web");
        assert!(json["forwards"][2].get("container_name").is_none());
    }

    #[test]
    fn failures_of_dockers_ports_name_the_container_and_not_portfwd_del() {
        let a = entry("8080/tcp", "172.18.0.2:3000", "docker:web");
        let fail = Finding {
            verdict: Verdict::Fail,
            kind: Kind::NothingListens { listening: vec![] },
            reason: "nothing listens on 172.18.0.2:3000 (connection refused)".into(),
            details: vec![],
            fix: Some(
                "publish the port the app listens on:\n  portfwd del 8080/tcp && portfwd add \
                 8080/tcp 172.18.0.2:8000"
                    .into(),
            ),
        };
        let report = Report {
            healthy: false,
            forwards: vec![checked("8080/tcp", "172.18.0.2:3000", fail)],
            notes: vec![],
        };
        let r = complete(report, &[&a], None, 0);
        let f = &r.forwards[0].findings[0];
        assert!(
            f.details
                .contains(&"Docker publishes this port for container web (docker:web)".into()),
            "{f:?}"
        );
        let fix = f.fix.as_deref().unwrap();
        assert!(
            !fix.lines()
                .any(|l| l.trim_start().starts_with("portfwd del")),
            "{fix}"
        );
        assert!(
            fix.ends_with(
                "\n  recreate container web with the right `-p` (or compose `ports:`): the port \
                 is Docker's (docker:web), `portfwd del` refuses it"
            ),
            "{fix}"
        );
        assert!(
            fix.starts_with("publish the port the app listens on:\n"),
            "{fix}"
        );
    }

    #[test]
    fn docker_not_followed_is_a_warning_and_bindings_left_to_docker_are_noted() {
        let notes = status_notes(&status(false), 1_042);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            notes[0],
            "warning: Docker is not followed right now: not connected to /var/run/docker.sock \
             for 42 s (connection refused); the forwards of its containers stay as they were, \
             and containers started or stopped meanwhile are not seen until it reconnects"
        );
        assert_eq!(
            notes[1],
            "Docker's binding [::]:8080/tcp of container web (docker:web) is not served by \
             portfwd: the container has no IPv6 address: left to docker-proxy"
        );
        let connected = status_notes(&status(true), 1_042);
        assert_eq!(
            connected.len(),
            1,
            "connected: only the binding: {connected:?}"
        );

        let report = Report {
            healthy: true,
            forwards: vec![],
            notes: vec![],
        };
        let t = report::text(&complete(
            report,
            &[],
            Some(&status(false)),
            1_000 + 3 * 3600,
        ));
        assert!(t.contains("\nwarning: Docker is not followed right now: not connected to /var/run/docker.sock for 3 h (connection refused);"), "{t}");
        assert!(
            t.contains("\nnote: Docker's binding [::]:8080/tcp of container web"),
            "{t}"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(0), "0 s");
        assert_eq!(age(119), "119 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(7200), "2 h");
        assert_eq!(age(3 * 86_400), "3 days");
    }

    #[test]
    fn dockers_open_forwards_are_said_to_skip_docker_user() {
        let open = entry("8080/tcp", "172.18.0.2:3000", "docker:web");
        let closed = ForwardEntry {
            allow: vec!["10.0.0.0/8".into()],
            ..entry("8081/tcp", "172.18.0.3:3000", "docker:db")
        };
        let mine = entry("8082/tcp", "172.18.0.4:3000", CONFIG_ORIGIN);
        let note = docker_user_note(&[&open, &closed, &mine]).unwrap();
        assert!(
            note.contains("forwards 8080/tcp take every source"),
            "{note}"
        );
        assert!(note.contains("DOCKER-USER"), "{note}");
        assert_eq!(docker_user_note(&[&closed, &mine]), None);
    }
}
