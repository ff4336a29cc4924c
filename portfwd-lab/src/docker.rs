//! A real dockerd inside a lab's host namespace ([`Docker`]): private directories, its own
//! bridge, an image imported offline, containers run with `docker run -p ...`, and a teardown
//! that leaves nothing behind, also when a test panics (the [`Drop`]).
//!
//! dockerd is started with `nsenter --net=/run/netns/HOST`, not the way [`Lab::spawn`] enters a
//! namespace (`ip netns exec`'s fresh `/sys`): there the cgroup v1 mounts vanish and dockerd
//! fails after ~12 s with "Devices cgroup isn't mounted" (`/work/shared/notes/engines.md`). It
//! shares the test's mount namespace, so its mounts are found in `/proc/self/mountinfo`.
//!
//! Its bridge is [`Docker::BRIDGE`] (`dk0`, [`Docker::BRIDGE_ADDR`]/16) made by the lab and given
//! to dockerd with `-b`, not `docker0` with `--bip`: given `--bip`, dockerd takes over an
//! existing `docker0` and replaces its address (the lab's 172.17.0.1/16 is gone), which would
//! cut the lab's own containers off.
//!
//! Module map: `api` (the Engine API over the unix socket), `image` (the test image's tarball).

mod api;
pub(crate) mod image;

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use api::Response;

use crate::ip::ip;
use crate::lab::Lab;
use crate::names::lab_owner_pid;
use crate::ns::Ns;
use crate::{proc, sys};

/// How long dockerd may take to answer its API after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `docker` command or API call may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dockerd may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// The start of the name of every dockerd's directory in the temp dir, before its lab's prefix.
const DIR_PREFIX: &str = "pfdk-";

/// Debian's docker CLI (docker.io), which matches its dockerd; another `docker` earlier in PATH
/// may be another version.
const DOCKER_CLI: &str = "/usr/bin/docker";

/// A dockerd running in a lab's host namespace, with its data, state, pid file and API socket
/// under a directory of its own. Dropping it tears everything down (see [`Docker::shutdown`]).
///
/// Drop it before the [`Lab`] (declare it after the lab): dockerd's containers live in network
/// namespaces of dockerd's own, which the lab does not know.
#[derive(Debug)]
pub struct Docker {
    host: Ns,
    dir: PathBuf,
    dockerd: Option<Child>,
    ready_in: Duration,
    image: Option<String>,
    torn_down: bool,
}

impl Docker {
    /// The bridge dockerd attaches its containers to, in the lab's host namespace.
    pub const BRIDGE: &'static str = "dk0";
    /// The bridge's address: Docker's containers get 172.18.0.2, .3, ... (the lab's own bridge
    /// is 172.17.0.0/16, its LAN 10.77.0.0/24).
    pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    /// Prefix length of Docker's bridge network (172.18.0.0/16).
    pub const BRIDGE_PREFIX_LEN: u8 = 16;
    /// The port the test image's server (busybox httpd) listens on in its container.
    pub const SERVER_PORT: u16 = 3000;
    /// The page the test image's server answers `GET /` with.
    pub const PAGE: &'static str = image::PAGE;
    /// The name of the imported test image.
    pub const IMAGE: &'static str = "portfwd-test/srv:1";

    /// Starts dockerd in `lab`'s host namespace and waits until its API answers (at most
    /// [`START_TIMEOUT`]). Its directory is `/tmp/pfdk-{lab prefix}`: `data` (--data-root),
    /// `exec` (--exec-root, where it starts its own containerd), `docker.pid`, `docker.sock`,
    /// `dockerd.log`. Docker writes its iptables rules (nat chain `DOCKER`, DNAT per published
    /// port) in the host namespace and runs docker-proxy there.
    ///
    /// What a dockerd of a lab whose process is gone left (a test killed with SIGKILL) is
    /// cleaned up first: its processes, mounts and directory.
    pub fn start(lab: &Lab) -> Result<Docker> {
        cleanup_stale();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", lab.prefix()));
        if dir.exists() {
            bail!(
                "{} exists already: another dockerd of this lab?",
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut docker = Docker {
            host: lab.host().clone(),
            dir,
            dockerd: None,
            ready_in: Duration::ZERO,
            image: None,
            torn_down: false,
        };
        // On error, `docker` is dropped here and tears down what was started.
        docker.launch()?;
        Ok(docker)
    }

    fn launch(&mut self) -> Result<()> {
        let host = self.host.name.clone();
        let cidr = format!("{}/{}", Self::BRIDGE_ADDR, Self::BRIDGE_PREFIX_LEN);
        ip(&["-n", &host, "link", "add", Self::BRIDGE, "type", "bridge"])?;
        ip(&["-n", &host, "addr", "add", &cidr, "dev", Self::BRIDGE])?;
        ip(&["-n", &host, "link", "set", Self::BRIDGE, "up"])?;

        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path().display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["-b", Self::BRIDGE])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a ^C to the test does not reach it before the teardown.
            .process_group(0);
        let started = Instant::now();
        let child = cmd.spawn().context(
            "spawning `nsenter ... dockerd`: is docker.io installed (`cargo xtask setup`)?",
        )?;
        // nsenter execs dockerd in place (no --fork needed for a network namespace): its pid.
        self.dockerd = Some(child);
        loop {
            if let Some(status) = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "dockerd exited ({status}) before its API answered:\n{}",
                    self.log_tail()
                );
            }
            if self
                .api_timeout("/_ping", Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "dockerd did not answer on {} within {START_TIMEOUT:?}:\n{}",
                    self.socket().display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ready_in = started.elapsed();
        Ok(())
    }

    /// How long dockerd took from spawn until `GET /_ping` answered 200.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// dockerd's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// dockerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last lines of dockerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Runs `docker -H unix://SOCKET ARGS...` (Debian's CLI, at most [`CLI_TIMEOUT`]) and
    /// returns its stdout, trimmed; fails quoting stderr if it exits non-zero.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            // The CLI's own config and state stay in the test's directory.
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        let what = format!("`docker {}`", args.join(" "));
        let out = proc::output_with_timeout(&mut cmd, CLI_TIMEOUT)
            .with_context(|| format!("running {what}"))?;
        let out = proc::check_status(&what, out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `GET path` on the API (at most [`CLI_TIMEOUT`]); any status is returned, not an error.
    pub fn api(&self, path: &str) -> Result<Response> {
        self.api_timeout(path, CLI_TIMEOUT)
    }

    fn api_timeout(&self, path: &str, timeout: Duration) -> Result<Response> {
        api::get(&self.socket(), path, timeout)
    }

    /// Container events between two times (unix seconds): `GET /events?since&until&filters=
    /// {"type":["container"]}`, one JSON object a line. The answer ends at `until`, so this
    /// waits until then (at most [`CLI_TIMEOUT`]).
    pub fn container_events(&self, since: u64, until: u64) -> Result<Vec<String>> {
        // {"type":["container"]}, percent-encoded.
        let filters = "%7B%22type%22%3A%5B%22container%22%5D%7D";
        let r = self.api(&format!(
            "/events?since={since}&until={until}&filters={filters}"
        ))?;
        if r.status != 200 {
            bail!("GET /events answered {}: {}", r.status, r.body.trim());
        }
        Ok(r.body.lines().map(str::to_owned).collect())
    }

    /// Imports the test image ([`Docker::IMAGE`]: a static busybox whose httpd serves [`Docker::PAGE`]
    /// on [`Docker::SERVER_PORT`]) from a tarball made here; once per dockerd.
    pub fn import_test_image(&mut self) -> Result<()> {
        if self.image.is_some() {
            return Ok(());
        }
        let tarball = image::build_tarball(&self.dir.join("image"))?;
        let cmd = format!(
            r#"CMD ["/bin/busybox","httpd","-f","-p","{}","-h","/www"]"#,
            Self::SERVER_PORT
        );
        let tar = tarball.to_str().context("image path is not UTF-8")?;
        let id = self.cli(&["import", "-c", &cmd, tar, Self::IMAGE])?;
        self.image = Some(id);
        Ok(())
    }

    /// `docker run -d --name NAME OPTIONS... IMAGE` (the test image, imported if needed), e.g.
    /// `run("web", &["-p", "8080:3000"])`; returns the container's id. `name` has at least two
    /// characters (Docker's rule).
    pub fn run(&mut self, name: &str, options: &[&str]) -> Result<String> {
        self.import_test_image()?;
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(options);
        args.push(Self::IMAGE);
        self.cli(&args)
    }

    /// `docker stop -t 0 NAME` (busybox httpd as PID 1 ignores SIGTERM: no grace period).
    pub fn stop(&self, name: &str) -> Result<()> {
        self.cli(&["stop", "-t", "0", name]).map(drop)
    }

    /// `docker rm -f NAME`.
    pub fn rm(&self, name: &str) -> Result<()> {
        self.cli(&["rm", "-f", name]).map(drop)
    }

    /// The container's address on Docker's bridge, from `docker inspect`.
    pub fn container_addr(&self, name: &str) -> Result<Ipv4Addr> {
        let out = self.cli(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.bridge.IPAddress}}",
            name,
        ])?;
        out.parse()
            .with_context(|| format!("address {out:?} of container {name}"))
    }

    /// Tears everything down and says how long it took: every container (`docker rm -f`),
    /// dockerd (SIGTERM by its pid, up to [`STOP_GRACE`], then SIGKILL), whatever containerd and
    /// shims outlived it (found by the directory in their command line), the mounts left under
    /// the directory (detached), the bridge, the directory. Fails if a step failed, after doing
    /// all of them.
    pub fn shutdown(mut self) -> Result<Duration> {
        let started = Instant::now();
        self.teardown()?;
        Ok(started.elapsed())
    }

    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        if self.pid().is_some() {
            match self.cli(&["ps", "-aq"]) {
                Ok(ids) => {
                    for id in ids.split_whitespace() {
                        if let Err(e) = self.rm(id) {
                            errors.push(format!("{e:#}"));
                        }
                    }
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if let Some(mut child) = self.dockerd.take() {
            match proc::terminate(&mut child, STOP_GRACE) {
                Ok(status) if status.success() => {}
                Ok(status) => errors.push(format!(
                    "dockerd exited with {status}:\n{}",
                    self.log_tail()
                )),
                Err(e) => errors.push(format!("stopping dockerd: {e:#}")),
            }
        }
        let dir = self.dir.to_string_lossy().into_owned();
        errors.extend(release_dir(&self.dir));
        if self.host.path().exists()
            && let Err(e) = ip(&["-n", &self.host.name, "link", "del", Self::BRIDGE])
        {
            // Missing when dockerd never started: only report a bridge that is still there.
            if ip(&["-n", &self.host.name, "link", "show", Self::BRIDGE]).is_ok() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && self.dir.exists()
        {
            errors.push(format!("removing {dir}: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("docker teardown: {}", errors.join("; "))
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab: {e:#}");
        }
    }
}

/// Kills the processes that name `dir` in their command line (containerd and shims that
/// outlived their dockerd) and detaches the mounts under it; the errors, if any.
pub(crate) fn release_dir(dir: &Path) -> Vec<String> {
    // With the slash: `/tmp/pfdk-pf1x1-a` must not match `/tmp/pfdk-pf1x1-ab`.
    proc::kill_by_cmdline(&format!("{}/", dir.to_string_lossy()));
    mounts_under(dir)
        .into_iter()
        .filter_map(|mount| {
            sys::umount_detach(&mount)
                .err()
                .map(|e| format!("unmounting {}: {e}", mount.display()))
        })
        .collect()
}

/// Releases and removes the directories of dockerds whose lab's process is gone. Best effort.
fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(DIR_PREFIX).and_then(lab_owner_pid) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        for e in release_dir(&dir) {
            eprintln!("lab: stale dockerd directory: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Mount points at or below `dir` in our mount namespace (dockerd's too), deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_point)
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    mounts.dedup();
    mounts
}

/// A mount point as `/proc/self/mountinfo` writes it, with `\040`-style octal escapes undone.
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\'
            && let Some(digits) = octal.filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_point("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_point("/run/netns/x"), "/run/netns/x");
        assert_eq!(unescape_mount_point("/a\\"), "/a\\");
    }

    #[test]
    fn mounts_under_a_directory_are_listed_deepest_first() {
        // Nothing is mounted under a fresh name.
        assert!(mounts_under(Path::new("/surely/not/mounted/here")).is_empty());
        let root = mounts_under(Path::new("/"));
        assert!(root.last().is_some_and(|p| p == Path::new("/")));
    }
}
