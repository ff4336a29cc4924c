//! Runs fixtures through a program with BPF_PROG_TEST_RUN, and through the reference model, and
//! reports every difference with the exact frames (Katran style: the packet that failed, what
//! was expected, what came out, differing bytes marked `*`).
use std::collections::BTreeMap;
use std::fmt::Write as _;

use portfwd::datapath::Datapath;
use portfwd_common::{maps::ForwardStats, reason::Reason};
use portfwd_model as model;

use super::env::Env;
use super::fixtures::{Expect, Expected, Fixture};
use super::frame::hexdump;
use super::model_world::ModelWorld;
use super::program::{self, Program};

/// The return code `e` means for `prog`.
fn expected_code(prog: &Program, e: &Expected) -> i32 {
    match e.expect {
        // The answer to a packet too big, or a translation left to the kernel's forwarding.
        Expect::Output(_) if e.reason == Reason::IcmpTooBigSent => prog.bounce,
        Expect::Output(_) if e.reason == Reason::ForwardedViaStack => prog.pass,
        Expect::Output(_) => prog.redirect,
        Expect::Unchanged if e.reason.is_drop() => prog.drop,
        Expect::Unchanged => prog.pass,
    }
}

fn expected_frame<'a>(f: &'a Fixture, e: &'a Expected) -> &'a [u8] {
    match &e.expect {
        Expect::Output(o) => o,
        Expect::Unchanged => &f.input,
    }
}

fn code_name(prog: &Program, code: i32) -> String {
    let what = if code == prog.pass {
        "pass"
    } else if code == prog.drop {
        "drop"
    } else if code == prog.redirect {
        "redirect"
    } else {
        "?"
    };
    format!("{code} ({what})")
}

/// Describes a fixture failure: what, then the frames.
fn report(f: &Fixture, e: &Expected, who: &str, problems: &[String], got: Option<&[u8]>) -> String {
    let mut s = format!("[{} {}] {} — {who}:\n", f.family.name(), f.category, f.name);
    for p in problems {
        let _ = writeln!(s, "  - {p}");
    }
    let want = expected_frame(f, e);
    let _ = write!(
        s,
        "  input ({} bytes):\n{}",
        f.input.len(),
        hexdump(&f.input, None)
    );
    let _ = write!(s, "  expected:\n{}", hexdump(want, None));
    if let Some(got) = got
        && got != want
    {
        let _ = write!(
            s,
            "  got (* = differs from expected):\n{}",
            hexdump(got, Some(want))
        );
    }
    s
}

fn stats_delta(before: &ForwardStats, after: &ForwardStats) -> [u64; 5] {
    [
        after.to_target_packets - before.to_target_packets,
        after.to_target_bytes - before.to_target_bytes,
        after.to_client_packets - before.to_client_packets,
        after.to_client_bytes - before.to_client_bytes,
        after.new_flows - before.new_flows,
    ]
}

/// Runs `f` through the kernel program; returns the problems found.
fn check_kernel(
    dp: &mut Datapath,
    prog: &Program,
    ifindex: u32,
    f: &Fixture,
) -> Result<(), String> {
    let e = f.expected(prog);
    let before = program::verdicts(dp);
    let slot_before = e.count.map(|(slot, _)| program::stats(dp, slot));
    let flow_before = e.flow.map(|entry| program::kernel_flow(dp, &entry));
    let (code, out) = match program::test_run(dp, prog, &f.input, ifindex) {
        Ok(r) => r,
        Err(err) => {
            return Err(report(
                f,
                &e,
                prog.label,
                &[format!("test run failed: {err}")],
                None,
            ));
        }
    };
    let after = program::verdicts(dp);
    let mut problems = Vec::new();
    let want_code = expected_code(prog, &e);
    if code != want_code {
        problems.push(format!(
            "return code {}, expected {}",
            code_name(prog, code),
            code_name(prog, want_code)
        ));
    }
    if out != expected_frame(f, &e) {
        problems.push("output frame differs".into());
    }
    match program::verdict_delta(prog.hook, &before, &after) {
        Ok(r) if r == e.reason => {}
        Ok(r) => problems.push(format!(
            "counted {}, expected {}",
            r.name(),
            e.reason.name()
        )),
        Err(err) => problems.push(err),
    }
    if let (Some((slot, dir)), Some(before)) = (e.count, slot_before) {
        let len = f.input.len() as u64;
        let new_flow = match (e.flow, flow_before) {
            (Some(entry), Some(prev)) => u64::from(prev != Some(entry)),
            _ => 0,
        };
        let want = match dir {
            model::Direction::ToTarget => [1, len, 0, 0, new_flow],
            model::Direction::ToClient => [0, 0, 1, len, 0],
        };
        let got = stats_delta(&before, &program::stats(dp, slot));
        if got != want {
            problems.push(format!(
                "forward slot {slot} counters moved by {got:?} \
                 (to_target packets/bytes, to_client packets/bytes, new flows), expected {want:?}"
            ));
        }
    }
    if let Some(entry) = e.flow {
        let got = program::kernel_flow(dp, &entry);
        if got != Some(entry) {
            problems.push(format!("flow is {got:?} afterwards, expected {entry:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(report(f, &e, prog.label, &problems, Some(&out)))
    }
}

/// Runs `f` through the reference model (which applies its own map updates to `w`).
pub fn check_model(
    w: &mut ModelWorld,
    prog: &Program,
    ifindex: u32,
    f: &Fixture,
) -> Result<(), String> {
    let e = f.expected(prog);
    let mut frame = f.input.clone();
    let out = w.process(&mut frame, ifindex, prog.hook);
    let mut problems = Vec::new();
    if out.reason != e.reason {
        problems.push(format!(
            "model says {}, expected {}",
            out.reason.name(),
            e.reason.name()
        ));
    }
    let code = program::code_of(prog, out.action);
    if code != expected_code(prog, &e) {
        problems.push(format!("model's action is {:?}", out.action));
    }
    if frame != expected_frame(f, &e) {
        problems.push("model's output frame differs".into());
    }
    let count = out.count.map(|c| (c.slot, c.direction));
    if count != e.count {
        problems.push(format!("model counts {count:?}, expected {:?}", e.count));
    }
    if let (Some(flow), Some(want)) = (out.flow, e.flow)
        && flow != want
    {
        problems.push(format!("model records flow {flow:?}, expected {want:?}"));
    }
    if out.flow.is_some() && e.flow.is_none() {
        problems.push(format!("model records an unexpected flow {:?}", out.flow));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(report(
            f,
            &e,
            &format!("reference model of {}", prog.label),
            &problems,
            Some(&frame),
        ))
    }
}

/// Runs the whole table through `prog` and the model, in order, in the lab's host namespace.
/// Returns the failures (empty when all pass) and prints a summary by category and family.
pub fn run_table(env: &Env, prog: &Program, fixtures: &[Fixture]) -> Vec<String> {
    env.run(|| {
        let (mut dp, mut w) = env.load(prog);
        let mut failures = Vec::new();
        let mut by_category: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for f in fixtures {
            let ifindex = env.ifindex(f.ingress);
            let kernel = check_kernel(&mut dp, prog, ifindex, f);
            let model = check_model(&mut w, prog, ifindex, f);
            let entry = by_category
                .entry((f.category, f.family.name()))
                .or_default();
            entry.0 += 1;
            *by_reason.entry(f.expected(prog).reason.name()).or_default() += 1;
            let ok = kernel.is_ok() && model.is_ok();
            if !ok {
                entry.1 += 1;
            }
            failures.extend(kernel.err());
            failures.extend(model.err());
        }
        println!("{}: {} fixtures", prog.label, fixtures.len());
        for ((c, family), (n, failed)) in &by_category {
            println!("  {c:<30} {family} {n:>3} fixtures, {failed} failed");
        }
        println!("  verdicts asserted: {by_reason:?}");
        failures
    })
}

/// Panics with every failure, if any.
pub fn assert_no_failures(what: &str, failures: &[String]) {
    if !failures.is_empty() {
        let mut msg = format!("{what}: {} failure(s)\n", failures.len());
        for f in failures {
            msg.push_str(f);
            msg.push('\n');
        }
        panic!("{msg}");
    }
}
