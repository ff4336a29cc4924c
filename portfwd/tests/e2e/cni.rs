//! `portfwd-cni` driven by hand as containerd and the kubelet drive it (#18): the real
//! `bridge` and `host-local` from Debian's containernetworking-plugins, then `portfwd-cni`,
//! chained in the lab's host namespace by `portfwd_lab::CniNet` (libcni's way: prevResult
//! passed on, the result cached for CHECK and DEL), against the real daemon.
//!
//! Covered: ADD/CHECK/DEL in spec 1.0.0 (dual-stack) and 0.4.0, DEL twice, traffic from the
//! lab's client through the published ports (TCP and UDP, IPv4 and IPv6), `portfwd list` and
//! `portfwd del` on them, a daemon killed with SIGKILL and restarted, a conflict between two
//! containers, a CHECK that finds other forwards, a missing daemon, GC, and no netfilter NAT
//! rule. `cni_measure` times ADD and DEL beside `portmap`.
//!
//! Needs root and containernetworking-plugins (`cargo xtask setup`), and the `portfwd-cni`
//! binary beside `portfwd` (`cargo test --workspace` builds it; alone: `cargo build -p
//! portfwd-cni`); under `CI=true` a test that cannot run fails.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::SystemTime,
};

use portfwd_lab::{self as lab, CniNet, DEBIAN_CNI_DIR, Lab, Sandbox};
use serde_json::{Value, json};

use crate::support::{Daemon, T, assert_no_netfilter_nat, at, host_port, host6, portfwd_bin};

/// The IPv4 and IPv6 networks of the tests' bridge (host-local hands out .2, .3, ...).
pub(crate) const SUBNET: &str = "10.88.0.0/16";
pub(crate) const SUBNET6: &str = "fd00:88::/64";

/// True when every one of `paths` exists; otherwise says what to `install` and returns false,
/// or fails under `CI=true`.
pub(crate) fn have(paths: &[PathBuf], install: &str) -> bool {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing: install {install} (`cargo xtask setup`)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true this test must run, not skip");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// True when Debian's CNI plugins are installed; under `CI=true` their absence fails.
pub(crate) fn have_cni() -> bool {
    let plugins: Vec<PathBuf> = ["bridge", "host-local", "portmap"]
        .iter()
        .map(|p| Path::new(DEBIAN_CNI_DIR).join(p))
        .collect();
    have(&plugins, "containernetworking-plugins")
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The newest modification time of the files under `dir`.
fn newest_under(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                newest_under(&p)
            } else {
                mtime(&p)
            }
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The directory of the `portfwd-cni` binary built with this test (beside `portfwd`). Fails
/// when it is missing or older than its sources, rather than test an old plugin.
pub(crate) fn plugin_dir() -> PathBuf {
    let dir = portfwd_bin().parent().unwrap().to_owned();
    let bin = dir.join("portfwd-cni");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build -p portfwd-cni` (cargo test --workspace builds it)",
        bin.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources =
        newest_under(&root.join("portfwd-cni/src")).max(mtime(&root.join("portfwd/src/api.rs")));
    assert!(
        mtime(&bin) >= sources,
        "{} is older than its sources: `cargo build -p portfwd-cni`",
        bin.display()
    );
    dir
}

/// A conflist: `bridge` (bridge `cni0`, gateway, no masquerade, hairpin) with `host-local`
/// (IPv4, and IPv6 when `v6`), then `last` (`portfwd-cni` talking to `socket`, or
/// `portmap`) with the `portMappings` capability.
pub(crate) fn conflist(version: &str, name: &str, last: &str, socket: &Path, v6: bool) -> Value {
    let mut ranges = vec![json!([{"subnet": SUBNET, "gateway": "10.88.0.1"}])];
    let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
    if v6 {
        ranges.push(json!([{"subnet": SUBNET6, "gateway": "fd00:88::1"}]));
        routes.push(json!({"dst": "::/0"}));
    }
    let mut chained = json!({"type": last, "capabilities": {"portMappings": true}});
    if last == "portfwd-cni" {
        chained["socket"] = json!(socket);
    }
    json!({
        "cniVersion": version,
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
             "hairpinMode": true, "ipam": {"type": "host-local", "ranges": ranges, "routes": routes}},
            chained
        ]
    })
}

/// Where the tests' plugins are looked up: `portfwd-cni`'s directory, then Debian's.
pub(crate) fn cni_path() -> Vec<PathBuf> {
    vec![plugin_dir(), PathBuf::from(DEBIAN_CNI_DIR)]
}

/// A lab, the daemon in its host namespace, and a network chaining bridge, host-local and
/// portfwd-cni talking to that daemon. Dropped in order: the network's sandboxes, the
/// daemon, the lab.
struct World {
    net: CniNet,
    daemon: Daemon,
    lab: Lab,
}

impl World {
    fn new(tag: &str, version: &str, v6: bool) -> World {
        let mut lab = Lab::new(tag).unwrap();
        let daemon = Daemon::start(&mut lab, "forwards: []\n");
        let list = conflist(
            version,
            &format!("{tag}net"),
            "portfwd-cni",
            &daemon.socket,
            v6,
        );
        let net = CniNet::new(&lab, &list, &cni_path()).unwrap();
        World { net, daemon, lab }
    }

    fn origin(&self, sb: &Sandbox) -> String {
        format!("cni:{}/{}", self.net.name(), sb.short_id())
    }

    /// The forwards `portfwd list` shows for `sb`, as `LISTEN -> TO`, sorted.
    fn forwards_of(&self, sb: &Sandbox) -> Vec<String> {
        let origin = self.origin(sb);
        let mut out: Vec<String> = self
            .daemon
            .list_json(&self.lab)
            .into_iter()
            .filter(|f| f["origin"] == origin.as_str())
            .map(|f| {
                format!(
                    "{} -> {}",
                    f["listen"].as_str().unwrap(),
                    f["to"].as_str().unwrap()
                )
            })
            .collect();
        out.sort();
        out
    }

    fn add(&self, sb: &Sandbox, maps: &Value) -> Value {
        let chain = self.net.add(sb, maps).unwrap();
        chain
            .expect_ok()
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.daemon.log_text()))
            .unwrap()
    }
}

fn maps(list: &[(u16, u16, &str)]) -> Value {
    list.iter()
        .map(|(host, container, proto)| {
            json!({"hostPort": host, "containerPort": container, "protocol": proto})
        })
        .collect()
}

/// The sandbox's address of `family` (4 or 6) in an ADD result.
fn addr_in(result: &Value, family: u8) -> IpAddr {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ip| {
            ip["address"]
                .as_str()?
                .split('/')
                .next()?
                .parse::<IpAddr>()
                .ok()
        })
        .find(|a| a.is_ipv4() == (family == 4))
        .unwrap_or_else(|| panic!("no IPv{family} address in {result}"))
}

/// `tag from PEER: line` from the client to `to` over TCP.
fn tcp(lab: &Lab, to: SocketAddr) -> anyhow::Result<String> {
    lab::tcp_request(lab.client(), to, "hello", T)
}

#[test]
fn add_check_del_publish_and_withdraw_a_dual_stack_containers_ports() {
    require_root!();
    if !have_cni() {
        return;
    }
    let mut w = World::new("cniadd", "1.0.0", true);
    let c1 = w.net.sandbox("c1").unwrap();
    let m = maps(&[(8080, 80, "tcp"), (5353, 53, "udp")]);
    let result = w.add(&c1, &m);
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let (v4, v6) = (addr_in(&result, 4), addr_in(&result, 6));
    assert!(result["ips"][0].get("version").is_none(), "{result}");
    assert_eq!(
        w.forwards_of(&c1),
        [
            format!("5353/udp -> {v4}:53"),
            format!("8080/tcp -> {v4}:80"),
            format!("[::]:5353/udp -> [{v6}]:53"),
            format!("[::]:8080/tcp -> [{v6}]:80"),
        ]
    );
    let servers = (
        lab::tcp_server(&c1.ns, at(v4, 80), "c1v4").unwrap(),
        lab::tcp_server(&c1.ns, at(v6, 80), "c1v6").unwrap(),
        lab::udp_server(&c1.ns, at(v4, 53), "c1udp").unwrap(),
    );
    // The container sees the client's own address.
    let reply = tcp(&w.lab, host_port(8080)).unwrap();
    assert!(
        reply.starts_with(&format!("c1v4 from {}:", Lab::CLIENT_ADDR)),
        "{reply}"
    );
    let reply = tcp(&w.lab, host6(8080)).unwrap();
    assert!(
        reply.starts_with(&format!("c1v6 from [{}]:", Lab::CLIENT_ADDR6)),
        "{reply}"
    );
    let reply = lab::udp_request(w.lab.client(), host_port(5353), "q", T).unwrap();
    assert!(reply.starts_with("c1udp from 10.77.0.2:"), "{reply}");

    // CHECK passes; `portfwd del` refuses, naming the owner; nothing in the YAML.
    w.net.check(&c1).unwrap().expect_ok().unwrap();
    let del = w.daemon.cli(&w.lab, &["del", "8080"]);
    assert!(!del.status.success());
    let stderr = String::from_utf8_lossy(&del.stderr);
    assert!(stderr.contains(&w.origin(&c1)), "{stderr}");
    assert!(
        !std::fs::read_to_string(&w.daemon.config)
            .unwrap()
            .contains("8080")
    );

    // A daemon killed with SIGKILL serves them again from its saved state.
    w.daemon.kill9();
    w.daemon.restart();
    assert_eq!(w.forwards_of(&c1).len(), 4, "{}", w.daemon.log_text());
    tcp(&w.lab, host_port(8080)).unwrap();
    w.net.check(&c1).unwrap().expect_ok().unwrap();

    // DEL withdraws them; DEL again (no cached result: no prevResult) succeeds too.
    w.net.del(&c1, &m).unwrap().expect_ok().unwrap();
    assert!(w.forwards_of(&c1).is_empty());
    assert!(tcp(&w.lab, host_port(8080)).is_err());
    let again = w.net.del(&c1, &m).unwrap();
    again.expect_ok().unwrap();
    assert!(
        !w.net
            .dir()
            .join("results")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    assert_no_netfilter_nat(&w.lab);
    drop(servers);
}

#[test]
fn a_second_container_asking_for_a_published_port_is_refused_naming_it() {
    require_root!();
    if !have_cni() {
        return;
    }
    let mut w = World::new("cniconf", "0.4.0", false);
    let (c1, c2) = (w.net.sandbox("c1").unwrap(), w.net.sandbox("c2").unwrap());
    let m1 = maps(&[(8080, 80, "tcp")]);
    let result = w.add(&c1, &m1);
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4", "{result}");
    let v4 = addr_in(&result, 4);
    let _server = lab::tcp_server(&c1.ns, at(v4, 80), "c1").unwrap();

    // c2 asks for 9090 and 8080: refused as a whole, naming 8080; 9090 not published.
    let m2 = maps(&[(9090, 90, "tcp"), (8080, 80, "tcp")]);
    let chain = w.net.add(&c2, &m2).unwrap();
    let failed = chain.failed().expect("the second ADD must fail");
    assert_eq!(failed.plugin, "portfwd-cni");
    assert_eq!(failed.code, Some(1));
    let error = chain.error().unwrap();
    assert_eq!(error["code"], 100, "{error}");
    assert_eq!(error["cniVersion"], "0.4.0", "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("8080/tcp") && msg.contains(&w.origin(&c1)),
        "{msg}"
    );
    assert!(w.forwards_of(&c2).is_empty());
    // The runtime tears the failed attachment down (DEL); c1 keeps its port.
    w.net.del(&c2, &m2).unwrap().expect_ok().unwrap();
    assert_eq!(w.forwards_of(&c1), [format!("8080/tcp -> {v4}:80")]);
    assert!(tcp(&w.lab, host_port(8080)).unwrap().starts_with("c1 from"));

    // CHECK with mappings that point elsewhere fails, naming both.
    let ours = w.net.plugin("portfwd-cni").unwrap().clone();
    let prev = w.add_result_of(&c1);
    let reply = w
        .net
        .exec(
            &ours,
            "CHECK",
            &c1,
            Some(&prev),
            &maps(&[(8080, 81, "tcp")]),
        )
        .unwrap();
    assert_eq!(reply.code, Some(1));
    let error = reply.json().unwrap();
    assert_eq!(error["code"], 100);
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{v4}:81")) && msg.contains(&format!("{v4}:80")),
        "{msg}"
    );
    assert_no_netfilter_nat(&w.lab);
}

impl World {
    /// portfwd-cni's config in spec 1.1.0 (STATUS, GC): Debian's bridge speaks up to 1.0.0,
    /// so the list cannot be 1.1.0 itself.
    fn config_1_1(&self) -> Value {
        let mut config = self.net.plugin("portfwd-cni").unwrap().clone();
        config["cniVersion"] = json!("1.1.0");
        config["name"] = json!(self.net.name());
        config
    }

    /// The ADD result cached for `sb`.
    fn add_result_of(&self, sb: &Sandbox) -> Value {
        let path = self.net.dir().join("results").join(format!(
            "{}-{}-{}",
            self.net.name(),
            sb.container_id,
            sb.ifname
        ));
        let cache: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        cache["result"].clone()
    }
}

#[test]
fn without_the_daemon_add_and_del_fail_naming_the_socket_until_it_is_back() {
    require_root!();
    if !have_cni() {
        return;
    }
    let mut w = World::new("cninod", "1.0.0", false);
    let c1 = w.net.sandbox("c1").unwrap();
    let m = maps(&[(8080, 80, "tcp")]);
    w.add(&c1, &m);
    w.daemon.kill9();
    let socket = w.daemon.socket.display().to_string();
    let expect_retry = |chain: &lab::ChainReply| {
        let error = chain.error().unwrap_or_else(|| panic!("{chain:?}"));
        assert_eq!(chain.failed().unwrap().plugin, "portfwd-cni");
        assert_eq!(error["code"], 11, "{error}");
        assert!(error["msg"].as_str().unwrap().contains(&socket), "{error}");
    };
    // DEL fails while the daemon is down (the runtime retries): bridge's DEL has not run.
    let del = w.net.del(&c1, &m).unwrap();
    expect_retry(&del);
    assert_eq!(del.replies.len(), 1, "reverse order: portfwd-cni first");
    // ADD of another container fails the same way.
    let c2 = w.net.sandbox("c2").unwrap();
    expect_retry(&w.net.add(&c2, &maps(&[(9090, 90, "tcp")])).unwrap());
    w.net
        .del(&c2, &Value::Array(Vec::new()))
        .unwrap()
        .expect_ok()
        .unwrap();
    // Back: the retried DEL succeeds and the saved forward is gone.
    w.daemon.restart();
    assert_eq!(w.forwards_of(&c1).len(), 1);
    w.net.del(&c1, &m).unwrap().expect_ok().unwrap();
    assert!(w.forwards_of(&c1).is_empty());
    assert!(tcp(&w.lab, host_port(8080)).is_err());

    // STATUS (1.1) says whether ADD can work.
    let status = |w: &World| {
        let config = w.config_1_1();
        w.net.exec_config(&config, "STATUS", &c1).unwrap()
    };
    assert!(status(&w).ok(), "{:?}", status(&w));
    w.daemon.kill9();
    let down = status(&w);
    assert_eq!(down.json().unwrap()["code"], 50, "{down:?}");
    w.daemon.restart();
}

#[test]
fn gc_withdraws_the_attachments_not_in_use() {
    require_root!();
    if !have_cni() {
        return;
    }
    let mut w = World::new("cnigc", "1.0.0", false);
    let (c1, c2) = (w.net.sandbox("c1").unwrap(), w.net.sandbox("c2").unwrap());
    w.add(&c1, &maps(&[(8080, 80, "tcp")]));
    w.add(&c2, &maps(&[(8081, 80, "tcp")]));
    let mut gc = w.config_1_1();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": c1.container_id, "ifname": "eth0"}]);
    let reply = w.net.exec_config(&gc, "GC", &c1).unwrap();
    assert!(reply.ok(), "{reply:?}");
    assert_eq!(w.forwards_of(&c1).len(), 1);
    assert!(w.forwards_of(&c2).is_empty());
}
