//! `cargo xtask setup`: install what building and testing portfwd needs on a fresh Debian
//! machine with rustup's stable and `nightly` toolchains. Idempotent, and quick when everything
//! is there: it only lists rustup components, runs `bpf-linker --version` and looks commands up in
//! PATH. It prints one `setup:` line per thing it installs. It mounts nothing and changes no
//! sysctl.
//!
//! What it checks, and how:
//! - rustup components: nightly's `rust-src` (`-Z build-std=core` for the BPF target) and
//!   `clippy`, the active toolchain's `clippy` and `rustfmt`, from
//!   `rustup component list --installed`;
//! - bpf-linker: `bpf-linker --version` must succeed. It is built against the nightly toolchain's
//!   own libLLVM (see `/work/shared/notes/toolchain.md`), and fails to start when the libLLVM
//!   symlinks it loads through its rpath are gone, so those are restored first, and it is only
//!   rebuilt if that is not enough;
//! - Debian packages used by the tests, demo and bench: one command each, looked up in PATH,
//!   `/usr/sbin` and `/sbin`; the missing ones are installed with apt-get (as root only). A fresh
//!   cloud machine runs unattended-upgrades at boot, which holds apt's and dpkg's locks for
//!   minutes: setup says who holds them and waits (up to [`APT_LOCK_TIMEOUT`]), and apt-get is
//!   told to wait too (`DPkg::Lock::Timeout`) should the lock be taken again in between;
//! - the container engines of the Docker and CNI tests (`engines`): `docker.io`,
//!   `busybox-static`, `containernetworking-plugins` and `podman`, installed behind a
//!   policy-rc.d that keeps dockerd from starting in the machine's namespace.

use std::{
    env, fs,
    io::ErrorKind,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

mod engines;

/// The toolchain channel aya-build builds the eBPF crate with (`aya_build::Toolchain::default()`).
const NIGHTLY: &str = "nightly";

/// The bpf-linker release known to work with aya 0.14 and nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The LLVM major to build bpf-linker for when nightly's libLLVM name does not tell.
const FALLBACK_LLVM_MAJOR: u32 = 22;

/// Debian package, and a command it installs that tells whether it is there.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("bpftool", "bpftool"),
    ("iptables", "iptables"),
    ("nftables", "nft"),
    ("conntrack", "conntrack"),
    ("iperf3", "iperf3"),
    ("netsniff-ng", "trafgen"),
    ("socat", "socat"),
    ("tcpdump", "tcpdump"),
    ("curl", "curl"),
    ("ethtool", "ethtool"),
    ("procps", "pgrep"),
    ("psmisc", "killall"),
    ("wrk", "wrk"),
    // `cargo xtask bench --profile`.
    ("linux-perf", "perf"),
    ("python3", "python3"),
    // `systemd-analyze verify` and `security` check config/portfwd.service.
    ("systemd", "systemd-analyze"),
    // setpriv: tests run the CLI as another user and the daemon with the unit's capabilities.
    ("util-linux", "setpriv"),
];

/// How long to wait for apt's and dpkg's locks.
const APT_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// The locks apt-get takes: the package lists' (`update`), dpkg's frontend lock and dpkg's own
/// (`install`).
const APT_LOCKS: &[&str] = &[
    "/var/lib/apt/lists/lock",
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
];

/// Directories searched for commands besides PATH: a non-root PATH often lacks the sbin ones.
const EXTRA_COMMAND_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

pub fn run() -> Result<()> {
    rust_components()?;
    bpf_linker()?;
    debian_packages()?;
    engines::install()
}

fn rust_components() -> Result<()> {
    let nightly = installed_components(Some(NIGHTLY)).with_context(|| {
        format!(
            "the `{NIGHTLY}` toolchain is needed to build portfwd-ebpf \
             (install it with `rustup toolchain install {NIGHTLY}`)"
        )
    })?;
    let missing = missing_components(&nightly, &["rust-src", "clippy"]);
    if !missing.is_empty() {
        for component in &missing {
            println!("setup: installing rustup component {component} for the {NIGHTLY} toolchain");
        }
        let mut add = Command::new("rustup");
        add.args(["component", "add", "--toolchain", NIGHTLY])
            .args(&missing);
        cmd::run(&mut add)?;
    }

    // The toolchain cargo runs with here (rustup's default, or RUSTUP_TOOLCHAIN under `cargo +x`).
    let active = installed_components(None)?;
    let missing = missing_components(&active, &["clippy", "rustfmt"]);
    if !missing.is_empty() {
        for component in &missing {
            println!("setup: installing rustup component {component} for the active toolchain");
        }
        let mut add = Command::new("rustup");
        add.args(["component", "add"]).args(&missing);
        cmd::run(&mut add)?;
    }
    Ok(())
}

/// `rustup component list --installed`, one component per line (`rust-src`,
/// `clippy-x86_64-unknown-linux-gnu`, ...).
fn installed_components(toolchain: Option<&str>) -> Result<Vec<String>> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let line = cmd::display(&list);
    let output = list
        .output()
        .with_context(|| format!("cannot run `{line}`: is rustup installed?"))?;
    ensure!(
        output.status.success(),
        "`{line}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_owned())
        .collect())
}

/// The components of `wanted` that `installed` lacks. Installed names may carry a target triple.
fn missing_components<'a>(installed: &[String], wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|name| {
            !installed.iter().any(|component| {
                component
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
        })
        .collect()
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }

    let home = env::var_os("HOME").context("HOME is not set")?;
    // The installed binary's rpath points at this directory: it must not move.
    let prefix = Path::new(&home).join(".cargo/llvm-rust");
    let libllvm = nightly_libllvm()?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?
        .to_string_lossy()
        .into_owned();

    // libLLVM.so for bpf-linker's build script, and the soname the binary loads at run time.
    let lib_dir = prefix.join("lib");
    let links = [lib_dir.join("libLLVM.so"), lib_dir.join(&file_name)];
    if links
        .iter()
        .any(|link| fs::read_link(link).ok().as_deref() != Some(libllvm.as_path()))
    {
        println!(
            "setup: linking {} into {}",
            libllvm.display(),
            lib_dir.display()
        );
        fs::create_dir_all(&lib_dir)
            .with_context(|| format!("cannot create {}", lib_dir.display()))?;
        for link in &links {
            match fs::remove_file(link) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot remove {}", link.display()));
                }
            }
            symlink(&libllvm, link).with_context(|| {
                format!("cannot link {} to {}", link.display(), libllvm.display())
            })?;
        }
        // An installed bpf-linker that only missed its libLLVM needs no rebuild.
        if bpf_linker_works() {
            return Ok(());
        }
    }

    let major = llvm_major(&file_name).unwrap_or_else(|| {
        eprintln!(
            "setup: cannot tell the LLVM version from {file_name}; assuming LLVM {FALLBACK_LLVM_MAJOR}"
        );
        FALLBACK_LLVM_MAJOR
    });
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against {NIGHTLY}'s LLVM {major} \
         (cargo install, about a minute)"
    );
    let mut install = Command::new("cargo");
    install
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        // Replaces a binary that is there but cannot start (built against another libLLVM).
        .arg("--force");
    cmd::run(&mut install)?;
    ensure!(
        bpf_linker_works(),
        "bpf-linker was installed but `bpf-linker --version` still fails: is cargo's bin directory \
         (~/.cargo/bin) on PATH?"
    );
    Ok(())
}

/// Whether `bpf-linker --version` runs successfully (it does not when its libLLVM is missing).
fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The nightly toolchain's shared libLLVM, e.g. `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_libllvm() -> Result<PathBuf> {
    let output = Command::new("rustc")
        .args([&format!("+{NIGHTLY}"), "--print", "sysroot"])
        .output()
        .with_context(|| format!("cannot run `rustc +{NIGHTLY} --print sysroot`"))?;
    ensure!(
        output.status.success(),
        "`rustc +{NIGHTLY} --print sysroot` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let lib = Path::new(String::from_utf8_lossy(&output.stdout).trim()).join("lib");
    let mut candidates = fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libLLVM.so."))
        })
        .collect::<Vec<_>>();
    candidates.sort();
    match candidates.into_iter().next() {
        Some(path) => Ok(path),
        None => bail!(
            "no libLLVM.so.* in {}: bpf-linker cannot be built against {NIGHTLY}'s LLVM",
            lib.display()
        ),
    }
}

/// The LLVM major version in a libLLVM file name: `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    let end = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    version[..end].parse().ok()
}

fn debian_packages() -> Result<()> {
    let missing = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, command)| find_command(command).is_none())
        .collect::<Vec<_>>();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing
        .iter()
        .map(|(package, _)| *package)
        .collect::<Vec<_>>();
    let commands = missing
        .iter()
        .map(|(_, command)| *command)
        .collect::<Vec<_>>();

    if !cmd::is_root() {
        bail!(
            "missing commands {} (Debian packages {}); setup installs them only as root: \
             run `cargo xtask setup` as root, or `sudo apt-get install -y {}`",
            commands.join(", "),
            packages.join(", "),
            packages.join(" ")
        );
    }
    if find_command("apt-get").is_none() {
        bail!(
            "missing commands {} and no apt-get to install them: install the packages that \
             provide them ({} on Debian)",
            commands.join(", "),
            packages.join(", ")
        );
    }

    for (package, command) in &missing {
        println!("setup: installing Debian package {package} (for `{command}`)");
    }
    wait_for_apt_locks()?;
    cmd::run(&mut apt_get(&["update"]))?;
    wait_for_apt_locks()?;
    cmd::run(apt_get(&["install", "-y"]).args(&packages))?;

    let still_missing = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, command)| find_command(command).is_none())
        .map(|(_, command)| *command)
        .collect::<Vec<_>>();
    ensure!(
        still_missing.is_empty(),
        "apt-get succeeded but these commands are still not found: {}",
        still_missing.join(", ")
    );
    Ok(())
}

/// `apt-get ARGS`, non-interactive, waiting up to [`APT_LOCK_TIMEOUT`] for a lock another apt or
/// dpkg holds instead of failing at once (apt 1.9.11 and later; older ones ignore the option).
fn apt_get(args: &[&str]) -> Command {
    let mut apt = Command::new("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive")
        .arg("-o")
        .arg(format!(
            "DPkg::Lock::Timeout={}",
            APT_LOCK_TIMEOUT.as_secs()
        ))
        .args(args);
    apt
}

/// Waits until no other process holds one of [`APT_LOCKS`], saying who holds it; fails after
/// [`APT_LOCK_TIMEOUT`]. apt-get's own wait covers dpkg's locks but not, in every version, the
/// package lists' lock that `apt-get update` takes.
fn wait_for_apt_locks() -> Result<()> {
    let start = Instant::now();
    for lock in APT_LOCKS.iter().map(Path::new) {
        let mut said = false;
        while let Some(holder) = lock_holder(lock) {
            let who = describe_process(holder);
            ensure!(
                start.elapsed() < APT_LOCK_TIMEOUT,
                "{} is still held by {who} after {} s: let it finish (or stop it) and run \
                 `cargo xtask setup` again",
                lock.display(),
                APT_LOCK_TIMEOUT.as_secs()
            );
            if !said {
                println!(
                    "setup: waiting for {} held by {who} (a fresh machine runs \
                     unattended-upgrades at boot); up to {} s",
                    lock.display(),
                    APT_LOCK_TIMEOUT.as_secs()
                );
                said = true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if said {
            println!(
                "setup: {} released after {} s",
                lock.display(),
                start.elapsed().as_secs()
            );
        }
    }
    Ok(())
}

/// Whether another process holds a lock on `path` as apt and dpkg take it (fcntl): `None` when
/// the lock is free or the file does not exist; `Some(pid)`, where the pid is `None` for an
/// open-file-description lock, whose owner the kernel does not tell.
fn lock_holder(path: &Path) -> Option<Option<u32>> {
    use nix::{
        fcntl::{FcntlArg, fcntl},
        libc,
    };
    let file = fs::File::open(path).ok()?;
    // SAFETY: `flock` is plain old data, for which all zeroes is a valid value.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    fcntl(&file, FcntlArg::F_GETLK(&mut query)).ok()?;
    if query.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    Some(u32::try_from(query.l_pid).ok().filter(|&pid| pid > 0))
}

/// `process 1234 (unattended-upgr)`, or `another process` when the pid is not known.
fn describe_process(pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return "another process".to_owned();
    };
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("process {pid} ({})", comm.trim()),
        Err(_) => format!("process {pid}"),
    }
}

/// Like `which`: the first executable file named `name` in PATH or [`EXTRA_COMMAND_DIRS`].
fn find_command(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_COMMAND_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_get_waits_for_the_dpkg_lock() {
        let apt = apt_get(&["install", "-y", "socat"]);
        assert_eq!(apt.get_program(), "apt-get");
        assert_eq!(
            apt.get_args().collect::<Vec<_>>(),
            ["-o", "DPkg::Lock::Timeout=600", "install", "-y", "socat"]
        );
        assert_eq!(
            cmd::display(&apt),
            "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y socat"
        );
    }

    #[test]
    fn a_held_lock_names_its_holder() {
        let dir = env::temp_dir().join(format!("xtask-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        fs::write(&path, "").unwrap();
        assert_eq!(lock_holder(&path), None, "free");
        assert_eq!(lock_holder(&dir.join("missing")), None);
        // Held by another process as apt holds it: an fcntl write lock (Python's lockf).
        let mut holder = Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time; f = open(sys.argv[1], 'w'); \
                 fcntl.lockf(f, fcntl.LOCK_EX); print(flush=True); time.sleep(30)",
            ])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // One line once the lock is held.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let held = lock_holder(&path);
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert_eq!(held, Some(Some(holder.id())));
        assert!(describe_process(Some(std::process::id())).starts_with("process "));
        assert_eq!(describe_process(None), "another process");
        assert_eq!(lock_holder(&path), None, "released with its holder");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn llvm_major_from_nightly_libllvm_names() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.21-rust-1.90.0-nightly"), Some(21));
        assert_eq!(llvm_major("libLLVM.so.23"), Some(23));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so.rust"), None);
    }

    #[test]
    fn components_match_with_or_without_target() {
        let installed = [
            "rust-std-x86_64-unknown-linux-gnu",
            "clippy-x86_64-unknown-linux-gnu",
        ]
        .map(String::from);
        assert_eq!(
            missing_components(&installed, &["rust-src", "clippy", "rustfmt"]),
            ["rust-src", "rustfmt"]
        );
        let installed = ["rust-src", "rustfmt-x86_64-unknown-linux-gnu"].map(String::from);
        assert!(missing_components(&installed, &["rust-src", "rustfmt"]).is_empty());
        // rustc is not rustfmt, nor rust-std rust-src.
        let installed = ["rustc-x86_64-unknown-linux-gnu", "rust-std"].map(String::from);
        assert_eq!(
            missing_components(&installed, &["rustfmt", "rust-src"]),
            ["rustfmt", "rust-src"]
        );
    }

    #[test]
    fn find_command_searches_path_and_sbin() {
        assert!(find_command("sh").is_some());
        assert!(find_command("surely-no-such-command-here").is_none());
    }
}
