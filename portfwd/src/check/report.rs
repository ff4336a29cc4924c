//! The human form of a [`Report`]: one block per forward, a verdict word per finding, its
//! facts, and the fix; a summary line; notes on what could not be looked at, and warnings.

use super::{Report, Verdict, docker, findings};

/// Where reasons and facts start: after `  FAIL  `.
const INDENT: usize = 8;

/// Renders `report` for a terminal.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    if report.forwards.is_empty() {
        out.push_str("no forwards to check\n");
    }
    for f in &report.forwards {
        out.push_str(&format!("{} -> {}{}\n", f.listen, f.to, docker::label(f)));
        for finding in &f.findings {
            let word = finding.verdict.word();
            push_line(
                &mut out,
                &format!("  {word:<w$}", w = INDENT - 2),
                &finding.reason,
            );
            for d in &finding.details {
                push_line(&mut out, &" ".repeat(INDENT), d);
            }
            if let Some(fix) = &finding.fix {
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    push_line(&mut out, &format!("  {:<w$}", "fix", w = INDENT - 2), first);
                }
                for l in lines {
                    // Commands keep their own indentation and are never wrapped.
                    out.push_str(&" ".repeat(INDENT));
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&summary(report));
    out.push('\n');
    out.push_str(&notes(report));
    out
}

/// The report's notes, one a line: `note: ...`, or the warning as it is.
pub fn notes(report: &Report) -> String {
    let mut out = String::new();
    for n in &report.notes {
        // A warning says so itself.
        let lead = if n.starts_with(findings::WARNING) {
            ""
        } else {
            "note: "
        };
        push_line(&mut out, lead, n);
    }
    out
}

/// `2 forwards checked: 1 OK, 1 FAIL`.
pub fn summary(report: &Report) -> String {
    let n = report.forwards.len();
    let count = |v: Verdict| report.forwards.iter().filter(|f| f.verdict == v).count();
    let parts: Vec<String> = [Verdict::Ok, Verdict::Warn, Verdict::Fail]
        .into_iter()
        .filter(|v| count(*v) > 0)
        .map(|v| format!("{} {}", count(v), v.word()))
        .collect();
    let s = if n == 1 { "" } else { "s" };
    if parts.is_empty() {
        format!("{n} forward{s} checked")
    } else {
        format!("{n} forward{s} checked: {}", parts.join(", "))
    }
}

/// Appends `text` after `lead`, on one line: names, rules and commands stay whole for grep and
/// copy; the terminal wraps.
fn push_line(out: &mut String, lead: &str, text: &str) {
    out.push_str(lead);
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Finding, ForwardReport, Kind};

    #[test]
    fn blocks_verdicts_and_fixes() {
        let report = Report {
            healthy: false,
            forwards: vec![
                ForwardReport {
                    listen: "8080/tcp".into(),
                    to: "172.17.0.2:3000".into(),
                    verdict: Verdict::Ok,
                    container: None,
                    origin: "config".into(),
                    container_name: None,
                    findings: vec![Finding {
                        verdict: Verdict::Ok,
                        kind: Kind::Healthy { rtt_ms: 0.1 },
                        reason: "172.17.0.2:3000 accepted a connection in 0.10 ms".into(),
                        details: vec![],
                        fix: None,
                    }],
                },
                ForwardReport {
                    listen: "8081/tcp".into(),
                    to: "172.17.0.3:3000".into(),
                    verdict: Verdict::Fail,
                    container: None,
                    origin: "config".into(),
                    container_name: None,
                    findings: vec![
                        Finding {
                            verdict: Verdict::Info,
                            kind: Kind::EngineReservation {
                                engine: "Docker".into(),
                                sockets: vec![],
                            },
                            reason: "host port 8081/tcp is held by docker-proxy (pid 7)".into(),
                            details: vec![],
                            fix: None,
                        },
                        Finding {
                            verdict: Verdict::Fail,
                            kind: Kind::NothingListens { listening: vec![] },
                            reason: "nothing listens on 172.17.0.3:3000 (connection refused)"
                                .into(),
                            details: vec!["word ".repeat(3)],
                            fix: Some("publish the port:\n  portfwd del 8081/tcp".into()),
                        },
                    ],
                },
            ],
            notes: vec!["a note".into(), "warning: 8080/tcp is open".into()],
        };
        let t = text(&report);
        assert!(
            t.starts_with("8080/tcp -> 172.17.0.2:3000\n  OK    172.17.0.2:3000 accepted"),
            "{t}"
        );
        assert!(
            t.contains("\n  FAIL  nothing listens on 172.17.0.3:3000"),
            "{t}"
        );
        assert!(
            t.contains("\n  fix   publish the port:\n          portfwd del 8081/tcp\n"),
            "{t}"
        );
        assert!(t.contains("2 forwards checked: 1 OK, 1 FAIL\n"), "{t}");
        assert!(
            t.contains("\n  INFO  host port 8081/tcp is held by docker-proxy (pid 7)\n"),
            "{t}"
        );
        assert!(
            t.ends_with("note: a note\nwarning: 8080/tcp is open\n"),
            "a warning is not labelled a note: {t}"
        );
        assert!(t.contains("\n        word word "), "{t}");
    }
}
