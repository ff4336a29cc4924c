//! The portfwd daemon under test: its config, starting it in the lab's host namespace, and
//! reading its verdict counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use portfwd_lab::Lab;

use super::plan::Forward;

/// How long the daemon may take to answer `portfwd list` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `portfwd daemon` has an attach mode option (`--mode auto|tc|xdp`); `Err` says why not.
pub fn xdp_support(bin: &Path) -> Result<(), String> {
    let out = Command::new("timeout")
        .args(["-s", "KILL", "10"])
        .arg(bin)
        .args(["daemon", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{} daemon --help`: {e}", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if help.contains("--mode") {
        Ok(())
    } else {
        Err(
            "not available: this portfwd has no `daemon --mode` (XDP attach mode not built yet)"
                .into(),
        )
    }
}

/// The config file publishing `forwards` (in this order) on the lab's client-facing `eth0`.
///
/// Only `eth0` is exposed, for both attach modes: `--mode xdp` requires native XDP on every
/// exposed interface and a bridge has none, and the tc figures use the same config so that the
/// mode is the only difference. The daemon still attaches tc to every interface (the replies
/// arrive on the container's veth).
/// `max_flows`: the flow tables' size (`--max-flows`), the daemon's default when `None`.
pub fn config_yaml(forwards: &[Forward], max_flows: Option<u64>) -> String {
    let mut s = String::from("# written by `cargo xtask bench`\ninterfaces: [eth0]\n");
    if let Some(n) = max_flows {
        let _ = writeln!(s, "max_flows: {n}");
    }
    s += "forwards:\n";
    for f in forwards {
        let _ = writeln!(
            s,
            "  - listen: \"{}/{}\"\n    to: \"{}\"",
            f.port,
            f.proto.name(),
            f.to
        );
    }
    s
}

/// A daemon spawned into a lab (the lab kills it when dropped).
#[derive(Debug)]
pub struct Daemon {
    bin: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes the config to `dir`, starts `portfwd daemon` (with `--mode MODE` if given) in the
    /// lab's host namespace and waits until `portfwd list` answers.
    pub fn start(
        lab: &mut Lab,
        bin: &Path,
        dir: &Path,
        forwards: &[Forward],
        max_flows: Option<u64>,
        mode: Option<&str>,
    ) -> Result<Daemon> {
        Self::start_config(lab, bin, dir, &config_yaml(forwards, max_flows), mode)
    }

    /// Like [`Daemon::start`], with the config file's whole text.
    pub fn start_config(
        lab: &mut Lab,
        bin: &Path,
        dir: &Path,
        yaml: &str,
        mode: Option<&str>,
    ) -> Result<Daemon> {
        let config = dir.join("portfwd.yaml");
        let socket = dir.join("portfwd.sock");
        let log = dir.join("daemon.log");
        fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        let logfile =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket);
        if let Some(mode) = mode {
            cmd.args(["--mode", mode]);
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile);
        let host = lab.host().clone();
        let pid = lab.spawn(&host, &mut cmd)?;
        let daemon = Daemon {
            bin: bin.to_path_buf(),
            socket,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = lab.child_mut(pid)
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "portfwd daemon exited at start ({status}):\n{}",
                    daemon.log_tail()
                );
            }
            if daemon
                .cli(&["list", "--json"])
                .is_ok_and(|o| o.status.success())
            {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                bail!(
                    "portfwd daemon did not answer within {START_TIMEOUT:?}:\n{}",
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this daemon (the control socket is a path, reachable from any
    /// network namespace), at most 10 s.
    fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new("timeout")
            .args(["-s", "KILL", "10"])
            .arg(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running the portfwd CLI")
    }

    /// `portfwd status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        self.json(&["status", "--json"])
    }

    /// `portfwd list --json`, parsed.
    pub fn list(&self) -> Result<serde_json::Value> {
        self.json(&["list", "--json"])
    }

    /// Runs `portfwd ARGS`, which must succeed, and parses what it prints.
    fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "`portfwd {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing `portfwd {}`", args.join(" ")))
    }

    /// The verdict counters of `portfwd status --json`, by reason.
    pub fn verdicts(&self) -> Result<BTreeMap<String, u64>> {
        let status = self.status()?;
        let list = status["verdicts"]
            .as_array()
            .context("`portfwd status --json` has no verdicts array")?;
        Ok(list
            .iter()
            .filter_map(|v| Some((v["reason"].as_str()?.to_string(), v["packets"].as_u64()?)))
            .collect())
    }

    /// How each interface is attached (`eth0=tc`, ...), from `portfwd status --json`.
    pub fn attachments(&self) -> Result<Vec<String>> {
        let status = self.status()?;
        Ok(status["interfaces"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|i| {
                        format!(
                            "{}={}",
                            i["name"].as_str().unwrap_or("?"),
                            i["attach"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The end of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::bench::plan::Proto;

    #[test]
    fn config_lists_forwards_in_order() {
        let to = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 9);
        let yaml = config_yaml(
            &[
                Forward {
                    port: 10000,
                    proto: Proto::Udp,
                    to,
                },
                Forward {
                    port: 8080,
                    proto: Proto::Tcp,
                    to,
                },
            ],
            None,
        );
        assert!(yaml.contains("\ninterfaces: [eth0]\n"), "{yaml}");
        assert!(!yaml.contains("max_flows"), "{yaml}");
        assert!(yaml.ends_with(
            "forwards:\n  - listen: \"10000/udp\"\n    to: \"172.17.0.2:9\"\n  \
             - listen: \"8080/tcp\"\n    to: \"172.17.0.2:9\"\n"
        ));
        let sized = config_yaml(&[], Some(10_000_000));
        assert!(
            sized.contains("\nmax_flows: 10000000\nforwards:\n"),
            "{sized}"
        );
    }
}
