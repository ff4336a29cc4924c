//! `cargo xtask install`: build the daemon in release mode and install it as a systemd service:
//!
//! - the binary to `ROOT/PREFIX/bin/portfwd` (PREFIX `/usr/local` by default), replaced by a
//!   rename so that a running daemon keeps its old file;
//! - `config/portfwd.service` to `ROOT/etc/systemd/system/portfwd.service`, its `ExecStart`
//!   pointed at that binary;
//! - `config/portfwd.yaml` to `ROOT/etc/portfwd/portfwd.yaml`, only when there is no config
//!   there yet: an operator's config is never overwritten;
//! - then `systemctl daemon-reload` when installing into `/` on a host run by systemd.
//!
//! `--root` installs below another directory (a package's staging root, a test); `--binary`
//! installs a given binary instead of building one.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// Where the unit says the binary is (rewritten for another prefix).
const UNIT_BINARY: &str = "/usr/local/bin/portfwd";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install below this directory instead of `/` (a staging root)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where the binary goes: PREFIX/bin/portfwd
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install this binary instead of building a release one
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

/// What was installed where.
#[derive(Debug)]
pub struct Installed {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub config: PathBuf,
    /// False when an existing config was kept.
    pub config_written: bool,
}

pub fn run(args: Args) -> Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            setup::run()?;
            cmd::banner("build (release)");
            let mut build = cmd::cargo();
            build.args(["build", "--release", "--package", "portfwd"]);
            cmd::run(&mut build)?;
            cmd::workspace_root().join("target/release/portfwd")
        }
    };
    cmd::banner("install");
    let done = install(&args.root, &args.prefix, &binary)?;
    println!("installed {}", done.binary.display());
    println!("installed {}", done.unit.display());
    if done.config_written {
        println!("installed {}", done.config.display());
    } else {
        println!("kept the existing {}", done.config.display());
    }
    if args.root == Path::new("/") {
        if Path::new("/run/systemd/system").is_dir() {
            let mut reload = Command::new("systemctl");
            reload.arg("daemon-reload");
            cmd::run(&mut reload)?;
        } else {
            println!("systemd is not running here: no `systemctl daemon-reload`");
        }
        println!(
            "next: `systemctl enable --now portfwd`; to let a group use the CLI without sudo, \
             `groupadd --system portfwd` and set `socket_group: portfwd` in {}",
            done.config.display()
        );
    }
    Ok(())
}

/// Installs `binary`, the unit and (if missing) the default config below `root`.
pub fn install(root: &Path, prefix: &Path, binary: &Path) -> Result<Installed> {
    if !binary.is_file() {
        bail!("{} does not exist: build it first", binary.display());
    }
    let src = cmd::workspace_root().join("config");
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let bin_path = prefix.join("bin/portfwd");

    let dest_bin = under(&bin_path);
    write_replacing(&dest_bin, &fs::read(binary)?, 0o755)?;

    let unit = fs::read_to_string(src.join("portfwd.service"))
        .context("reading config/portfwd.service")?;
    let bin_str = bin_path.to_str().context("the prefix is not valid UTF-8")?;
    let dest_unit = under(Path::new("/etc/systemd/system/portfwd.service"));
    write_replacing(
        &dest_unit,
        unit.replace(UNIT_BINARY, bin_str).as_bytes(),
        0o644,
    )?;

    let dest_config = under(Path::new("/etc/portfwd/portfwd.yaml"));
    let config_written = match fs::symlink_metadata(&dest_config) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = fs::read(src.join("portfwd.yaml")).context("reading config/portfwd.yaml")?;
            write_replacing(&dest_config, &text, 0o644)?;
            true
        }
        Err(e) => return Err(e).context(format!("looking at {}", dest_config.display())),
    };
    Ok(Installed {
        binary: dest_bin,
        unit: dest_unit,
        config: dest_config,
        config_written,
    })
}

/// Writes `path` through a temporary file in its directory renamed over it.
fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.xtask-install",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, contents)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    };
    write().with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("installing {}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn installs_binary_unit_and_config_and_never_overwrites_a_config() {
        let root = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let fake = root.join("built-portfwd");
        fs::write(&fake, b"#!/bin/sh\necho v1\n").unwrap();

        let done = install(&root, Path::new("/opt/portfwd"), &fake).unwrap();
        assert_eq!(done.binary, root.join("opt/portfwd/bin/portfwd"));
        assert_eq!(fs::read(&done.binary).unwrap(), b"#!/bin/sh\necho v1\n");
        assert_eq!(mode(&done.binary), 0o755);
        let unit = fs::read_to_string(root.join("etc/systemd/system/portfwd.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/portfwd/bin/portfwd daemon"),
            "ExecStart follows the prefix:\n{unit}"
        );
        assert!(!unit.contains(UNIT_BINARY));
        assert_eq!(mode(&done.unit), 0o644);
        assert!(done.config_written);
        let shipped =
            fs::read_to_string(cmd::workspace_root().join("config/portfwd.yaml")).unwrap();
        assert_eq!(fs::read_to_string(&done.config).unwrap(), shipped);

        // An operator's config survives a second install; the binary is replaced.
        fs::write(&done.config, "# mine\nforwards: []\n").unwrap();
        fs::write(&fake, b"#!/bin/sh\necho v2\n").unwrap();
        let again = install(&root, Path::new("/opt/portfwd"), &fake).unwrap();
        assert!(!again.config_written);
        assert_eq!(
            fs::read_to_string(&again.config).unwrap(),
            "# mine\nforwards: []\n"
        );
        assert_eq!(fs::read(&again.binary).unwrap(), b"#!/bin/sh\necho v2\n");
        assert!(
            fs::read_dir(root.join("opt/portfwd/bin"))
                .unwrap()
                .all(|e| !e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("xtask-install")),
            "no temporary file left"
        );

        assert!(install(&root, Path::new("/usr/local"), &root.join("missing")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
