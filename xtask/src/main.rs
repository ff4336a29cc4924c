//! `cargo xtask`: portfwd's developer tasks (aliased in `.cargo/config.toml`).
//!
//! One module per subcommand, each with its own `Args` and `run`:
//! - `setup`: install what building and testing needs (nightly's rust-src, bpf-linker, Debian
//!   tools); every other task runs it first;
//! - `build`: build the daemon (its build script builds the eBPF object);
//! - `lint`: rustfmt and clippy, the eBPF crate included;
//! - `test`: setup, lint, then the workspace's tests (what CI runs through `.ci/run`);
//! - `install`: build in release mode and install the binary, the systemd unit and a default
//!   config;
//! - `demo`: the port-mapping lesson of `docker run -p`, live in a network-namespace lab, with
//!   `portfwd check` explaining the classic failures (`--docker`: with a real dockerd, followed);
//! - `bench`: portfwd against iptables, nftables, plain routing and a userspace proxy.
//!
//! `cmd` holds the helpers for running child processes.

mod bench;
mod build;
mod cmd;
mod demo;
mod install;
mod lint;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "portfwd's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing portfwd needs; a quick no-op when all is present
    Setup,
    /// Run setup, then build the portfwd daemon and its eBPF object
    Build(build::Args),
    /// Run setup, then rustfmt and clippy on the whole workspace, the eBPF crate included
    Lint,
    /// Run setup, lint, then the workspace's tests (what CI runs)
    Test(test::Args),
    /// Build in release mode and install the binary, the systemd unit and a default config
    Install(install::Args),
    /// Show `docker run -p 8080:3000` done by portfwd in a lab of network namespaces, and
    /// `portfwd check` explaining the classic failures (needs root); with `--docker`, a real
    /// dockerd whose published ports portfwd follows
    Demo(demo::Args),
    /// Measure portfwd against iptables, nftables, plain routing and a userspace proxy in fresh
    /// network-namespace labs; writes target/bench/{results.json,report.md,chart.svg}
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Build(args) => build::run(args),
        Task::Lint => lint::run(),
        Task::Test(args) => test::run(args),
        Task::Install(args) => install::run(args),
        Task::Demo(args) => demo::run(args),
        Task::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<demo::Interrupted>().is_some() {
                // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
                return ExitCode::from(130);
            }
            // A failed child's own exit code (cargo test's 101, say) is passed on.
            ExitCode::from(
                err.downcast_ref::<cmd::Failed>()
                    .map_or(1, cmd::Failed::code),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::{Cli, Task};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_arguments_after_double_dash_to_cargo_test() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--no-lint",
            "--",
            "e2e",
            "--",
            "--nocapture",
        ])
        .unwrap();
        let Task::Test(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(args.no_lint);
        assert_eq!(args.cargo_args, ["e2e", "--", "--nocapture"]);
    }

    #[test]
    fn demo_takes_quick_keep_and_docker() {
        let cli = Cli::try_parse_from(["xtask", "demo", "--quick", "--keep"]).unwrap();
        let Task::Demo(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(args.quick && args.keep);
        let cli = Cli::try_parse_from(["xtask", "demo"]).unwrap();
        let Task::Demo(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(!args.quick && !args.keep && !args.docker);
        let cli = Cli::try_parse_from(["xtask", "demo", "--docker", "--quick"]).unwrap();
        let Task::Demo(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(args.docker && args.quick && !args.keep);
    }

    #[test]
    fn build_takes_release() {
        let cli = Cli::try_parse_from(["xtask", "build", "--release"]).unwrap();
        let Task::Build(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(args.release);
    }

    #[test]
    fn bench_help_lists_its_options() {
        let err = Cli::try_parse_from(["xtask", "bench", "--help"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = err.to_string();
        for option in [
            "--quick",
            "--runs",
            "--systems",
            "--cases",
            "--portfwd",
            "--out",
        ] {
            assert!(help.contains(option), "{option} missing:\n{help}");
        }
    }

    #[test]
    fn bench_takes_lists_of_systems_and_cases() {
        let cli = Cli::try_parse_from([
            "xtask",
            "bench",
            "--quick",
            "--runs",
            "2",
            "--systems",
            "portfwd-tc,iptables",
            "--cases",
            "udp-1flow",
        ])
        .unwrap();
        let Task::Bench(args) = cli.task else {
            panic!("parsed {cli:?}");
        };
        assert!(args.quick);
        assert_eq!(args.runs, Some(2));
        assert_eq!(args.systems, ["portfwd-tc", "iptables"]);
        assert_eq!(args.cases, ["udp-1flow"]);
        assert!(Cli::try_parse_from(["xtask", "bench", "--runs", "many"]).is_err());
    }
}
