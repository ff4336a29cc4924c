//! The CNI spec's JSON, as far as `portfwd-cni` reads and writes it (spec 1.1.0, 1.0.0 and
//! 0.4.0; 0.3.x results have 0.4.0's shape): the network config on stdin ([`NetConf`]), a
//! result ([`CniResult`], passed on from `prevResult`), the error object ([`CniError`]) and
//! VERSION's answer ([`VersionInfo`]).
//!
//! Keys this plugin has no use for are ignored on input, as the spec asks; in a result they
//! are kept and printed again (`routes`, `dns`, `mac`, `gateway`, ...), so that the result a
//! runtime gets back is the one `bridge` made, in the config's version.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The spec versions this plugin speaks, oldest first (VERSION's `supportedVersions`).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version this plugin speaks: VERSION's `cniVersion`.
pub const CURRENT_VERSION: &str = "1.1.0";

/// The daemon's control socket when the config names none (`socket`).
pub const DEFAULT_SOCKET: &str = portfwd::api::DEFAULT_SOCKET;

/// The key of a GC request's list of attachments still in use (CNI 1.1).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// The network configuration a runtime writes on the plugin's stdin: the plugin's object of
/// the conflist with `cniVersion` and `name` of the list, `runtimeConfig` for the
/// capabilities it declares and `prevResult` (the previous plugin's result) injected.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    /// The network's name: part of the owner of every forward made for it.
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub capabilities: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub runtime_config: RuntimeConfig,
    /// The result of the plugins before this one (ADD, CHECK, and DEL when the runtime
    /// cached it).
    #[serde(default)]
    pub prev_result: Option<CniResult>,
    /// The portfwd daemon's control socket ([`DEFAULT_SOCKET`] when absent).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// GC (1.1): the attachments of this network that are still in use.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// The control socket: `socket`, or [`DEFAULT_SOCKET`].
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

/// `runtimeConfig`: what the runtime passes for the capabilities the plugin declares. Only
/// `portMappings` (capability `portMappings`) is read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_mappings: Vec<PortMapping>,
}

/// `null` read as the default (Go's runtimes and plugins write `null` for an empty list).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One of `runtimeConfig.portMappings`, as podman, containerd and CRI-O write it. Ports are
/// read as plain integers and checked by [`crate::mappings`], so that a bad one is named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
    /// `tcp` or `udp` (any case); `tcp` when absent or empty.
    #[serde(default)]
    pub protocol: String,
    /// One host address; absent or empty: every address.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A plugin's result (ADD's output, the next plugin's `prevResult`). The keys read here are
/// typed; every other one is kept in `rest`, and printed again as it came.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// An interface of a result; `sandbox` is set for the ones inside the container.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// An address of a result. `version` (`"4"`/`"6"`) exists before spec 1.0.0 only.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct IpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    /// `ADDRESS/PREFIX_LEN`.
    pub address: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl IpConfig {
    /// The address without its prefix length, if it parses.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self
            .address
            .split_once('/')
            .map_or(&*self.address, |(a, _)| a);
        addr.parse().ok()
    }
}

/// Why a version or a result is not one this plugin handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("CNI version {0:?} is not supported (portfwd-cni speaks {supported})", supported = SUPPORTED_VERSIONS.join(", "))]
    Version(String),
    #[error("prevResult has an address that is not ADDRESS/PREFIX_LEN: {0:?}")]
    Address(String),
}

/// Checks that this plugin speaks `version`.
pub fn check_version(version: &str) -> Result<(), SpecError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(SpecError::Version(version.to_owned()))
    }
}

/// Whether results of `version` carry `ips[].version` (the versions before 1.0.0).
fn has_ip_version(version: &str) -> bool {
    version.starts_with("0.")
}

impl CniResult {
    /// The same result in spec `version` (one of [`SUPPORTED_VERSIONS`]): 0.3.x and 0.4.0
    /// give each address its `version` ("4" or "6"), 1.0.0 and later have none.
    pub fn convert_to(mut self, version: &str) -> Result<CniResult, SpecError> {
        check_version(version)?;
        let with_version = has_ip_version(version);
        for ip in &mut self.ips {
            ip.version = if with_version {
                match ip.ip() {
                    Some(IpAddr::V4(_)) => Some("4".to_owned()),
                    Some(IpAddr::V6(_)) => Some("6".to_owned()),
                    None => return Err(SpecError::Address(ip.address.clone())),
                }
            } else {
                None
            };
        }
        self.cni_version = version.to_owned();
        Ok(self)
    }
}

/// The spec's well-known error codes (0-99) and this plugin's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// The config's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// A CNI_* environment variable is missing or invalid.
    InvalidEnv = 4,
    /// The control socket cannot be used (no permission, an answer that does not parse).
    Io = 5,
    /// stdin is not a network config.
    Decode = 6,
    /// The network config is not usable: a bad port mapping, no `prevResult` on ADD, no
    /// address for a mapping's family.
    InvalidConfig = 7,
    /// The daemon is not reachable now: the runtime is expected to try again.
    TryAgainLater = 11,
    /// STATUS (1.1): the plugin cannot serve ADD now (the daemon is not reachable).
    NotAvailable = 50,
    /// The daemon refused the request: a host port already published, a CHECK that finds
    /// other forwards than the config's, a daemon of another CNI API version.
    Refused = 100,
}

/// The error object a plugin prints on stdout (exit status 1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg` (no details yet), in `CURRENT_VERSION` until
    /// [`CniError::in_version`] sets the config's.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: CURRENT_VERSION.to_owned(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// With `details`.
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Reported in spec `version` (the config's, when it is one this plugin speaks).
    pub fn in_version(mut self, version: &str) -> CniError {
        if check_version(version).is_ok() {
            self.cni_version = version.to_owned();
        }
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// VERSION's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// This plugin's.
    pub fn ours() -> VersionInfo {
        VersionInfo {
            cni_version: CURRENT_VERSION.to_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What bridge + host-local (containernetworking-plugins 1.1.1) printed for a dual-stack
    /// ADD, in 0.4.0 and in 1.0.0.
    const BRIDGE_04: &str = include_str!("../tests/fixtures/bridge-host-local-0.4.0.json");
    const BRIDGE_10: &str = include_str!("../tests/fixtures/bridge-host-local-1.0.0.json");

    /// The ADD config podman 4.3 writes for a chained plugin (engines.md), with unknown keys.
    const PODMAN_ADD: &str = r#"{"cniVersion":"0.4.0","name":"NET","type":"portfwd-cni",
      "capabilities":{"portMappings":true},"someFutureKey":{"x":1},
      "prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"BRIDGE","mac":"aa:bb:cc:dd:ee:ff"},
        {"name":"vethX","mac":"aa:bb:cc:dd:ee:00"},
        {"name":"eth0","mac":"aa:bb:cc:dd:ee:01","sandbox":"/run/netns/netns-UUID"}],
        "ips":[{"version":"4","address":"10.89.0.4/24","gateway":"10.89.0.1","interface":2}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{}},
      "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":3000,"protocol":"tcp"},
        {"hostPort":8443,"containerPort":3000,"protocol":"tcp","hostIP":"127.0.0.1"}]}}"#;

    #[test]
    fn podmans_config_is_read_and_unknown_keys_ignored() {
        let conf: NetConf = serde_json::from_str(PODMAN_ADD).unwrap();
        assert_eq!(conf.cni_version, "0.4.0");
        assert_eq!(conf.name, "NET");
        assert_eq!(conf.plugin_type, "portfwd-cni");
        assert_eq!(conf.socket(), PathBuf::from("/run/portfwd/portfwd.sock"));
        let maps = &conf.runtime_config.port_mappings;
        assert_eq!(maps.len(), 2);
        assert_eq!(
            maps[1],
            PortMapping {
                host_port: 8443,
                container_port: 3000,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into()
            }
        );
        assert_eq!(maps[0].host_ip, "");
        let prev = conf.prev_result.unwrap();
        assert_eq!(
            prev.interfaces[2].sandbox.as_deref(),
            Some("/run/netns/netns-UUID")
        );
        assert_eq!(prev.ips[0].interface, Some(2));
        assert_eq!(prev.ips[0].ip(), Some("10.89.0.4".parse().unwrap()));
    }

    #[test]
    fn a_config_without_runtime_config_or_prev_result_is_read() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"n","type":"portfwd-cni","socket":"/tmp/s.sock"}"#,
        )
        .unwrap();
        assert!(conf.runtime_config.port_mappings.is_empty());
        assert!(conf.prev_result.is_none());
        assert_eq!(conf.socket(), PathBuf::from("/tmp/s.sock"));
        // Go writes null for an empty list.
        for runtime_config in [r#"null"#, r#"{"portMappings":null}"#] {
            let conf: NetConf = serde_json::from_str(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":{runtime_config}}}"#
            ))
            .unwrap();
            assert!(conf.runtime_config.port_mappings.is_empty());
        }
    }

    #[test]
    fn gc_attachments_are_read() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"n","type":"portfwd-cni",
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            conf.valid_attachments.unwrap(),
            [Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn the_real_plugins_results_convert_between_versions_losslessly() {
        let r04: CniResult = serde_json::from_str(BRIDGE_04).unwrap();
        let r10: CniResult = serde_json::from_str(BRIDGE_10).unwrap();
        // Every key survives a round trip (mac, gateway, routes, dns).
        let back = serde_json::to_value(&r04).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(BRIDGE_04).unwrap());
        let back = serde_json::to_value(&r10).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(BRIDGE_10).unwrap());

        let up = serde_json::to_value(r04.clone().convert_to("1.0.0").unwrap()).unwrap();
        assert_eq!(up["cniVersion"], "1.0.0");
        assert!(
            up["ips"]
                .as_array()
                .unwrap()
                .iter()
                .all(|ip| ip.get("version").is_none())
        );
        assert_eq!(up["ips"][1]["address"], "fd00:88::2/64");
        assert_eq!(up["ips"][1]["gateway"], "fd00:88::1");

        let down = serde_json::to_value(r10.convert_to("0.4.0").unwrap()).unwrap();
        assert_eq!(down["cniVersion"], "0.4.0");
        assert_eq!(down["ips"][0]["version"], "4");
        assert_eq!(down["ips"][1]["version"], "6");
        assert_eq!(down["dns"], json!({}));
        assert_eq!(down["interfaces"][2]["sandbox"], "/run/netns/cniprobe-c1");

        // 0.4.0 to 0.4.0 is the identity.
        let same = serde_json::to_value(r04.convert_to("0.4.0").unwrap()).unwrap();
        assert_eq!(same, serde_json::from_str::<Value>(BRIDGE_04).unwrap());
    }

    #[test]
    fn unknown_versions_are_refused_naming_what_is_spoken() {
        let r: CniResult = serde_json::from_str(BRIDGE_10).unwrap();
        let e = r.convert_to("0.2.0").unwrap_err();
        assert_eq!(e, SpecError::Version("0.2.0".into()));
        assert!(e.to_string().contains("0.4.0, 1.0.0, 1.1.0"), "{e}");
        let bad = CniResult {
            ips: vec![IpConfig {
                version: None,
                interface: None,
                address: "nonsense".into(),
                rest: Map::new(),
            }],
            ..serde_json::from_str(BRIDGE_10).unwrap()
        };
        assert!(matches!(
            bad.convert_to("0.4.0"),
            Err(SpecError::Address(_))
        ));
    }

    #[test]
    fn errors_and_version_answers_have_the_specs_shape() {
        let e = CniError::new(Code::TryAgainLater, "daemon down")
            .details("socket /x")
            .in_version("0.4.0");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"cniVersion":"0.4.0","code":11,"msg":"daemon down","details":"socket /x"})
        );
        // An unsupported version keeps ours.
        let e = CniError::new(Code::Decode, "x").in_version("9.9.9");
        assert_eq!(e.cni_version, CURRENT_VERSION);
        assert!(serde_json::to_value(&e).unwrap().get("details").is_none());
        let v = serde_json::to_value(VersionInfo::ours()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        for version in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(
                v["supportedVersions"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(version))
            );
        }
    }
}
