//! CNI plugins driven by hand in a lab's host namespace ([`CniNet`]), as libcni (podman,
//! containerd, CRI-O) drives a conflist: for each plugin of the list, its object with the
//! list's `cniVersion` and `name`, the previous plugin's result as `prevResult` and the
//! `runtimeConfig` of the capabilities it declares, piped to the plugin's binary with the
//! CNI_* variables. ADD runs the plugins in order, each with the previous one's result, and
//! caches the last result; CHECK runs them in order with the cached result; DEL in reverse
//! order with the cached result when there is one, then forgets it.
//!
//! The plugins run with `nsenter --net=/run/netns/HOST` (never `ip netns exec`, whose fresh
//! `/sys` misleads them; never in the machine's own namespace): `bridge` makes its bridge and
//! the container's veth there. A sandbox ([`Sandbox`]) is an empty namespace of the lab's
//! (`{prefix}-{name}`), the container's `CNI_NETNS`. Everything a network keeps is under its
//! own directory (`/tmp/pfcni-{prefix}-{network}`: host-local's leases, the result cache),
//! never in `/var/lib/cni`; dropping the network deletes it and the sandboxes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::ip::{ip, ipv6_defaults, teardown_ns};
use crate::lab::Lab;
use crate::ns::Ns;
use crate::proc;

/// Where Debian's containernetworking-plugins installs bridge, host-local, portmap, ...
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// How long one plugin call may take.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A container's attachment: its namespace, `CNI_CONTAINERID` and `CNI_IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The short name given to [`CniNet::sandbox`].
    pub name: String,
    /// The container's namespace (`CNI_NETNS` is its path).
    pub ns: Ns,
    /// `CNI_CONTAINERID`: 64 hex digits, as runtimes make them.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl Sandbox {
    /// The first 12 characters of the container id, as runtimes (and `portfwd list`) show it.
    pub fn short_id(&self) -> &str {
        &self.container_id[..12]
    }
}

/// What one plugin call gave: its exit status, its output, how long it took (spawn to exit,
/// `nsenter` included).
#[derive(Debug, Clone)]
pub struct PluginReply {
    /// The plugin's `type`.
    pub plugin: String,
    /// The CNI command.
    pub command: String,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it printed on stdout (a result, an error object, or nothing).
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// From spawn to exit.
    pub took: Duration,
}

impl PluginReply {
    /// Whether the plugin exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Its stdout as JSON (`None` when empty or not JSON).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }
}

/// The replies of the plugins of one chained call, in the order they ran; it stops at the
/// first failure.
#[derive(Debug, Clone, Default)]
pub struct ChainReply {
    /// One reply per plugin that ran.
    pub replies: Vec<PluginReply>,
}

impl ChainReply {
    /// Whether every plugin succeeded.
    pub fn ok(&self) -> bool {
        self.replies.iter().all(PluginReply::ok)
    }

    /// The failing plugin's reply, if one failed.
    pub fn failed(&self) -> Option<&PluginReply> {
        self.replies.iter().find(|r| !r.ok())
    }

    /// The failing plugin's CNI error object (`code`, `msg`, `details`), if one failed.
    pub fn error(&self) -> Option<Value> {
        self.failed().and_then(PluginReply::json)
    }

    /// The last plugin's output, parsed, when every plugin succeeded (ADD: the result).
    pub fn result(&self) -> Option<Value> {
        self.ok()
            .then(|| self.replies.last().and_then(PluginReply::json))
            .flatten()
    }

    /// How long the plugin of type `plugin` took (zero if it did not run).
    pub fn took(&self, plugin: &str) -> Duration {
        self.replies
            .iter()
            .filter(|r| r.plugin == plugin)
            .map(|r| r.took)
            .sum()
    }

    /// How long the whole chain took.
    pub fn total(&self) -> Duration {
        self.replies.iter().map(|r| r.took).sum()
    }

    /// The result, or an error naming the failing plugin with its output.
    pub fn expect_ok(&self) -> Result<Option<Value>> {
        if let Some(f) = self.failed() {
            bail!(
                "{} {} failed ({:?}): {} {}",
                f.plugin,
                f.command,
                f.code,
                f.stdout.trim(),
                f.stderr.trim()
            );
        }
        Ok(self.replies.last().and_then(PluginReply::json))
    }
}

/// A network (a conflist) whose plugins run in a lab's host namespace. Dropping it deletes
/// its sandboxes' namespaces and its directory; it does not call DEL.
#[derive(Debug)]
pub struct CniNet {
    host: Ns,
    prefix: String,
    dir: PathBuf,
    name: String,
    version: String,
    plugins: Vec<Value>,
    cni_path: Vec<PathBuf>,
    sandboxes: Vec<Ns>,
}

impl CniNet {
    /// A network from `conflist` (`{"cniVersion", "name", "plugins": [...]}`) in `lab`'s
    /// host namespace, its plugins looked up in `cni_path` (`CNI_PATH`, in order). A
    /// `host-local` IPAM without `dataDir` gets one under the network's directory.
    pub fn new(lab: &Lab, conflist: &Value, cni_path: &[PathBuf]) -> Result<CniNet> {
        let name = conflist["name"]
            .as_str()
            .context("the conflist has no name")?
            .to_owned();
        let version = conflist["cniVersion"]
            .as_str()
            .context("the conflist has no cniVersion")?
            .to_owned();
        let mut plugins = conflist["plugins"]
            .as_array()
            .context("the conflist has no plugins")?
            .clone();
        let dir = std::env::temp_dir().join(format!("pfcni-{}-{name}", lab.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("results"))
            .with_context(|| format!("creating {}", dir.display()))?;
        private_ipam(&mut plugins, &dir.join("ipam"));
        let net = CniNet {
            host: lab.host().clone(),
            prefix: lab.prefix().to_owned(),
            dir,
            name,
            version,
            plugins,
            cni_path: cni_path.to_vec(),
            sandboxes: Vec::new(),
        };
        for plugin in &net.plugins {
            net.binary(plugin)?;
        }
        Ok(net)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network's directory (leases, result cache).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new sandbox: the empty namespace `{prefix}-{name}` (loopback up, the lab's IPv6
    /// defaults), a random container id, interface `eth0`.
    pub fn sandbox(&mut self, name: &str) -> Result<Sandbox> {
        let ns = Ns::new(format!("{}-{name}", self.prefix));
        ip(&["netns", "add", &ns.name])?;
        self.sandboxes.push(ns.clone());
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        // No duplicate address detection: bridge waits for the container's addresses to
        // settle, seconds for a tentative IPv6 one.
        ipv6_defaults(&ns)?;
        Ok(Sandbox {
            name: name.to_owned(),
            ns,
            container_id: random_id()?,
            ifname: "eth0".to_owned(),
        })
    }

    fn binary(&self, plugin: &Value) -> Result<PathBuf> {
        let kind = plugin["type"].as_str().context("a plugin has no type")?;
        self.cni_path
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .with_context(|| format!("no CNI plugin {kind} in {:?}", self.cni_path))
    }

    /// ADD: every plugin in order, each given the previous one's result; `port_mappings` (a
    /// JSON array) goes to the plugins that declare the `portMappings` capability. On
    /// success the result is cached for CHECK and DEL.
    pub fn add(&self, sb: &Sandbox, port_mappings: &Value) -> Result<ChainReply> {
        let mut chain = ChainReply::default();
        let mut prev: Option<Value> = None;
        for plugin in &self.plugins {
            let reply = self.exec(plugin, "ADD", sb, prev.as_ref(), port_mappings)?;
            let ok = reply.ok();
            prev = reply.json();
            chain.replies.push(reply);
            if !ok {
                return Ok(chain);
            }
        }
        let cache = json!({
            "kind": "cniCacheV1",
            "containerId": sb.container_id,
            "ifName": sb.ifname,
            "networkName": self.name,
            "capabilityArgs": {"portMappings": port_mappings},
            "result": prev,
        });
        std::fs::write(self.cache_path(sb), cache.to_string())?;
        Ok(chain)
    }

    /// CHECK: every plugin in order with the cached result and the cached port mappings.
    pub fn check(&self, sb: &Sandbox) -> Result<ChainReply> {
        let cache = self
            .cached(sb)
            .with_context(|| format!("no cached ADD result for {}", sb.name))?;
        let mut chain = ChainReply::default();
        for plugin in &self.plugins {
            let reply = self.exec(
                plugin,
                "CHECK",
                sb,
                Some(&cache["result"]),
                &cache["capabilityArgs"]["portMappings"],
            )?;
            let ok = reply.ok();
            chain.replies.push(reply);
            if !ok {
                break;
            }
        }
        Ok(chain)
    }

    /// DEL: every plugin in reverse order, with the cached result as `prevResult` when there
    /// is one; the cache is removed when all succeed. `port_mappings` as on ADD (runtimes
    /// pass the same).
    pub fn del(&self, sb: &Sandbox, port_mappings: &Value) -> Result<ChainReply> {
        let cached = self.cached(sb).map(|c| c["result"].clone());
        let mut chain = ChainReply::default();
        for plugin in self.plugins.iter().rev() {
            let reply = self.exec(plugin, "DEL", sb, cached.as_ref(), port_mappings)?;
            let ok = reply.ok();
            chain.replies.push(reply);
            if !ok {
                return Ok(chain);
            }
        }
        let _ = std::fs::remove_file(self.cache_path(sb));
        Ok(chain)
    }

    fn cache_path(&self, sb: &Sandbox) -> PathBuf {
        self.dir
            .join("results")
            .join(format!("{}-{}-{}", self.name, sb.container_id, sb.ifname))
    }

    fn cached(&self, sb: &Sandbox) -> Option<Value> {
        let text = std::fs::read_to_string(self.cache_path(sb)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The plugin of the list whose type is `kind`.
    pub fn plugin(&self, kind: &str) -> Option<&Value> {
        self.plugins.iter().find(|p| p["type"] == kind)
    }

    /// One plugin call: `plugin`'s object with `cniVersion`, `name`, `prevResult` and the
    /// `runtimeConfig` of its capabilities, piped to its binary under `nsenter --net` into the
    /// host namespace, with CNI_COMMAND=`command` and the sandbox's variables.
    pub fn exec(
        &self,
        plugin: &Value,
        command: &str,
        sb: &Sandbox,
        prev: Option<&Value>,
        port_mappings: &Value,
    ) -> Result<PluginReply> {
        let config = self.plugin_config(plugin, prev, port_mappings);
        self.exec_config(&config, command, sb)
    }

    /// One plugin call with `config` piped as it is (its `type` names the binary): for a
    /// config no list makes, e.g. a STATUS or GC of spec 1.1 beside plugins that speak 1.0.
    pub fn exec_config(&self, config: &Value, command: &str, sb: &Sandbox) -> Result<PluginReply> {
        let binary = self.binary(config)?;
        let cni_path = std::env::join_paths(&self.cni_path)?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path().display()))
            .arg(&binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &sb.container_id)
            .env("CNI_NETNS", sb.ns.path())
            .env("CNI_IFNAME", &sb.ifname)
            .env("CNI_PATH", cni_path)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAME={}", sb.name),
            );
        let started = Instant::now();
        let input = config.to_string();
        let out = proc::output_with_input(&mut cmd, Some(input.as_bytes()), PLUGIN_TIMEOUT)
            .with_context(|| format!("running {} {command}", binary.display()))?;
        Ok(PluginReply {
            plugin: config["type"].as_str().unwrap_or("?").to_owned(),
            command: command.to_owned(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        })
    }

    /// What libcni pipes to one plugin of the list.
    pub fn plugin_config(
        &self,
        plugin: &Value,
        prev: Option<&Value>,
        port_mappings: &Value,
    ) -> Value {
        let mut config = plugin.clone();
        config["cniVersion"] = json!(self.version);
        config["name"] = json!(self.name);
        if let Some(prev) = prev.filter(|p| !p.is_null()) {
            config["prevResult"] = prev.clone();
        }
        if plugin["capabilities"]["portMappings"] == true {
            config["runtimeConfig"] = json!({"portMappings": port_mappings});
        }
        config
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        while let Some(ns) = self.sandboxes.pop() {
            teardown_ns(&ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gives each `host-local` IPAM of `plugins` without a `dataDir` the directory `dir`, so that
/// its leases stay out of `/var/lib/cni/networks`.
pub(crate) fn private_ipam(plugins: &mut [Value], dir: &Path) {
    for plugin in plugins {
        let ipam = &mut plugin["ipam"];
        if ipam["type"] == "host-local" && ipam.get("dataDir").is_none() {
            ipam["dataDir"] = json!(dir);
        }
    }
}

/// 64 random hex digits, as a runtime's container id.
fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(plugins: Value) -> CniNet {
        CniNet {
            host: Ns::new("h"),
            prefix: "p".into(),
            dir: PathBuf::from("/nonexistent"),
            name: "n1".into(),
            version: "1.0.0".into(),
            plugins: plugins.as_array().unwrap().clone(),
            cni_path: Vec::new(),
            sandboxes: Vec::new(),
        }
    }

    #[test]
    fn plugins_get_the_lists_version_name_prev_result_and_their_capabilities_only() {
        let n = net(json!([
            {"type": "bridge", "bridge": "cni0"},
            {"type": "portfwd-cni", "capabilities": {"portMappings": true}, "socket": "/s"}
        ]));
        let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let bridge = n.plugin_config(&n.plugins[0], None, &maps);
        assert_eq!(
            bridge,
            json!({"type": "bridge", "bridge": "cni0", "cniVersion": "1.0.0", "name": "n1"})
        );
        let ours = n.plugin_config(&n.plugins[1], Some(&prev), &maps);
        assert_eq!(ours["prevResult"], prev);
        assert_eq!(ours["runtimeConfig"]["portMappings"], maps);
        assert_eq!(ours["socket"], "/s");
    }

    #[test]
    fn container_ids_are_64_hex_digits() {
        let id = random_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, random_id().unwrap());
    }
}
