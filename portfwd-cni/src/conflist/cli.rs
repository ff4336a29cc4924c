//! `portfwd-cni install-conflist`: what the Kubernetes init container runs on each node.
//!
//! Without arguments the binary is the CNI plugin (runtimes start it with none); this
//! subcommand is picked by `main.rs` when the first argument is [`SUBCOMMAND`].
use std::path::PathBuf;

use clap::Parser;

use super::{Change, FileError, Outcome, PORTFWD_CNI, install_binary, rewrite_dir};

/// The first argument that selects this subcommand.
pub const SUBCOMMAND: &str = "install-conflist";

/// Install portfwd-cni into a node's CNI directories: copy this binary into the plugin
/// directory and rewrite every .conflist of the config directory so that portfwd-cni stands
/// where portmap stood (or, with --rollback, the reverse).
///
/// Files are replaced atomically (temporary file and rename); a rewritten conflist's previous
/// content is kept beside it as NAME.portfwd-bak (NAME.portfwd-rollback-bak for a roll back).
/// Exit status 1 when a conflist could not be rewritten (it is left as it was) or, for an
/// install, when the config directory has no .conflist yet.
#[derive(Debug, Parser)]
#[command(name = "portfwd-cni install-conflist", version)]
pub struct Args {
    /// The CNI config directory whose .conflist files are rewritten.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub net_dir: PathBuf,
    /// The CNI plugin directory portfwd-cni is installed into.
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The binary to install [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Rewrite the conflists only; install no binary.
    #[arg(long)]
    pub no_binary: bool,
    /// The daemon's control socket, written into the plugin's entry as "socket" [default: none
    /// written; the plugin then uses /run/portfwd/portfwd.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
    /// Append portfwd-cni to the end of a chain that has no portmap (otherwise such a conflist
    /// is left unchanged).
    #[arg(long, conflicts_with = "rollback")]
    pub append: bool,
    /// Roll back: portfwd-cni becomes portmap again (the binary is left in the plugin
    /// directory; nothing calls it any more).
    #[arg(long)]
    pub rollback: bool,
    /// Rewrite conflists of this cniVersion too, though portfwd-cni does not speak it (it
    /// speaks 0.3.0 to 1.1.0). Repeatable.
    #[arg(long, value_name = "VERSION")]
    pub allow_cni_version: Vec<String>,
    /// Say what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the subcommand from the process's arguments (the first is [`SUBCOMMAND`]); returns
/// the exit status.
pub fn main() -> i32 {
    let args = match Args::try_parse_from(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            let status = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return status;
        }
    };
    match run(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("{PORTFWD_CNI} {SUBCOMMAND}: {e}");
            1
        }
    }
}

/// Does the work; `Ok(false)` when some file failed (each is reported on its own line).
pub fn run(args: &Args) -> Result<bool, FileError> {
    let prefix = format!("{PORTFWD_CNI} {SUBCOMMAND}");
    let dry = if args.dry_run { " (dry run)" } else { "" };
    if !args.rollback && !args.no_binary {
        let binary = match &args.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|source| FileError::Io {
                action: "finding this executable".to_owned(),
                source,
            })?,
        };
        let target = args.bin_dir.join(PORTFWD_CNI);
        if !args.dry_run {
            install_binary(&binary, &args.bin_dir)?;
        }
        println!(
            "{prefix}: installed {} as {}{dry}",
            binary.display(),
            target.display()
        );
    }
    let change = if args.rollback {
        Change::Rollback
    } else {
        Change::Install {
            socket: args.socket.clone(),
            append: args.append,
        }
    };
    let outcomes = rewrite_dir(
        &args.net_dir,
        &change,
        &args.allow_cni_version,
        args.dry_run,
    )?;
    if outcomes.is_empty() {
        return if args.rollback {
            println!(
                "{prefix}: no .conflist in {}: nothing to roll back",
                args.net_dir.display()
            );
            Ok(true)
        } else {
            eprintln!(
                "{prefix}: no .conflist in {} yet (has the network plugin written its config?)",
                args.net_dir.display()
            );
            Ok(false)
        };
    }
    let mut ok = true;
    for o in &outcomes {
        match &o.result {
            Ok(outcome) => println!("{prefix}: {}: {outcome}{dry}", o.path.display()),
            Err(e) => {
                ok = false;
                eprintln!("{prefix}: {}: left unchanged: {e}", o.path.display());
            }
        }
    }
    if !args.rollback && ok && !outcomes.iter().any(|o| installed(&o.result)) {
        println!(
            "{prefix}: warning: no conflist in {} calls {PORTFWD_CNI}: hostPorts on this node are not handed to portfwd (--append adds it to a chain without portmap)",
            args.net_dir.display()
        );
    }
    Ok(ok)
}

fn installed(result: &Result<Outcome, FileError>) -> bool {
    matches!(
        result,
        Ok(Outcome::Replaced { .. }
            | Outcome::Appended { .. }
            | Outcome::Updated { .. }
            | Outcome::AlreadyInstalled { .. })
    )
}
