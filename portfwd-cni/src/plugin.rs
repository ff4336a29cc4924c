//! The plugin's commands, as a runtime calls them: `CNI_COMMAND` and the other CNI_*
//! variables in the environment ([`Args`]), the network config on stdin, a result or nothing
//! on stdout and exit 0, or a CNI error object on stdout and exit 1.
//!
//! - **ADD** publishes `runtimeConfig.portMappings` to the container's addresses from
//!   `prevResult` (see [`crate::mappings`]), all or none, through the daemon
//!   ([`CniRequest::Add`], owned by network, `CNI_CONTAINERID` and `CNI_IFNAME`), and prints
//!   `prevResult` on in the config's version.
//! - **DEL** withdraws what that owner has ([`CniRequest::Del`]). Idempotent, and needs no
//!   `prevResult`.
//! - **CHECK** fails unless the owner has exactly the config's mappings, served.
//! - **STATUS** (1.1) fails with code 50 while the daemon is not reachable.
//! - **GC** (1.1) withdraws the forwards of the network's attachments not in
//!   `cni.dev/valid-attachments`.
//! - **VERSION** names the spec versions spoken.
//!
//! As `portmap` does, ADD, CHECK and DEL of a config without port mappings do nothing and do
//! not need the daemon: a container without published ports starts and stops while portfwd
//! is down. Runtimes pass the same `runtimeConfig` on DEL as on ADD (libcni caches it).
//!
//! A daemon that cannot be reached fails ADD and DEL with code 11 ("try again later", a `msg`
//! naming the socket), so that the runtime retries; a request the daemon refuses (a host port
//! already published: its `msg` names the port) fails with code 100.

use std::{
    io::{Read as _, Write as _},
    path::Path,
};

use portfwd::api::{
    self, CNI_API_VERSION, ClientError, CniMapping, CniOwner, CniRequest, Request, Response,
};

use crate::{
    mappings::{ContainerAddrs, to_portfwd},
    spec::{CniError, CniResult, Code, NetConf, VersionInfo, check_version},
};

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The variables the spec requires for this command, besides `CNI_COMMAND`.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Version | Command::Status | Command::Gc => &[],
        }
    }
}

/// The CNI_* environment of one call, checked for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Args {
    /// Reads the variables through `env` (`std::env::var` in the binary). Code 4 when one the
    /// command needs is missing or invalid.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Args, CniError> {
        let get = |k: &str| env(k).unwrap_or_default();
        let bad = |msg: String| CniError::new(Code::InvalidEnv, msg);
        let raw = get("CNI_COMMAND");
        let command = Command::parse(&raw).ok_or_else(|| {
            bad(if raw.is_empty() {
                "CNI_COMMAND is not set".to_owned()
            } else {
                format!("unknown CNI_COMMAND {raw:?}: portfwd-cni knows ADD, DEL, CHECK, STATUS, GC and VERSION")
            })
        })?;
        let missing: Vec<&str> = command
            .required()
            .iter()
            .copied()
            .filter(|k| get(k).is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "CNI_COMMAND={raw} needs {}, not set",
                missing.join(", ")
            )));
        }
        let args = Args {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
        };
        if command.required().contains(&"CNI_CONTAINERID")
            && !valid_container_id(&args.container_id)
        {
            return Err(bad(format!(
                "CNI_CONTAINERID {:?} is not a container id (letters, digits, '_', '.', '-', not starting with one of the last three)",
                args.container_id
            )));
        }
        if command.required().contains(&"CNI_IFNAME") && !valid_ifname(&args.ifname) {
            return Err(bad(format!(
                "CNI_IFNAME {:?} is not an interface name (1-15 characters, no '/', ':' or space)",
                args.ifname
            )));
        }
        Ok(args)
    }

    fn owner(&self, network: &str) -> CniOwner {
        CniOwner {
            network: network.to_owned(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// The container id rule of the spec's reference library: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not `.` or `..`.
fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Runs one command: what to print on success (`None`: nothing), or the error to print.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<String>, CniError> {
    let args = Args::from_env(env)?;
    if args.command == Command::Version {
        return Ok(Some(to_json(&VersionInfo::ours())));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("the network config on stdin does not parse: {e}"),
        )
    })?;
    check_version(&conf.cni_version).map_err(|e| {
        CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").details(e.to_string())
    })?;
    let version = conf.cni_version.clone();
    command(&args, conf).map_err(|e| e.in_version(&version))
}

fn command(args: &Args, conf: NetConf) -> Result<Option<String>, CniError> {
    let socket = conf.socket();
    let owner = args.owner(&conf.name);
    let has_mappings = !conf.runtime_config.port_mappings.is_empty();
    match args.command {
        Command::Add => {
            let prev = prev_result(&conf, "ADD")?;
            let mappings = mappings_of(&conf, &prev, &args.ifname)?;
            let out = prev
                .convert_to(&conf.cni_version)
                .map_err(|e| CniError::new(Code::InvalidConfig, e.to_string()))?;
            if !mappings.is_empty() {
                ask(&socket, "ADD", CniRequest::Add { owner, mappings })?;
            }
            Ok(Some(to_json(&out)))
        }
        Command::Del => {
            if has_mappings {
                ask(&socket, "DEL", CniRequest::Del { owner })?;
            }
            Ok(None)
        }
        Command::Check => {
            let prev = prev_result(&conf, "CHECK")?;
            let mappings = mappings_of(&conf, &prev, &args.ifname)?;
            if !mappings.is_empty() {
                ask(&socket, "CHECK", CniRequest::Check { owner, mappings })?;
            }
            Ok(None)
        }
        Command::Status => {
            // A CHECK of an owner that has nothing: no effect, and it proves that the daemon
            // answers and speaks this plugin's version of the requests.
            let nobody = CniOwner {
                network: conf.name.clone(),
                container_id: String::new(),
                ifname: String::new(),
            };
            let probe = CniRequest::Check {
                owner: nobody,
                mappings: Vec::new(),
            };
            ask(&socket, "STATUS", probe)
                .map_err(|e| CniError::new(Code::NotAvailable, e.msg).details(e.details))?;
            Ok(None)
        }
        Command::Gc => {
            let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
                CniError::new(
                    Code::InvalidConfig,
                    "GC needs cni.dev/valid-attachments (the attachments still in use)",
                )
            })?;
            let keep = valid
                .iter()
                .map(|a| CniOwner {
                    network: conf.name.clone(),
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect();
            ask(
                &socket,
                "GC",
                CniRequest::Gc {
                    network: conf.name.clone(),
                    keep,
                },
            )?;
            Ok(None)
        }
        Command::Version => Ok(Some(to_json(&VersionInfo::ours()))),
    }
}

/// `prevResult`, which ADD and CHECK need (this plugin is chained after the one that gives
/// the container its addresses).
fn prev_result(conf: &NetConf, command: &str) -> Result<CniResult, CniError> {
    conf.prev_result.clone().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            format!(
                "{command} needs prevResult: portfwd-cni is a chained plugin, after the one that gives the container its addresses (e.g. bridge with host-local)"
            ),
        )
    })
}

fn mappings_of(
    conf: &NetConf,
    prev: &CniResult,
    ifname: &str,
) -> Result<Vec<CniMapping>, CniError> {
    let addrs = ContainerAddrs::of(prev, ifname);
    to_portfwd(&conf.runtime_config.port_mappings, &addrs, ifname)
        .map_err(|e| CniError::new(Code::InvalidConfig, e.to_string()))
}

/// Sends `request` to the daemon at `socket`; its `done` message, or the CNI error for its
/// refusal (code 100) or for not reaching it (code 11, or 5 when retrying cannot help).
fn ask(socket: &Path, command: &str, request: CniRequest) -> Result<String, CniError> {
    let owner = match &request {
        CniRequest::Add { owner, .. }
        | CniRequest::Del { owner }
        | CniRequest::Check { owner, .. } => owner.label(),
        CniRequest::Gc { network, .. } => format!("network {network}"),
    };
    let request = Request::Cni {
        version: CNI_API_VERSION,
        request,
    };
    match api::call(socket, &request) {
        Ok(Response::Done { message }) => Ok(message),
        Ok(Response::Error { message }) => {
            Err(CniError::new(Code::Refused, message).details(format!(
                "{command} for {owner}, refused by the portfwd daemon at {}",
                socket.display()
            )))
        }
        Ok(other) => Err(CniError::new(
            Code::Io,
            format!(
                "the portfwd daemon at {} gave an unexpected answer",
                socket.display()
            ),
        )
        .details(format!("{other:?}"))),
        Err(e) => Err(unreachable(socket, command, &e)),
    }
}

fn unreachable(socket: &Path, command: &str, e: &ClientError) -> CniError {
    let (code, msg) = match e {
        ClientError::PermissionDenied(_) | ClientError::Malformed { .. } => (
            Code::Io,
            format!(
                "{command}: cannot use the portfwd daemon's socket {}",
                socket.display()
            ),
        ),
        _ => (
            Code::TryAgainLater,
            format!(
                "{command}: the portfwd daemon is not reachable at {}; try again later",
                socket.display()
            ),
        ),
    };
    let details = match e {
        // Its own words suggest PORTFWD_SOCKET, which is the CLI's: the plugin's is `socket`.
        ClientError::NotRunning(_) => format!(
            "no control socket at {}: is the portfwd daemon running? (the plugin config's `socket` names another)",
            socket.display()
        ),
        _ => portfwd::error::chain(e),
    };
    CniError::new(code, msg).details(details)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Our own types: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The binary's entry: reads stdin, runs the command, prints its output or its error on
/// stdout. Returns the exit status (0, or 1 on error).
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&|k| std::env::var(k).ok(), &stdin),
        Err(e) => Err(CniError::new(Code::Io, format!("reading stdin: {e}"))),
    };
    let (text, status) = match result {
        Ok(Some(out)) => (out, 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (to_json(&e), 1),
    };
    let mut stdout = std::io::stdout().lock();
    if !text.is_empty()
        && writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
    {
        return 1;
    }
    status
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn call_env(command: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", ID),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
    }

    fn config(version: &str, socket: &str, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"net1","type":"portfwd-cni","socket":"{socket}"{extra}}}"#
        )
    }

    const PREV: &str = r#","prevResult":{"cniVersion":"1.0.0",
        "interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/run/netns/x"}],
        "ips":[{"interface":1,"address":"10.88.0.2/16","gateway":"10.88.0.1"}]}"#;
    const MAPS: &str = r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

    fn nowhere() -> String {
        std::env::temp_dir()
            .join(format!("portfwd-cni-none-{}", std::process::id()))
            .join("portfwd.sock")
            .display()
            .to_string()
    }

    #[test]
    fn bad_environments_are_code_4_naming_the_variable() {
        let e = run(&env_of(&[]), b"{}").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "CNI_COMMAND is not set"));
        let e = run(&env_of(&[("CNI_COMMAND", "FROB")]), b"{}").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("\"FROB\""), "{e}");
        let e = run(
            &env_of(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]),
            b"{}",
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(
            e.msg.contains("CNI_CONTAINERID, CNI_NETNS, CNI_PATH"),
            "{e}"
        );
        // DEL does not need the namespace (it may be gone already).
        let mut env = call_env("DEL");
        env.retain(|(k, _)| *k != "CNI_NETNS");
        let conf = config("1.0.0", &nowhere(), "");
        assert_eq!(run(&env_of(&env), conf.as_bytes()).unwrap(), None);
        let mut env = call_env("ADD");
        env[1].1 = "-bad";
        assert_eq!(run(&env_of(&env), b"{}").unwrap_err().code, 4);
        let mut env = call_env("ADD");
        env[3].1 = "a-very-long-interface";
        let e = run(&env_of(&env), b"{}").unwrap_err();
        assert!(e.code == 4 && e.msg.contains("CNI_IFNAME"), "{e}");
    }

    #[test]
    fn version_answers_without_a_config() {
        let out = run(&env_of(&[("CNI_COMMAND", "VERSION")]), b"")
            .unwrap()
            .unwrap();
        let v: VersionInfo = serde_json::from_str(&out).unwrap();
        assert_eq!(v, VersionInfo::ours());
    }

    #[test]
    fn configs_that_do_not_parse_or_speak_another_version_are_refused() {
        let e = run(&env_of(&call_env("ADD")), b"not json").unwrap_err();
        assert_eq!(e.code, 6);
        let e = run(
            &env_of(&call_env("ADD")),
            config("0.2.0", "/x", "").as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("0.2.0"), "{e}");
    }

    #[test]
    fn add_needs_prev_result_and_valid_mappings() {
        let conf = config("1.0.0", &nowhere(), MAPS);
        let e = run(&env_of(&call_env("ADD")), conf.as_bytes()).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("prevResult"), "{e}");
        let sctp = r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"sctp"}]}"#;
        let conf = config("0.4.0", &nowhere(), &format!("{PREV}{sctp}"));
        let e = run(&env_of(&call_env("ADD")), conf.as_bytes()).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("sctp"), "{e}");
        assert_eq!(e.cni_version, "0.4.0");
    }

    #[test]
    fn an_unreachable_daemon_is_try_again_later_naming_the_socket() {
        let socket = nowhere();
        for command in ["ADD", "DEL", "CHECK"] {
            let conf = config("1.0.0", &socket, &format!("{PREV}{MAPS}"));
            let e = run(&env_of(&call_env(command)), conf.as_bytes()).unwrap_err();
            assert_eq!(e.code, 11, "{command}: {e}");
            assert!(e.msg.contains(&socket) && e.msg.starts_with(command), "{e}");
            assert!(e.details.contains("is the portfwd daemon running?"), "{e}");
        }
        let conf = config("1.1.0", &socket, "");
        let e = run(&env_of(&call_env("STATUS")), conf.as_bytes()).unwrap_err();
        assert_eq!(e.code, 50);
        assert!(e.msg.contains(&socket), "{e}");
        assert_eq!(e.cni_version, "1.1.0");
    }

    #[test]
    fn without_port_mappings_the_daemon_is_not_needed() {
        let conf = config("1.0.0", &nowhere(), PREV);
        let out = run(&env_of(&call_env("ADD")), conf.as_bytes())
            .unwrap()
            .unwrap();
        let result: CniResult = serde_json::from_str(&out).unwrap();
        assert_eq!(result.ips[0].address, "10.88.0.2/16");
        assert_eq!(
            run(&env_of(&call_env("CHECK")), conf.as_bytes()).unwrap(),
            None
        );
        assert_eq!(
            run(&env_of(&call_env("DEL")), conf.as_bytes()).unwrap(),
            None
        );
    }

    #[test]
    fn add_prints_prev_result_in_the_configs_version() {
        let conf = config("0.4.0", &nowhere(), PREV);
        let out = run(&env_of(&call_env("ADD")), conf.as_bytes())
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][0]["gateway"], "10.88.0.1");
    }

    #[test]
    fn gc_needs_the_list_of_valid_attachments() {
        let conf = config("1.1.0", &nowhere(), "");
        let e = run(&env_of(&[("CNI_COMMAND", "GC")]), conf.as_bytes()).unwrap_err();
        assert!(
            e.code == 7 && e.msg.contains("cni.dev/valid-attachments"),
            "{e}"
        );
    }

    #[test]
    fn container_ids_and_interface_names_follow_the_specs_rules() {
        assert!(valid_container_id(ID));
        assert!(valid_container_id("a.b_c-d"));
        assert!(!valid_container_id(""));
        assert!(!valid_container_id(".a"));
        assert!(!valid_container_id("a/b"));
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("123456789012345"));
        assert!(!valid_ifname("1234567890123456"));
        assert!(!valid_ifname("a:b"));
        assert!(!valid_ifname(".."));
    }
}
