//! Datapath correctness (issue #5): the real eBPF programs run with BPF_PROG_TEST_RUN, maps
//! filled by the test, in a lab network namespace (the FIB lookups of a test run happen in the
//! caller's namespace, against the lab host's routes and permanent neighbour entries).
//!
//! Every check runs against each program in `program::PROGRAMS`: tc (`portfwd_tc_ingress`), XDP
//! with eth0 and docker0 in `PF_XDP_EGRESS` (XDP finishes translations itself), and XDP without
//! them (it hands every translation to tc untouched: `pass_to_tc`, a verdict of its own).
//!
//! - **The world** (`datapath/world.rs`): one description of the lab host, its published single
//!   ports (bound to one address and to every address), port ranges (bound and unbound,
//!   overlapping single ports, to show the lookup order), forwards with source allowlists, the
//!   flows present before the run and an exposed bridge port where containers' calls to
//!   published ports (hairpin) arrive, written with symbolic addresses and instantiated for
//!   IPv4 and IPv6. `datapath/env.rs` builds it in a lab and loads the maps; the reference
//!   model's copy is `datapath/model_world.rs`; the programs and their test-run contexts are
//!   `datapath/program.rs`.
//! - **Fixtures** (`datapath/fixtures/`): Katran-style tables of {name, input frame, expected
//!   output or "unchanged", expected verdict}, one file per feature (ordinary traffic, not
//!   ours, IP options and extension headers, fragments, cut short, special values, bad
//!   checksums, spoofing, ICMP errors, port ranges, allowlists, hairpin, path MTU), each
//!   written once and instantiated for both families, with rows of one family only where
//!   behaviour differs by family. Each fixture also asserts the one verdict counter it increments (of the right
//!   hook), and for translated frames the per-forward counters and the flow entry. Expected
//!   frames are built by `datapath/frame.rs`, whose checksums are computed from scratch (RFC
//!   1071), never derived from the input, and are cross-checked with `etherparse`. A failure
//!   names the family, the category and the row, and shows the exact frames.
//! - **Truncation sweep** (`datapath/sweep.rs`): every fixture cut at every length: a cut
//!   datagram is never rewritten, it passes or drops, and program and model agree.
//! - **Differential fuzzing** (`datapath/fuzz.rs`): random and mutated frames (proptest) through
//!   the kernel program and the reference model `portfwd_model`, which must agree on
//!   every frame. `PORTFWD_FUZZ_FRAMES=N` sets the number of frames per program (default
//!   10 000, the CI mode: seconds on an idle machine); the long mode is
//!   `PORTFWD_FUZZ_FRAMES=1000000`. `PORTFWD_FUZZ_SEED=N` replays a run (the seed is printed).
//! - **Verifier budget**: the verified instruction count of each program, asserted under a
//!   stated budget ([`VERIFIER_BUDGETS`]).
//! - **Drop reasons**: `portfwd status` names every verdict counter (one end-to-end test).
//! - **Flow tables** (`datapath/flow_tables.rs`): a flood of new flows evicts no established
//!   flow, and the fill level derived from the datapath's inserts is exact.
//! - **Flow table sizes** (`datapath/flow_sizes.rs`): the tables take the size `max_flows` asks,
//!   and a restart with another size carries the pinned tables' flows over.
//!
//! Run: `cargo test -p portfwd --test datapath -- --nocapture` (as root; without root these tests
//! say SKIPPED, and under `CI=true` they fail). The model and builder checks run without root.
//!
//! Adding a fixture: add a row to the feature's table in `datapath/fixtures/`, with the
//! world's symbolic addresses (`w.client`, `w.host`, ...), e.g.
//! `t.forwarded("what it shows", input, to_c1(w, input, 3000), TCP_8080)`, or `t.pass` /
//! `t.drop` with the reason counter it must increment; `.xdp(reason)` where XDP's verdict
//! differs from tc's for another cause than its egress. The row runs in both families unless
//! it sits under a `match w.family`. Build frames with `Pkt` (`frame.rs`) and the vocabulary
//! of `fixtures/rows.rs`; describe the expected output as a packet (`to_c1(..)`,
//! `from_host(..)`), never as edited input bytes.
mod support;

#[path = "datapath/env.rs"]
mod env;
#[path = "datapath/fixtures/mod.rs"]
mod fixtures;
#[path = "datapath/flow_sizes.rs"]
mod flow_sizes;
#[path = "datapath/flow_tables.rs"]
mod flow_tables;
#[path = "datapath/frame.rs"]
mod frame;
#[path = "datapath/fuzz.rs"]
mod fuzz;
#[path = "datapath/local_socket.rs"]
mod local_socket;
#[path = "datapath/model_world.rs"]
mod model_world;
#[path = "datapath/pools.rs"]
mod pools;
#[path = "datapath/program.rs"]
mod program;
#[path = "datapath/runner.rs"]
mod runner;
#[path = "datapath/sweep.rs"]
mod sweep;
#[path = "datapath/world.rs"]
mod world;

use portfwd::datapath::generation;
use portfwd_common::{maps::Program, reason::Reason};

use env::Env;
use model_world::ModelWorld;
use program::PROGRAMS;

/// Verified instructions allowed per program (the kernel's `verified_insns`: what the verifier
/// walked, kernel 6.18). The budgets leave about 25% headroom, so that growth shows up here, in
/// review, long before the verifier's 1M limit. When a change legitimately needs more, raise the
/// budget in the same commit and say why here and in its message.
///
/// - tc, XDP: 7542 and 7810 when first set (budgets 9500, 9800). Re-measured 10603 and 13362
///   after port ranges and allowlists (two LPM trie lookups after the exact-match miss, one
///   allowlist lookup) and hairpin (a second address/port rewrite on both the forward and the
///   reply path, inlined; XDP's software checksum arithmetic makes each rewrite larger than
///   tc's helper calls), so the budgets were raised to 13300 and 16700. 10886 and 11191 after
///   tc wrote header fields directly and the FIB lookup's parameters stopped going through a
///   `memset` call. Re-measured 52926 and 56133 with IPv6 (the whole translation path
///   instantiated a second time, for IPv6, behind the ethertype branch; an IPv6 address rewrite
///   is four checksum updates, which XDP does in software inline; tc's direct writes each have
///   a helper fallback, which doubles the states the verifier walks), so the budgets were
///   66000 and 70000. 47121 and 55004 before fragments were translated, 61862 and 68582 after:
///   the later-fragment path (fragment table lookup, FIB lookup, address rewrite, send) is a
///   third translation path per family, and the first fragment's insert a branch of the other
///   two; the budgets were 77000 and 86000. 97595 and 79226 once path MTU (the ICMP answer
///   built in place: a fourth way out of every translation, tc also asking the kernel's MTU
///   check), established-flow tables (a second flow table looked up, and the promotion of a
///   flow) and the reload's generation were merged: tc gained most, its MTU check doubling the
///   states after every FIB lookup. 114451 and 88284 with the replies check too (`local`: TCP
///   flags, a flow and a local flow lookup, a socket lookup, in both families). Budgets 140000
///   and 110000, well under the kernel's limit of a million. 60572 and 48556 once parsing, each
///   translation path and tc's MAC learning became BPF functions of their own (stack room for
///   backend selection, #16): the verifier walks a function's states once per call site, not
///   once per path through everything inlined before it. Budgets 76000 and 61000. 71441 and
///   60403 with backend selection (#16, `pool`): the selection and the refusal's answer are
///   BPF functions of their own, but the translation after a pool's choice is walked a second
///   time, its states not pruned against the single target's (about 7000 of the growth on
///   each: measured by letting no choice reach `nat::publish`); budgets 90000 and 76000.
/// - tc egress (`local::record`, flows leaving from published ports): 1734 when first measured,
///   2158 with the generation read by its service lookup.
/// - The socket programs (cgroup `sock_addr`, loaded here without being attached): 226, 221,
///   111, 111 when first measured (86 for the last two once the logic was shared with IPv6).
///   The IPv6 ones (which also take IPv4-mapped addresses, through the IPv4 maps): 792, 793,
///   223, 223 when first measured. 372, 379, 1364, 1369 for the four that translate once a
///   pool's forward picks a backend per socket (its row read and the socket cookie hashed):
///   budgets 470, 470, 1700, 1700.
const VERIFIER_BUDGETS: &[(Program, u32)] = &[
    (Program::TcIngress, 90_000),
    (Program::Xdp, 76_000),
    (Program::TcEgress, 2_600),
    (Program::Connect4, 470),
    (Program::Sendmsg4, 470),
    (Program::Recvmsg4, 140),
    (Program::Getpeername4, 140),
    (Program::Connect6, 1_700),
    (Program::Sendmsg6, 1_700),
    (Program::Recvmsg6, 280),
    (Program::Getpeername6, 280),
];

#[test]
fn fixtures_pass_on_every_program() {
    if !support::require_root() {
        return;
    }
    let table = fixtures::all();
    // 263 when the tables were first written once for both families: coverage never drops.
    assert!(table.len() >= 263, "the table has {} fixtures", table.len());
    let env = Env::new("dpfix");
    let mut failures = Vec::new();
    for prog in PROGRAMS {
        failures.extend(runner::run_table(&env, prog, &table));
    }
    runner::assert_no_failures("fixtures", &failures);
}

/// A reload's switch: with the staged generation made active (and the previous one then
/// removed, as the daemon does), every program and the model translate by the staged config
/// only: single ports, ranges and allowlists alike, nothing of the previous generation.
#[test]
fn a_switched_generation_serves_the_staged_config_only() {
    if !support::require_root() {
        return;
    }
    let table = fixtures::switched();
    let env = Env::new("dpgen");
    let mut failures = Vec::new();
    for prog in PROGRAMS {
        failures.extend(runner::run_table_with(&env, prog, &table, |dp, w| {
            let staged = generation::other(dp.maps.active_generation().unwrap());
            dp.maps.switch_generation(staged).unwrap();
            let removed = dp.maps.clear_generation(generation::other(staged)).unwrap();
            assert!(removed > 0, "the previous generation had entries");
            w.generation = staged;
        }));
    }
    runner::assert_no_failures("switched generation", &failures);
}

/// The model alone against the switched table (see above), without root.
#[test]
fn model_agrees_with_switched_fixtures() {
    let mut failures = Vec::new();
    for prog in PROGRAMS {
        let (mut w, ifindex) = ModelWorld::detached(prog);
        w.generation = 1;
        for f in fixtures::switched() {
            failures.extend(runner::check_model(&mut w, prog, ifindex(f.ingress), &f).err());
        }
    }
    runner::assert_no_failures("reference model, switched generation", &failures);
}

/// The model alone against the table: runs without root, so a model change is checked on any
/// machine.
#[test]
fn model_agrees_with_fixtures() {
    let mut failures = Vec::new();
    for prog in PROGRAMS {
        let (mut w, ifindex) = ModelWorld::detached(prog);
        for f in fixtures::all() {
            failures.extend(runner::check_model(&mut w, prog, ifindex(f.ingress), &f).err());
        }
    }
    runner::assert_no_failures("reference model", &failures);
}

/// Every verdict the datapath can reach in a test run is shown by at least one fixture.
#[test]
fn fixtures_cover_every_reachable_reason() {
    let table = fixtures::all();
    let mut covered = Vec::new();
    for prog in PROGRAMS {
        covered.extend(table.iter().map(|f| f.expected(prog).reason));
    }
    // drop_rewrite_failed needs a kernel helper to fail on a parsed packet, which a linear
    // test frame cannot provoke; drop_fragment, an insert into the fragments' LRU map to fail.
    // drop_too_big_rate_limited needs the answers' budget spent: shown by
    // `fixtures/path_mtu.rs`'s own test. pass_local_socket needs a local socket owning the
    // packet's addresses, which the table's world has not: `local_socket_lookup` shows it with
    // real sockets. The world of the table has no forward with several backends:
    // refused_all_down, drop_refused_rate_limited and drop_no_backend are shown by `pools.rs`.
    let unreachable = [
        Reason::DropRewriteFailed,
        Reason::DropFragment,
        Reason::DropTooBigRateLimited,
        Reason::PassLocalSocket,
        Reason::RefusedAllDown,
        Reason::DropRefusedRateLimited,
        Reason::DropNoBackend,
    ];
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !covered.contains(r) && !unreachable.contains(r))
        .map(|r| r.name())
        .collect();
    assert!(missing.is_empty(), "no fixture shows {missing:?}");
}

/// The builder's checksums agree with an independent implementation (etherparse), for IPv4
/// (header, TCP, UDP) and IPv6 (TCP, UDP, ICMPv6, whose checksums cover the pseudo-header).
#[test]
fn builder_checksums_agree_with_etherparse() {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let (mut checked, mut checked6) = (0, 0);
    for f in fixtures::all() {
        for bytes in [
            Some(&f.input),
            match &f.expect {
                fixtures::Expect::Output(o) => Some(o),
                fixtures::Expect::Unchanged => None,
            },
        ]
        .into_iter()
        .flatten()
        {
            let Ok(p) = SlicedPacket::from_ethernet(bytes) else {
                continue;
            };
            // Deliberately wrong checksums, and lengths etherparse reads differently.
            let wrong = f.category == fixtures::CHECKSUMS
                || f.name.contains("checksum 0")
                || f.name.contains("wrong checksum")
                || f.category == fixtures::SHORT;
            if wrong {
                continue;
            }
            match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header().to_header();
                    if ip.header().is_fragmenting_payload() {
                        continue;
                    }
                    assert_eq!(
                        h.calc_header_checksum(),
                        h.header_checksum,
                        "{}: IPv4 header checksum",
                        f.name
                    );
                    let (want, got) = match &p.transport {
                        Some(TransportSlice::Tcp(tcp)) => (
                            tcp.to_header().calc_checksum_ipv4(&h, tcp.payload()),
                            tcp.checksum(),
                        ),
                        Some(TransportSlice::Udp(udp)) => (
                            udp.to_header().calc_checksum_ipv4(&h, udp.payload()),
                            udp.checksum(),
                        ),
                        _ => continue,
                    };
                    assert_eq!(want.unwrap(), got, "{}: L4 checksum", f.name);
                    checked += 1;
                }
                Some(NetSlice::Ipv6(ip)) => {
                    if ip.payload().fragmented {
                        continue;
                    }
                    let h = ip.header().to_header();
                    let (want, got) = match &p.transport {
                        Some(TransportSlice::Tcp(tcp)) => (
                            tcp.to_header().calc_checksum_ipv6(&h, tcp.payload()),
                            tcp.checksum(),
                        ),
                        Some(TransportSlice::Udp(udp)) => (
                            udp.to_header().calc_checksum_ipv6(&h, udp.payload()),
                            udp.checksum(),
                        ),
                        Some(TransportSlice::Icmpv6(icmp)) => (
                            icmp.icmp_type()
                                .calc_checksum(h.source, h.destination, icmp.payload()),
                            icmp.checksum(),
                        ),
                        _ => continue,
                    };
                    assert_eq!(want.unwrap(), got, "{}: IPv6 L4 checksum", f.name);
                    checked6 += 1;
                }
                _ => {}
            }
        }
    }
    assert!(checked > 100, "only {checked} IPv4 L4 checksums checked");
    assert!(checked6 > 60, "only {checked6} IPv6 L4 checksums checked");
}

#[test]
fn truncation_sweep() {
    if !support::require_root() {
        return;
    }
    let env = Env::new("dpsweep");
    let table = fixtures::all();
    for prog in PROGRAMS {
        let failures = sweep::run(&env, prog, &table);
        runner::assert_no_failures(&format!("{} truncation sweep", prog.name), &failures);
    }
}

#[test]
fn differential_fuzz() {
    if !support::require_root() {
        return;
    }
    let env = Env::new("dpfuzz");
    // XDP handing translations to tc is the XDP program with one map entry fewer: the table and
    // the sweep cover it.
    for prog in [&program::TC, &program::XDP] {
        fuzz::run(&env, prog);
    }
}

#[test]
fn verifier_budget() {
    if !support::require_root() {
        return;
    }
    let env = Env::new("dpverif");
    let mut over = Vec::new();
    env.run(|| {
        let (mut dp, _) = env.load(&program::TC);
        for &(name, budget) in VERIFIER_BUDGETS {
            let count = dp
                .verified_insns_of(name)
                .expect("reading the program info")
                .expect("the kernel reports verified_insns (>= 5.16)");
            println!("{name}: {count} verified instructions (budget {budget})");
            if count > budget {
                over.push(format!(
                    "{name}: {count} verified instructions, budget {budget}"
                ));
            }
        }
    });
    assert!(over.is_empty(), "over the verifier budget: {over:?}");
}

/// Every outcome other than "forwarded" has a named counter, and `portfwd status` shows them by
/// name: a datagram too large for one frame reaches a published UDP port as fragments, its
/// first fragment is forwarded and the rest follow it (`fragment_translated`).
#[test]
fn status_shows_drop_reasons_by_name() {
    use std::net::{SocketAddr, UdpSocket};

    if !support::require_root() {
        return;
    }
    let mut lab = portfwd_lab::Lab::new("dpstat").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let mut d = support::Daemon::start(
        &mut lab,
        &format!(
            "forwards:\n  - listen: \"5353/udp\"\n    to: \"{}:53\"\n",
            c1.addr
        ),
    );
    let to = SocketAddr::from((portfwd_lab::Lab::HOST_ADDR, 5353));
    lab.client().run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&[0x55; 3000], to).unwrap();
    });
    let counted = |reason: &str| -> Option<u64> {
        let out = d.cli(&lab, &["status"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `  fragment_translated   <tc> <xdp>`
        text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(reason)).then(|| words.next().unwrap().parse().unwrap())
        })
    };
    support::eventually(|| counted("fragment_translated").is_some_and(|n| n >= 2))
        .expect("portfwd status shows the later fragments as fragment_translated");
    for r in Reason::ALL {
        assert!(
            counted(r.name()).is_some(),
            "portfwd status has no line for {}",
            r.name()
        );
    }
    assert!(d.stop(&mut lab).success());
}
