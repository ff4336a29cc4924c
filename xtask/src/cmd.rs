//! Running child processes from the tasks, and reporting how they failed.

use std::{
    ffi::OsStr,
    fmt, fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

use anyhow::{Context as _, Result};

/// The workspace root, where every cargo command runs.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a directory of the workspace")
        .to_path_buf()
}

/// `cargo` (rustup's proxy on PATH, so that `cargo +nightly` works), run at the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// A phase banner, so that CI logs show where each phase starts.
pub fn banner(title: &str) {
    println!("\n==> {title}");
}

/// Prints the command line, runs it with inherited stdio, and fails with [`Failed`] unless it
/// exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed { line, status }.into())
    }
}

/// A child process that ran and failed; `main` exits with its exit code.
#[derive(Debug)]
pub struct Failed {
    line: String,
    status: ExitStatus,
}

impl Failed {
    /// The exit code to pass on: the child's, or 1 when it has none (killed by a signal).
    pub fn code(&self) -> u8 {
        self.status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .filter(|&code| code != 0)
            .unwrap_or(1)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.line, self.status)
    }
}

impl std::error::Error for Failed {}

/// The command as a shell would read it: environment assignments, program, arguments.
pub fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.display(), quote(value)))
    });
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote);
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether this process runs with effective user id 0 (from `/proc/self/status`, which spares
/// a libc dependency and an unsafe call).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::display;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/root/.cargo/llvm-rust").args([
            "test",
            "it's",
            "a b",
            "--features",
            "llvm-22",
        ]);
        assert_eq!(
            display(&cmd),
            r"LLVM_PREFIX=/root/.cargo/llvm-rust cargo test 'it'\''s' 'a b' --features llvm-22"
        );
    }
}
