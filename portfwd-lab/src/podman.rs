//! A real podman (Debian's 4.3, CNI backend) in a lab's host namespace ([`Podman`]), from a
//! private `containers.conf`: its own root, runroot, tmpdir, network config directory and
//! plugin directories, cgroupfs, a file events log, and `default_ulimits` within this
//! machine's hard limits (podman's defaults exceed them and runc fails). Every call runs with
//! `nsenter --net=/run/netns/HOST` (`/work/shared/notes/engines.md`): conmon, the containers'
//! namespaces (`/run/netns/netns-UUID`) and the CNI plugins' bridge are made from there.
//!
//! The network is the conflist given to [`Podman::start`], written as the default network
//! (host-local's leases in the private directory).
//! libcni caches each attachment's ADD result in `/var/lib/cni/results/NETWORK-ID-IFNAME`,
//! outside the private directories: the teardown removes the network's entries.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cni::private_ipam;
use crate::docker::{image, release_dir};
use crate::lab::Lab;
use crate::ns::Ns;
use crate::proc;

/// How long one podman command may take.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where libcni caches results, whatever podman's own directories.
const LIBCNI_CACHE: &str = "/var/lib/cni/results";

/// Debian's podman.
const PODMAN: &str = "/usr/bin/podman";

/// A podman whose state lives under `/tmp/pfpm-{lab prefix}`, with one CNI network. Dropping it
/// removes its containers (CNI DEL included), its processes, mounts, directory and libcni's
/// cache entries of its network.
#[derive(Debug)]
pub struct Podman {
    host: Ns,
    dir: PathBuf,
    network: String,
    imported: bool,
    torn_down: bool,
}

impl Podman {
    /// The imported test image (busybox httpd on [`Podman::SERVER_PORT`]).
    pub const IMAGE: &'static str = "portfwd-test/srv:1";
    /// The port the test image's httpd listens on.
    pub const SERVER_PORT: u16 = 3000;
    /// What the test image's httpd answers `GET /` with.
    pub const PAGE: &'static str = image::PAGE;

    /// A podman for `lab`'s host namespace whose default network is `conflist`, its plugins
    /// looked up in `plugin_dirs`; the test image imported.
    pub fn start(lab: &Lab, conflist: &Value, plugin_dirs: &[PathBuf]) -> Result<Podman> {
        let network = conflist["name"]
            .as_str()
            .context("the conflist has no name")?
            .to_owned();
        let dir = std::env::temp_dir().join(format!("pfpm-{}", lab.prefix()));
        if dir.exists() {
            bail!(
                "{} exists already: another podman of this lab?",
                dir.display()
            );
        }
        for sub in ["cni.d", "tmp", "image"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mut podman = Podman {
            host: lab.host().clone(),
            dir,
            network,
            imported: false,
            torn_down: false,
        };
        // On error, `podman` is dropped here and removes what was made.
        podman.configure(conflist, plugin_dirs)?;
        podman.import()?;
        Ok(podman)
    }

    fn configure(&self, conflist: &Value, plugin_dirs: &[PathBuf]) -> Result<()> {
        let dirs: Vec<String> = plugin_dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:4096", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
[network]
network_backend = "cni"
network_config_dir = "{cni}"
cni_plugin_dirs = [{dirs}]
default_network = "{network}"
"#,
            events = self.dir.join("events.log").display(),
            cni = self.dir.join("cni.d").display(),
            dirs = dirs.join(", "),
            network = self.network,
        );
        std::fs::write(self.dir.join("containers.conf"), conf)?;
        let mut conflist = conflist.clone();
        if let Some(plugins) = conflist["plugins"].as_array_mut() {
            private_ipam(plugins, &self.dir.join("ipam"));
        }
        let list = self
            .dir
            .join("cni.d")
            .join(format!("{}.conflist", self.network));
        std::fs::write(list, serde_json::to_string_pretty(&conflist)?)?;
        Ok(())
    }

    fn import(&mut self) -> Result<()> {
        let tarball = image::build_tarball(&self.dir.join("image"))?;
        let cmd = format!(
            r#"CMD ["/bin/busybox","httpd","-f","-p","{}","-h","/www"]"#,
            Self::SERVER_PORT
        );
        let tar = tarball.to_str().context("image path is not UTF-8")?;
        self.cli(&["import", "-c", &cmd, tar, Self::IMAGE])?;
        self.imported = true;
        Ok(())
    }

    /// The private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The command `podman ARGS` with the private configuration, in the host namespace.
    fn command(&self, args: &[&str]) -> Command {
        let d = |sub: &str| self.dir.join(sub);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path().display()))
            .arg(PODMAN)
            .arg("--root")
            .arg(d("root"))
            .arg("--runroot")
            .arg(d("runroot"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "file", "--tmpdir"])
            .arg(d("tmp"))
            .arg("--network-config-dir")
            .arg(d("cni.d"))
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"));
        cmd
    }

    /// Runs `podman ARGS...` (at most [`PODMAN_TIMEOUT`]); its stdout, trimmed, or an error
    /// quoting its stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let what = format!("`podman {}`", args.join(" "));
        let out = proc::output_with_timeout(&mut self.command(args), PODMAN_TIMEOUT)
            .with_context(|| format!("running {what}"))?;
        let out = proc::check_status(&what, out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `podman run -d --name NAME OPTIONS... IMAGE`: the container's id.
    pub fn run(&self, name: &str, options: &[&str]) -> Result<String> {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(options);
        args.push(Self::IMAGE);
        self.cli(&args)
    }

    /// `podman stop -t 0 NAME` (busybox httpd as PID 1 ignores SIGTERM).
    pub fn stop(&self, name: &str) -> Result<()> {
        self.cli(&["stop", "-t", "0", name]).map(drop)
    }

    /// `podman rm -f -t 0 NAME`.
    pub fn rm(&self, name: &str) -> Result<()> {
        self.cli(&["rm", "-f", "-t", "0", name]).map(drop)
    }

    /// `podman inspect --format FORMAT NAME`.
    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        self.cli(&["inspect", "--format", format, name])
    }

    /// The container's address on the network.
    pub fn container_addr(&self, name: &str) -> Result<Ipv4Addr> {
        let format = format!(
            "{{{{.NetworkSettings.Networks.{}.IPAddress}}}}",
            self.network
        );
        let out = self.inspect(name, &format)?;
        out.parse()
            .with_context(|| format!("address {out:?} of container {name}"))
    }

    /// The container's network namespace (`/run/netns/netns-UUID`), to run a lab server in.
    pub fn container_ns(&self, name: &str) -> Result<Ns> {
        let key = self.inspect(name, "{{.NetworkSettings.SandboxKey}}")?;
        let ns = Path::new(&key)
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("sandbox key {key:?} of container {name}"))?;
        Ok(Ns::new(ns))
    }

    /// The container's full id.
    pub fn container_id(&self, name: &str) -> Result<String> {
        self.inspect(name, "{{.Id}}")
    }

    /// libcni's cache entries of this network (`/var/lib/cni/results/NETWORK-*`).
    pub fn libcni_cache(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.network);
        std::fs::read_dir(LIBCNI_CACHE)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// Removes everything (see [`Podman`]); fails if a step failed, after doing all.
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        if self.imported
            && let Err(e) = self.cli(&["rm", "-a", "-f", "-t", "0"])
        {
            errors.push(format!("{e:#}"));
        }
        errors.extend(release_dir(&self.dir));
        for entry in self.libcni_cache() {
            if let Err(e) = std::fs::remove_file(&entry) {
                errors.push(format!("removing {}: {e}", entry.display()));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && self.dir.exists()
        {
            errors.push(format!("removing {}: {e}", self.dir.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("podman teardown: {}", errors.join("; "))
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab: {e:#}");
        }
    }
}
