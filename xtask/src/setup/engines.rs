//! The container engines the tests run for real: Debian's `docker.io` (dockerd, containerd,
//! runc, docker-proxy, the CLI) and `busybox-static` (the test image's static server) for the
//! Docker follower (#15); `containernetworking-plugins` (bridge, host-local, portmap in
//! /usr/lib/cni) and `podman` (4.3, with its CNI backend) for `portfwd-cni` (#18).
//!
//! Installed behind a temporary `/usr/sbin/policy-rc.d` that exits 101: without it, docker.io's
//! postinst starts dockerd in the machine's own network namespace, which then writes its iptables
//! rules there. The tests start their own dockerd inside a lab namespace. Whatever policy-rc.d was
//! there before is put back (or the file removed), also when apt-get fails.
//!
//! Quick when present: one `dpkg-query` for all the packages.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{apt_get, find_command, wait_for_apt_locks};
use crate::cmd;

/// The engine packages, installed without their recommends (no registry tools, no cgroupfs-mount).
pub(super) const ENGINE_PACKAGES: &[&str] = &[
    "docker.io",
    "busybox-static",
    "containernetworking-plugins",
    "podman",
];

/// Debian's policy layer: a script exiting 101 forbids invoke-rc.d to start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The policy that forbids every service start.
const DENY_ALL: &str = "#!/bin/sh\n# portfwd's cargo xtask setup: no service starts while it installs packages\nexit 101\n";

pub(super) fn install() -> Result<()> {
    let missing = missing_packages(ENGINE_PACKAGES)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {} (real container engines for the tests); setup installs \
             them only as root: run `cargo xtask setup` as root",
            missing.join(", ")
        );
    }
    if find_command("apt-get").is_none() {
        bail!(
            "missing Debian packages {} and no apt-get to install them",
            missing.join(", ")
        );
    }
    for package in &missing {
        println!("setup: installing Debian package {package} (services kept from starting)");
    }
    let started = Instant::now();
    {
        let _policy = PolicyRcD::deny_all(Path::new(POLICY_RC_D))?;
        wait_for_apt_locks()?;
        let mut install = apt_get(&["install", "-y", "--no-install-recommends"]);
        install.args(&missing);
        if cmd::run(&mut install).is_err() {
            // Stale package lists: update once and try again.
            wait_for_apt_locks()?;
            cmd::run(&mut apt_get(&["update"]))?;
            wait_for_apt_locks()?;
            let mut install = apt_get(&["install", "-y", "--no-install-recommends"]);
            cmd::run(install.args(&missing))?;
        }
    }
    println!(
        "setup: installed {} in {:.1} s",
        missing.join(", "),
        started.elapsed().as_secs_f64()
    );
    let still = missing_packages(ENGINE_PACKAGES)?;
    ensure!(
        still.is_empty(),
        "apt-get succeeded but {} are still not installed",
        still.join(", ")
    );
    Ok(())
}

/// The packages of `packages` that dpkg does not list as installed.
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\\n"])
        .args(packages)
        .output()
        .context("cannot run dpkg-query: is this Debian?")?;
    // dpkg-query exits 1 when one of the packages is unknown; its stdout still lists the others.
    let installed = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok(missing_from_status(&installed, packages))
}

/// The packages of `packages` that are not `installed` in dpkg-query's `PACKAGE STATUS` lines.
fn missing_from_status<'a>(status: &str, packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|package| {
            !status.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(*package) && words.next() == Some("installed")
            })
        })
        .collect()
}

/// A policy-rc.d that exits 101 while this lives; the previous file (content and mode) is put
/// back at drop, or the file removed if there was none.
struct PolicyRcD {
    path: PathBuf,
    previous: Option<(Vec<u8>, u32)>,
}

impl PolicyRcD {
    fn deny_all(path: &Path) -> Result<PolicyRcD> {
        let previous = match fs::read(path) {
            Ok(content) => {
                let mode = fs::metadata(path)?.permissions().mode();
                Some((content, mode))
            }
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let guard = PolicyRcD {
            path: path.to_owned(),
            previous,
        };
        fs::write(path, DENY_ALL).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        Ok(guard)
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        let restored = match &self.previous {
            Some((content, mode)) => fs::write(&self.path, content)
                .and_then(|()| fs::set_permissions(&self.path, fs::Permissions::from_mode(*mode))),
            None => fs::remove_file(&self.path),
        };
        if let Err(err) = restored {
            eprintln!("setup: cannot restore {}: {err}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_not_installed_are_missing() {
        let status = "docker.io installed\nbusybox-static not-installed\npodman installed\n\
                      containernetworking-plugins installed\n";
        assert_eq!(
            missing_from_status(status, ENGINE_PACKAGES),
            ["busybox-static"]
        );
        assert!(
            missing_from_status(
                "busybox-static installed\ndocker.io installed\npodman installed\n\
                 containernetworking-plugins installed\n",
                ENGINE_PACKAGES
            )
            .is_empty()
        );
        assert_eq!(missing_from_status("", ENGINE_PACKAGES), ENGINE_PACKAGES);
    }

    #[test]
    fn policy_rc_d_is_restored_or_removed() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _guard = PolicyRcD::deny_all(&path).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), DENY_ALL);
            let status = Command::new(&path).status().unwrap();
            assert_eq!(status.code(), Some(101));
        }
        assert!(!path.exists(), "none before: removed");
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        {
            let _guard = PolicyRcD::deny_all(&path).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), DENY_ALL);
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\nexit 0\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
