//! `chart.svg`: grouped bar charts of the medians with min-max whiskers, written by hand.

use std::fmt::Write as _;

use super::plan::{Case, Metric, System};
use super::results::{Results, fmt_value};
use super::stats::Summary;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

fn color(system: System) -> &'static str {
    match system {
        System::PortfwdTc => "#1b7837",
        System::PortfwdXdp => "#5aae61",
        System::Iptables => "#b2182b",
        System::Nftables => "#ef8a62",
        System::Routing => "#4393c3",
        System::Proxy => "#8073ac",
        System::Ceiling => "#999999",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: groups of bars (one group per case, one bar per system measured in it).
struct Panel {
    title: String,
    metric: Metric,
    groups: Vec<(String, Vec<(System, Summary)>)>,
}

fn panels(results: &Results) -> Vec<Panel> {
    let mut udp = Vec::new();
    let mut stream = Vec::new();
    let mut rr = Vec::new();
    let mut crr = Vec::new();
    for case in results.cases() {
        let metric = case.primary();
        let bars: Vec<(System, Summary)> = System::ALL
            .into_iter()
            .filter_map(|s| Some((s, results.summary(s, case, metric.name)?)))
            .collect();
        if bars.is_empty() {
            continue;
        }
        let group = (case.name(), bars);
        match case {
            Case::Udp { .. } => udp.push(group),
            Case::TcpStream => stream.push(group),
            Case::TcpRr => rr.push(group),
            Case::TcpCrr => crr.push(group),
        }
    }
    let mut out = Vec::new();
    let mut add = |title: &str, metric: Metric, groups: Vec<(String, Vec<(System, Summary)>)>| {
        if !groups.is_empty() {
            out.push(Panel {
                title: title.to_string(),
                metric,
                groups,
            });
        }
    };
    add(
        "UDP, 64-byte frames: packets delivered to the container",
        super::plan::RATE_MPPS,
        udp,
    );
    add("TCP: one iperf3 stream", super::plan::THROUGHPUT, stream);
    add(
        "TCP: request/response on one connection",
        super::plan::RATE_RR,
        rr,
    );
    add(
        "TCP: a new connection per request",
        super::plan::RATE_CRR,
        crr,
    );
    out
}

/// The whole chart; an empty results set gives a chart that says so.
pub fn svg(results: &Results, subtitle: &str) -> String {
    let panels = panels(results);
    let height = 60.0 + PANEL_HEIGHT * panels.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">portfwd benchmark \
         (median, whiskers: min-max)</text>\n\
         <text x=\"{LEFT}\" y=\"38\" fill=\"#555\">{}</text>\n",
        esc(subtitle)
    );
    // Legend.
    let mut x = WIDTH - RIGHT - 7.0 * 92.0;
    for sys in System::ALL {
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"45\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"54\">{}</text>",
            color(sys),
            x + 13.0,
            sys.name()
        );
        x += 92.0;
    }
    if panels.is_empty() {
        s += "<text x=\"70\" y=\"120\">no figures</text>\n";
    }
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, 60.0 + PANEL_HEIGHT * i as f64);
    }
    s += "</svg>\n";
    s
}

fn panel(s: &mut String, p: &Panel, y0: f64) {
    let plot_top = y0 + TOP;
    let plot_h = PANEL_HEIGHT - TOP - BOTTOM;
    let plot_bottom = plot_top + plot_h;
    let plot_w = WIDTH - LEFT - RIGHT;
    let max = p
        .groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, s)| s.max))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let y = |v: f64| plot_bottom - v / max * plot_h;
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\">{} ({})</text>",
        y0 + 25.0,
        esc(&p.title),
        esc(p.metric.unit)
    );
    // Axis and 4 grid lines.
    for k in 0..=4 {
        let v = max / 1.15 * f64::from(k) / 4.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            LEFT + plot_w,
            LEFT - 5.0,
            yy + 4.0,
            fmt_value(v, p.metric)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{plot_top}\" y2=\"{plot_bottom}\" stroke=\"#333\"/>"
    );
    let group_w = plot_w / p.groups.len() as f64;
    for (g, (label, bars)) in p.groups.iter().enumerate() {
        let gx = LEFT + group_w * g as f64;
        let bar_w = ((group_w - 20.0) / bars.len() as f64).min(60.0);
        let start = gx + (group_w - bar_w * bars.len() as f64) / 2.0;
        for (b, (sys, sm)) in bars.iter().enumerate() {
            let bx = start + bar_w * b as f64;
            let top = y(sm.median);
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{} {}: {} {} (min {}, max {}, {} runs)</title></rect>",
                bx + 2.0,
                bar_w - 4.0,
                (plot_bottom - top).max(0.5),
                color(*sys),
                sys.name(),
                esc(label),
                fmt_value(sm.median, p.metric),
                esc(p.metric.unit),
                fmt_value(sm.min, p.metric),
                fmt_value(sm.max, p.metric),
                sm.runs
            );
            let cx = bx + bar_w / 2.0;
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#222\"/>",
                y(sm.min),
                y(sm.max)
            );
            let _ = writeln!(
                s,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                y(sm.max) - 3.0,
                fmt_value(sm.median, p.metric)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + group_w / 2.0,
            plot_bottom + 16.0,
            esc(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Flows;
    use crate::bench::results::{Outcome, Runs, State};

    #[test]
    fn chart_is_well_formed() {
        let case = Case::Udp {
            flows: Flows::One,
            forwards: 1,
        };
        let mut runs = Runs::default();
        runs.values.insert("rate", vec![1.0, 1.2, 0.9]);
        let results = Results {
            outcomes: vec![Outcome {
                system: System::PortfwdTc,
                case,
                state: State::Measured(runs),
            }],
        };
        let svg = svg(&results, "a < b");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt; b"));
        assert!(svg.contains("portfwd-tc udp-1flow: 1.000 Mpps (min 0.9000, max 1.200, 3 runs)"));
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count() + 8
        );
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
