//! What `cargo xtask test` proves about the demo: that `cargo xtask demo --quick` tells its whole
//! story (it fails itself when a step does not turn out as told), and that it leaves nothing
//! behind, both when it runs to the end and when it gets SIGINT half-way (with the daemon up and
//! its programs attached); then the same of `cargo xtask demo --quick --docker`, to its end.
//!
//! Left behind would be, for the demo run by process PID: a network namespace of its lab
//! (`pf{PID}x…`), a process whose command line names its directory `/run/portfwd-demo-PID` (the
//! daemon, the HTTP servers) or its dockerd's `/tmp/pfdk-pf{PID}x…` (dockerd, containerd, the
//! shims), one of those directories or a mount below them (the pin directory, the containers'
//! root file systems), or one of the eBPF programs that the demo reported its daemon held
//! (`bpftool prog show id N` still finds it).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::session::{demo_dir, mounts_under};

/// Generous: the demo runs setup and `cargo build` first (no-ops after the test phase built it).
const DEMO_LIMIT: Duration = Duration::from_secs(600);

/// How long the kernel may take to free programs after their last reference went.
const RELEASE_LIMIT: Duration = Duration::from_secs(10);

/// The demo's line that reports the ids of the daemon's programs (after its last `:`).
const PROGRAMS_LINE: &str = "bpftool prog show finds them: ids";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Runs to its end.
    Complete,
    /// Gets SIGINT once its programs are attached.
    Interrupted,
}

/// The demo's runs: its options and how it ends.
const RUNS: &[(&[&str], Ending)] = &[
    (&[], Ending::Complete),
    (&[], Ending::Interrupted),
    // A missing Docker fails it, saying how to get it (`cargo xtask setup` installs it).
    (&["--docker"], Ending::Complete),
];

/// Runs the quick demo to its end, then again interrupted half-way, then the Docker lesson;
/// checks each left nothing.
pub fn run() -> Result<()> {
    for &(options, ending) in RUNS {
        let shown = options.join(" ");
        println!("\n--- cargo xtask demo --quick {shown}, {ending:?} ---");
        demo_leaves_nothing(options, ending)?;
        println!("--- {shown} {ending:?}: nothing left behind ---");
    }
    Ok(())
}

fn demo_leaves_nothing(options: &[&str], ending: Ending) -> Result<()> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut child = Command::new(exe)
        .args(["demo", "--quick"])
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("the demo's stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + DEMO_LIMIT;
    let mut programs = Vec::new();
    let mut interrupted = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                println!("  | {line}");
                if line.contains(PROGRAMS_LINE) {
                    programs = numbers_after_last_colon(&line);
                    if ending == Ending::Interrupted {
                        signal(pid, Signal::SIGINT);
                        interrupted = true;
                        println!("  (sent SIGINT to the demo, pid {pid})");
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the demo did not finish within {DEMO_LIMIT:?}");
            }
        }
    }
    let status = wait(&mut child, deadline)?;

    match ending {
        Ending::Complete => ensure!(status.success(), "the quick demo failed ({status})"),
        Ending::Interrupted => {
            ensure!(
                interrupted,
                "the demo never reported its programs, so it was not interrupted ({status})"
            );
            ensure!(
                status.code() == Some(130),
                "the interrupted demo should exit with 130, exited {status}"
            );
        }
    }
    ensure!(
        !programs.is_empty(),
        "the demo reported no program ids (no line with {PROGRAMS_LINE:?})"
    );
    nothing_left(pid, &programs)
}

/// Waits for `child` until `deadline`, then kills it and fails.
fn wait(child: &mut Child, deadline: Instant) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the demo closed its output but did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // `pid` is our unreaped child, so it cannot have been reused.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// `"… programs id 786, id 787"` -> `[786, 787]`.
fn numbers_after_last_colon(line: &str) -> Vec<u32> {
    let tail = line.rsplit(':').next().unwrap_or("");
    tail.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Fails naming whatever the demo run by `pid` left behind.
fn nothing_left(pid: u32, programs: &[u32]) -> Result<()> {
    let mut left = Vec::new();

    let prefix = format!("pf{pid}x");
    if let Ok(dir) = fs::read_dir(portfwd_lab::NETNS_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                left.push(format!("network namespace {name}"));
            }
        }
    }

    let dir = demo_dir(pid);
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    for m in mounts_under(&dir) {
        left.push(format!("mount {}", m.display()));
    }
    // dockerd's directory: `/tmp/pfdk-` and its lab's prefix (portfwd_lab::Docker).
    let docker_dirs = std::env::temp_dir().join(format!("pfdk-{prefix}"));
    let docker_dirs = docker_dirs.to_string_lossy().into_owned();
    if let Ok(tmp) = fs::read_dir(std::env::temp_dir()) {
        for e in tmp.flatten() {
            if e.path().to_string_lossy().starts_with(&docker_dirs) {
                left.push(format!("dockerd directory {}", e.path().display()));
            }
        }
    }
    for m in mounts_under(&std::env::temp_dir()) {
        if m.to_string_lossy().starts_with(&docker_dirs) {
            left.push(format!("mount {}", m.display()));
        }
    }

    let needles = [dir.to_string_lossy().into_owned(), docker_dirs];
    if let Ok(procs) = fs::read_dir("/proc") {
        for e in procs.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(raw) = fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if needles.iter().any(|n| cmdline.contains(n.as_str())) {
                left.push(format!("process {name}: {}", cmdline.trim()));
            }
        }
    }

    let deadline = Instant::now() + RELEASE_LIMIT;
    let mut loaded = loaded_programs(programs)?;
    while !loaded.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        loaded = loaded_programs(programs)?;
    }
    for id in loaded {
        left.push(format!(
            "eBPF program id {id} still loaded {RELEASE_LIMIT:?} after the demo exited"
        ));
    }

    ensure!(
        left.is_empty(),
        "the demo (pid {pid}) left behind:\n  {}",
        left.join("\n  ")
    );
    println!(
        "  checked: no namespace pf{pid}x*, no {} nor {}*, no process naming them, programs \
         {programs:?} unloaded",
        dir.display(),
        needles[1]
    );
    Ok(())
}

/// Those of `ids` that `bpftool prog show id N` still finds.
fn loaded_programs(ids: &[u32]) -> Result<Vec<u32>> {
    let mut loaded = Vec::new();
    for &id in ids {
        let out = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("running bpftool (installed by `cargo xtask setup`)")?;
        if out.status.success() {
            loaded.push(id);
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::numbers_after_last_colon;

    #[test]
    fn program_ids_from_the_demo_line() {
        assert_eq!(
            numbers_after_last_colon(
                "    In the kernel: portfwd_tc_ingress (sched_cls); bpftool prog show finds them: ids 786, 787"
            ),
            [786, 787]
        );
        assert!(numbers_after_last_colon("nothing: here").is_empty());
    }
}
