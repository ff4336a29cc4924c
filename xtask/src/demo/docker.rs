//! `cargo xtask demo --docker`: the lesson with a real container. A real dockerd (Debian's
//! docker.io, Docker's defaults: iptables on, userland-proxy on) runs in the lab's host namespace
//! (`portfwd_lab::Docker`); the daemon follows it through the config's `docker: { socket }`.
//!
//! 1. the lab and dockerd, the test image imported offline;
//! 2. the daemon, connected to dockerd (`portfwd status`);
//! 3. `docker run -d --name web -p 8080:3000 IMAGE`: `portfwd list` shows `docker:web`;
//! 4. the client reaches the host's port 8080;
//! 5. Docker's own DNAT rule counted 0 packets (portfwd took them first), portfwd's counters did;
//!    `portfwd del 8080` refuses: the forward is Docker's; `[::]:8080` of the IPv4-only
//!    container is left to docker-proxy (`portfwd status`);
//! 6. the container restarts on a new address (stopped, another container takes its address,
//!    started again): the forward follows, the client still reaches it;
//! 7. `docker stop web`: the forward is gone;
//! 8. the list of what the demo checked, with its timings.
//!
//! Every claim is checked where it is made ([`Claims::check`]): a false one fails the demo.
//! Without Docker installed, [`require`] says how to get it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use portfwd_lab::{Docker, Lab};
use serde_json::Value;

use super::{
    COMMAND_LIMIT, Demo, HOST_PORT, bounded, print_indented, session::check_interrupt, text,
};

/// What the lesson needs of Docker's installation, and the Debian package that installs it.
const REQUIRED: &[(&str, &str)] = &[
    ("/usr/sbin/dockerd", "docker.io"),
    ("/usr/bin/docker", "docker.io"),
    ("/usr/bin/busybox", "busybox-static"),
];

/// The container the lesson publishes, and the one that takes its address while it is stopped.
const WEB: &str = "web";
const SQUATTER: &str = "other";

/// How long portfwd may take to follow a change of Docker's, or the client to get an answer.
const FOLLOW_LIMIT: Duration = Duration::from_secs(10);
/// How often the demo looks while it waits (each look is one `portfwd list --json`).
const POLL: Duration = Duration::from_millis(5);

/// Fails, saying exactly how to get Docker, when its files are missing (after `setup`, which
/// installs it when it can); otherwise passes `setup`'s own result on.
pub(super) fn require(setup: Result<()>) -> Result<()> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return setup;
    }
    bail!("{}", how_to_get(&missing, setup.err().as_ref()))
}

/// The message of [`require`]: what is missing, and the two ways to get it.
fn how_to_get(missing: &[&str], setup_error: Option<&anyhow::Error>) -> String {
    let mut packages: Vec<&str> = REQUIRED
        .iter()
        .filter(|(path, _)| missing.contains(path))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    let mut out = format!(
        "`cargo xtask demo --docker` needs Docker: {} missing (Debian's {}).\n",
        missing.join(", "),
        packages.join(", ")
    );
    if let Some(e) = setup_error {
        out.push_str(&format!(
            "`cargo xtask setup` could not install it: {e:#}\n"
        ));
    }
    out.push_str(
        "Get it with\n  \
         cargo xtask setup      # as root: installs docker.io and busybox-static, no service started\n\
         or by hand, behind a policy-rc.d so that the package does not start a dockerd on this machine:\n  \
         printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d\n  \
         apt-get install -y --no-install-recommends docker.io busybox-static\n  \
         rm /usr/sbin/policy-rc.d\n\
         The demo starts a dockerd of its own inside its lab; it never uses or starts the machine's.",
    );
    out
}

/// The claims the lesson made and checked, with their evidence, in order.
#[derive(Default)]
struct Claims(Vec<String>);

impl Claims {
    /// Records `claim` with its `evidence` and says it; fails the demo if it is false.
    fn check(&mut self, holds: bool, claim: &str, evidence: &str) -> Result<()> {
        ensure!(holds, "the demo's claim is false: {claim} ({evidence})");
        println!("    checked: {claim} ({evidence})");
        self.0.push(format!("{claim} ({evidence})"));
        Ok(())
    }
}

/// One forward of `portfwd list --json`, the fields the lesson reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    listen: String,
    to: String,
    origin: String,
    container: Option<String>,
    packets_in: u64,
}

impl Entry {
    fn from_json(v: &Value) -> Option<Entry> {
        let s = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Entry {
            listen: s("listen")?,
            to: s("to")?,
            // Absent before the follower: every forward was the config's.
            origin: s("origin").unwrap_or_else(|| "config".to_owned()),
            container: s("container"),
            packets_in: v.get("packets_to_target").and_then(Value::as_u64)?,
        })
    }
}

/// The forward Docker's container `name` made, among `list`'s.
fn docker_entry<'a>(list: &'a [Entry], name: &str) -> Option<&'a Entry> {
    let origin = format!("docker:{name}");
    list.iter().find(|e| e.origin == origin)
}

/// In `iptables -t nat -L DOCKER -v -n -x`, Docker's DNAT rule of `host_port` to `target`: its
/// packet counter and the line.
fn dnat_rule<'a>(listing: &'a str, host_port: u16, target: &str) -> Option<(u64, &'a str)> {
    let (port, to) = (format!("dpt:{host_port}"), format!("to:{target}"));
    listing
        .lines()
        .find(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.get(2) == Some(&"DNAT")
                && words.contains(&port.as_str())
                && words.contains(&to.as_str())
        })
        .and_then(|l| Some((l.split_whitespace().next()?.parse().ok()?, l.trim())))
}

/// The lines of `portfwd status` about Docker: the section whose heading starts with `docker`.
fn docker_section(status: &str) -> Vec<&str> {
    let mut lines = status
        .lines()
        .skip_while(|l| !l.to_ascii_lowercase().starts_with("docker"));
    let Some(heading) = lines.next() else {
        return Vec::new();
    };
    std::iter::once(heading)
        .chain(lines.take_while(|l| l.starts_with(' ')))
        .collect()
}

/// A `docker` command: when it started and how long it took to return.
struct Timed {
    command: String,
    started: Instant,
    returned: Duration,
}

impl Timed {
    /// The evidence of something seen `at` after the command started, e.g. "`docker run`
    /// returned after 709 ms; listed 721 ms after it started, 12 ms after it returned".
    fn evidence(&self, what: &str, at: Duration) -> String {
        format!(
            "`docker {}` returned after {}; {what} {} after it started, {} after it returned",
            self.command,
            ms(self.returned),
            ms(at),
            ms(at.saturating_sub(self.returned))
        )
    }
}

/// Whether curl's answer is the test image's page.
fn is_page(answer: Option<(String, Option<String>)>) -> bool {
    answer.is_some_and(|(body, _)| body.contains(Docker::PAGE.trim()))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

impl Demo {
    /// The lesson of `--docker` (see the module's documentation).
    pub(super) fn docker_walkthrough(&mut self) -> Result<()> {
        let mut claims = Claims::default();
        let lesson = Instant::now();
        let target_port = Docker::SERVER_PORT;
        println!(
            "\nportfwd demo: `docker run -p {HOST_PORT}:{target_port}` with a real Docker, taken over \
             by portfwd\n\n\
             A real dockerd runs in the lab with Docker's defaults (iptables on, userland-proxy \
             on). portfwd follows it\n\
             (the config's `docker:` section): every port Docker publishes becomes a forward in \
             the kernel, ahead of\n\
             Docker's own DNAT rule and docker-proxy, with no change to how containers are run."
        );

        self.step(
            "The lab: a client, and a host running a real dockerd, each a network namespace",
        )?;
        let docker = self.session.start_docker()?;
        let ready_in = docker.ready_in();
        docker.import_test_image()?;
        let docker = self.docker()?;
        let version = docker.cli(&["version", "-f", "{{.Server.Version}}"])?;
        let socket = docker.socket();
        let lab = self.session.lab();
        println!(
            "    client     {:<24} eth0 {}",
            lab.client().name,
            Lab::CLIENT_ADDR
        );
        println!(
            "    host       {:<24} eth0 {}; dockerd {version} (pid {}, its API answered {} after \
             its start)",
            lab.host().name,
            Lab::HOST_ADDR,
            docker.pid().unwrap_or(0),
            ms(ready_in)
        );
        println!(
            "                                        its bridge {} {}/{}, its API {}",
            Docker::BRIDGE,
            Docker::BRIDGE_ADDR,
            Docker::BRIDGE_PREFIX_LEN,
            socket.display()
        );
        println!(
            "    image      {} imported offline: a static busybox httpd on port {target_port}",
            Docker::IMAGE
        );
        println!(
            "    Below, `docker` is `docker -H unix://{}` (the lab's dockerd, never the machine's).",
            socket.display()
        );

        self.step(&format!(
            "portfwd in the host namespace, following that dockerd: docker: {{ socket: {} }}",
            socket.display()
        ))?;
        let yaml = format!(
            "# Written by `cargo xtask demo --docker` (see config/portfwd.docker.yaml): follow the\n\
             # lab's dockerd; no forward of our own.\n\
             interfaces: []\n\
             docker:\n  socket: {}\n\
             forwards: []\n{}",
            socket.display(),
            self.pin_dir_line()
        );
        self.start_daemon(
            yaml,
            "portfwd daemon --config demo.yaml   # with the docker: section above",
        )?;
        self.show_attachments()?;
        let docker_status = self.wait_docker_connected()?;
        self.show_docker_status()?;
        claims.check(
            docker_status.get("connected").and_then(Value::as_bool) == Some(true),
            "portfwd is connected to the lab's dockerd",
            &format!(
                "status: API {}, Docker {}",
                docker_status
                    .get("api_version")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                docker_status
                    .get("engine_version")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ),
        )?;

        self.step(&format!(
            "docker run -d --name {WEB} -p {HOST_PORT}:{target_port} {}",
            Docker::IMAGE
        ))?;
        let run = [
            "run",
            "-d",
            "--name",
            WEB,
            "-p",
            &format!("{HOST_PORT}:{target_port}"),
            Docker::IMAGE,
        ];
        let (run, id) = self.docker_timed(&run)?;
        println!("      {}", id.get(..12).unwrap_or(&id));
        let (listed, entry) = self.wait_forward(run.started, true)?;
        // Measured at once, so that the time is portfwd's, not the reader's: the counters below
        // already show these first requests.
        let reachable = self.wait_reachable(run.started)?;
        let addr = self.docker()?.container_addr(WEB)?;
        let target = format!("{addr}:{target_port}");
        println!(
            "    host$ portfwd list   (the counters show the demo's first requests, which timed it)"
        );
        self.show_list()?;
        claims.check(
            entry.as_ref().is_some_and(|e| {
                e.to == target
                    && e.listen.starts_with(&format!("{HOST_PORT}/"))
                    && e.container.as_deref() == Some(WEB)
            }),
            &format!("`portfwd list` shows {HOST_PORT}/tcp -> {target}, origin docker:{WEB}"),
            &run.evidence("listed", listed),
        )?;

        self.step(&format!(
            "The client asks the host's port {HOST_PORT}: curl http://{}:{HOST_PORT}/",
            Lab::HOST_ADDR
        ))?;
        claims.check(
            is_page(self.curl(HOST_PORT, false)?),
            &format!("the client reaches {WEB} through the host's port {HOST_PORT}"),
            &run.evidence("first answer", reachable),
        )?;

        self.step("Who carried the packets: Docker's DNAT rule, or portfwd?")?;
        self.dnat_counted_nothing(&mut claims, &target)?;
        self.refuses_del(&mut claims)?;
        self.ipv6_left_to_docker(&mut claims)?;

        self.restart_on_new_address(&mut claims, addr)?;

        self.step(&format!("docker stop {WEB}: the forward is gone"))?;
        let (stop, _) = self.docker_timed(&["stop", "-t", "0", WEB])?;
        let (withdrawn, _) = self.wait_forward(stop.started, false)?;
        println!("    host$ portfwd list");
        self.show_list()?;
        let status = self.docker_status()?;
        claims.check(
            status.get("forwards").and_then(Value::as_u64) == Some(0),
            &format!("the forward of {WEB} is withdrawn, and Docker owns no forward any more"),
            &stop.evidence("gone from the list", withdrawn),
        )?;
        claims.check(
            self.curl(HOST_PORT, false)?.is_none(),
            &format!("nothing answers on the host's port {HOST_PORT} any more"),
            "curl fails",
        )?;

        self.step("What the demo checked")?;
        for (i, claim) in claims.0.iter().enumerate() {
            println!("    {:>2}. {claim}", i + 1);
        }
        println!(
            "    Every claim held: a false one would have failed the demo. The lesson took {:.1} s \
             (dockerd's start included{}).",
            lesson.elapsed().as_secs_f64(),
            if self.quick {
                ""
            } else {
                ", and the pauses between the steps"
            }
        );
        Ok(())
    }

    /// Step 5: Docker's DNAT rule for `target` counted no packet; portfwd's forward did.
    fn dnat_counted_nothing(&self, claims: &mut Claims, target: &str) -> Result<()> {
        let (packets, line) = self.dnat_packets(target)?;
        println!(
            "    host$ iptables -t nat -L DOCKER -v -n -x   (Docker's rule for port {HOST_PORT})"
        );
        println!("      {line}");
        let list = self.list()?;
        let ours = docker_entry(&list, WEB).map_or(0, |e| e.packets_in);
        claims.check(
            packets == 0 && ours > 0,
            "Docker's own DNAT rule counted 0 packets: portfwd took them first",
            &format!("DNAT rule: {packets} packets; portfwd's forward: {ours} packets in"),
        )?;
        println!(
            "    The client's packets never reached netfilter: portfwd's tc program on the host's \
             eth0 sent them on\n    to the container before the nat table's PREROUTING chain. \
             Docker's rule, and its docker-proxy\n    for host-local connections, stay in place, \
             unused."
        );
        Ok(())
    }

    /// `portfwd del 8080` refuses Docker's forward and names the container.
    fn refuses_del(&self, claims: &mut Claims) -> Result<()> {
        println!("    host$ portfwd del {HOST_PORT}");
        let out = self.portfwd(&["del", &HOST_PORT.to_string()])?;
        let shown = text(&out);
        print_indented(&shown);
        claims.check(
            !out.status.success() && shown.contains(WEB),
            &format!("`portfwd del {HOST_PORT}` refuses Docker's forward and names {WEB}"),
            &format!("exit status {}", out.status.code().unwrap_or(-1)),
        )
    }

    /// `[::]:8080` of the IPv4-only container stays with docker-proxy, as `status` says.
    fn ipv6_left_to_docker(&self, claims: &mut Claims) -> Result<()> {
        self.show_docker_status()?;
        let status = self.docker_status()?;
        let v6 = format!("[::]:{HOST_PORT}/tcp");
        let left = status
            .get("not_served")
            .and_then(Value::as_array)
            .is_some_and(|b| {
                b.iter()
                    .any(|b| b.get("listen").and_then(Value::as_str) == Some(&v6))
            });
        claims.check(
            left,
            &format!(
                "{v6} of {WEB} (no IPv6 address) is left to Docker's docker-proxy: an IPv6 client \
                 gets what Docker gives it"
            ),
            "status: not served",
        )
    }

    /// Step 6: stop the container, let another take its address, start it again: the forward
    /// follows it to its new address.
    fn restart_on_new_address(&mut self, claims: &mut Claims, old: Ipv4Addr) -> Result<()> {
        self.step(&format!(
            "{WEB} restarts on a new address: stopped, another container takes {old}, started again"
        ))?;
        let (stop, _) = self.docker_timed(&["stop", "-t", "0", WEB])?;
        let (withdrawn, _) = self.wait_forward(stop.started, false)?;
        println!(
            "      {}",
            stop.evidence("gone from portfwd's list", withdrawn)
        );

        println!(
            "    host$ docker run -d --name {SQUATTER} {} /bin/busybox sleep 3600   # no port published",
            Docker::IMAGE
        );
        self.docker()?.cli(&[
            "run",
            "-d",
            "--name",
            SQUATTER,
            Docker::IMAGE,
            "/bin/busybox",
            "sleep",
            "3600",
        ])?;
        let squatter = self.docker()?.container_addr(SQUATTER)?;
        println!("      {SQUATTER} got {squatter}");

        let (start, _) = self.docker_timed(&["start", WEB])?;
        let (listed, entry) = self.wait_forward(start.started, true)?;
        let reachable = self.wait_reachable(start.started)?;
        let new = self.docker()?.container_addr(WEB)?;
        println!("      {WEB} got {new}");
        let target = format!("{new}:{}", Docker::SERVER_PORT);
        println!("    host$ portfwd list");
        self.show_list()?;
        claims.check(
            new != old && entry.is_some_and(|e| e.to == target),
            &format!("after the restart the list shows {HOST_PORT}/tcp -> {target} (was {old})"),
            &start.evidence("listed", listed),
        )?;
        // The squatter holds the old address and serves nothing: a forward left on the old
        // address would fail here.
        claims.check(
            is_page(self.curl(HOST_PORT, false)?),
            &format!("the client still reaches {WEB}, at its new address"),
            &start.evidence("first answer", reachable),
        )?;
        let (packets, _) = self.dnat_packets(&target)?;
        claims.check(
            packets == 0,
            "Docker's new DNAT rule counted 0 packets too",
            &format!("DNAT rule to {target}: {packets} packets"),
        )
    }

    /// `docker ARGS` on the lab's dockerd, shown as typed: when it started, how long it took,
    /// and its output.
    fn docker_timed(&self, args: &[&str]) -> Result<(Timed, String)> {
        println!("    host$ docker {}", args.join(" "));
        let started = Instant::now();
        let out = self.docker()?.cli(args)?;
        let timed = Timed {
            command: args.first().copied().unwrap_or_default().to_owned(),
            started,
            returned: started.elapsed(),
        };
        Ok((timed, out))
    }

    fn docker(&self) -> Result<&Docker> {
        self.session.docker().context("dockerd runs")
    }

    /// `portfwd list --json` for polling: the CLI run directly (the control socket is a path; no
    /// namespace to enter), bounded in time.
    fn list(&self) -> Result<Vec<Entry>> {
        check_interrupt()?;
        let out = Command::new("timeout")
            .args(["-k", "2", COMMAND_LIMIT])
            .arg(&self.portfwd)
            .arg("--socket")
            .arg(self.socket())
            .args(["list", "--json"])
            .stdin(Stdio::null())
            .output()
            .context("running portfwd list --json")?;
        ensure!(
            out.status.success(),
            "portfwd list --json failed: {}",
            text(&out)
        );
        let json: Value =
            serde_json::from_slice(&out.stdout).context("parsing portfwd list --json")?;
        json.as_array()
            .context("portfwd list --json is not an array")?
            .iter()
            .map(|v| {
                Entry::from_json(v).with_context(|| format!("a forward without its fields: {v}"))
            })
            .collect()
    }

    /// Polls the list until the forward of container `web` is there (`present`) or gone; the
    /// time since `since`, and that forward.
    fn wait_forward(&self, since: Instant, present: bool) -> Result<(Duration, Option<Entry>)> {
        let deadline = Instant::now() + FOLLOW_LIMIT;
        loop {
            let list = self.list()?;
            let entry = docker_entry(&list, WEB);
            if entry.is_some() == present {
                return Ok((since.elapsed(), entry.cloned()));
            }
            if Instant::now() > deadline {
                bail!(
                    "portfwd did not follow Docker within {FOLLOW_LIMIT:?}: its forward of {WEB} \
                     is {entry:?}; the daemon's log:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls GET http://HOST:8080/ from the client until the test page answers; the time since
    /// `since`.
    fn wait_reachable(&self, since: Instant) -> Result<Duration> {
        let to = SocketAddr::from((Lab::HOST_ADDR, HOST_PORT));
        let deadline = Instant::now() + FOLLOW_LIMIT;
        loop {
            check_interrupt()?;
            let answer =
                portfwd_lab::http_get(self.session.lab().client(), to, Duration::from_millis(500));
            match answer {
                Ok(a) if a.starts_with("HTTP/1.") && a.ends_with(Docker::PAGE) => {
                    return Ok(since.elapsed());
                }
                other if Instant::now() > deadline => {
                    bail!("the client did not reach {to} within {FOLLOW_LIMIT:?}: {other:?}")
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }

    /// `portfwd status --json`'s `docker` object.
    fn docker_status(&self) -> Result<Value> {
        let out = self.portfwd_checked(&["status", "--json"])?;
        let status: Value =
            serde_json::from_slice(&out.stdout).context("parsing portfwd status --json")?;
        status
            .get("docker")
            .filter(|d| !d.is_null())
            .cloned()
            .context("portfwd status has no docker section: is the docker: config followed?")
    }

    /// Polls the status until the daemon is connected to dockerd.
    fn wait_docker_connected(&self) -> Result<Value> {
        let deadline = Instant::now() + FOLLOW_LIMIT;
        loop {
            let status = self.docker_status()?;
            if status.get("connected").and_then(Value::as_bool) == Some(true) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "portfwd did not connect to dockerd within {FOLLOW_LIMIT:?}: {status}\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `portfwd status`, its Docker lines.
    fn show_docker_status(&self) -> Result<()> {
        let status = text(&self.portfwd_checked(&["status"])?);
        println!("    host$ portfwd status   (its Docker lines)");
        for line in docker_section(&status) {
            println!("      {line}");
        }
        Ok(())
    }

    /// `portfwd list`, as the reader would see it.
    fn show_list(&self) -> Result<()> {
        print_indented(&text(&self.portfwd_checked(&["list"])?));
        Ok(())
    }

    /// The packets Docker's DNAT rule of the host port to `target` counted, and the rule's line.
    fn dnat_packets(&self, target: &str) -> Result<(u64, String)> {
        let out = bounded(
            self.session.lab().host(),
            &[
                "iptables", "-w", "-t", "nat", "-L", "DOCKER", "-v", "-n", "-x",
            ],
        )?;
        let listing = text(&out);
        ensure!(
            out.status.success(),
            "iptables -t nat -L DOCKER failed: {listing}"
        );
        dnat_rule(&listing, HOST_PORT, target)
            .map(|(packets, line)| (packets, line.to_owned()))
            .with_context(|| {
                format!("no DNAT rule of Docker's for {HOST_PORT} -> {target}:\n{listing}")
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn without_docker_the_message_says_how_to_get_it() {
        let msg = how_to_get(&["/usr/sbin/dockerd", "/usr/bin/docker"], None);
        assert!(
            msg.contains("/usr/sbin/dockerd, /usr/bin/docker missing (Debian's docker.io)"),
            "{msg}"
        );
        assert!(msg.contains("cargo xtask setup"), "{msg}");
        assert!(msg.contains("exit 101"), "{msg}");
        assert!(msg.contains("/usr/sbin/policy-rc.d"), "{msg}");
        assert!(
            msg.contains("apt-get install -y --no-install-recommends docker.io busybox-static"),
            "{msg}"
        );
        let failed = anyhow::anyhow!("apt-get failed");
        let msg = how_to_get(&["/usr/bin/busybox"], Some(&failed));
        assert!(msg.contains("(Debian's busybox-static)"), "{msg}");
        assert!(
            msg.contains("could not install it: apt-get failed"),
            "{msg}"
        );
    }

    #[test]
    fn require_passes_setup_on_when_docker_is_there() {
        if REQUIRED.iter().all(|(p, _)| Path::new(p).exists()) {
            assert!(require(Ok(())).is_ok());
            assert!(require(Err(anyhow::anyhow!("no bpf-linker"))).is_err());
        } else {
            let err = require(Ok(())).unwrap_err().to_string();
            assert!(err.contains("cargo xtask setup"), "{err}");
        }
    }

    #[test]
    fn docker_forward_found_by_origin() {
        let list: Vec<Entry> = [
            json!({"listen": "8080/tcp", "protocol": "tcp", "to": "172.18.0.2:3000",
                   "packets_to_target": 7, "origin": "docker:web", "container": "web"}),
            json!({"listen": "9090/tcp", "protocol": "tcp", "to": "172.17.0.2:3000",
                   "packets_to_target": 0}),
        ]
        .iter()
        .map(|v| Entry::from_json(v).unwrap())
        .collect();
        let web = docker_entry(&list, "web").unwrap();
        assert_eq!((web.to.as_str(), web.packets_in), ("172.18.0.2:3000", 7));
        assert_eq!(web.container.as_deref(), Some("web"));
        assert_eq!(list[1].origin, "config");
        assert!(docker_entry(&list, "other").is_none());
        assert!(Entry::from_json(&json!({"listen": "8080/tcp"})).is_none());
    }

    #[test]
    fn dockers_dnat_rule_and_its_counter() {
        let listing = "Chain DOCKER (2 references)
    pkts      bytes target     prot opt in     out     source               destination
       0        0 RETURN     all  --  dk0    *       0.0.0.0/0            0.0.0.0/0
       3      180 DNAT       tcp  --  !dk0   *       0.0.0.0/0            0.0.0.0/0            tcp dpt:8080 to:172.18.0.2:3000
       0        0 DNAT       tcp  --  !dk0   *       0.0.0.0/0            0.0.0.0/0            tcp dpt:8080 to:172.18.0.3:3000
";
        let (packets, line) = dnat_rule(listing, 8080, "172.18.0.2:3000").unwrap();
        assert_eq!(packets, 3);
        assert!(line.starts_with("3      180 DNAT"), "{line}");
        assert_eq!(dnat_rule(listing, 8080, "172.18.0.3:3000").unwrap().0, 0);
        assert!(dnat_rule(listing, 8081, "172.18.0.2:3000").is_none());
        assert!(dnat_rule(listing, 808, "172.18.0.2:3000").is_none());
    }

    #[test]
    fn status_docker_section() {
        let status = "config: /x.yaml\ninterfaces:\n  eth0 tc\ndocker: connected to /d.sock\n  forwards: 1\n  containers: 1\nverdicts:\n  x 1\n";
        assert_eq!(
            docker_section(status),
            [
                "docker: connected to /d.sock",
                "  forwards: 1",
                "  containers: 1"
            ]
        );
        assert!(docker_section("config: /x.yaml\n").is_empty());
    }
}
