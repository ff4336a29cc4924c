//! The test image, built offline: a root file system holding only a static busybox (Debian's
//! `busybox-static`) and a page for its httpd, packed with `tar` for `docker import`. No registry
//! is reachable from the lab.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::proc;

/// Where Debian's busybox-static installs its binary.
pub(crate) const BUSYBOX: &str = "/usr/bin/busybox";

/// The page the test server answers with.
pub(crate) const PAGE: &str = "portfwd docker lab\n";

/// Writes `dir/rootfs` (`/bin/busybox`, `/bin/sh`, `/www/index.html`) and packs it into
/// `dir/image.tar`; returns the tarball's path.
pub(crate) fn build_tarball(dir: &Path) -> Result<PathBuf> {
    let busybox = Path::new(BUSYBOX);
    if !busybox.exists() {
        bail!(
            "{BUSYBOX} is missing: install Debian's busybox-static (`cargo xtask setup`), whose \
             static binary is the test image's server"
        );
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("www"))?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))
        .with_context(|| format!("copying {BUSYBOX}"))?;
    let sh = rootfs.join("bin/sh");
    if !sh.exists() {
        std::os::unix::fs::symlink("busybox", &sh)?;
    }
    std::fs::write(rootfs.join("www/index.html"), PAGE)?;
    let tarball = dir.join("image.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg(".");
    let out = proc::output_with_timeout(&mut tar, Duration::from_secs(30))?;
    proc::check_status("tar of the test image", out)?;
    Ok(tarball)
}
