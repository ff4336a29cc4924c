//! The Kubernetes manifests (`deploy/kubernetes/`), checked as far as a machine without a
//! cluster can: every manifest parses (multi-document YAML), the kinds are the expected ones
//! and the kustomization lists them all, the images are the ones the Containerfile builds, the
//! daemon's capabilities are exactly config/portfwd.service's CapabilityBoundingSet (read from
//! the unit, so that the two cannot drift), the mounts are the daemon's own default paths
//! (control socket, pins, config), the commands and probes parse with the real CLIs, and the
//! init container's command, run through the built `portfwd-cni` on a directory laid out as
//! the node's, installs the binary and rewrites the conflists (and rolls them back).
use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::Parser as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portfwd-cni");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// Every `*.yaml` under deploy/kubernetes/, by file name, each as its documents.
fn manifests() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<PathBuf> = fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no manifest in {}",
        deploy_dir().display()
    );
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            assert!(!docs.is_empty(), "{}: no document", p.display());
            (p.file_name().unwrap().to_string_lossy().into_owned(), docs)
        })
        .collect()
}

/// The only document of `kind` in all manifests.
fn the(kind: &str) -> Value {
    let all: Vec<Value> = manifests()
        .into_iter()
        .flat_map(|(_, docs)| docs)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(all.len(), 1, "one {kind} expected");
    all.into_iter().next().unwrap()
}

fn pod_spec() -> Value {
    the("DaemonSet")["spec"]["template"]["spec"].clone()
}

fn container(name: &str) -> Value {
    let spec = pod_spec();
    spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The host path of the pod's volume `name`.
fn host_path(name: &str) -> String {
    pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["hostPath"]["path"].as_str())
        .unwrap_or_else(|| panic!("no hostPath volume {name}"))
        .to_owned()
}

/// Where `container` mounts each host path: (host path, mount path, the mount).
fn host_mounts(container: &Value) -> Vec<(String, String, Value)> {
    let spec = pod_spec();
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("mount of a missing volume: {m}"));
            let host = volume["hostPath"]["path"].as_str()?;
            Some((
                host.to_owned(),
                m["mountPath"].as_str()?.to_owned(),
                m.clone(),
            ))
        })
        .collect()
}

/// config/portfwd.service's CapabilityBoundingSet, as Kubernetes names them (no `CAP_`).
fn unit_capabilities() -> Vec<String> {
    let unit = fs::read_to_string(repo().join("config/portfwd.service")).unwrap();
    let lines: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .collect();
    assert_eq!(lines.len(), 1, "one CapabilityBoundingSet line in the unit");
    lines[0]
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ names").to_owned())
        .collect()
}

/// `value` of `flag` in `args` (`--flag VALUE`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing in {args:?}"));
    &args[at + 1]
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_the_others() {
    let manifests = manifests();
    let mut kinds = BTreeSet::new();
    for (file, docs) in &manifests {
        for d in docs {
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no kind"));
            assert!(
                d["apiVersion"].is_string(),
                "{file}: {kind} without apiVersion"
            );
            kinds.insert(kind.to_owned());
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "DaemonSet", "Kustomization", "Namespace"].map(String::from)),
        "no RBAC objects: neither container uses the Kubernetes API"
    );
    let listed: BTreeSet<String> = strings(&the("Kustomization")["resources"])
        .into_iter()
        .collect();
    let files: BTreeSet<String> = manifests
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml lists every other manifest"
    );
    let namespace = the("Namespace")["metadata"]["name"].clone();
    assert_eq!(the("Kustomization")["namespace"], namespace);
}

#[test]
fn the_daemon_has_exactly_the_units_capabilities_and_no_privileged_mode() {
    let daemon = container("portfwd");
    let sc = &daemon["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["add"]), unit_capabilities());
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false, "NoNewPrivileges=yes");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "ProtectSystem=strict");
    // The installer needs no capability at all.
    let init = container("install-cni");
    assert_eq!(
        strings(&init["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert!(init["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(init["securityContext"]["privileged"], false);
    let spec = pod_spec();
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert!(spec["hostPID"].is_null() && spec["hostIPC"].is_null());
}

#[test]
fn the_pod_runs_in_the_nodes_network_on_every_node() {
    let spec = pod_spec();
    assert_eq!(spec["hostNetwork"], true);
    let tolerations = spec["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
        "a toleration of every taint: {tolerations:?}"
    );
    let ds = the("DaemonSet");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector matches the pod's labels");
    }
}

#[test]
fn the_images_are_the_containerfiles_binaries_at_this_version() {
    let image = format!("localhost/portfwd:{}", env!("CARGO_PKG_VERSION"));
    let containerfile = fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let copies: Vec<(String, String)> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(|l| {
            let (from, to) = l.split_once(' ').unwrap();
            (from.to_owned(), to.trim().to_owned())
        })
        .collect();
    for name in ["portfwd", "portfwd-cni"] {
        assert!(
            copies.contains(&(
                format!("target/release/{name}"),
                format!("/usr/local/bin/{name}")
            )),
            "Containerfile copies the release {name}: {copies:?}"
        );
    }
    let ignore = fs::read_to_string(deploy_dir().join("Containerfile.dockerignore")).unwrap();
    for (from, _) in &copies {
        assert!(
            ignore.lines().any(|l| l == format!("!{from}")),
            "{from} is in the context"
        );
    }
    let images = the("Kustomization")["images"].clone();
    assert_eq!(images[0]["name"], "localhost/portfwd");
    assert_eq!(images[0]["newTag"], env!("CARGO_PKG_VERSION"));
    for name in ["portfwd", "install-cni"] {
        let c = container(name);
        assert_eq!(c["image"], image.as_str(), "{name}");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        let command = strings(&c["command"]);
        assert!(
            copies.iter().any(|(_, to)| *to == command[0]),
            "{name} runs {} which the image has",
            command[0]
        );
    }
}

#[test]
fn the_daemons_command_probes_and_config_are_what_portfwd_takes() {
    let daemon = container("portfwd");
    let mut argv = strings(&daemon["command"]);
    argv.extend(strings(&daemon["args"]));
    assert_eq!(argv[0], "/usr/local/bin/portfwd");
    let cli = portfwd::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let portfwd::cli::Command::Daemon { config, .. } = cli.command else {
        panic!("not `portfwd daemon`: {argv:?}")
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let argv = strings(&daemon[probe]["exec"]["command"]);
        assert_eq!(argv, ["/usr/local/bin/portfwd", "status"], "{probe}");
        let cli = portfwd::cli::Cli::try_parse_from(&argv).unwrap();
        assert!(matches!(cli.command, portfwd::cli::Command::Status(_)));
    }
    // The ConfigMap is mounted where the daemon reads its config, and portfwd accepts it.
    let mount = daemon["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    let dir = Path::new(mount["mountPath"].as_str().unwrap());
    let key = config
        .strip_prefix(dir)
        .unwrap_or_else(|_| panic!("{config:?} not under {dir:?}"));
    let cm = the("ConfigMap");
    let text = cm["data"][key.to_str().unwrap()].as_str().unwrap();
    let parsed = portfwd::config::parse_str(text, &config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.pin_dir, Path::new(portfwd::config::DEFAULT_PIN_DIR));
    let volume = pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()
        .clone();
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
}

#[test]
fn the_daemon_mounts_the_socket_pins_and_cgroup2_from_the_node() {
    let daemon = container("portfwd");
    let mounts = host_mounts(&daemon);
    let find = |host: &str| {
        mounts
            .iter()
            .find(|(h, _, _)| h == host)
            .unwrap_or_else(|| panic!("no mount of the node's {host}: {mounts:?}"))
    };
    // The control socket's directory, at the same path on the node and in the pod: the
    // plugin, run by the runtime on the node, finds the daemon at the default path.
    let socket_dir = Path::new(portfwd::api::DEFAULT_SOCKET).parent().unwrap();
    let (_, at, _) = find(socket_dir.to_str().unwrap());
    assert_eq!(Path::new(at), socket_dir);
    // bpffs: the default pin directory is under it, and the pins outlive the pod.
    let (_, at, m) = find("/sys/fs/bpf");
    assert!(Path::new(portfwd::config::DEFAULT_PIN_DIR).starts_with(at));
    assert_eq!(m["mountPropagation"], "HostToContainer");
    assert_ne!(m["readOnly"], true);
    // cgroup2, for the socket hooks.
    let (_, _, m) = find("/sys/fs/cgroup");
    assert_eq!(m["mountPropagation"], "HostToContainer");
    assert_eq!(host_path("bpffs"), "/sys/fs/bpf");
    // The daemon needs nothing else of the node's.
    assert_eq!(mounts.len(), 3, "{mounts:?}");
}

/// The init container's argv, its host mounts, and the same argv with each host directory
/// moved under `root` (as if `root` were the node's `/`).
fn init_argv_under(root: &Path) -> (Vec<String>, Vec<String>) {
    let init = container("install-cni");
    let mut argv = strings(&init["command"]);
    argv.extend(strings(&init["args"]));
    let mounts = host_mounts(&init);
    let moved = argv
        .iter()
        .map(|a| {
            match mounts.iter().find(|(_, at, _)| at == a) {
                Some((host, _, _)) => root.join(host.trim_start_matches('/')),
                None => PathBuf::from(a),
            }
            .to_string_lossy()
            .into_owned()
        })
        .collect();
    (argv, moved)
}

fn run(argv: &[String], extra: &[&str]) -> Output {
    assert_eq!(argv[0], "/usr/local/bin/portfwd-cni");
    Command::new(BIN)
        .args(&argv[1..])
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_init_containers_arguments_are_the_subcommands() {
    let init = container("install-cni");
    let args = strings(&init["args"]);
    assert_eq!(args[0], portfwd_cni::conflist::SUBCOMMAND);
    let help = Command::new(BIN)
        .args([portfwd_cni::conflist::SUBCOMMAND, "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", text(&help));
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.split_whitespace()
                .any(|w| w.trim_end_matches(',') == flag),
            "{flag} is not an option of `portfwd-cni install-conflist`:\n{help}"
        );
    }
    // Each directory it is given is one the node mounts there.
    let mounts = host_mounts(&init);
    for (flag, host) in [
        ("--bin-dir", "/opt/cni/bin"),
        ("--net-dir", "/etc/cni/net.d"),
    ] {
        let at = flag_value(&args, flag);
        assert!(
            mounts
                .iter()
                .any(|(h, a, m)| h == host && a == at && m["readOnly"] != true),
            "{flag} {at} is the node's {host}, writable: {mounts:?}"
        );
    }
}

/// A directory laid out as a node's `/` (removed on drop).
struct Node(PathBuf);

impl Node {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("portfwd-k8s-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("opt/cni/bin")).unwrap();
        fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        Node(root)
    }

    fn net_d(&self, name: &str) -> PathBuf {
        self.0.join("etc/cni/net.d").join(name)
    }

    fn add_fixture(&self, name: &str) -> String {
        let text = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/conflist")
                .join(name),
        )
        .unwrap();
        fs::write(self.net_d(name), &text).unwrap();
        text
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn plugin_types(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_init_containers_command_installs_and_rolls_back_on_a_node_directory() {
    let node = Node::new("install");
    let containerd = node.add_fixture("10-containerd-net.conflist");
    let podman = node.add_fixture("87-podman-bridge.conflist");
    fs::write(
        node.net_d("99-loopback.conf"),
        r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
    )
    .unwrap();
    let (_, argv) = init_argv_under(&node.0);

    let out = run(&argv, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let installed = node.0.join("opt/cni/bin/portfwd-cni");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(BIN).unwrap());
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("portmap (plugins[1]) replaced by portfwd-cni"),
        "{stdout}"
    );
    assert_eq!(
        plugin_types(&node.net_d("10-containerd-net.conflist")),
        ["bridge", "portfwd-cni"]
    );
    assert_eq!(
        plugin_types(&node.net_d("87-podman-bridge.conflist")),
        ["bridge", "portfwd-cni", "firewall", "tuning"]
    );
    let backup =
        |name: &str| fs::read_to_string(node.net_d(&format!("{name}.portfwd-bak"))).unwrap();
    assert_eq!(backup("10-containerd-net.conflist"), containerd);
    assert_eq!(backup("87-podman-bridge.conflist"), podman);
    let loopback = fs::read_to_string(node.net_d("99-loopback.conf")).unwrap();
    assert!(loopback.contains("loopback") && !loopback.contains("portfwd"));

    // The init container runs again at every pod start: nothing changes.
    let before: Vec<String> = ["10-containerd-net.conflist", "87-podman-bridge.conflist"]
        .map(|n| fs::read_to_string(node.net_d(n)).unwrap())
        .to_vec();
    let again = run(&argv, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already there; unchanged"));
    let after: Vec<String> = ["10-containerd-net.conflist", "87-podman-bridge.conflist"]
        .map(|n| fs::read_to_string(node.net_d(n)).unwrap())
        .to_vec();
    assert_eq!(after, before);

    // README's roll back: the same command with --rollback.
    let back = run(&argv, &["--rollback"]);
    assert!(back.status.success(), "{}", text(&back));
    assert_eq!(
        plugin_types(&node.net_d("10-containerd-net.conflist")),
        ["bridge", "portmap"]
    );
    let restored: Value =
        serde_json::from_str(&fs::read_to_string(node.net_d("87-podman-bridge.conflist")).unwrap())
            .unwrap();
    assert_eq!(restored, serde_json::from_str::<Value>(&podman).unwrap());
    assert_eq!(
        backup("10-containerd-net.conflist"),
        containerd,
        "the install's backup stays"
    );
}

#[test]
fn the_init_container_fails_while_nothing_can_be_installed_and_leaves_files_alone() {
    // No conflist yet (the network plugin has not written it): fail, so that the kubelet
    // retries.
    let node = Node::new("empty");
    let (_, argv) = init_argv_under(&node.0);
    let out = run(&argv, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no .conflist"),
        "{}",
        text(&out)
    );

    // flannel writes cniVersion 0.3.1, which the plugin speaks.
    node.add_fixture("10-flannel.conflist");
    let out = run(&argv, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        plugin_types(&node.net_d("10-flannel.conflist")),
        ["flannel", "portfwd-cni"]
    );
    // A version it does not speak: refused unless allowed, and left as it was.
    let old =
        r#"{"cniVersion":"0.2.0","name":"old","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;
    fs::write(node.net_d("20-old.conflist"), old).unwrap();
    let out = run(&argv, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow-cni-version 0.2.0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_to_string(node.net_d("20-old.conflist")).unwrap(),
        old
    );
    let out = run(&argv, &["--allow-cni-version", "0.2.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        plugin_types(&node.net_d("20-old.conflist")),
        ["bridge", "portfwd-cni"]
    );

    // An unknown option is a usage error, not an install.
    let out = run(&argv, &["--no-such-option"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
