use std::process::ExitCode;

use clap::Parser as _;
use portfwd::{
    api,
    cli::{Cli, Command, Failure},
    daemon,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon {
            config,
            mode,
            pin_dir,
            max_flows,
            cleanup,
        } => {
            init_logging();
            let opts = daemon::Options {
                config,
                socket: api::socket_path(cli.socket.as_deref()),
                mode,
                pin_dir,
                max_flows,
                cleanup,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("portfwd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(daemon::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // The one place a daemon error is rendered: the whole chain, one line.
                    let e = portfwd::error::chain(e.as_ref());
                    tracing::error!("{e}");
                    eprintln!("portfwd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => match portfwd::cli::run_client(cli.socket, command) {
            Ok(()) | Err(Failure::StdoutClosed) => ExitCode::SUCCESS,
            Err(Failure::Message(message)) => {
                eprintln!("portfwd: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Logs through `tracing`. Under systemd (JOURNAL_STREAM set) straight to the journal, with
/// each event's level as its priority (`journalctl -u portfwd -p warning`) and its fields as
/// journal fields (`PORTFWD_INTERFACE=eth0`); stderr otherwise, coloured only on a terminal, and
/// without timestamps when the journal could not be reached (it adds its own). `RUST_LOG` sets
/// the level (default info). The datapath itself never logs per packet.
fn init_logging() {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    if under_systemd && let Ok(journald) = tracing_journald::layer() {
        let journald = journald
            .with_syslog_identifier("portfwd".to_owned())
            .with_field_prefix(Some("PORTFWD".to_owned()));
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if under_systemd {
        builder.without_time().with_ansi(false).init();
    } else {
        use std::io::IsTerminal as _;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
