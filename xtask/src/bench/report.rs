//! The outputs: the tables on stdout, `results.json`, and the markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::machine::Machine;
use super::plan::{CPU, Case, Flows, Metric, Settings, System};
use super::results::{GOALS_ISSUE, Judged, Results, State, fmt_value, judge};
use super::testbed::{PUBLISHED_PORT, UNIQUE_SRC_NET};

/// What the report says about the run besides the figures.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub machine: Machine,
    pub settings: Settings,
    pub xdp: Result<(), String>,
    pub load_before: String,
    pub load_after: String,
    pub elapsed: Duration,
    pub command: String,
    /// What sent the UDP load: `xdp` or `trafgen` (see `udp.rs`).
    pub generator: &'static str,
}

/// A table rendered either as aligned text or as markdown.
struct Table {
    header: Vec<String>,
    /// Right-aligned columns (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[(&str, bool)]) -> Table {
        Table {
            header: header.iter().map(|(h, _)| h.to_string()).collect(),
            right: header.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Rows with fewer cells than the header are notes: their first two cells line up with the
    /// first two columns, the rest runs on.
    fn text(&self) -> String {
        let n = self.header.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter(|r| r.len() == n || (i < 2 && r.len() > 2))
                .map(|r| r[i].chars().count())
                .chain([self.header[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let pad =
            |c: &str, w: usize| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count())));
        let line = |cells: &[String]| {
            if cells.len() != n {
                let mut s = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i < 2 && cells.len() > 2 {
                        s += &pad(c, widths[i]);
                    } else {
                        s += c;
                    }
                    s += "  ";
                }
                return s.trim_end().to_string();
            }
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if self.right[i] {
                    s += &" ".repeat(widths[i].saturating_sub(c.chars().count()));
                    s += c;
                } else {
                    s += &pad(c, widths[i]);
                }
                s += "  ";
            }
            s.trim_end().to_string()
        };
        let mut out = line(&self.header) + "\n";
        out += &"-".repeat(widths.iter().sum::<usize>() + 2 * (n - 1));
        out += "\n";
        for r in &self.rows {
            out += &line(r);
            out += "\n";
        }
        out
    }

    fn markdown(&self) -> String {
        let n = self.header.len();
        let mut out = format!("| {} |\n|", self.header.join(" | "));
        for r in &self.right {
            out += if *r { "---:|" } else { "---|" };
        }
        out += "\n";
        for row in &self.rows {
            let mut cells = row.clone();
            if cells.len() != n {
                let first: Vec<String> = cells.iter().take(2).cloned().collect();
                let rest = cells.iter().skip(2).cloned().collect::<Vec<_>>().join(" ");
                cells = first;
                cells.push(rest);
                cells.resize(n, String::new());
            }
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// The portfwd variants that have figures, for the ratio columns.
fn measured_portfwd(results: &Results) -> Vec<System> {
    [System::PortfwdTc, System::PortfwdXdp]
        .into_iter()
        .filter(|s| {
            results
                .outcomes
                .iter()
                .any(|o| o.system == *s && matches!(o.state, State::Measured(_)))
        })
        .collect()
}

/// Every system in every case: median [min, max] of the primary figure, the ratios of portfwd to
/// it, and the secondary figures.
fn results_table(results: &Results) -> Table {
    let pfs = measured_portfwd(results);
    let ratio_headers: Vec<String> = pfs
        .iter()
        .map(|p| format!("{}/x", p.name().trim_start_matches("portfwd-")))
        .collect();
    let mut header: Vec<(&str, bool)> = vec![
        ("case", false),
        ("system", false),
        ("median", true),
        ("min", true),
        ("max", true),
        ("unit", false),
        ("runs", true),
    ];
    for h in &ratio_headers {
        header.push((h.as_str(), true));
    }
    header.push(("more", false));
    let mut t = Table::new(&header);
    for o in &results.outcomes {
        let case = o.case;
        let metric = case.primary();
        let mut row = vec![case.name(), o.system.name().to_string()];
        match &o.state {
            State::NotApplicable(why) => {
                row.push(format!("n/a: {why}"));
                t.row(row);
                continue;
            }
            State::NotAvailable(why) => {
                row.push(why.clone());
                t.row(row);
                continue;
            }
            State::Measured(runs) => {
                let attempted =
                    runs.values.get(metric.name).map_or(0, Vec::len) + runs.failures.len();
                match results.summary(o.system, case, metric.name) {
                    Some(s) => {
                        row.push(fmt_value(s.median, metric));
                        row.push(fmt_value(s.min, metric));
                        row.push(fmt_value(s.max, metric));
                        row.push(metric.unit.to_string());
                        row.push(format!("{}/{attempted}", s.runs));
                        for pf in &pfs {
                            row.push(
                                results
                                    .ratio((*pf, case), (o.system, case))
                                    .map(|r| format!("{r:.2}"))
                                    .unwrap_or_else(|| "-".into()),
                            );
                        }
                        row.push(secondary(results, o.system, case));
                    }
                    None => {
                        let why = runs.failures.first().cloned().unwrap_or_default();
                        row.push(format!("FAILED ({attempted} runs): {}", one_line(&why)));
                    }
                }
            }
        }
        t.row(row);
    }
    t
}

/// The secondary figures of a case (CPU per packet, latency percentiles), as medians.
fn secondary(results: &Results, system: System, case: Case) -> String {
    let mut parts = Vec::new();
    for m in &case.metrics()[1..] {
        if let Some(s) = results.summary(system, case, m.name) {
            match m.name {
                "forwarded" => {}
                _ => parts.push(format!("{} {} {}", m.name, fmt_value(s.median, *m), m.unit)),
            }
        }
    }
    parts.join(", ")
}

fn one_line(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() > 160 {
        s.chars().take(157).collect::<String>() + "..."
    } else {
        s
    }
}

/// The UDP scaling series: Mpps by number of forwards, and 10,000 / 1.
fn scaling_table(results: &Results) -> Option<Table> {
    let scales: Vec<u32> = results
        .cases()
        .iter()
        .filter_map(|c| match c {
            Case::Udp {
                flows: Flows::Unique,
                forwards,
            } => Some(*forwards),
            _ => None,
        })
        .collect();
    if scales.len() < 2 {
        return None;
    }
    let heads: Vec<String> = scales.iter().map(|n| format!("{n} fwd")).collect();
    let last = format!("{}/{}", scales[scales.len() - 1], scales[0]);
    let mut header: Vec<(&str, bool)> = vec![("system (Mpps, unique flows)", false)];
    header.extend(heads.iter().map(|h| (h.as_str(), true)));
    header.push((last.as_str(), true));
    let mut t = Table::new(&header);
    for system in [
        System::PortfwdTc,
        System::PortfwdXdp,
        System::Iptables,
        System::Nftables,
    ] {
        let case = |n| Case::Udp {
            flows: Flows::Unique,
            forwards: n,
        };
        let values: Vec<Option<f64>> = scales
            .iter()
            .map(|&n| results.primary(system, case(n)))
            .collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let mut row = vec![system.name().to_string()];
        row.extend(values.iter().map(|v| {
            v.map(|v| fmt_value(v, super::plan::RATE_MPPS))
                .unwrap_or_else(|| "-".into())
        }));
        row.push(
            results
                .ratio(
                    (system, case(scales[scales.len() - 1])),
                    (system, case(scales[0])),
                )
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
        );
        t.row(row);
    }
    Some(t)
}

/// Targets as a table; `goals`: the columns of issue #20's table (measure, now, goal).
fn targets_table(judged: &[&Judged], goals: bool) -> Table {
    let header: [(&str, bool); 5] = if goals {
        [
            ("measure", false),
            ("now", true),
            ("goal", true),
            ("verdict", false),
            ("by", true),
        ]
    } else {
        [
            ("target", false),
            ("ratio", true),
            ("wanted", true),
            ("verdict", false),
            ("by", true),
        ]
    };
    let mut t = Table::new(&header);
    for j in judged {
        let by = match j.ratio {
            Some(r) => format!("{:+.0}%", (r / j.target.at_least - 1.0) * 100.0),
            None => "-".into(),
        };
        t.row(vec![
            j.target.what.clone(),
            j.ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
            format!(">= {:.2}x", j.target.at_least),
            j.verdict.label().to_string(),
            by,
        ]);
    }
    t
}

/// The judged targets, split: issue #20's goals, and the others.
fn judged_split(results: &Results) -> (Vec<Judged>, Vec<Judged>) {
    judge(results)
        .into_iter()
        .partition(|j| j.target.issue == GOALS_ISSUE)
}

/// The UDP cases' cost: kernel CPU per delivered packet for every system, and portfwd-tc's rate
/// against each other system's, for 1 and the most forwards x one and unique flows. Routing and
/// the ceiling have no rules to scale: the many-forwards rows compare with their 1-forward case.
fn cost_table(results: &Results) -> Option<Table> {
    let systems = [
        System::PortfwdTc,
        System::PortfwdXdp,
        System::Iptables,
        System::Nftables,
        System::Routing,
        System::Ceiling,
    ];
    let others = [
        System::Iptables,
        System::Nftables,
        System::Routing,
        System::Ceiling,
    ];
    let udp: Vec<Case> = results
        .cases()
        .into_iter()
        .filter(|c| matches!(c, Case::Udp { .. }))
        .collect();
    let most = udp
        .iter()
        .filter_map(|c| match c {
            Case::Udp { forwards, .. } => Some(*forwards),
            _ => None,
        })
        .max()?;
    let heads: Vec<String> = systems
        .iter()
        .map(|s| format!("{} ns", s.name().trim_start_matches("portfwd-")))
        .chain(
            others
                .iter()
                .map(|s| format!("tc/{}", s.name().trim_start_matches("portfwd-"))),
        )
        .collect();
    let mut header: Vec<(&str, bool)> = vec![("case", false)];
    header.extend(heads.iter().map(|h| (h.as_str(), true)));
    let mut t = Table::new(&header);
    let mut rows = 0;
    for flows in [Flows::One, Flows::Unique] {
        let mut scales = vec![1];
        if most > 1 {
            scales.push(most);
        }
        for forwards in scales {
            let case = Case::Udp { flows, forwards };
            if !udp.contains(&case) {
                continue;
            }
            // Systems without rules to scale: their 1-forward case.
            let at = |s: System| match s {
                System::Routing | System::Ceiling => Case::Udp { flows, forwards: 1 },
                _ => case,
            };
            let mut row = vec![case.name()];
            for s in systems {
                row.push(
                    results
                        .summary(s, at(s), CPU.name)
                        .map(|v| format!("{:.0}", v.median))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            for s in others {
                row.push(
                    results
                        .ratio((System::PortfwdTc, case), (s, at(s)))
                        .map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            t.row(row);
            rows += 1;
        }
    }
    (rows > 0).then_some(t)
}

/// The tables printed at the end of a run.
pub fn stdout_tables(results: &Results) -> String {
    let mut out = String::from(
        "\nResults (median of the runs; x/y columns: portfwd median / this row's median)\n\n",
    );
    out += &results_table(results).text();
    if let Some(t) = scaling_table(results) {
        out += "\nRule scaling, unique UDP flows\n\n";
        out += &t.text();
    }
    if let Some(t) = cost_table(results) {
        out += "\nUDP cost: kernel CPU per delivered packet (ns), and portfwd-tc's rate against each\n\n";
        out += &t.text();
    }
    let (goals, rest) = judged_split(results);
    out += "\nGoals (issue #20): ratios of medians within this run\n\n";
    out += &targets_table(&goals.iter().collect::<Vec<_>>(), true).text();
    out += "\nOther targets (issue #4)\n\n";
    out += &targets_table(&rest.iter().collect::<Vec<_>>(), false).text();
    out
}

/// `results.json`: one record per system x case x metric (the primary metric first); pairs
/// not measured have one record with null figures and a status saying why.
pub fn json(results: &Results, info: &RunInfo) -> serde_json::Value {
    let mut records = Vec::new();
    for o in &results.outcomes {
        let base = |metric: Metric| {
            json!({
                "system": o.system.name(),
                "case": o.case.name(),
                "metric": metric.name,
                "unit": metric.unit,
            })
        };
        match &o.state {
            State::NotApplicable(why) | State::NotAvailable(why) => {
                let mut r = base(o.case.primary());
                let status = if matches!(o.state, State::NotApplicable(_)) {
                    "not applicable"
                } else {
                    "not available"
                };
                extend(
                    &mut r,
                    json!({"median": null, "min": null, "max": null, "runs": 0,
                           "status": status, "note": why}),
                );
                records.push(r);
            }
            State::Measured(runs) => {
                for m in o.case.metrics() {
                    let values = runs.values.get(m.name);
                    if values.is_none() && m.name != o.case.primary().name {
                        continue;
                    }
                    let s = results.summary(o.system, o.case, m.name);
                    let mut r = base(*m);
                    extend(
                        &mut r,
                        json!({
                            "median": s.map(|s| s.median),
                            "min": s.map(|s| s.min),
                            "max": s.map(|s| s.max),
                            "runs": s.map_or(0, |s| s.runs),
                            "values": values.cloned().unwrap_or_default(),
                            "status": if s.is_some() { "measured" } else { "failed" },
                            "failures": runs.failures,
                            "notes": if *m == o.case.primary() { runs.notes.clone() } else { Vec::new() },
                        }),
                    );
                    records.push(r);
                }
            }
        }
    }
    let targets: Vec<serde_json::Value> = judge(results)
        .iter()
        .map(|j| {
            json!({
                "target": j.target.what,
                "issue": j.target.issue,
                "numerator": {"system": j.target.num.0.name(), "case": j.target.num.1.name()},
                "denominator": {"system": j.target.den.0.name(), "case": j.target.den.1.name()},
                "at_least": j.target.at_least,
                "ratio": j.ratio,
                "verdict": j.verdict.label(),
            })
        })
        .collect();
    let m = &info.machine;
    json!({
        "records": records,
        "targets": targets,
        "run": {
            "command": info.command,
            "quick": info.settings.quick,
            "runs": info.settings.runs,
            "udp_window_s": info.settings.udp_window.as_secs_f64(),
            "stream_s": info.settings.stream_secs,
            "rr_window_s": info.settings.rr_window.as_secs_f64(),
            "udp_generator": info.generator,
            "elapsed_s": info.elapsed.as_secs_f64(),
            "load_before": info.load_before,
            "load_after": info.load_after,
            "date": m.date,
            "git": m.git,
            "kernel": m.kernel,
            "cpus": m.cpus,
            "cpu_model": m.cpu_model,
            "memory_gib": m.memory_gib,
            "xdp": match &info.xdp { Ok(()) => "available".to_string(), Err(e) => e.clone() },
        },
    })
}

fn extend(base: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(m)) = (base.as_object_mut(), more) {
        b.extend(m);
    }
}

/// `report.md`.
pub fn markdown(results: &Results, info: &RunInfo) -> String {
    let m = &info.machine;
    let s = &info.settings;
    let mut out = String::from("# portfwd benchmark\n\n");
    let _ = writeln!(
        out,
        "{} · {} · commit {} · `{}` · {} runs per figure · {:.0} s in all · load average \
         {} before, {} after.\n",
        m.date,
        m.one_line(),
        m.git,
        info.command,
        s.runs,
        info.elapsed.as_secs_f64(),
        info.load_before,
        info.load_after
    );
    out += "Each figure is the median of the runs, with the minimum and maximum; every run of every \
            case has its own freshly built namespaces. Ratios compare medians measured in this same \
            invocation, the systems interleaved run by run, so that the machine's load (other \
            people's builds share these CPUs) weighs on all of them alike. Absolute figures \
            depend on that load; ratios much less.\n\n";
    out += "![chart](chart.svg)\n\n## Results\n\n";
    out += "Columns `tc/x` (and `xdp/x`): portfwd's median divided by the row's median.\n\n";
    out += &results_table(results).markdown();
    if let Some(t) = scaling_table(results) {
        out += "\n## Rule scaling (unique UDP flows, Mpps delivered)\n\n";
        out += &t.markdown();
    }
    if let Some(t) = cost_table(results) {
        out += "\n## UDP cost per packet\n\nKernel CPU per delivered packet (ns), and portfwd-tc's \
                packet rate divided by each other system's. `routing` and `ceiling` have no rules \
                to scale: the 10,000-forward rows compare with their 1-forward case.\n\n";
        out += &t.markdown();
    }
    let (goals, rest) = judged_split(results);
    out += "\n## Goals (issue #20)\n\n";
    out += &targets_table(&goals.iter().collect::<Vec<_>>(), true).markdown();
    out += "\n## Other targets (issue #4)\n\n";
    out += &targets_table(&rest.iter().collect::<Vec<_>>(), false).markdown();
    out += "\n`n/m`: not measured (a side is not available or failed). `by`: how far the ratio is \
            above (+) or below (-) the target.\n";

    out += "\n## Systems\n\n";
    for sys in System::ALL {
        let _ = writeln!(out, "- `{}`: {}", sys.name(), sys.describe());
    }
    if let Err(why) = &info.xdp {
        let _ = writeln!(out, "\n`portfwd-xdp`: {why}.");
    }
    out += "\n## Cases\n\n";
    for case in results.cases() {
        let _ = writeln!(out, "- `{}`: {}", case.name(), case.describe());
    }

    let _ = write!(
        out,
        "\n## Method\n\n\
         - Lab (`portfwd-lab`): client namespace `eth0` 10.77.0.2 — veth — host namespace `eth0` \
           10.77.0.1, bridge `docker0` 172.17.0.1/16 — veth — container namespace `eth0` \
           172.17.0.2. Every system publishes host port {PUBLISHED_PORT} (UDP: to 172.17.0.2:9; \
           iperf3: to :5201; request/response: to the line-echo server on :3000). A fresh lab \
           per run of each case, and `conntrack -F` in the host before the load.\n\
         - UDP, generator `{generator}`: 64-byte frames (60 without FCS) addressed to the \
           host's MAC. {generator_text} Unique flows draw a random source address in {UNIQUE_SRC_NET} (routed \
           back to the client by the host) and a random source port for every packet. Bounded \
           by a packet count and `timeout -s KILL`. \
           After the first packet arrives and a {:.1} s warm-up, the container's `eth0` \
           `rx_packets` is read at both ends of a {:.1} s window (from a thread inside the \
           namespace, via `/proc/thread-self/net/dev`). The container drops UDP at its tc \
           ingress with a classic-BPF `cls_bpf` filter, so its own stack (ICMP port \
           unreachable) is not the bottleneck. Ceiling: the same generator and config into a \
           classic-BPF filter dropping every frame at the host's `eth0` tc ingress, counted by \
           the host's `eth0` `rx_packets`.\n\
         - CPU per packet: system + irq + softirq ticks of all CPUs from `/proc/stat` over the \
           same window, divided by the packets delivered in it. It includes the generator's \
           kernel side (the whole path runs in the sending CPU's softirq) and whatever kernel \
           work other processes did meanwhile; compare systems with each other and with the \
           ceiling, not as an absolute cost of forwarding.\n\
         - portfwd: `portfwd daemon --config FILE --socket FILE --mode tc|xdp` in the host \
           namespace, the release binary, `interfaces: [eth0]` (N forwards in the file: ports \
           10000.. first, the measured {PUBLISHED_PORT} last); after \
           each UDP run `portfwd status --json` must show packets under `forwarded` (the \
           counts are in the notes below).\n\
         - TCP stream: `iperf3 -c DST -p PORT -t {}` from the client to `iperf3 -s` in the \
           container; received bits per second.\n\
         - Request/response: one connection, one short line each way, for {:.1} s after 200 \
           warm-up exchanges; rate and per-exchange latency percentiles. New connections: \
           connect, one line each way, close, repeated for {:.1} s; the client namespace uses \
           ports 1024-65535 and `tcp_tw_reuse=1`. Both loops run on a thread of the bench \
           inside the client namespace; the server is the lab's line-echo server (a thread per \
           connection).\n",
        s.udp_warmup.as_secs_f64(),
        s.udp_window.as_secs_f64(),
        s.stream_secs,
        s.rr_window.as_secs_f64(),
        s.rr_window.as_secs_f64(),
        generator = info.generator,
        generator_text = generator_text(info.generator),
    );

    let mut notes = String::new();
    for o in &results.outcomes {
        if let State::Measured(runs) = &o.state {
            for n in &runs.notes {
                let _ = writeln!(notes, "- `{}` `{}`: {n}", o.system, o.case.name());
            }
            for f in &runs.failures {
                let _ = writeln!(
                    notes,
                    "- `{}` `{}`: FAILED RUN: {}",
                    o.system,
                    o.case.name(),
                    one_line(f)
                );
            }
        }
    }
    if !notes.is_empty() {
        out += "\n## Notes and portfwd verdict counters\n\n";
        out += &notes;
    }
    let _ = write!(
        out,
        "\n## Reproduce\n\n```sh\nsudo cargo xtask bench{}{}        # builds target/release/portfwd first\n```\n\n\
         Tools: trafgen ({}), {}, iptables, nft, socat, conntrack.\n",
        if s.quick { " --quick" } else { "" },
        if info.generator == "xdp" {
            ""
        } else {
            " --generator trafgen"
        },
        m.trafgen,
        m.iperf3
    );
    out
}

/// How the Method section describes the UDP generator.
fn generator_text(generator: &str) -> &'static str {
    if generator == "xdp" {
        "The kernel sends the frames out of the client's `eth0` (an XDP program run by \
         BPF_PROG_TEST_RUN in live-frames mode, `bench/pktgen`, one thread per \
         CPU); they reach the host's `eth0` through its NAPI poll as linear buffers, as a NIC \
         driver hands them over (the bench turns GRO on there, which gives the veth a NAPI \
         instance, and gives it a receive queue per CPU)."
    } else {
        "`trafgen` in the client namespace on its `eth0` (an AF_PACKET TX ring), one process \
         per CPU; the kernel copies each ring frame when it crosses the veth."
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{self, Settings};
    use crate::bench::results::{Outcome, Runs};

    /// A results set as a full run would make it, with made-up figures: every case measured for
    /// portfwd-tc and iptables, the ceiling in `udp-unique`, one failed run, and pairs not
    /// measured.
    fn synthetic() -> (Results, RunInfo) {
        let settings = Settings::new(true, None);
        let mut outcomes = Vec::new();
        for case in plan::cases(&settings) {
            for (system, scale) in [(System::PortfwdTc, 3.0), (System::Iptables, 1.0)] {
                let mut runs = Runs::default();
                for m in case.metrics() {
                    let base = scale * if m.higher_is_better { 1.0 } else { 0.5 };
                    runs.values
                        .insert(m.name, vec![base, base * 0.9, base * 1.2]);
                }
                if system == System::Iptables {
                    runs.failures.push("run 4: no packet reached eth0".into());
                }
                runs.notes.push("run 1: attached: eth0=tc".into());
                outcomes.push(Outcome {
                    system,
                    case,
                    state: State::Measured(runs),
                });
            }
            outcomes.push(Outcome {
                system: System::PortfwdXdp,
                case,
                state: State::NotAvailable("not built".into()),
            });
            let ceiling = plan::availability(System::Ceiling, case, &Ok(()));
            outcomes.push(Outcome {
                system: System::Ceiling,
                case,
                state: match ceiling {
                    plan::Availability::Run => {
                        let mut runs = Runs::default();
                        runs.values.insert("rate", vec![4.0, 4.1, 3.9]);
                        State::Measured(runs)
                    }
                    plan::Availability::NotApplicable(why) => State::NotApplicable(why),
                    plan::Availability::NotAvailable(why) => State::NotAvailable(why),
                },
            });
        }
        let info = RunInfo {
            machine: Machine {
                cpus: 2,
                cpu_model: "Test CPU".into(),
                ..Machine::default()
            },
            settings,
            xdp: Err("not built".into()),
            load_before: "0.10 0.20 0.30".into(),
            load_after: "0.40 0.50 0.60".into(),
            elapsed: Duration::from_secs(42),
            command: "cargo xtask bench --quick".into(),
            generator: "xdp",
        };
        (Results { outcomes }, info)
    }

    /// The schema issue #4 asks of `results.json`: one record per system x case (x metric) with
    /// `system`, `case`, `metric`, `unit`, `median`, `min`, `max`, `runs`.
    #[test]
    fn results_json_has_the_documented_schema() {
        let (results, info) = synthetic();
        let value = json(&results, &info);
        // Round trip through text, as the file is written.
        let value: serde_json::Value =
            serde_json::from_str(&serde_json::to_string_pretty(&value).unwrap()).unwrap();
        let records = value["records"].as_array().unwrap();
        let mut pairs = std::collections::BTreeSet::new();
        for r in records {
            for key in ["system", "case", "metric", "unit", "status"] {
                assert!(r[key].is_string(), "{key} in {r}");
            }
            assert!(r["runs"].is_u64(), "{r}");
            let measured = r["status"] == "measured";
            for key in ["median", "min", "max"] {
                assert_eq!(r[key].is_f64(), measured, "{key} in {r}");
                assert_eq!(r[key].is_null(), !measured, "{key} in {r}");
            }
            if measured {
                let (min, med, max) = (
                    r["min"].as_f64().unwrap(),
                    r["median"].as_f64().unwrap(),
                    r["max"].as_f64().unwrap(),
                );
                assert!(min <= med && med <= max, "{r}");
                assert_eq!(r["runs"], 3, "{r}");
            }
            pairs.insert((
                r["system"].as_str().unwrap().to_string(),
                r["case"].as_str().unwrap().to_string(),
                r["metric"].as_str().unwrap().to_string(),
            ));
        }
        // No duplicate records, and every outcome has at least one.
        assert_eq!(pairs.len(), records.len());
        for o in &results.outcomes {
            assert!(
                pairs
                    .iter()
                    .any(|(s, c, _)| s == o.system.name() && *c == o.case.name()),
                "{} {}",
                o.system,
                o.case.name()
            );
        }
        let tc_udp = records
            .iter()
            .find(|r| {
                r["system"] == "portfwd-tc" && r["case"] == "udp-1flow" && r["metric"] == "rate"
            })
            .unwrap();
        assert_eq!(tc_udp["unit"], "Mpps");
        assert_eq!(tc_udp["median"], 3.0);
        assert_eq!(tc_udp["min"], 2.7);
        assert_eq!(tc_udp["max"], 3.5999999999999996);
        let xdp = records
            .iter()
            .find(|r| r["system"] == "portfwd-xdp" && r["case"] == "udp-1flow")
            .unwrap();
        assert_eq!(xdp["status"], "not available");
        // Targets: portfwd-tc is 3x iptables everywhere in this data.
        let targets = value["targets"].as_array().unwrap();
        let first = &targets[0];
        assert_eq!(first["target"], "portfwd-tc one flow, vs iptables DNAT");
        assert_eq!(first["issue"], 20);
        assert_eq!(first["ratio"], 3.0);
        assert_eq!(first["verdict"], "PASS");
        assert_eq!(value["run"]["quick"], true);
        assert_eq!(value["run"]["xdp"], "not built");
    }

    #[test]
    fn report_and_tables_render_every_case_and_target() {
        let (results, info) = synthetic();
        let md = markdown(&results, &info);
        let text = stdout_tables(&results);
        for case in results.cases() {
            assert!(
                md.contains(&format!("| {} | portfwd-tc |", case.name())),
                "{md}"
            );
            assert!(text.contains(&case.name()), "{text}");
        }
        for heading in [
            "## Results",
            "## Rule scaling",
            "## Goals (issue #20)",
            "## Other targets (issue #4)",
            "## UDP cost per packet",
            "## Reproduce",
        ] {
            assert!(md.contains(heading), "{heading} missing:\n{md}");
        }
        assert!(md.contains("2 vCPU (Test CPU)"), "{md}");
        assert!(
            md.contains("FAILED RUN: run 4: no packet reached eth0"),
            "{md}"
        );
        // Every row of every markdown table has as many cells as its header.
        let mut tables = 0;
        let mut width = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                width = None;
                continue;
            }
            let cells = line.replace("\\|", "").matches('|').count();
            match width {
                None => {
                    tables += 1;
                    width = Some(cells);
                }
                Some(w) => assert_eq!(cells, w, "{line}"),
            }
        }
        // Results, scaling, cost, goals, other targets.
        assert_eq!(tables, 5, "{md}");
        assert!(
            text.contains("portfwd-tc one flow, vs iptables DNAT"),
            "{text}"
        );
        assert!(
            text.contains("portfwd-tc udp-unique vs nftables map"),
            "{text}"
        );
        assert!(text.contains("3.00x"), "{text}");
    }

    #[test]
    fn tables_align_and_span() {
        let mut t = Table::new(&[("a", false), ("bb", true), ("c", false), ("d", true)]);
        t.row(vec!["x".into(), "1".into(), "y".into(), "2".into()]);
        t.row(vec!["long".into(), "s".into(), "n/a: reason".into()]);
        let text = t.text();
        assert!(text.starts_with("a     bb  c  d\n"), "{text}");
        assert!(text.contains("\nx      1  y  2\n"), "{text}");
        assert!(text.contains("\nlong  s   n/a: reason\n"), "{text}");
        let md = t.markdown();
        assert!(md.contains("|---|---:|---|---:|"), "{md}");
        assert!(md.contains("| long | s | n/a: reason |  |"), "{md}");
    }
}
