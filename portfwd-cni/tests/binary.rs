//! The `portfwd-cni` binary as a runtime runs it (CNI_* variables, the config on stdin), in
//! front of a stand-in for the daemon: a Unix socket that records each request and answers
//! what the test scripted. What the real daemon does with the requests is tested end to end
//! in `portfwd/tests/e2e/cni.rs`; this checks the wire: the requests, the output, the exit
//! status and the error objects. Needs no root.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
};

use serde_json::{Value, json};

const ID: &str = "4f1c0de5a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c";

const PREV_10: &str = include_str!("fixtures/bridge-host-local-1.0.0.json");
const PREV_04: &str = include_str!("fixtures/bridge-host-local-0.4.0.json");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A stand-in daemon: answers each connection's request line with the next scripted answer
/// and keeps the requests.
struct FakeDaemon {
    dir: PathBuf,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(answers: Vec<Value>) -> FakeDaemon {
        let dir = std::env::temp_dir().join(format!(
            "portfwd-cni-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("portfwd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let thread = std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
                let mut reply = answer.to_string();
                reply.push('\n');
                (&stream).write_all(reply.as_bytes()).unwrap();
            }
        });
        FakeDaemon {
            dir,
            socket,
            requests,
            thread: Some(thread),
        }
    }

    fn requests(&mut self) -> Vec<Value> {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn done() -> Value {
    json!({"result": "done", "message": "ok"})
}

/// The output of the plugin: exit code, stdout parsed (Null when empty), stderr.
struct Run {
    code: i32,
    out: Value,
    stderr: String,
}

fn plugin(command: &str, conf: &Value) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portfwd-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", ID)
        .env("CNI_NETNS", "/run/netns/nowhere")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Run {
        code: out.status.code().unwrap(),
        out: if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn conf(version: &str, socket: &std::path::Path, prev: Option<&str>) -> Value {
    let mut c = json!({
        "cniVersion": version, "name": "podnet", "type": "portfwd-cni",
        "capabilities": {"portMappings": true},
        "socket": socket,
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.77.0.1"}
        ]}
    });
    if let Some(prev) = prev {
        c["prevResult"] = serde_json::from_str(prev).unwrap();
    }
    c
}

fn owner() -> Value {
    json!({"network": "podnet", "container_id": ID, "ifname": "eth0"})
}

#[test]
fn add_asks_the_daemon_for_every_family_and_prints_prev_result_in_the_configs_version() {
    let mut daemon = FakeDaemon::start(vec![done(), done()]);
    // A 1.0.0 prevResult under a 0.4.0 config (and the other way round): printed in the
    // config's version.
    let run = plugin("ADD", &conf("0.4.0", &daemon.socket, Some(PREV_10)));
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.stderr);
    assert_eq!(run.out["cniVersion"], "0.4.0");
    assert_eq!(run.out["ips"][0]["version"], "4");
    assert_eq!(run.out["ips"][1]["version"], "6");
    assert_eq!(
        run.out["interfaces"][2]["sandbox"],
        "/run/netns/cniprobe-c1"
    );
    let run = plugin("ADD", &conf("1.0.0", &daemon.socket, Some(PREV_04)));
    assert_eq!(run.code, 0, "{}", run.out);
    assert_eq!(run.out["cniVersion"], "1.0.0");
    assert!(run.out["ips"][0].get("version").is_none(), "{}", run.out);

    let requests = daemon.requests();
    assert_eq!(
        requests[0],
        json!({"op": "cni", "version": 1, "request": {"cmd": "add", "owner": owner(), "mappings": [
            {"listen": "8080/tcp", "to": "10.88.0.3:80"},
            {"listen": "[::]:8080/tcp", "to": "[fd00:88::3]:80"},
            {"listen": "10.77.0.1:5353/udp", "to": "10.88.0.3:53"},
        ]}})
    );
    assert_eq!(requests[1]["request"]["mappings"][0]["to"], "10.88.0.2:80");
}

#[test]
fn a_refusal_is_a_cni_error_on_stdout_with_the_daemons_words() {
    let taken = "8080/tcp is published by cni:podnet/aaaaaaaaaaaa (8080/tcp -> 10.88.0.9:80)";
    let mut daemon = FakeDaemon::start(vec![json!({"result": "error", "message": taken})]);
    let run = plugin("ADD", &conf("1.0.0", &daemon.socket, Some(PREV_10)));
    assert_eq!(run.code, 1);
    assert_eq!(run.out["code"], 100, "{}", run.out);
    assert_eq!(run.out["msg"], taken);
    assert_eq!(run.out["cniVersion"], "1.0.0");
    let details = run.out["details"].as_str().unwrap();
    assert!(
        details.contains("ADD for cni:podnet/4f1c0de5a1b2")
            && details.contains(daemon.socket.to_str().unwrap()),
        "{details}"
    );
    assert_eq!(daemon.requests().len(), 1);
}

#[test]
fn del_check_gc_and_status_send_their_requests_and_print_nothing() {
    let mut daemon = FakeDaemon::start(vec![done(), done(), done(), done(), done()]);
    // DEL twice, the second without prevResult, as after a runtime's retry.
    let with_prev = conf("1.0.0", &daemon.socket, Some(PREV_10));
    let without = conf("1.0.0", &daemon.socket, None);
    for c in [&with_prev, &without] {
        let run = plugin("DEL", c);
        assert_eq!((run.code, &run.out), (0, &Value::Null), "{}", run.stderr);
    }
    let run = plugin("CHECK", &with_prev);
    assert_eq!((run.code, &run.out), (0, &Value::Null));
    let mut gc = conf("1.1.0", &daemon.socket, None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep1", "ifname": "eth0"}]);
    let run = plugin("GC", &gc);
    assert_eq!((run.code, &run.out), (0, &Value::Null), "{}", run.stderr);
    let run = plugin("STATUS", &conf("1.1.0", &daemon.socket, None));
    assert_eq!((run.code, &run.out), (0, &Value::Null));

    let r = daemon.requests();
    let del = json!({"cmd": "del", "owner": owner()});
    assert_eq!((&r[0]["request"], &r[1]["request"]), (&del, &del));
    assert_eq!(r[2]["request"]["cmd"], "check");
    assert_eq!(r[2]["request"]["mappings"].as_array().unwrap().len(), 3);
    assert_eq!(
        r[3]["request"],
        json!({"cmd": "gc", "network": "podnet", "keep": [
            {"network": "podnet", "container_id": "keep1", "ifname": "eth0"}]})
    );
    assert_eq!(r[4]["request"]["cmd"], "check");
    assert_eq!(r[4]["request"]["mappings"], json!([]));
}

#[test]
fn no_daemon_is_code_11_naming_the_socket_and_a_garbled_one_code_5() {
    let daemon = FakeDaemon::start(vec![]);
    let socket = daemon.dir.join("absent.sock");
    for command in ["ADD", "DEL", "CHECK"] {
        let run = plugin(command, &conf("0.4.0", &socket, Some(PREV_04)));
        assert_eq!(run.code, 1);
        assert_eq!(run.out["code"], 11, "{command}: {}", run.out);
        assert_eq!(run.out["cniVersion"], "0.4.0");
        let msg = run.out["msg"].as_str().unwrap();
        assert!(msg.contains(socket.to_str().unwrap()), "{msg}");
    }
    let run = plugin("STATUS", &conf("1.1.0", &socket, None));
    assert_eq!((run.code, &run.out["code"]), (1, &json!(50)), "{}", run.out);

    let mut garbled = FakeDaemon::start(vec![json!("no")]);
    let run = plugin("DEL", &conf("1.0.0", &garbled.socket, None));
    assert_eq!((run.code, &run.out["code"]), (1, &json!(5)), "{}", run.out);
    garbled.requests();
}

#[test]
fn version_and_bad_input() {
    let run = plugin("VERSION", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(run.code, 0);
    assert_eq!(
        run.out,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let run = plugin("ADD", &json!("not a config"));
    assert_eq!((run.code, &run.out["code"]), (1, &json!(6)), "{}", run.out);
    let run = plugin(
        "ADD",
        &json!({"cniVersion": "0.2.0", "name": "n", "type": "portfwd-cni"}),
    );
    assert_eq!((run.code, &run.out["code"]), (1, &json!(1)), "{}", run.out);
}
