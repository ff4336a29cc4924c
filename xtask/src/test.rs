//! `cargo xtask test`: what README names and CI runs (`.ci/run`). Setup, lint (unless
//! `--no-lint`), then `cargo test` on every crate (the bench's generator included) but the two
//! eBPF crates, which only build for the BPF target (portfwd's and the generator's tests
//! exercise them through the embedded objects). Fails with cargo's exit code when a phase
//! fails. After the tests (and the end-to-end suite again in XDP mode), the quick demo runs
//! twice, to its end and interrupted by SIGINT half-way, and must leave nothing behind
//! (`demo::verify`). Last, the benchmark runs once on two cases with the debug build, and the
//! pools' pps comparison once (`bench --pools pps`), so that they keep working; their figures
//! are not judged (a timed test proves nothing on a shared machine, `cargo xtask bench` does).
//!
//! The end-to-end tests need root. Whether they fail or report themselves as not run without it
//! is theirs to decide (from `CI`): the environment is passed through unchanged.

use anyhow::Result;

use crate::{bench, cmd, demo, lint, setup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the lint phase
    #[arg(long)]
    pub no_lint: bool,

    /// Arguments for `cargo test`, after `--`: test name filters, cargo flags, and then the test
    /// binaries' own flags after another `--` (`cargo xtask test -- e2e -- --nocapture`)
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// The modules of the `e2e` test binary run a second time in XDP mode, as test name filters.
const XDP_MODULES: [&str; 9] = [
    "forwarding::",
    "ranges::",
    "hostlocal::",
    "ipv6::",
    "fragments::",
    "path_mtu::",
    "replies::",
    "reload::",
    // Several backends: spread and affinity through XDP's selection (draining and health are
    // the daemon's, the same in both modes).
    "pool::",
];

pub fn run(args: Args) -> Result<()> {
    if !cmd::is_root() {
        println!(
            "note: not running as root: the end-to-end tests need root; with CI=true they fail, \
             otherwise they are reported as not run"
        );
    }

    let phases = if args.no_lint { 5 } else { 6 };
    let mut phase = 0;
    let mut banner = |title: &str| {
        phase += 1;
        cmd::banner(&format!("[{phase}/{phases}] {title}"));
    };

    banner("setup");
    setup::run()?;

    if !args.no_lint {
        banner("lint");
        lint::checks()?;
    }

    banner("test");
    let mut test = cmd::cargo();
    test.args([
        "test",
        "--workspace",
        "--exclude",
        "portfwd-ebpf",
        "--exclude",
        "portfwd-pktgen-ebpf",
    ])
    .args(&args.cargo_args);
    cmd::run(&mut test)?;

    // The forwarding part of the end-to-end suite again with the daemon in XDP mode (native XDP
    // in front of tc on the lab's client-facing interface), so both attach modes are proven on
    // every run. The filters name modules of the e2e binary; `check`, `ops` and `service` run in
    // the first pass only.
    banner("end-to-end tests in XDP mode");
    let mut xdp = cmd::cargo();
    xdp.args(["test", "--package", "portfwd", "--test", "e2e", "--"])
        .args(XDP_MODULES)
        .env("PORTFWD_E2E_MODE", "xdp");
    cmd::run(&mut xdp)?;

    // The quick demo, to its end and interrupted half-way: it tells its story (it checks each
    // step) and leaves no namespace, process, pin directory or program behind.
    banner("demo leaves nothing behind (cargo xtask demo --quick, complete and interrupted)");
    if cmd::is_root() {
        demo::verify::run()?;
    } else if std::env::var("CI").as_deref() == Ok("true") {
        anyhow::bail!("the demo phase needs root, and CI=true: run `cargo xtask test` as root");
    } else {
        println!("!!!!!!!! SKIPPED: the demo needs root (network namespaces, eBPF) !!!!!!!!");
    }
    // The benchmark end to end, briefly: the generator, a portfwd testbed and a netfilter one,
    // the TCP loop, and the reports. It must complete every run; the figures are not checked.
    banner(
        "the benchmark runs (one run of udp-1flow and tcp-rr, and of the pools' pps \
         comparison; figures not judged)",
    );
    if cmd::is_root() {
        bench_smoke()?;
    } else if std::env::var("CI").as_deref() == Ok("true") {
        anyhow::bail!(
            "the benchmark phase needs root, and CI=true: run `cargo xtask test` as root"
        );
    } else {
        println!("!!!!!!!! SKIPPED: the benchmark needs root (network namespaces, eBPF) !!!!!!!!");
    }
    println!("\nxtask test: all phases passed");
    Ok(())
}

fn bench_smoke() -> Result<()> {
    cmd::run(cmd::cargo().args(["build", "--package", "portfwd", "--bin", "portfwd"]))?;
    cmd::run(cmd::cargo().args(["build", "--package", "portfwd-pktgen"]))?;
    let root = cmd::workspace_root();
    let out = root.join("target/bench-smoke");
    // A profile left by an earlier run would take the name checked below.
    let _ = std::fs::remove_dir_all(out.join("profile"));
    bench::run(bench::Args {
        quick: true,
        runs: Some(1),
        systems: ["portfwd-tc", "iptables", "ceiling"]
            .map(String::from)
            .to_vec(),
        cases: ["udp-1flow", "tcp-rr"].map(String::from).to_vec(),
        portfwd: Some(root.join("target/debug/portfwd")),
        no_build: true,
        generator: bench::GeneratorKind::Xdp,
        out: Some(out.clone()),
        strict: true,
        pools: None,
        profile: Some(out.join("profile")),
        max_flows: None,
    })?;
    // `--profile` wrote each UDP window's top symbols, the portfwd program's among them.
    let profile = std::fs::read_to_string(out.join("profile/portfwd-tc-udp-1flow-1.txt"))?;
    anyhow::ensure!(
        profile.contains("portfwd_tc"),
        "the profile of portfwd-tc's UDP window names no portfwd program:\n{profile}"
    );
    // Issue #16's pps comparison (16 backends vs 1 target, one flow and new flows), once:
    // about 25 s.
    bench::run(bench::Args {
        quick: true,
        runs: Some(1),
        systems: Vec::new(),
        cases: Vec::new(),
        portfwd: Some(root.join("target/debug/portfwd")),
        no_build: true,
        generator: bench::GeneratorKind::Xdp,
        out: Some(out.clone()),
        strict: true,
        pools: Some(bench::PoolScenarios::Pps),
        profile: None,
        max_flows: None,
    })?;
    anyhow::ensure!(
        out.join("pools.json").is_file(),
        "bench --pools pps wrote no pools.json"
    );
    // The reports are there and name every measured pair.
    let json = std::fs::read_to_string(out.join("results.json"))?;
    let value: serde_json::Value = serde_json::from_str(&json)?;
    let measured = value["records"]
        .as_array()
        .map(|r| r.iter().filter(|x| x["median"].is_number()).count())
        .unwrap_or(0);
    anyhow::ensure!(
        measured >= 5,
        "results.json has {measured} measured records; expected udp-1flow x 3 systems and \
         tcp-rr x 2"
    );
    anyhow::ensure!(out.join("report.md").is_file() && out.join("chart.svg").is_file());
    Ok(())
}
