//! Differential fuzzing: random and mutated frames through the kernel program
//! (BPF_PROG_TEST_RUN) and the reference model `portfwd_model`, which must agree on
//! every frame: return code, output bytes, the verdict counter that moved, the flow entry
//! written; the per-forward counters are compared after every batch.
//!
//! Frames come from proptest strategies: a base (a fixture's input, so every category and every
//! verdict is near, or random bytes, optionally behind an Ethernet + IPv4 start) and up to four
//! edits: a header field set to an interesting value (the world's addresses and ports, boundary
//! lengths, TTL 0/1/2, fragment bits, ICMP types, fields of a quoted packet), a random byte, a
//! cut, or extra bytes. The ingress interface is usually the base's, sometimes another.
//!
//! `PORTFWD_FUZZ_FRAMES` frames per program (default [`DEFAULT_FRAMES`]: the CI mode);
//! `PORTFWD_FUZZ_SEED` replays a run (the seed is printed). On a difference proptest shrinks the
//! case and the panic shows the minimal frame, the kernel's and the model's answers.
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use portfwd::datapath::Datapath;
use portfwd_common::{
    maps::{ForwardStats, Hook},
    reason::Reason,
};
use portfwd_model::{Action, Direction};
use proptest::{
    collection::vec,
    prelude::*,
    sample::select,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

use super::env::Env;
use super::fixtures;
use super::frame::hexdump;
use super::model_world::ModelWorld;
use super::program::{self, Program};
use super::world::{FORWARDS, Ingress, NETS, V4};

/// Frames per program in the default (CI) mode.
pub const DEFAULT_FRAMES: u64 = 10_000;
/// Frames per loaded datapath. Fuzzed frames create flows with random addresses; reloading
/// keeps the flow table far below its LRU capacity, so the kernel never evicts an entry the
/// model still has.
const BATCH: u64 = 25_000;

/// A header field the mutator knows how to find in a frame.
#[derive(Clone, Copy, Debug)]
enum Field {
    EtherType,
    VersionIhl,
    Tos,
    TotalLen,
    Frag,
    Ttl,
    Proto,
    Saddr,
    Daddr,
    Sport,
    Dport,
    TcpDoff,
    UdpLen,
    L4Csum,
    IcmpType,
    InnerVersionIhl,
    InnerTotalLen,
    InnerFrag,
    InnerProto,
    InnerSaddr,
    InnerDaddr,
    InnerSport,
    InnerDport,
}

const FIELDS: &[Field] = &[
    Field::EtherType,
    Field::VersionIhl,
    Field::Tos,
    Field::TotalLen,
    Field::Frag,
    Field::Ttl,
    Field::Proto,
    Field::Saddr,
    Field::Daddr,
    Field::Sport,
    Field::Dport,
    Field::TcpDoff,
    Field::UdpLen,
    Field::L4Csum,
    Field::IcmpType,
    Field::InnerVersionIhl,
    Field::InnerTotalLen,
    Field::InnerFrag,
    Field::InnerProto,
    Field::InnerSaddr,
    Field::InnerDaddr,
    Field::InnerSport,
    Field::InnerDport,
];

#[derive(Clone, Debug)]
enum Edit {
    Field(Field, u32),
    /// Byte at `pos % len` becomes the value.
    Byte(usize, u8),
    /// Cut to `pos % (len + 1)` bytes.
    Cut(usize),
    Extend(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Case {
    /// Index into the seeds, or `None` for random bytes.
    base: Option<usize>,
    random: Vec<u8>,
    /// Random bytes start with Ethernet + `0x45` (an IPv4 header of 20 bytes) or, when
    /// `random_ipv6` too, Ethernet (IPv6) + `0x60`.
    random_ipv4: bool,
    random_ipv6: bool,
    /// `None`: the base's ingress.
    ingress: Option<Ingress>,
    edits: Vec<Edit>,
}

fn addresses() -> Vec<u32> {
    let w = &V4;
    let named = [
        w.host,
        w.host2,
        w.bridge,
        w.client,
        w.client_no_neigh,
        w.remote,
        w.c1,
        w.c2,
        w.unroutable,
        w.lan.0,
        w.lan_edge,
        w.bridge_edge,
        w.loopback,
    ];
    let mut a: Vec<Ipv4Addr> = named
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    a.extend([
        Ipv4Addr::new(198, 51, 100, 200),
        Ipv4Addr::new(127, 1, 2, 3),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(224, 0, 0, 1),
    ]);
    a.dedup();
    let mut a: Vec<u32> = a.into_iter().map(u32::from).collect();
    // The last word of the IPv6 world's addresses (written there in IPv6 frames; the prefixes
    // stay): ::1 (host, bridge), ::2 (client, c1), ::3 (c2), ::10 (second host address), ::0
    // (subnet-router anycast), ::99.
    a.extend([1, 2, 3, 0x10, 0, 0x99]);
    a
}

fn ports() -> Vec<u32> {
    // Each forward's first and last port, the middle and both neighbours of a range, and the
    // target ports they map to.
    let mut p: Vec<u32> = FORWARDS
        .iter()
        .flat_map(|f| {
            let mid = f.port + (f.end - f.port) / 2;
            [
                f.port,
                f.end,
                mid,
                f.port - 1,
                f.end + 1,
                f.to_port,
                f.to_port_of(f.end),
                f.to_port_of(mid),
            ]
        })
        .map(u32::from)
        .collect();
    p.sort_unstable();
    p.dedup();
    p.extend((40000..40009).chain(45000..45012).chain([0, 22, 65535]));
    p
}

/// Values worth trying for `f`, as a strategy (interesting ones and, less often, anything).
fn value_for(f: Field) -> BoxedStrategy<u32> {
    let any32 = any::<u32>();
    match f {
        Field::Saddr | Field::Daddr | Field::InnerSaddr | Field::InnerDaddr => {
            prop_oneof![4 => select(addresses()), 1 => any32].boxed()
        }
        Field::Sport | Field::Dport | Field::InnerSport | Field::InnerDport => {
            prop_oneof![4 => select(ports()), 1 => any32].boxed()
        }
        Field::EtherType => select(vec![0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x0000]).boxed(),
        Field::VersionIhl | Field::InnerVersionIhl => prop_oneof![
            3 => 0x40u32..=0x4f,
            1 => select(vec![0x45, 0x65, 0x60, 0x6f, 0x00, 0xff]),
        ]
        .boxed(),
        Field::TotalLen | Field::InnerTotalLen | Field::UdpLen => prop_oneof![
            3 => select(vec![0, 7, 8, 19, 20, 21, 24, 27, 28, 39, 40, 41, 48, 1500, 65535]),
            1 => 0u32..200,
            1 => any32,
        ]
        .boxed(),
        Field::Frag | Field::InnerFrag => select(vec![
            0x0000, 0x4000, 0x2000, 0x0001, 0x2001, 0x00b9, 0x1fff, 0xe000,
        ])
        .boxed(),
        Field::Ttl => select(vec![0, 1, 2, 64, 255]).boxed(),
        Field::Proto | Field::InnerProto => {
            select(vec![1, 6, 17, 47, 132, 0, 255, 58, 44, 43, 60, 59]).boxed()
        }
        Field::TcpDoff => (0u32..16).prop_map(|d| d << 4).boxed(),
        Field::L4Csum => prop_oneof![select(vec![0, 0xffff, 1, 0xfffe]), any32].boxed(),
        Field::IcmpType => select(vec![0, 1, 2, 3, 4, 5, 8, 11, 12, 13, 128, 135, 255]).boxed(),
        Field::Tos => any32.boxed(),
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let field = (0..FIELDS.len()).prop_flat_map(|i| {
        let f = FIELDS[i];
        value_for(f).prop_map(move |v| Edit::Field(f, v))
    });
    prop_oneof![
        12 => field,
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Byte(p, b)),
        // Seldom: most cuts land in the part BPF_PROG_TEST_RUN refuses, and the sweep already
        // cuts every fixture at every length.
        1 => any::<usize>().prop_map(Edit::Cut),
        2 => vec(any::<u8>(), 1..40).prop_map(Edit::Extend),
    ]
}

fn case(seeds: usize) -> impl Strategy<Value = Case> {
    let base = prop_oneof![9 => (0..seeds).prop_map(Some), 1 => Just(None)];
    let ingress = prop_oneof![
        7 => Just(None),
        1 => Just(Some(Ingress::Eth0)),
        1 => Just(Some(Ingress::Docker0)),
        1 => Just(Some(Ingress::Lo)),
        1 => Just(Some(Ingress::Port)),
    ];
    (
        base,
        vec(any::<u8>(), 0..80),
        any::<bool>(),
        any::<bool>(),
        ingress,
        vec(edit(), 0..=4),
    )
        .prop_map(
            |(base, random, random_ipv4, random_ipv6, ingress, edits)| Case {
                base,
                random,
                random_ipv4,
                random_ipv6,
                ingress,
                edits,
            },
        )
}

/// Offsets of the frame's headers, as far as its bytes say.
struct Layout {
    /// An IPv6 frame (by its ethertype): fields are at IPv6 offsets.
    v6: bool,
    l3: usize,
    /// IPv6: the fragment header, if the next header says there is one.
    frag: Option<usize>,
    l4: Option<usize>,
    inner_l3: Option<usize>,
    inner_l4: Option<usize>,
}

fn layout(f: &[u8]) -> Layout {
    let l3 = 14;
    if f.get(12..14) == Some(&[0x86, 0xdd]) {
        let frag = (f.get(l3 + 6) == Some(&44)).then_some(l3 + 40);
        let l4 = Some(l3 + 40 + frag.map_or(0, |_| 8));
        let icmp = f.get(l3 + 6) == Some(&58);
        let inner_l3 = l4.filter(|_| icmp).map(|o| o + 8);
        return Layout {
            v6: true,
            l3,
            frag,
            l4,
            inner_l3,
            inner_l4: inner_l3.map(|o| o + 40),
        };
    }
    let ihl = |at: usize| f.get(at).map(|b| usize::from(b & 0x0f) * 4);
    let l4 = ihl(l3).map(|h| l3 + h.max(20));
    let icmp = f.get(l3 + 9) == Some(&1);
    let inner_l3 = l4.filter(|_| icmp).map(|o| o + 8);
    let inner_l4 = inner_l3.and_then(|o| ihl(o).map(|h| o + h.max(20)));
    Layout {
        v6: false,
        l3,
        frag: None,
        l4,
        inner_l3,
        inner_l4,
    }
}

/// Writes the low `width` bytes of `v` big-endian at `off`, where they fit.
fn put(f: &mut [u8], off: Option<usize>, width: usize, v: u32) {
    let Some(off) = off else { return };
    let bytes = v.to_be_bytes();
    for i in 0..width {
        if let Some(b) = f.get_mut(off + i) {
            *b = bytes[4 - width + i];
        }
    }
}

fn apply(f: &mut Vec<u8>, e: &Edit) {
    match e {
        Edit::Field(field, v) => {
            let l = layout(f);
            let at = |o: Option<usize>, d: usize| o.map(|o| o + d);
            let (off, width) = if l.v6 {
                let tcp =
                    f.get(l.l3 + 6) == Some(&6) || l.frag.is_some_and(|o| f.get(o) == Some(&6));
                match field {
                    Field::EtherType => (Some(12), 2),
                    Field::VersionIhl => (Some(l.l3), 1),
                    Field::Tos => (Some(l.l3 + 1), 1),
                    Field::TotalLen => (Some(l.l3 + 4), 2),
                    Field::Frag => (at(l.frag, 2), 2),
                    Field::Ttl => (Some(l.l3 + 7), 1),
                    Field::Proto => (Some(l.l3 + 6), 1),
                    // The last word of the address: the world's prefixes stay.
                    Field::Saddr => (Some(l.l3 + 8 + 12), 4),
                    Field::Daddr => (Some(l.l3 + 24 + 12), 4),
                    Field::Sport => (l.l4, 2),
                    Field::Dport => (at(l.l4, 2), 2),
                    Field::TcpDoff => (at(l.l4, 12), 1),
                    Field::UdpLen => (at(l.l4, 4), 2),
                    Field::L4Csum => (at(l.l4, if tcp { 16 } else { 6 }), 2),
                    Field::IcmpType => (l.l4, 1),
                    Field::InnerVersionIhl => (l.inner_l3, 1),
                    Field::InnerTotalLen => (at(l.inner_l3, 4), 2),
                    Field::InnerFrag => (None, 2),
                    Field::InnerProto => (at(l.inner_l3, 6), 1),
                    Field::InnerSaddr => (at(l.inner_l3, 8 + 12), 4),
                    Field::InnerDaddr => (at(l.inner_l3, 24 + 12), 4),
                    Field::InnerSport => (l.inner_l4, 2),
                    Field::InnerDport => (at(l.inner_l4, 2), 2),
                }
            } else {
                let tcp = f.get(l.l3 + 9) == Some(&6);
                match field {
                    Field::EtherType => (Some(12), 2),
                    Field::VersionIhl => (Some(l.l3), 1),
                    Field::Tos => (Some(l.l3 + 1), 1),
                    Field::TotalLen => (Some(l.l3 + 2), 2),
                    Field::Frag => (Some(l.l3 + 6), 2),
                    Field::Ttl => (Some(l.l3 + 8), 1),
                    Field::Proto => (Some(l.l3 + 9), 1),
                    Field::Saddr => (Some(l.l3 + 12), 4),
                    Field::Daddr => (Some(l.l3 + 16), 4),
                    Field::Sport => (l.l4, 2),
                    Field::Dport => (at(l.l4, 2), 2),
                    Field::TcpDoff => (at(l.l4, 12), 1),
                    Field::UdpLen => (at(l.l4, 4), 2),
                    Field::L4Csum => (at(l.l4, if tcp { 16 } else { 6 }), 2),
                    Field::IcmpType => (l.l4, 1),
                    Field::InnerVersionIhl => (l.inner_l3, 1),
                    Field::InnerTotalLen => (at(l.inner_l3, 2), 2),
                    Field::InnerFrag => (at(l.inner_l3, 6), 2),
                    Field::InnerProto => (at(l.inner_l3, 9), 1),
                    Field::InnerSaddr => (at(l.inner_l3, 12), 4),
                    Field::InnerDaddr => (at(l.inner_l3, 16), 4),
                    Field::InnerSport => (l.inner_l4, 2),
                    Field::InnerDport => (at(l.inner_l4, 2), 2),
                }
            };
            put(f, off, width, *v);
        }
        Edit::Byte(pos, b) => {
            if !f.is_empty() {
                let i = pos % f.len();
                f[i] = *b;
            }
        }
        Edit::Cut(pos) => {
            let n = pos % (f.len() + 1);
            f.truncate(n);
        }
        Edit::Extend(bytes) => f.extend_from_slice(bytes),
    }
}

/// The frame and ingress a case describes.
fn materialize(c: &Case, seeds: &[(Ingress, Vec<u8>)]) -> (Ingress, Vec<u8>) {
    let (ingress, mut f) = match c.base {
        Some(i) => seeds[i].clone(),
        None if c.random_ipv4 && c.random_ipv6 => {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60];
            f.extend_from_slice(&c.random);
            (Ingress::Eth0, f)
        }
        None if c.random_ipv4 => {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45];
            f.extend_from_slice(&c.random);
            (Ingress::Eth0, f)
        }
        None => (Ingress::Eth0, c.random.clone()),
    };
    for e in &c.edits {
        apply(&mut f, e);
    }
    (c.ingress.unwrap_or(ingress), f)
}

/// The shortest frame BPF_PROG_TEST_RUN accepts for `hook` (see the sweep).
pub fn shortest_runnable(hook: Hook, frame: &[u8]) -> usize {
    match (hook, frame.get(12..14)) {
        (Hook::Xdp, _) => 14,
        (Hook::Tc, Some([0x08, 0x00])) => 14 + 20,
        (Hook::Tc, Some([0x86, 0xdd])) => 14 + 40,
        (Hook::Tc, _) => 14,
    }
}

/// Statistics of a run.
#[derive(Default)]
struct Tally {
    frames: u64,
    refused: u64,
    /// IPv6 frames run, and those of them translated.
    ipv6: u64,
    ipv6_translated: u64,
    by_reason: HashMap<&'static str, u64>,
}

/// State shared by the property's calls (proptest wants an `Fn`).
struct State {
    dp: Datapath,
    w: ModelWorld,
    /// The per-forward counters the model implies.
    stats: HashMap<u32, ForwardStats>,
    /// The verdict counters the model implies, indexed as the map is.
    verdicts: Vec<u64>,
    tally: Tally,
}

fn frames_from_env() -> u64 {
    std::env::var("PORTFWD_FUZZ_FRAMES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("PORTFWD_FUZZ_FRAMES is a number of frames")
        })
        .unwrap_or(DEFAULT_FRAMES)
}

fn seed_from_env() -> u64 {
    match std::env::var("PORTFWD_FUZZ_SEED") {
        Ok(v) => v.parse().expect("PORTFWD_FUZZ_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// One frame through the kernel and the model.
fn check_one(
    s: &mut State,
    env: &Env,
    prog: &Program,
    ingress: Ingress,
    frame: &[u8],
) -> Result<(), String> {
    let ifindex = env.ifindex(ingress);
    let mut model_frame = frame.to_vec();
    let m = s.w.process(&mut model_frame, ifindex, prog.hook);
    let (code, out) = match program::test_run(&mut s.dp, prog, frame, ifindex) {
        Ok(r) => r,
        Err(e) => {
            if frame.len() < shortest_runnable(prog.hook, frame)
                && matches!(m.reason, Reason::PassMalformed | Reason::PassNotIp)
            {
                s.tally.refused += 1;
                return Ok(());
            }
            return Err(format!("test run failed: {e} (model: {})", m.reason.name()));
        }
    };
    s.tally.frames += 1;
    if frame.get(12..14) == Some(&[0x86, 0xdd]) {
        s.tally.ipv6 += 1;
        s.tally.ipv6_translated += u64::from(matches!(m.action, Action::Redirect { .. }));
    }
    *s.tally.by_reason.entry(m.reason.name()).or_default() += 1;
    let mut problems = Vec::new();
    if frame.len() < shortest_runnable(prog.hook, frame) {
        problems.push("BPF_PROG_TEST_RUN accepted a frame expected to be refused".to_owned());
    }
    // Every run counts exactly one verdict: when the model's counter moved by one, no other
    // did (all counters are compared after each batch, in `check_counters`).
    let index = prog.hook as usize * Reason::ALL.len() + m.reason as usize;
    s.verdicts[index] += 1;
    let counted =
        s.dp.maps
            .verdict(prog.hook, m.reason)
            .expect("reading a verdict counter");
    if counted != s.verdicts[index] {
        let all = program::verdicts(&s.dp);
        let moved: Vec<String> = Hook::ALL
            .iter()
            .flat_map(|h| Reason::ALL.iter().map(move |r| (*h, *r)))
            .zip(all.iter().zip(&s.verdicts))
            .filter(|(_, (k, m))| k != m)
            .map(|((h, r), (k, m))| format!("{}:{} kernel {k} model {m}", h.name(), r.name()))
            .collect();
        problems.push(format!(
            "the kernel did not count {} (counters that differ: {moved:?})",
            m.reason.name()
        ));
    }
    if code != program::code_of(prog, m.action) {
        problems.push(format!("return code {code}, model {:?}", m.action));
    }
    if out != model_frame {
        problems.push("output frames differ".to_owned());
    }
    let rewritten = matches!(m.action, Action::Redirect { .. } | Action::Bounce)
        || m.reason == Reason::ForwardedViaStack;
    if !rewritten && out != frame {
        problems.push("a frame that was not redirected was changed".to_owned());
    }
    if let Some(entry) = m.flow {
        let got = program::kernel_flow(&s.dp, &entry);
        if got != Some(entry) {
            problems.push(format!("kernel has flow {got:?}, model wrote {entry:?}"));
        }
    }
    if let Some(c) = m.count {
        let e = s.stats.entry(c.slot).or_default();
        match c.direction {
            Direction::ToTarget => {
                e.to_target_packets += 1;
                e.to_target_bytes += c.bytes;
            }
            Direction::ToClient => {
                e.to_client_packets += 1;
                e.to_client_bytes += c.bytes;
            }
        }
        e.new_flows += u64::from(c.new_flow);
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut r = format!(
        "{} on {ingress:?} ({} bytes), model {} {:?}:\n",
        prog.label,
        frame.len(),
        m.reason.name(),
        m.action
    );
    for p in problems {
        let _ = writeln!(r, "  - {p}");
    }
    let _ = write!(r, "  input:\n{}", hexdump(frame, None));
    let _ = write!(
        r,
        "  model's output:\n{}",
        hexdump(&model_frame, Some(frame))
    );
    let _ = write!(
        r,
        "  kernel's output (* = differs from the model's):\n{}",
        hexdump(&out, Some(&model_frame))
    );
    Err(r)
}

/// The counters the model implies against the kernel's.
fn check_counters(s: &State) -> Result<(), String> {
    let all = program::verdicts(&s.dp);
    if all != s.verdicts {
        return Err(format!(
            "verdict counters: kernel {all:?}, model {:?}",
            s.verdicts
        ));
    }
    for net in NETS {
        for p in FORWARDS {
            let slot = net.slot(p.id);
            let want = s.stats.get(&slot).copied().unwrap_or_default();
            let got = program::stats(&s.dp, slot);
            if got != want {
                return Err(format!(
                    "forward slot {slot}: kernel counters {got:?}, model {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Fuzzes `prog`; panics with the (shrunk) first difference.
pub fn run(env: &Env, prog: &Program) {
    let frames = frames_from_env();
    let seed = seed_from_env();
    let seeds = fixtures::seeds();
    println!(
        "{}: differential fuzzing, {frames} frames, PORTFWD_FUZZ_SEED={seed}",
        prog.label
    );
    let started = Instant::now();
    let total = env.run(|| {
        let mut total = Tally::default();
        let mut done = 0u64;
        let mut batch = 0u64;
        while done < frames {
            let n = BATCH.min(frames - done);
            let (dp, w) = env.load(prog);
            let state = RefCell::new(State {
                dp,
                w,
                stats: HashMap::new(),
                verdicts: vec![0; Hook::ALL.len() * Reason::ALL.len()],
                tally: Tally::default(),
            });
            let mut seed_bytes = [0u8; 32];
            seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
            seed_bytes[8..16].copy_from_slice(&batch.to_le_bytes());
            let config = Config {
                cases: n as u32,
                failure_persistence: None,
                max_shrink_iters: 2_000,
                ..Config::default()
            };
            let mut runner = TestRunner::new_with_rng(
                config,
                TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
            );
            let result = runner.run(&case(seeds.len()), |c| {
                let (ingress, frame) = materialize(&c, &seeds);
                let mut s = state.borrow_mut();
                check_one(&mut s, env, prog, ingress, &frame).map_err(TestCaseError::fail)
            });
            if let Err(e) = result {
                panic!(
                    "{}: kernel and model differ (PORTFWD_FUZZ_SEED={seed}, batch {batch}):\n{e}",
                    prog.label
                );
            }
            let s = state.into_inner();
            if let Err(e) = check_counters(&s) {
                panic!(
                    "{}: {e} (PORTFWD_FUZZ_SEED={seed}, batch {batch})",
                    prog.label
                );
            }
            total.frames += s.tally.frames;
            total.refused += s.tally.refused;
            total.ipv6 += s.tally.ipv6;
            total.ipv6_translated += s.tally.ipv6_translated;
            for (r, n) in s.tally.by_reason {
                *total.by_reason.entry(r).or_default() += n;
            }
            done += n;
            batch += 1;
            if frames > DEFAULT_FRAMES {
                println!(
                    "{}: {done}/{frames} frames, 0 differences, {:.0} s",
                    prog.label,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        total
    });
    let secs = started.elapsed().as_secs_f64();
    let mut reasons: Vec<_> = total.by_reason.into_iter().collect();
    reasons.sort();
    println!(
        "{}: {} frames run ({} IPv6, {} of them translated) + {} refused as too short, \
         0 differences, {secs:.1} s ({:.1} µs/frame); verdicts: {reasons:?}",
        prog.label,
        total.frames,
        total.ipv6,
        total.ipv6_translated,
        total.refused,
        secs * 1e6 / (total.frames + total.refused).max(1) as f64
    );
    assert!(
        total.ipv6 > 0 && total.ipv6_translated > 0,
        "{}: the fuzzer ran {} IPv6 frames, {} translated",
        prog.label,
        total.ipv6,
        total.ipv6_translated
    );
    // Every kind of verdict was reached: the generator is not stuck in one corner.
    for r in [
        Reason::PassIpv6ExtHeader,
        Reason::Forwarded,
        Reason::Replied,
        Reason::PassMalformed,
        Reason::DropFragment,
        Reason::PassNotForUs,
        Reason::DropSourceNotAllowed,
        Reason::Hairpinned,
        Reason::HairpinReplied,
    ] {
        assert!(
            reasons.iter().any(|(n, _)| *n == r.name()),
            "{}: no fuzzed frame reached {}",
            prog.label,
            r.name()
        );
    }
}
