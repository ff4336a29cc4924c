//! The truncation sweep: every fixture's input cut at every length from 0 to its full length
//! minus one, through the program and the model.
//!
//! For every cut:
//! - a frame cut inside its headers or its IP datagram (IPv4 or IPv6) is never rewritten: the verdict is
//!   "pass" or "drop", the frame comes out unchanged, and one counter moves;
//! - the program and the model agree (verdict, counter, frame). Cuts that only shorten Ethernet
//!   padding leave a whole datagram, which may well be translated: the model says how.
//!
//! BPF_PROG_TEST_RUN itself refuses frames shorter than 14 bytes, and for tc IPv4 (IPv6) frames
//! shorter than 14 + 20 (14 + 40); those cuts must be refused, and the model must call them
//! malformed (on a real interface such frames do reach tc, and the program's bounds checks pass
//! them).
use portfwd_common::reason::Reason;
use portfwd_model::Action;

use super::env::Env;
use super::fixtures::Fixture;
use super::frame::hexdump;
use super::fuzz::shortest_runnable;
use super::program::{self, Program};

/// Where the IP datagram of the full frame ends (the IPv4 total length or the IPv6 payload
/// length says so), or the frame's end for anything else: cuts before this are truncated frames.
fn datagram_end(full: &[u8]) -> usize {
    if full.len() >= 18 && full[12..14] == [0x08, 0x00] {
        let tot = usize::from(u16::from_be_bytes([full[16], full[17]]));
        (14 + tot).min(full.len())
    } else if full.len() >= 20 && full[12..14] == [0x86, 0xdd] {
        let payload = usize::from(u16::from_be_bytes([full[18], full[19]]));
        (14 + 40 + payload).min(full.len())
    } else {
        full.len()
    }
}

pub fn run(env: &Env, prog: &Program, fixtures: &[Fixture]) -> Vec<String> {
    env.run(|| {
        let (mut dp, mut w) = env.load(prog);
        let mut failures = Vec::new();
        let (mut runs, mut refused, mut rewritten) = (0usize, 0usize, 0usize);
        for f in fixtures {
            let ifindex = env.ifindex(f.ingress);
            let end = datagram_end(&f.input);
            for len in 0..f.input.len() {
                let cut = &f.input[..len];
                let mut model_frame = cut.to_vec();
                let m = w.process(&mut model_frame, ifindex, prog.hook);
                let before = program::verdicts(&dp);
                let fail = |what: String, got: Option<&[u8]>| {
                    let mut s = format!(
                        "[{} {}] {} cut to {len} bytes: {what}\n  input:\n{}",
                        f.family.name(),
                        f.category,
                        f.name,
                        hexdump(cut, None)
                    );
                    if let Some(g) = got {
                        s.push_str(&format!("  got (* = differs from input):\n{}", hexdump(g, Some(cut))));
                    }
                    s
                };
                let (code, out) = match program::test_run(&mut dp, prog, cut, ifindex) {
                    Ok(r) => r,
                    Err(e) => {
                        if len >= shortest_runnable(prog.hook, cut) {
                            failures.push(fail(format!("test run failed: {e}"), None));
                        } else if !matches!(m.reason, Reason::PassMalformed | Reason::PassNotIp) {
                            failures.push(fail(format!("model says {} for a frame too short to run", m.reason.name()), None));
                        } else {
                            refused += 1;
                        }
                        continue;
                    }
                };
                runs += 1;
                if len < shortest_runnable(prog.hook, cut) {
                    failures.push(fail("BPF_PROG_TEST_RUN accepted a frame expected to be refused (update shortest_runnable)".into(), None));
                }
                let counted = program::verdict_delta(prog.hook, &before, &program::verdicts(&dp));
                let mut problems = Vec::new();
                if len < end {
                    // Truncated: never rewritten.
                    if code != prog.pass && code != prog.drop {
                        problems.push(format!("return code {code}: a truncated frame must pass or drop"));
                    }
                    if out != cut {
                        problems.push("a truncated frame was rewritten".into());
                    }
                } else if matches!(m.action, Action::Redirect { .. }) {
                    rewritten += 1;
                }
                match counted {
                    Ok(r) if r == m.reason => {}
                    Ok(r) => problems.push(format!("program counted {}, model says {}", r.name(), m.reason.name())),
                    Err(e) => problems.push(e),
                }
                if code != program::code_of(prog, m.action) {
                    problems.push(format!("return code {code}, model says {:?}", m.action));
                }
                if out != model_frame {
                    problems.push("program and model frames differ".into());
                }
                if !problems.is_empty() {
                    failures.push(fail(problems.join("; "), Some(&out)));
                }
            }
        }
        println!(
            "{}: truncation sweep: {} fixtures, {runs} cuts run, {refused} refused by \
             BPF_PROG_TEST_RUN (too short), {rewritten} whole datagrams (padding cut) translated",
            prog.label,
            fixtures.len()
        );
        assert!(runs > 1000, "only {runs} cuts run");
        failures
    })
}
