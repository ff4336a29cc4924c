//! `cargo xtask demo`: the port-mapping lesson of `docker run -p 8080:3000`, live, in a lab of
//! network namespaces, with the real `portfwd` daemon and CLI, a real HTTP server in the
//! container and curl on the client.
//!
//! 1. setup and build (what a fresh machine needs);
//! 2. the lab (`portfwd-lab`): client 10.77.0.2, host 10.77.0.1 with bridge docker0 172.17.0.1, and
//!    container `web` 172.17.0.2 running `python3 -m http.server 3000 --bind 0.0.0.0`;
//! 3. the daemon in the host namespace with a copy of `config/demo.yaml` (8080 -> 172.17.0.2:3000)
//!    whose `pin_dir` is private to this run;
//! 4. curl from the client to 10.77.0.1:8080: the path of the request and the container's answer,
//!    then `portfwd list` with its counters;
//! 5. the lesson's silent failures, each first as the client sees it, then as `portfwd check`
//!    explains it, then fixed: a wrong container port, and an app bound to 127.0.0.1;
//! 6. `portfwd check` on everything (exit status 0), and teardown (see [`session`]).
//!
//! The demo checks its own story: a step whose outcome is not the expected one fails the demo
//! (so the quick mode that CI runs is a test). `--keep` leaves the lab up, says how to enter it,
//! and tears it down on Ctrl-C (or SIGTERM).
//!
//! `--docker` plays the lesson with a real container instead: a real dockerd in the lab's host
//! namespace, followed by the daemon (see [`docker`]).

mod docker;
mod session;
pub mod verify;

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use portfwd_lab::{Container, Lab, Ns};

use crate::{cmd, setup};
pub use session::Interrupted;
use session::{Session, check_interrupt, pause};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// No pauses between the steps (what CI runs)
    #[arg(long)]
    pub quick: bool,
    /// Leave the lab and the daemon running at the end and print how to enter them; Ctrl-C (or
    /// SIGTERM) tears them down
    #[arg(long)]
    pub keep: bool,
    /// Play the lesson with a real container: a dockerd in the lab, `docker run -p` followed by
    /// portfwd (needs Debian's docker.io, which `cargo xtask setup` installs)
    #[arg(long)]
    pub docker: bool,
}

/// The host port of `config/demo.yaml`, and the container port it forwards to.
const HOST_PORT: u16 = 8080;
const APP_PORT: u16 = 3000;
/// Host ports of the two failures.
const WRONG_PORT_HOST_PORT: u16 = 8081;
const LOOPBACK_HOST_PORT: u16 = 8082;
/// The container port of the wrong-port mistake (`-p 8081:80` for an app on 3000).
const WRONG_APP_PORT: u16 = 80;

/// Limits on the steps, so that every step ends (and a signal is seen) within seconds.
const CURL_MAX_TIME: &str = "3";
const COMMAND_LIMIT: &str = "30";
const START_LIMIT: Duration = Duration::from_secs(20);

pub fn run(args: Args) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the demo needs root: it creates network namespaces and loads eBPF programs \
             (run `sudo -E cargo xtask demo`)"
        );
    }
    session::install_signal_handler()?;
    cmd::banner("setup");
    let setup = setup::run();
    if args.docker {
        // Without Docker the lesson cannot be played: say how to get it, whatever setup said.
        docker::require(setup)?;
    } else {
        setup?;
    }
    cmd::banner("build");
    cmd::run(cmd::cargo().args(["build", "--quiet", "--package", "portfwd"]))?;
    check_interrupt()?;
    let portfwd = target_dir().join("debug/portfwd");
    ensure!(
        portfwd.exists(),
        "{} is missing after the build",
        portfwd.display()
    );

    let mut demo = Demo {
        session: Session::new()?,
        portfwd,
        quick: args.quick,
        step: 0,
    };
    let mut result = if args.docker {
        demo.docker_walkthrough()
    } else {
        demo.walkthrough()
    };
    if result.is_ok() && args.keep {
        // The lab lives as long as this process: a lab whose creator is gone is deleted by the
        // next lab anyone builds, and the teardown stays the one below.
        print!("{}", demo.kept_instructions());
        while session::pause(Duration::from_secs(3600)).is_ok() {}
        result = Ok(());
    }
    // Shown after an error or a signal too: it is what happens next.
    println!(
        "\n==> {}. Tear down{}",
        demo.step + 1,
        if result.is_ok() {
            ": nothing is left behind"
        } else {
            ""
        }
    );
    drop(demo);
    result
}

/// Where cargo puts its builds.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
}

struct Demo {
    session: Session,
    portfwd: PathBuf,
    quick: bool,
    step: u32,
}

impl Demo {
    fn walkthrough(&mut self) -> Result<()> {
        println!(
            "\nportfwd demo: `docker run -p {HOST_PORT}:{APP_PORT}`, live\n\n\
             A server in a container listens on port {APP_PORT} of the container's own address. \
             `-p {HOST_PORT}:{APP_PORT}`\n\
             publishes it: connections to port {HOST_PORT} of the host go to port {APP_PORT} of \
             the container.\n\
             Docker does that with an iptables DNAT rule plus a docker-proxy process; portfwd \
             does it with\n\
             eBPF programs on the host's interfaces. Docker checks nothing and forwards blindly; \
             `portfwd check`\n\
             explains a mapping that does not work."
        );

        self.step(
            "The lab: a client, a Docker-like host and a container, each a network namespace",
        )?;
        let web = self.session.lab_mut().add_container("web")?;
        self.http_server(&web, "0.0.0.0", "web")?;
        let lab = self.session.lab();
        println!(
            "    client     {:<24} eth0 {}",
            lab.client().name,
            Lab::CLIENT_ADDR
        );
        println!(
            "    host       {:<24} eth0 {}, bridge {} {} (Docker's default bridge)",
            lab.host().name,
            Lab::HOST_ADDR,
            Lab::BRIDGE,
            Lab::BRIDGE_ADDR
        );
        println!(
            "    container  {:<24} eth0 {}, runs `python3 -m http.server {APP_PORT} --bind 0.0.0.0`",
            web.ns.name, web.addr
        );

        self.step(&format!(
            "portfwd in the host namespace, with config/demo.yaml: {HOST_PORT}/tcp -> {}:{APP_PORT}",
            web.addr
        ))?;
        self.start_daemon(
            self.demo_config()?,
            "portfwd daemon --config config/demo.yaml",
        )?;
        self.show_attachments()?;
        self.no_dnat_rule()?;

        self.step(&format!(
            "The client asks the host's port {HOST_PORT}: curl http://{}:{HOST_PORT}/",
            Lab::HOST_ADDR
        ))?;
        let reply = self.curl(HOST_PORT, true)?;
        let Some((body, local)) = reply else {
            bail!("the request to port {HOST_PORT} failed: portfwd did not forward it");
        };
        ensure!(
            body.contains("hello from the container web"),
            "unexpected answer through port {HOST_PORT}: {body:?}"
        );
        let logged = self.server_log("web");
        let client = local.as_deref().unwrap_or("10.77.0.2:PORT");
        println!("    The request's path, and the answer's:");
        println!(
            "      client     {client} -> {}:{HOST_PORT}      curl connects to the host",
            Lab::HOST_ADDR
        );
        println!(
            "      host       tc ingress on eth0: portfwd rewrites the destination to {}:{APP_PORT} \
             (DNAT),",
            web.addr
        );
        println!(
            "                 looks the route up and sends the packet on: through docker0 until the \
             container's MAC is known,"
        );
        println!(
            "                 then straight into the container's namespace (no iptables, no proxy \
             process)"
        );
        println!(
            "      container  {client} -> {}:{APP_PORT}      the app sees the client's own address:",
            web.addr
        );
        match logged.lines().rev().find(|l| l.contains("GET /")) {
            Some(line) => println!("                 its log says: {}", line.trim()),
            None => bail!("the container's server logged no request: {logged:?}"),
        }
        println!(
            "      and back   {}:{APP_PORT} -> {client} leaves the container; portfwd gives it the \
             source {}:{HOST_PORT}",
            web.addr,
            Lab::HOST_ADDR
        );

        self.step("The counters of each published port: portfwd list")?;
        print_indented(&text(&self.portfwd_checked(&["list"])?));

        self.wrong_port(&web)?;
        self.loopback_only()?;

        self.step("Everything published, checked: portfwd check")?;
        let out = self.portfwd(&["check"])?;
        print_indented(&text(&out));
        ensure!(
            out.status.success(),
            "portfwd check did not find every forward healthy (exit status {})",
            out.status
        );
        println!(
            "    exit status 0: every forward is healthy (scripts can rely on it; --json too)"
        );
        Ok(())
    }

    /// The lesson's first failure: the container port of the mapping is not the app's.
    fn wrong_port(&mut self, web: &Container) -> Result<()> {
        let (host, to) = (
            WRONG_PORT_HOST_PORT,
            format!("{}:{WRONG_APP_PORT}", web.addr),
        );
        self.step(&format!(
            "Failure 1, the wrong container port: `-p {host}:{WRONG_APP_PORT}` for an app on {APP_PORT}"
        ))?;
        self.portfwd_ok(&["add", &host.to_string(), &to])?;
        ensure!(
            self.curl(host, false)?.is_none(),
            "the request to port {host} worked although nothing listens on {to}"
        );
        println!(
            "    Silent: curl only says it could not connect (with Docker, on the host itself: \
             \"Empty reply from\n    server\", as docker-proxy accepts and hangs up). Ask portfwd:"
        );
        let out = self.expect_check(host, "nothing listens on")?;
        ensure!(
            out.contains(&format!("listens on: {APP_PORT}/tcp on 0.0.0.0")),
            "portfwd check did not name the port the app listens on:\n{out}"
        );
        println!("    The fix it gives:");
        let fixed = format!("{}:{APP_PORT}", web.addr);
        self.portfwd_ok(&["del", &format!("{host}/tcp")])?;
        self.portfwd_ok(&["add", &format!("{host}/tcp"), &fixed])?;
        ensure!(
            self.curl(host, false)?.is_some(),
            "port {host} still fails after publishing it to {fixed}"
        );
        Ok(())
    }

    /// The lesson's second failure: the app listens on 127.0.0.1 inside its container.
    fn loopback_only(&mut self) -> Result<()> {
        self.step(
            "Failure 2, an app that listens on 127.0.0.1 inside its container (a dev server's \
             default)",
        )?;
        let dev = self.session.lab_mut().add_container("dev")?;
        let server = self.http_server(&dev, "127.0.0.1", "dev")?;
        println!(
            "    container  {:<24} eth0 {}, runs `python3 -m http.server {APP_PORT} --bind 127.0.0.1`",
            dev.ns.name, dev.addr
        );
        let host = LOOPBACK_HOST_PORT;
        let to = format!("{}:{APP_PORT}", dev.addr);
        self.portfwd_ok(&["add", &host.to_string(), &to])?;
        ensure!(
            self.curl(host, false)?.is_none(),
            "the request to port {host} worked although the app listens on 127.0.0.1 only"
        );
        println!(
            "    Silent again: `curl localhost:{APP_PORT}` inside the container works, from \
             outside nothing does. Ask portfwd:"
        );
        self.expect_check(host, "only on 127.0.0.1 inside the container")?;
        println!("    The fix: restart the app on every address");
        self.session.stop(server, Duration::from_secs(2))?;
        self.http_server(&dev, "0.0.0.0", "dev")?;
        println!(
            "    container$ python3 -m http.server {APP_PORT} --bind 0.0.0.0   (in {})",
            dev.ns.name
        );
        ensure!(
            self.curl(host, false)?.is_some(),
            "port {host} still fails with the app on 0.0.0.0"
        );
        Ok(())
    }

    /// `portfwd check PORT`, shown; it must fail (exit 1) with `reason` in its output.
    fn expect_check(&self, port: u16, reason: &str) -> Result<String> {
        let out = self.portfwd(&["check", &port.to_string()])?;
        let shown = text(&out);
        print_indented(&shown);
        ensure!(
            out.status.code() == Some(1),
            "portfwd check {port} should exit 1, exited {}",
            out.status
        );
        ensure!(
            shown.contains(reason),
            "portfwd check {port} did not say {reason:?}:\n{shown}"
        );
        Ok(shown)
    }

    /// A numbered step; outside quick mode, a pause before it so that the reader keeps up.
    /// Fails with [`Interrupted`] once a signal came.
    fn step(&mut self, title: &str) -> Result<()> {
        if !self.quick && self.step > 0 {
            pause(Duration::from_millis(1500))?;
        }
        check_interrupt()?;
        self.step += 1;
        println!("\n==> {}. {title}", self.step);
        Ok(())
    }

    /// Starts `python3 -m http.server` in `c` on `bind`:3000 serving a page that names it, and
    /// waits until it accepts connections. Its log goes to `NAME.log` in the demo's directory.
    fn http_server(&mut self, c: &Container, bind: &str, name: &str) -> Result<u32> {
        let root = self.session.dir().join(format!("www-{name}"));
        fs::create_dir_all(&root)?;
        fs::write(
            root.join("index.html"),
            format!("hello from the container {name} ({}:{APP_PORT})\n", c.addr),
        )?;
        let log = fs::File::create(self.session.dir().join(format!("{name}.log")))?;
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-m", "http.server", &APP_PORT.to_string()])
            .args(["--bind", bind, "--directory"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let pid = self.session.spawn(&c.ns, &mut cmd)?;
        let probe: SocketAddr = if bind == "0.0.0.0" {
            SocketAddr::from((c.addr, APP_PORT))
        } else {
            format!("{bind}:{APP_PORT}").parse()?
        };
        let ns = c.ns.clone();
        self.wait_for(&format!("the HTTP server in {}", c.ns), || {
            ns.try_run(|| TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok())
                .unwrap_or(false)
        })?;
        Ok(pid)
    }

    fn server_log(&self, name: &str) -> String {
        fs::read_to_string(self.session.dir().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Polls `ready` every 100 ms for up to [`START_LIMIT`].
    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            check_interrupt()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what} did not start within {START_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket(&self) -> PathBuf {
        self.session.dir().join("portfwd.sock")
    }

    fn config(&self) -> PathBuf {
        self.session.dir().join("demo.yaml")
    }

    /// `config/demo.yaml` (the daemon saves changes into its config: a copy keeps the
    /// repository's clean) with a `pin_dir` of this run.
    fn demo_config(&self) -> Result<String> {
        let source = cmd::workspace_root().join("config/demo.yaml");
        let mut yaml =
            fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
        yaml.push_str(&self.pin_dir_line());
        Ok(yaml)
    }

    /// The config line that keeps the daemon's pins private to this run.
    fn pin_dir_line(&self) -> String {
        format!(
            "# Added by `cargo xtask demo`: pins stay private to this run.\npin_dir: {}\n",
            self.session.pin_dir().display()
        )
    }

    /// Writes `yaml` as the daemon's config in the demo's directory, starts the daemon in the host
    /// namespace (`shown` is the command line shown to the reader), and waits until it answers.
    fn start_daemon(&mut self, yaml: String, shown: &str) -> Result<()> {
        fs::write(self.config(), yaml)?;
        let log = fs::File::create(self.session.dir().join("portfwd.log"))?;
        let mut daemon = Command::new(&self.portfwd);
        daemon
            .arg("--socket")
            .arg(self.socket())
            .arg("daemon")
            .arg("--config")
            .arg(self.config())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let host = self.session.lab().host().clone();
        let pid = self.session.spawn(&host, &mut daemon)?;
        self.session.set_daemon(pid);
        println!("    host$ {shown}");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            check_interrupt()?;
            if let Some(status) = self
                .session
                .lab_mut()
                .child_mut(pid)
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the daemon exited early ({status}):\n{}", self.daemon_log());
            }
            if self.portfwd(&["list"])?.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not answer within {START_LIMIT:?}:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "    portfwd runs (pid {pid}); its control socket is {}",
            self.socket().display()
        );
        Ok(())
    }

    fn daemon_log(&self) -> String {
        fs::read_to_string(self.session.dir().join("portfwd.log")).unwrap_or_default()
    }

    /// Where the programs are: `portfwd status`'s interfaces, and the kernel's own view: the
    /// programs the daemon holds (whose ids `cargo xtask test` checks are gone after the demo).
    fn show_attachments(&self) -> Result<()> {
        let status = text(&self.portfwd_checked(&["status"])?);
        println!("    Its eBPF programs are attached to the host's interfaces (portfwd status):");
        for line in status
            .lines()
            .skip_while(|l| !l.starts_with("interfaces:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
        {
            println!("      {}", line.trim());
        }
        let pid = self.session.daemon().context("the daemon runs")?;
        let ids = program_ids(pid);
        ensure!(
            !ids.is_empty(),
            "the daemon (pid {pid}) holds no eBPF program"
        );
        let mut names = Vec::new();
        for id in &ids {
            let out = bounded(
                self.session.lab().host(),
                &["bpftool", "prog", "show", "id", &id.to_string()],
            )?;
            ensure!(
                out.status.success(),
                "bpftool prog show id {id}: {}",
                text(&out)
            );
            // `786: sched_cls  name portfwd_tc_ingress  tag ...`
            let first = String::from_utf8_lossy(&out.stdout);
            let words: Vec<&str> = first.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "name") {
                names.push(format!(
                    "{} ({})",
                    words.get(i + 1).unwrap_or(&"?"),
                    words.get(1).unwrap_or(&"?")
                ));
            }
        }
        names.dedup();
        println!(
            "    In the kernel: {}; bpftool prog show finds them: ids {}",
            names.join(", "),
            ids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }

    /// The plain demo has no iptables rule at all: `iptables -t nat -S` in the host shows no DNAT.
    fn no_dnat_rule(&self) -> Result<()> {
        let host = self.session.lab().host();
        let nat = bounded(host, &["iptables", "-t", "nat", "-S"])?;
        let nat = String::from_utf8_lossy(&nat.stdout);
        ensure!(
            !nat.contains("DNAT"),
            "the lab's host has an iptables DNAT rule:\n{nat}"
        );
        println!("    No iptables rule is involved: `iptables -t nat -S` shows no DNAT.");
        Ok(())
    }

    /// Runs the real CLI in the host namespace against the demo's daemon.
    fn portfwd(&self, args: &[&str]) -> Result<Output> {
        let host = self.session.lab().host();
        let socket = self.socket();
        let mut all: Vec<&str> = vec![
            self.portfwd
                .to_str()
                .context("portfwd's path is not UTF-8")?,
            "--socket",
            socket
                .to_str()
                .context("the demo's directory is not UTF-8")?,
        ];
        all.extend_from_slice(args);
        bounded(host, &all)
    }

    /// Like [`Demo::portfwd`]; fails unless the command succeeds.
    fn portfwd_checked(&self, args: &[&str]) -> Result<Output> {
        let out = self.portfwd(args)?;
        ensure!(
            out.status.success(),
            "portfwd {} failed: {}",
            args.join(" "),
            text(&out)
        );
        Ok(out)
    }

    /// Like [`Demo::portfwd`], shown as typed; must succeed.
    fn portfwd_ok(&self, args: &[&str]) -> Result<()> {
        println!("    host$ portfwd {}", args.join(" "));
        let out = self.portfwd(args)?;
        let shown = text(&out);
        print_indented(&shown);
        ensure!(
            out.status.success(),
            "portfwd {} failed: {shown}",
            args.join(" ")
        );
        Ok(())
    }

    /// curl from the client to the host's `port`, shown with its answer or error. Returns the
    /// body and curl's own address on success, None on failure.
    fn curl(&self, port: u16, own_address: bool) -> Result<Option<(String, Option<String>)>> {
        let url = format!("http://{}:{port}/", Lab::HOST_ADDR);
        println!("    client$ curl {url}");
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            CURL_MAX_TIME,
            "--connect-timeout",
            "2",
        ];
        if own_address {
            args.extend(["-w", "\n%{local_ip}:%{local_port}"]);
        }
        args.push(&url);
        let out = bounded(self.session.lab().client(), &args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            print_indented(&String::from_utf8_lossy(&out.stderr));
            return Ok(None);
        }
        let (body, local) = if own_address {
            match stdout.rsplit_once('\n') {
                Some((body, local)) => (body.to_owned(), Some(local.trim().to_owned())),
                None => (stdout.clone(), None),
            }
        } else {
            (stdout, None)
        };
        print_indented(&body);
        Ok(Some((body, local)))
    }

    /// What `--keep` prints: how to get into each namespace and use the daemon.
    fn kept_instructions(&self) -> String {
        let lab = self.session.lab();
        let mut out =
            String::from("\n==> The lab stays up (--keep): enter it from another terminal\n");
        out.push_str(&format!(
            "  the host, with the CLI pointed at the demo's daemon (pid {}):\n    ip netns exec {} env PORTFWD_SOCKET={} PATH={}:$PATH bash\n",
            self.session.daemon().unwrap_or(0),
            lab.host().name,
            self.socket().display(),
            self.portfwd.parent().unwrap_or(Path::new(".")).display()
        ));
        out.push_str(&format!(
            "  the client (curl http://{}:{HOST_PORT}/):\n    ip netns exec {} bash\n",
            Lab::HOST_ADDR,
            lab.client().name
        ));
        for c in lab.containers() {
            out.push_str(&format!(
                "  the container {} ({}):\n    ip netns exec {} bash\n",
                c.name, c.addr, c.ns.name
            ));
        }
        if let Some(docker) = self.session.docker() {
            out.push_str(&format!(
                "  the lab's dockerd (pid {}), from the host's shell above:\n    docker -H unix://{} ps\n",
                docker.pid().unwrap_or(0),
                docker.socket().display()
            ));
        }
        out.push_str(&format!(
            "  It stays up while this command runs. Press Ctrl-C here (or `kill {}`) to tear it \
             all down.\n",
            std::process::id()
        ));
        out
    }
}

/// `ip netns exec NS ARGS` with a time limit (coreutils `timeout`), output captured.
fn bounded(ns: &Ns, args: &[&str]) -> Result<Output> {
    check_interrupt()?;
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            "-k",
            "2",
            COMMAND_LIMIT,
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{}` in {ns}", args.join(" ")))
}

/// stdout then stderr, as a terminal would show them.
fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

fn print_indented(s: &str) {
    for line in s.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("      {line}");
        }
    }
}

/// The ids of the eBPF programs process `pid` holds, as programs or through links (the
/// `prog_id:` lines of `/proc/PID/fdinfo`), sorted.
pub fn program_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
