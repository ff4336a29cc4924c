//! The real `portfwd` CLI, run against one daemon's control socket: in the lab's host namespace
//! as root, or as another user.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The `portfwd` binary under test.
pub fn portfwd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portfwd"))
}

/// Runs `portfwd ...` against the daemon listening on `socket`, in namespace `host_ns`.
#[derive(Debug, Clone)]
pub struct Cli {
    host_ns: String,
    socket: PathBuf,
}

impl Cli {
    pub fn new(host_ns: &str, socket: &Path) -> Cli {
        Cli {
            host_ns: host_ns.to_owned(),
            socket: socket.to_owned(),
        }
    }

    /// `ip netns exec HOST portfwd ARGS`, with the socket in `PORTFWD_SOCKET` (as for every call).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host_ns])
            .arg(portfwd_bin())
            .args(args)
            .env("PORTFWD_SOCKET", &self.socket)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `portfwd ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `portfwd ARGS`, which must succeed, and parses its standard output as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let out = self.run(args);
        assert!(out.status.success(), "portfwd {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("portfwd {args:?}: not JSON ({e}): {out:?}"))
    }

    /// Runs the CLI as another user: `setpriv` with `uid`, `gid` and the supplementary `groups`
    /// (none when empty). The socket is a filesystem socket, so no namespace is needed.
    pub fn run_as(&self, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
        let groups = if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg(groups)
            .arg(portfwd_bin())
            .args(args)
            .env("PORTFWD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}
