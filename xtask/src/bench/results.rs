//! What a benchmark run collected: per system and case, every run's figures (or why the pair was
//! not measured), and the targets of issues #20 and #4 judged on them.

use std::collections::BTreeMap;

use super::plan::{Case, Flows, Metric, System};
use super::stats::Summary;

/// Every run of one system in one case.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// Values by metric name, one per successful run.
    pub values: BTreeMap<&'static str, Vec<f64>>,
    /// Why runs failed (they count in no figure).
    pub failures: Vec<String>,
    /// Remarks worth reading (portfwd's verdict counters, ...).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum State {
    Measured(Runs),
    NotApplicable(String),
    NotAvailable(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub system: System,
    pub case: Case,
    pub state: State,
}

/// The outcomes of a run, in measuring order (case by case).
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub outcomes: Vec<Outcome>,
}

impl Results {
    pub fn get(&self, system: System, case: Case) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.system == system && o.case == case)
    }

    pub fn runs_mut(&mut self, system: System, case: Case) -> Option<&mut Runs> {
        self.outcomes
            .iter_mut()
            .find(|o| o.system == system && o.case == case)
            .and_then(|o| match &mut o.state {
                State::Measured(runs) => Some(runs),
                _ => None,
            })
    }

    pub fn summary(&self, system: System, case: Case, metric: &str) -> Option<Summary> {
        match &self.get(system, case)?.state {
            State::Measured(runs) => Summary::of(runs.values.get(metric)?),
            _ => None,
        }
    }

    /// The median of `case`'s primary figure for `system`.
    pub fn primary(&self, system: System, case: Case) -> Option<f64> {
        self.summary(system, case, case.primary().name)
            .map(|s| s.median)
    }

    /// The cases, in order, each once.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases: Vec<Case> = Vec::new();
        for o in &self.outcomes {
            if !cases.contains(&o.case) {
                cases.push(o.case);
            }
        }
        cases
    }

    /// `num / den` of the primary figures' medians (measured in the same run of the bench).
    pub fn ratio(&self, num: (System, Case), den: (System, Case)) -> Option<f64> {
        let n = self.primary(num.0, num.1)?;
        let d = self.primary(den.0, den.1)?;
        (d > 0.0).then(|| n / d)
    }
}

/// A target: `num`'s primary figure must be at least `at_least` times `den`'s. `issue`: the
/// issue that set it (#20's goals are printed first, as that issue's table).
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub issue: u32,
    pub num: (System, Case),
    pub den: (System, Case),
    pub at_least: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// One side was not measured (not available, failed, or not in this run's plan).
    Unknown,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Unknown => "n/m",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Judged {
    pub target: Target,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// The issue whose goals the bench's first table shows (performance: cheaper new flows).
pub const GOALS_ISSUE: u32 = 20;

/// The targets for each portfwd variant that was measured: issue #20's goals, then what is
/// left of issue #4's.
pub fn targets(results: &Results) -> Vec<Target> {
    let udp = |flows, forwards| Case::Udp { flows, forwards };
    let one = udp(Flows::One, 1);
    let unique = udp(Flows::Unique, 1);
    let unique10k = udp(Flows::Unique, 10_000);
    let mut out = Vec::new();
    for pf in [System::PortfwdTc, System::PortfwdXdp] {
        let measured = results
            .outcomes
            .iter()
            .any(|o| o.system == pf && matches!(o.state, State::Measured(_)));
        if !measured && pf == System::PortfwdXdp {
            continue;
        }
        let mut t = |issue: u32, what: &str, num: Case, den: (System, Case), at_least: f64| {
            out.push(Target {
                what: format!("{pf} {what}"),
                issue,
                num: (pf, num),
                den,
                at_least,
            });
        };
        let goal = GOALS_ISSUE;
        t(
            goal,
            "one flow, vs iptables DNAT",
            one,
            (System::Iptables, one),
            2.0,
        );
        t(
            goal,
            "unique flows, vs iptables DNAT",
            unique,
            (System::Iptables, unique),
            4.5,
        );
        t(
            goal,
            "unique flows, vs the generator ceiling",
            unique,
            (System::Ceiling, unique),
            0.75,
        );
        t(
            goal,
            "10,000 forwards, vs 1 forward",
            unique10k,
            (pf, unique),
            0.95,
        );
        t(
            goal,
            "new TCP connections per second, vs iptables",
            Case::TcpCrr,
            (System::Iptables, Case::TcpCrr),
            1.5,
        );
        t(
            goal,
            "request/response, vs a userspace proxy",
            Case::TcpRr,
            (System::Proxy, Case::TcpRr),
            2.0,
        );
        t(
            4,
            "udp-unique vs nftables map",
            unique,
            (System::Nftables, unique),
            4.5,
        );
        t(
            4,
            "10,000 forwards vs iptables",
            unique10k,
            (System::Iptables, unique10k),
            100.0,
        );
        t(
            4,
            "tcp-stream vs iptables",
            Case::TcpStream,
            (System::Iptables, Case::TcpStream),
            1.0,
        );
        t(
            4,
            "tcp-stream vs routing (within 5%)",
            Case::TcpStream,
            (System::Routing, Case::TcpStream),
            0.95,
        );
        t(
            4,
            "tcp-crr vs routing (within 5%)",
            Case::TcpCrr,
            (System::Routing, Case::TcpCrr),
            0.95,
        );
    }
    // The goals first, tc then XDP, then the rest.
    out.sort_by_key(|t| t.issue != GOALS_ISSUE);
    out
}

pub fn judge(results: &Results) -> Vec<Judged> {
    targets(results)
        .into_iter()
        .map(|target| {
            let ratio = results.ratio(target.num, target.den);
            let verdict = match ratio {
                // Rounded as printed, so that a printed 0.95 never reads as a miss of 0.95.
                Some(r) if (r * 100.0).round() / 100.0 >= target.at_least => Verdict::Pass,
                Some(_) => Verdict::Miss,
                None => Verdict::Unknown,
            };
            Judged {
                target,
                ratio,
                verdict,
            }
        })
        .collect()
}

/// Formats a figure with 3 significant digits or so.
pub fn fmt_value(v: f64, metric: Metric) -> String {
    if metric.unit == "packets" {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(system: System, case: Case, rate: f64) -> Outcome {
        let mut runs = Runs::default();
        runs.values
            .insert(case.primary().name, vec![rate, rate * 0.9, rate * 1.1]);
        Outcome {
            system,
            case,
            state: State::Measured(runs),
        }
    }

    #[test]
    fn ratios_and_verdicts() {
        let one = Case::Udp {
            flows: Flows::One,
            forwards: 1,
        };
        let results = Results {
            outcomes: vec![
                measured(System::PortfwdTc, one, 2.5),
                measured(System::Iptables, one, 1.0),
                Outcome {
                    system: System::PortfwdXdp,
                    case: one,
                    state: State::NotAvailable("no".into()),
                },
            ],
        };
        assert_eq!(
            results.ratio((System::PortfwdTc, one), (System::Iptables, one)),
            Some(2.5)
        );
        let judged = judge(&results);
        // No XDP targets when XDP was not measured.
        assert!(judged.iter().all(|j| j.target.num.0 == System::PortfwdTc));
        let first = &judged[0];
        assert_eq!(first.verdict, Verdict::Pass);
        assert!(judged[1..].iter().all(|j| j.verdict == Verdict::Unknown));
        assert_eq!(results.cases(), [one]);
    }

    #[test]
    fn values_are_formatted_by_size() {
        use crate::bench::plan::{P50, RATE_MPPS};
        assert_eq!(fmt_value(1.23456, RATE_MPPS), "1.235");
        assert_eq!(fmt_value(0.012345, RATE_MPPS), "0.0123");
        assert_eq!(fmt_value(23456.7, P50), "23457");
    }
}
