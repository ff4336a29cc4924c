//! The Docker follower (#15) against a real dockerd in the lab's host namespace: the daemon
//! with a `docker:` section serves what `docker run -p` publishes, ahead of Docker's own DNAT.
//!
//! - `docker run -p` served and withdrawn on stop, refused by `del`, shown in `status`;
//! - every kind of binding: `-P` (the host port Docker picked), a range (one forward), udp (a
//!   real UDP echo inside the container's namespace), a host-IP binding `127.0.0.1:8081`
//!   (reached from the host through the socket hooks, not through docker-proxy);
//! - a container restarted on a new address, after another one took its old address;
//! - Docker 28's raw PREROUTING drop rule: the tc path does not depend on netfilter;
//! - a binding colliding with a forward of the config (the config wins), and `portfwd add`
//!   taking over a port Docker's container holds.
//!
//! Outages (daemon kill -9, dockerd stopped) are in `docker_outage`, the measurements in
//! `docker_measure`. Needs root and docker.io + busybox-static; under `CI=true` a test that
//! cannot run fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use portfwd_lab::{self as lab, Docker, Lab};
use serde_json::Value;

use crate::docker::{have_docker, http_get, rule_packets, wait_reachable};
use crate::support::{Daemon, SHORT, T, at, forward_yaml, host_port, sock_verdict};

/// How long a forward may take to appear or go once Docker has acted.
const FOLLOW: Duration = Duration::from_secs(10);

/// A lab, a dockerd in its host namespace and the daemon following it. Fields drop in order:
/// the daemon, dockerd (its containers), the lab.
pub(crate) struct Followed {
    pub d: Daemon,
    pub docker: Docker,
    pub lab: Lab,
}

impl Followed {
    /// A new lab tagged `tag`, dockerd started with `dockerd_args`, and the daemon following
    /// it with `config` after its `docker:` section (e.g. `forwards:`); waits until the daemon
    /// is connected to dockerd.
    pub(crate) fn start(tag: &str, dockerd_args: &[&str], config: &str) -> Followed {
        Self::start_in(Lab::new(tag).unwrap(), dockerd_args, config)
    }

    /// Like [`Followed::start`] in a lab already built (e.g. with containers of its own).
    pub(crate) fn start_in(mut lab: Lab, dockerd_args: &[&str], config: &str) -> Followed {
        let mut docker = Docker::start_with(&lab, dockerd_args).unwrap();
        docker.import_test_image().unwrap();
        let config = format!("docker:\n  socket: {}\n{config}", docker.socket().display());
        let d = Daemon::start(&mut lab, &config);
        let f = Followed { d, docker, lab };
        f.wait_connected(true);
        f
    }

    /// `portfwd status --json`'s `docker` section.
    pub(crate) fn docker_status(&self) -> Value {
        self.d.status_json(&self.lab)["docker"].clone()
    }

    /// Waits until `status.docker.connected` is `connected`.
    pub(crate) fn wait_connected(&self, connected: bool) {
        wait_for(FOLLOW, || self.docker_status()["connected"] == connected).unwrap_or_else(|e| {
            panic!(
                "status.docker.connected never {connected}: {e}\n{}\n{}",
                self.docker_status(),
                self.d.log_text()
            )
        });
    }

    /// The forwards `portfwd list --json` shows for container `name` (origin `docker:NAME`).
    pub(crate) fn of(&self, name: &str) -> Vec<Value> {
        let origin = format!("docker:{name}");
        self.d
            .list_json(&self.lab)
            .into_iter()
            .filter(|f| f["origin"] == origin.as_str())
            .collect()
    }

    /// Waits until container `name` has `n` forwards listed; returns them.
    pub(crate) fn wait_forwards(&self, name: &str, n: usize) -> Vec<Value> {
        let mut last = Vec::new();
        wait_for(FOLLOW, || {
            last = self.of(name);
            last.len() == n
        })
        .unwrap_or_else(|e| {
            panic!(
                "container {name}: {n} forwards expected, got {last:?}: {e}\n{}",
                self.d.log_text()
            )
        });
        last
    }

    /// Waits until container `name`'s only forward goes to `to`; returns it.
    pub(crate) fn wait_forward_to(&self, name: &str, to: SocketAddr) -> Value {
        let mut last = Vec::new();
        wait_for(FOLLOW, || {
            last = self.of(name);
            last.len() == 1 && last[0]["to"] == to.to_string()
        })
        .unwrap_or_else(|e| {
            panic!(
                "container {name}: one forward to {to} expected, got {last:?}: {e}\n{}",
                self.d.log_text()
            )
        });
        last.remove(0)
    }

    /// The container's address on Docker's bridge.
    pub(crate) fn addr(&self, name: &str) -> Ipv4Addr {
        self.docker.container_addr(name).unwrap()
    }
}

/// Polls `f` every 20 ms for up to `limit`.
pub(crate) fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("condition not met within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command of a container whose busybox httpd serves `page` on port 3000 (to tell
/// containers apart by what they answer).
pub(crate) fn page_cmd(page: &str) -> Vec<String> {
    let script = format!(
        "/bin/busybox mkdir -p /p && echo {page} > /p/index.html && exec /bin/busybox httpd -f -p {} -h /p",
        Docker::SERVER_PORT
    );
    ["/bin/busybox", "sh", "-c", &script]
        .map(str::to_owned)
        .to_vec()
}

/// The command of a container that echoes every line back on port 3000 (busybox nc, one
/// `cat` per connection): a connection that stays open as long as the test wants.
pub(crate) const ECHO_CMD: &[&str] = &[
    "/bin/busybox",
    "nc",
    "-ll",
    "-p",
    "3000",
    "-e",
    "/bin/busybox",
    "cat",
];

/// `docker run` of a container serving `page` (see [`page_cmd`]).
pub(crate) fn run_page(docker: &mut Docker, name: &str, options: &[&str], page: &str) {
    let cmd = page_cmd(page);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    docker.run_cmd(name, options, &cmd).unwrap();
}

/// Waits (up to 10 s) until `to` answers the client's GET with `page`; how long that took.
pub(crate) fn wait_page(lab: &Lab, to: SocketAddr, page: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = http_get(lab, to, Duration::from_millis(500));
        match &answer {
            Ok(a) if a.starts_with("HTTP/1.") && a.ends_with(&format!("{page}\n")) => {
                return started.elapsed();
            }
            _ => assert!(
                started.elapsed() < FOLLOW,
                "{to} did not answer the client with {page:?} within {FOLLOW:?}: {answer:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A forward's counter.
pub(crate) fn counter(forward: &Value, name: &str) -> u64 {
    forward[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {forward}"))
}

#[test]
fn docker_run_p_is_served_by_portfwd_ahead_of_dockers_dnat() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkfol", &[], "");

    let started = Instant::now();
    f.docker.run("web", &["-p", "8080:3000"]).unwrap();
    let ip = f.addr("web");
    let took = wait_reachable(&f.lab, host_port(8080));
    eprintln!(
        "follower: docker run to reachable {:?} (after the run returned {took:?})",
        started.elapsed()
    );
    let ours = f.of("web");
    assert_eq!(ours.len(), 1, "{ours:?}\n{}", f.d.log_text());
    assert_eq!(ours[0]["listen"], "8080/tcp");
    assert_eq!(ours[0]["to"], format!("{ip}:3000"));
    assert_eq!(ours[0]["container"], "web");
    assert!(counter(&ours[0], "packets_to_target") > 0, "{ours:?}");
    // portfwd's tc path acted ahead of netfilter: Docker's DNAT rule saw nothing.
    let dnat = rule_packets(
        &f.lab,
        "nat",
        "DOCKER",
        &["DNAT", "dpt:8080", &format!("to:{ip}:3000")],
    );
    assert_eq!(dnat, 0, "Docker's DNAT rule counted packets");
    // Derived state: not in the YAML, and `del` refuses it naming the container.
    let yaml = std::fs::read_to_string(&f.d.config).unwrap_or_default();
    assert!(!yaml.contains("8080"), "{yaml}");
    let del = f.d.cli(&f.lab, &["del", "8080"]);
    assert!(!del.status.success());
    let stderr = String::from_utf8_lossy(&del.stderr);
    assert!(stderr.contains("container web"), "{stderr}");
    // The status line.
    let status = f.docker_status();
    assert_eq!(status["forwards"], 1, "{status}");
    assert_eq!(status["containers"], 1, "{status}");
    assert_eq!(status["api_version"], "1.41", "{status}");
    let not_served = status["not_served"].as_array().unwrap();
    assert!(
        not_served.iter().any(|b| b["listen"] == "[::]:8080/tcp"),
        "{status}"
    );

    // Stopped: withdrawn.
    let stopped = Instant::now();
    f.docker.stop("web").unwrap();
    f.wait_forwards("web", 0);
    eprintln!("follower: docker stop to withdrawn {:?}", stopped.elapsed());
    assert!(
        http_get(&f.lab, host_port(8080), Duration::from_millis(500)).is_err(),
        "still answered after docker stop"
    );
}

/// `-P` publishes on a port Docker picks: the forward is on that port. A range
/// `-p 9000-9002:3000-3002` is one forward, each of its ports reaching its own server.
#[test]
fn publish_all_and_a_range_are_served_the_range_as_one_forward() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkpall", &[], "");

    f.docker.run("all", &["-P", "--expose", "3000"]).unwrap();
    let ip = f.addr("all");
    // `0.0.0.0:49153` then `:::49153`.
    let ports = f.docker.cli(&["port", "all", "3000/tcp"]).unwrap();
    let port: u16 = ports
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker port: {ports:?}"));
    let all = f.wait_forwards("all", 1);
    assert_eq!(all[0]["listen"], format!("{port}/tcp"), "{all:?}");
    assert_eq!(all[0]["to"], format!("{ip}:3000"), "{all:?}");
    wait_reachable(&f.lab, host_port(port));
    assert!(counter(&f.of("all")[0], "packets_to_target") > 0);
    let dnat = rule_packets(&f.lab, "nat", "DOCKER", &["DNAT", &format!("dpt:{port}")]);
    assert_eq!(dnat, 0, "Docker's DNAT rule for -P counted packets");

    // Three httpd in one container, on 3000, 3001 and 3002.
    let script = "/bin/busybox httpd -p 3001 -h /www && /bin/busybox httpd -p 3002 -h /www \
                  && exec /bin/busybox httpd -f -p 3000 -h /www";
    f.docker
        .run_cmd(
            "range",
            &["-p", "9000-9002:3000-3002"],
            &["/bin/busybox", "sh", "-c", script],
        )
        .unwrap();
    let ip = f.addr("range");
    let range = f.wait_forwards("range", 1);
    assert_eq!(range[0]["listen"], "9000-9002/tcp", "{range:?}");
    assert_eq!(range[0]["to"], format!("{ip}:3000-3002"), "{range:?}");
    for port in 9000..=9002 {
        wait_reachable(&f.lab, host_port(port));
    }
    let range = f.of("range");
    assert!(counter(&range[0], "new_flows") >= 3, "{range:?}");
    let status = f.docker_status();
    assert_eq!(status["forwards"], 2, "{status}");
    assert_eq!(status["containers"], 2, "{status}");
}

/// `-p 5353:5353/udp`: a UDP server in the container's own namespace answers the client, the
/// reply comes from the published address. `-p 127.0.0.1:8081:3000`: the host reaches it on
/// 127.0.0.1 through the socket hooks (the connection goes straight to the container, not
/// through docker-proxy, which listens there too); the client does not reach it.
#[test]
fn udp_and_a_loopback_binding_are_served() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkudplo", &[], "");

    f.docker.run("dns", &["-p", "5353:5353/udp"]).unwrap();
    let ip = f.addr("dns");
    let fwd = f.wait_forwards("dns", 1);
    assert_eq!(fwd[0]["listen"], "5353/udp", "{fwd:?}");
    assert_eq!(fwd[0]["to"], format!("{ip}:5353"), "{fwd:?}");
    // The test image has no UDP server: one of ours, in the container's network namespace.
    let ns = f.docker.netns("dns").unwrap();
    let server = lab::udp_server(&ns, at(ip, 5353), "dns").unwrap();
    let reply = lab::udp_request(f.lab.client(), host_port(5353), "ping", T).unwrap();
    // The client's own address reached the container: no SNAT, no docker-proxy.
    let peers = server.peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].ip(), Lab::CLIENT_ADDR);
    assert_eq!(reply, format!("dns from {}: ping", peers[0]));
    let fwd = f.of("dns");
    assert!(counter(&fwd[0], "packets_to_target") > 0, "{fwd:?}");
    assert!(counter(&fwd[0], "packets_to_client") > 0, "{fwd:?}");
    let dnat = rule_packets(&f.lab, "nat", "DOCKER", &["DNAT", "udp", "dpt:5353"]);
    assert_eq!(dnat, 0, "Docker's DNAT rule for udp counted packets");

    f.docker
        .run("local", &["-p", "127.0.0.1:8081:3000"])
        .unwrap();
    let ip = f.addr("local");
    let fwd = f.wait_forwards("local", 1);
    assert_eq!(fwd[0]["listen"], "127.0.0.1:8081/tcp", "{fwd:?}");
    assert_eq!(fwd[0]["to"], format!("{ip}:3000"), "{fwd:?}");
    // docker-proxy holds 127.0.0.1:8081 in the host namespace...
    let listening = f.lab.sh(f.lab.host(), "ss -Hltnp 'sport = :8081'").unwrap();
    assert!(listening.contains("docker-proxy"), "{listening}");
    let before = sock_verdict(&f.d.status_json(&f.lab), "connect_translated");
    let answer = lab::http_get(f.lab.host(), at(Ipv4Addr::LOCALHOST, 8081), T).unwrap();
    assert!(answer.ends_with(Docker::PAGE), "{answer}");
    let after = sock_verdict(&f.d.status_json(&f.lab), "connect_translated");
    assert!(
        after > before,
        "the socket hooks did not translate the connect"
    );
    // ...but a connection from the host goes to the container itself: the kernel's socket is
    // connected to IP:3000, and docker-proxy accepted nothing on 8081.
    let session = lab::tcp_session(f.lab.host(), at(Ipv4Addr::LOCALHOST, 8081), T).unwrap();
    let established = f.lab.sh(f.lab.host(), "ss -Htn state established").unwrap();
    assert!(
        established.contains(&format!("{ip}:3000")),
        "no connection to the container: {established}"
    );
    assert!(
        !established.contains(":8081 "),
        "docker-proxy accepted a connection: {established}"
    );
    drop(session);
    // From outside, a 127.0.0.1 binding is not reachable (nor is it with Docker alone).
    let outside = http_get(&f.lab, host_port(8081), SHORT);
    assert!(
        outside.is_err(),
        "the client reached 127.0.0.1:8081: {outside:?}"
    );
    drop(server);
}

/// A container stopped, another taking its address, the first started again on a new address:
/// its forward follows it (the client gets its page, not the other container's).
#[test]
fn a_container_restarted_on_a_new_address_is_followed() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkreaddr", &[], "");

    run_page(&mut f.docker, "alpha", &["-p", "8080:3000"], "alpha");
    let first = f.addr("alpha");
    f.wait_forward_to("alpha", at(first, 3000));
    wait_page(&f.lab, host_port(8080), "alpha");

    f.docker.stop("alpha").unwrap();
    f.wait_forwards("alpha", 0);
    run_page(&mut f.docker, "beta", &["-p", "8081:3000"], "beta");
    assert_eq!(f.addr("beta"), first, "beta did not take alpha's address");
    f.wait_forward_to("beta", at(first, 3000));
    // Alpha's port does not reach beta (which holds alpha's old address) meanwhile.
    let meanwhile = http_get(&f.lab, host_port(8080), SHORT);
    assert!(
        !meanwhile.as_ref().is_ok_and(|a| a.contains("beta")),
        "alpha's port reached beta: {meanwhile:?}"
    );

    f.docker.start_container("alpha").unwrap();
    let second = f.addr("alpha");
    assert_ne!(second, first, "alpha got its old address back");
    let fwd = f.wait_forward_to("alpha", at(second, 3000));
    assert_eq!(fwd["listen"], "8080/tcp");
    let before = counter(&fwd, "packets_to_target");
    wait_page(&f.lab, host_port(8080), "alpha");
    wait_page(&f.lab, host_port(8081), "beta");
    let after = counter(&f.of("alpha")[0], "packets_to_target");
    assert!(after > before, "alpha's forward counted nothing");
    assert_eq!(f.docker_status()["forwards"], 2);
}

/// Docker 28's raw PREROUTING rule drops packets for a container's address that arrive on any
/// interface but its bridge. portfwd's tc path does not depend on netfilter accepting the
/// translated packet: the client still reaches the container, and the rule counts none of
/// them.
#[test]
fn dockers_raw_prerouting_drop_does_not_stop_portfwd() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dkfraw", &[], "");
    f.docker.run("web", &["-p", "8080:3000"]).unwrap();
    let addr = f.addr("web");
    f.wait_forward_to("web", at(addr, 3000));
    f.lab
        .sh(
            f.lab.host(),
            &format!(
                "iptables -w -t raw -A PREROUTING -d {addr}/32 ! -i {} -j DROP",
                Docker::BRIDGE
            ),
        )
        .unwrap();
    // The rule is in effect: the client cannot reach the container's address directly.
    let direct = http_get(&f.lab, at(addr, Docker::SERVER_PORT), SHORT);
    assert!(direct.is_err(), "direct access still works: {direct:?}");
    let dropped = rule_packets(&f.lab, "raw", "PREROUTING", &["DROP", &format!("{addr} ")]);
    assert!(dropped > 0, "the raw drop rule counted no packet");

    let before = counter(&f.of("web")[0], "packets_to_target");
    for _ in 0..5 {
        wait_reachable(&f.lab, host_port(8080));
    }
    let after = counter(&f.of("web")[0], "packets_to_target");
    assert!(after > before, "portfwd's forward counted nothing");
    assert_eq!(
        rule_packets(&f.lab, "raw", "PREROUTING", &["DROP", &format!("{addr} ")]),
        dropped,
        "the raw rule dropped packets of the forwarded connections"
    );
    assert_eq!(
        rule_packets(&f.lab, "nat", "DOCKER", &["DNAT", "dpt:8080"]),
        0,
        "Docker's DNAT did the work"
    );
}

/// The config has `8080 -> a lab container`; `docker run -p 8080:3000` collides: not served,
/// named in `status.docker.not_served`, the config's forward keeps serving. `portfwd add` of
/// a port Docker's container holds takes it over; `del` gives it back to Docker.
#[test]
fn a_binding_colliding_with_the_config_is_refused_and_add_takes_a_port_over() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut lab = Lab::new("dkclash").unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let _server = lab::tcp_server(&c1.ns, at(c1.addr, 3000), "c1:3000").unwrap();
    let c1_target = format!("{}:3000", c1.addr);
    let config = format!("forwards:\n{}", forward_yaml("8080", &c1_target));
    let mut f = Followed::start_in(lab, &[], &config);

    f.docker
        .run("web", &["-p", "8080:3000", "-p", "8082:3000"])
        .unwrap();
    let ip = f.addr("web");
    let web = f.wait_forwards("web", 1);
    assert_eq!(web[0]["listen"], "8082/tcp", "{web:?}");
    let status = f.docker_status();
    let refused = |status: &Value, listen: &str| {
        status["not_served"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["container"] == "web" && b["listen"] == listen)
            .cloned()
    };
    let clash = refused(&status, "8080/tcp").unwrap_or_else(|| panic!("{status}"));
    let reason = clash["reason"].as_str().unwrap();
    assert!(
        reason.contains("config") && reason.contains(&c1_target),
        "{reason}"
    );
    assert!(
        f.d.log_text().contains("Docker's binding not served"),
        "the refusal is not logged"
    );
    let config_fwd =
        f.d.list_json(&f.lab)
            .into_iter()
            .find(|e| e["listen"] == "8080/tcp")
            .unwrap();
    assert_eq!(config_fwd["origin"], "config");
    assert_eq!(config_fwd["to"], c1_target.as_str());
    let reply = lab::tcp_request(f.lab.client(), host_port(8080), "hi", T).unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");
    wait_reachable(&f.lab, host_port(8082));

    // `portfwd add` takes 8082 from the container.
    let add = f.d.cli(&f.lab, &["add", "8082", &c1_target]);
    assert!(add.status.success(), "{add:?}");
    f.wait_forwards("web", 0);
    let reply = lab::tcp_request(f.lab.client(), host_port(8082), "hi", T).unwrap();
    assert!(reply.starts_with("c1:3000 from"), "{reply}");
    let status = f.docker_status();
    assert!(refused(&status, "8082/tcp").is_some(), "{status}");
    let yaml = std::fs::read_to_string(&f.d.config).unwrap();
    assert!(yaml.contains("8082"), "{yaml}");

    // Deleted from the config: Docker's binding is served again.
    let del = f.d.cli(&f.lab, &["del", "8082"]);
    assert!(del.status.success(), "{del:?}");
    f.wait_forward_to("web", at(ip, 3000));
    wait_reachable(&f.lab, host_port(8082));
}

/// `docker network disconnect` takes the container's address away without a `die`: its forward
/// is withdrawn. Another container takes the old address; `docker network connect` gives the
/// first a new one, and Docker its ports again: the forward follows it there, and never sends
/// the client to the other container.
#[test]
fn a_container_disconnected_and_reconnected_to_its_network_is_followed() {
    require_root!();
    if !have_docker() {
        return;
    }
    let mut f = Followed::start("dknet", &[], "");
    run_page(&mut f.docker, "web", &["-p", "8080:3000"], "web");
    let first = f.addr("web");
    f.wait_forward_to("web", at(first, 3000));
    wait_page(&f.lab, host_port(8080), "web");

    f.docker
        .cli(&["network", "disconnect", "bridge", "web"])
        .unwrap();
    f.wait_forwards("web", 0);
    run_page(&mut f.docker, "other", &["-p", "8081:3000"], "other");
    assert_eq!(f.addr("other"), first, "other did not take web's address");
    let answer = http_get(&f.lab, host_port(8080), SHORT);
    assert!(
        !answer.as_ref().is_ok_and(|a| a.contains("other")),
        "web's port reached the other container: {answer:?}"
    );

    f.docker
        .cli(&["network", "connect", "bridge", "web"])
        .unwrap();
    let second = f.addr("web");
    assert_ne!(second, first);
    f.wait_forward_to("web", at(second, 3000));
    wait_page(&f.lab, host_port(8080), "web");
    wait_page(&f.lab, host_port(8081), "other");
}
