//! The [`Lab`]: a host namespace with a `docker0` bridge, a client on the host's LAN, and
//! containers on the bridge; all of it deleted when the lab is dropped.

mod exec;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use exec::Children;
pub use exec::{EXEC_TIMEOUT, parse_mac};

use crate::ip::{add_addr6, ip, ipv6_defaults, set_sysctl, teardown_ns};
use crate::names::{cleanup_stale, unique_prefix};
use crate::ns::Ns;
use crate::proc::is_root;

/// A container made by [`Lab::add_container`]: a namespace whose `eth0` is a veth whose other end
/// is attached to the host's `docker0` bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The short name given to [`Lab::add_container`] (e.g. `"c1"`).
    pub name: String,
    /// The container's namespace (`{prefix}-{name}`).
    pub ns: Ns,
    /// The container's address on the bridge: 172.17.0.N, N = 2, 3, … in order of creation.
    pub addr: Ipv4Addr,
    /// The container's IPv6 address on the bridge: fd00:17::N (N as for [`Container::addr`]).
    pub addr6: Ipv6Addr,
    /// The host-side end of the container's veth, in the host namespace, attached to `docker0`.
    pub host_veth: String,
}

/// A network lab: a host namespace with a `docker0` bridge, a client namespace on a /24 with the
/// host, and containers added with [`Lab::add_container`].
///
/// Dropping the lab tears everything down: processes started with [`Lab::spawn`] are killed (and
/// reaped), so is any other process still inside one of the lab's namespaces, then every namespace
/// the lab created is deleted (which destroys the veths and the bridge). Teardown never panics and
/// ignores what is already gone.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    prefix: String,
    host: Ns,
    client: Ns,
    containers: Vec<Container>,
    /// Namespaces created so far, in creation order (torn down in reverse).
    created: Vec<Ns>,
    children: Children,
}

impl Lab {
    /// The host's address on the client's network: what a LAN client connects to (`-p` ports).
    pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// The client's address.
    pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    /// Prefix length of the host–client network (10.77.0.0/24).
    pub const LAN_PREFIX_LEN: u8 = 24;
    /// The bridge's address in the host namespace, the containers' default gateway.
    pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
    /// Prefix length of the bridge network (172.17.0.0/16).
    pub const BRIDGE_PREFIX_LEN: u8 = 16;
    /// The bridge's name in the host namespace.
    pub const BRIDGE: &'static str = "docker0";
    /// The name of the interface facing the other side, in the host, the client and every container.
    pub const ETH: &'static str = "eth0";
    /// The host's IPv6 address on the client's network (fd00:77::/64).
    pub const HOST_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
    /// The client's IPv6 address.
    pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
    /// The bridge's IPv6 address, the containers' IPv6 default gateway (fd00:17::/64).
    pub const BRIDGE_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1);
    /// Prefix length of both IPv6 networks.
    pub const PREFIX6_LEN: u8 = 64;

    /// Builds a new lab: the host namespace (`lo` up, `ip_forward=1`, bridge `docker0` with
    /// 172.17.0.1/16 up) and the client namespace (veth `eth0` 10.77.0.2/24 to the host's `eth0`
    /// 10.77.0.1/24, default route via the host).
    ///
    /// Every network is dual-stack: the host's `eth0` also has fd00:77::1/64, the client
    /// fd00:77::2/64 (IPv6 default route via the host), `docker0` fd00:17::1/64 and each
    /// container fd00:17::N/64 ([`Lab::add_container`]). IPv6 forwarding is on in the host
    /// namespace only. In every namespace router advertisements are ignored and duplicate
    /// address detection is off (addresses are usable at once; no test waits for DAD). `tag` (letters and digits kept, at most 10) goes
    /// into the namespace names to tell labs apart in `ip netns list`.
    ///
    /// Namespaces left behind by a lab whose process is gone (e.g. a test killed with SIGKILL) are
    /// cleaned up first, processes inside them included.
    ///
    /// Fails with a clear message if not root or if `ip` is missing.
    pub fn new(tag: &str) -> Result<Lab> {
        check_prerequisites()?;
        cleanup_stale();
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(10)
            .collect::<String>()
            .to_ascii_lowercase();
        let prefix = unique_prefix(&tag);
        let mut lab = Lab {
            host: Ns::new(format!("{prefix}-host")),
            client: Ns::new(format!("{prefix}-client")),
            tag,
            prefix,
            containers: Vec::new(),
            created: Vec::new(),
            children: Children::default(),
        };
        // On error, `lab` is dropped here and tears down whatever was built.
        lab.build()
            .with_context(|| format!("building lab {}", lab.prefix))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let (host, client) = (self.host.clone(), self.client.clone());
        self.create_ns(&host)?;
        self.create_ns(&client)?;
        ip(&["-n", &host.name, "link", "set", "lo", "up"])?;
        ip(&["-n", &client.name, "link", "set", "lo", "up"])?;
        set_sysctl(&host, "net.ipv4.ip_forward", "1")?;
        ipv6_defaults(&host)?;
        ipv6_defaults(&client)?;
        set_sysctl(&host, "net.ipv6.conf.all.forwarding", "1")?;

        let bridge_cidr = format!("{}/{}", Self::BRIDGE_ADDR, Self::BRIDGE_PREFIX_LEN);
        let bridge_cidr6 = format!("{}/{}", Self::BRIDGE_ADDR6, Self::PREFIX6_LEN);
        ip(&[
            "-n",
            &host.name,
            "link",
            "add",
            Self::BRIDGE,
            "type",
            "bridge",
        ])?;
        ip(&[
            "-n",
            &host.name,
            "addr",
            "add",
            &bridge_cidr,
            "dev",
            Self::BRIDGE,
        ])?;
        add_addr6(&host, &bridge_cidr6, Self::BRIDGE)?;
        ip(&["-n", &host.name, "link", "set", Self::BRIDGE, "up"])?;

        let eth = Self::ETH;
        let host_cidr = format!("{}/{}", Self::HOST_ADDR, Self::LAN_PREFIX_LEN);
        let client_cidr = format!("{}/{}", Self::CLIENT_ADDR, Self::LAN_PREFIX_LEN);
        ip(&[
            "-n",
            &host.name,
            "link",
            "add",
            eth,
            "type",
            "veth",
            "peer",
            "name",
            eth,
            "netns",
            &client.name,
        ])?;
        ip(&["-n", &host.name, "addr", "add", &host_cidr, "dev", eth])?;
        add_addr6(
            &host,
            &format!("{}/{}", Self::HOST_ADDR6, Self::PREFIX6_LEN),
            eth,
        )?;
        ip(&["-n", &host.name, "link", "set", eth, "up"])?;
        ip(&["-n", &client.name, "addr", "add", &client_cidr, "dev", eth])?;
        add_addr6(
            &client,
            &format!("{}/{}", Self::CLIENT_ADDR6, Self::PREFIX6_LEN),
            eth,
        )?;
        ip(&["-n", &client.name, "link", "set", eth, "up"])?;
        let gw = Self::HOST_ADDR.to_string();
        ip(&["-n", &client.name, "route", "add", "default", "via", &gw])?;
        let gw6 = Self::HOST_ADDR6.to_string();
        ip(&[
            "-n",
            &client.name,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gw6,
        ])?;
        Ok(())
    }

    fn create_ns(&mut self, ns: &Ns) -> Result<()> {
        ip(&["netns", "add", &ns.name])?;
        self.created.push(ns.clone());
        Ok(())
    }

    /// The tag given to [`Lab::new`], as kept in names (lowercase letters and digits).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The prefix of every namespace name of this lab (`pf{pid}x{counter}-{tag}`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The host namespace (where the daemon runs; bridge `docker0`, `eth0` 10.77.0.1).
    pub fn host(&self) -> &Ns {
        &self.host
    }

    /// The client namespace: another machine on the host's LAN (`eth0` 10.77.0.2).
    pub fn client(&self) -> &Ns {
        &self.client
    }

    /// The containers added so far, in order of creation.
    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    /// Every namespace the lab has created and not yet deleted (host, client, containers).
    pub fn namespaces(&self) -> &[Ns] {
        &self.created
    }

    /// Adds a container: namespace `{prefix}-{name}` with `lo` up and `eth0` = 172.17.0.N/16
    /// (N = 2, 3, … in order of creation), default route via 172.17.0.1; the other end of its veth,
    /// `veth` + 7 hex digits, is in the host namespace, attached to `docker0` and up.
    ///
    /// `name` is made of ASCII letters, digits, `_` and `-` (at most 32), and is unique in the lab;
    /// `host` and `client` are taken.
    pub fn add_container(&mut self, name: &str) -> Result<Container> {
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid container name {name:?}: use 1-32 ASCII letters, digits, '-' or '_'");
        }
        if name == "host" || name == "client" || self.containers.iter().any(|c| c.name == name) {
            bail!(
                "container name {name:?} is already taken in lab {}",
                self.prefix
            );
        }
        let index = self.containers.len() as u32;
        let host_part = 2 + index;
        if host_part > 65_534 {
            bail!("no address left on 172.17.0.0/16");
        }
        let addr = Ipv4Addr::from(u32::from(Self::BRIDGE_ADDR) - 1 + host_part);
        let addr6 = Ipv6Addr::from(u128::from(Self::BRIDGE_ADDR6) - 1 + u128::from(host_part));
        let host_veth = self.veth_name(name);
        let ns = Ns::new(format!("{}-{name}", self.prefix));
        let host = self.host.clone();
        let eth = Self::ETH;

        self.create_ns(&ns)
            .with_context(|| format!("adding container {name}"))?;
        let result = (|| -> Result<()> {
            ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
            ipv6_defaults(&ns)?;
            ip(&[
                "-n", &host.name, "link", "add", &host_veth, "type", "veth", "peer", "name", eth,
                "netns", &ns.name,
            ])?;
            ip(&[
                "-n",
                &host.name,
                "link",
                "set",
                &host_veth,
                "master",
                Self::BRIDGE,
            ])?;
            ip(&["-n", &host.name, "link", "set", &host_veth, "up"])?;
            let cidr = format!("{addr}/{}", Self::BRIDGE_PREFIX_LEN);
            ip(&["-n", &ns.name, "addr", "add", &cidr, "dev", eth])?;
            add_addr6(&ns, &format!("{addr6}/{}", Self::PREFIX6_LEN), eth)?;
            ip(&["-n", &ns.name, "link", "set", eth, "up"])?;
            let gw = Self::BRIDGE_ADDR.to_string();
            ip(&["-n", &ns.name, "route", "add", "default", "via", &gw])?;
            let gw6 = Self::BRIDGE_ADDR6.to_string();
            ip(&["-n", &ns.name, "-6", "route", "add", "default", "via", &gw6])?;
            Ok(())
        })();
        if let Err(e) = result {
            // Deleting the namespace also destroys the veth (both ends).
            teardown_ns(&ns);
            self.created.retain(|n| n != &ns);
            return Err(e).with_context(|| format!("adding container {name}"));
        }
        let container = Container {
            name: name.to_string(),
            ns,
            addr,
            addr6,
            host_veth,
        };
        self.containers.push(container.clone());
        Ok(container)
    }

    /// A host-side veth name like Docker's: `veth` + 7 hex digits derived from the lab and container
    /// names (unique within the lab's host namespace; 11 characters, under IFNAMSIZ).
    fn veth_name(&self, name: &str) -> String {
        let mut salt = 0u32;
        loop {
            let mut h: u32 = 0x811c_9dc5; // FNV-1a
            for b in self
                .prefix
                .bytes()
                .chain([0])
                .chain(name.bytes())
                .chain(salt.to_le_bytes())
            {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            let candidate = format!("veth{:07x}", h & 0x0fff_ffff);
            if !self.containers.iter().any(|c| c.host_veth == candidate) {
                return candidate;
            }
            salt += 1;
        }
    }
}

/// Processes and commands in the lab's namespaces (see `exec`).
impl Lab {
    /// Spawns `cmd` inside `ns`, entering it the way `ip netns exec NS` does (network namespace,
    /// then a private mount namespace with a fresh `/sys` showing `ns`'s interfaces), while keeping
    /// everything set on `cmd` (arguments, environment, directory, stdio). The [`Child`] is kept and
    /// killed at drop; returns its pid (the pid of `cmd` itself).
    ///
    /// Use [`Lab::kill`], [`Lab::stop`], [`Lab::take_child`] or [`Lab::child_mut`] to end it early or
    /// get at it (e.g. to read piped output, or to kill -9 and restart a daemon).
    ///
    /// This adds a `pre_exec` hook to `cmd`: reuse `cmd` for another spawn only into the same
    /// namespace.
    pub fn spawn(&mut self, ns: &Ns, cmd: &mut Command) -> Result<u32> {
        self.children.spawn(ns, cmd)
    }

    /// The pids of the processes started with [`Lab::spawn`] and still held by the lab.
    pub fn children(&self) -> Vec<u32> {
        self.children.pids()
    }

    /// The [`Child`] of a process started with [`Lab::spawn`], left in the lab's hands.
    pub fn child_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.get_mut(pid)
    }

    /// Takes the [`Child`] of a process started with [`Lab::spawn`] out of the lab: the lab no longer
    /// kills it at drop (but still kills whatever is left in its namespaces when deleting them).
    pub fn take_child(&mut self, pid: u32) -> Option<Child> {
        self.children.take(pid)
    }

    /// Kills (SIGKILL) a process started with [`Lab::spawn`] and reaps it; returns its exit status.
    pub fn kill(&mut self, pid: u32) -> Result<ExitStatus> {
        self.children.kill(pid)
    }

    /// Stops a process started with [`Lab::spawn`] gracefully: SIGTERM, then SIGKILL if it has not
    /// exited within `grace`. Returns its exit status.
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Result<ExitStatus> {
        self.children.stop(pid, grace)
    }

    /// Runs `ip netns exec NS args…` (at most [`EXEC_TIMEOUT`]) and returns its output; fails,
    /// quoting stderr, if it cannot start, exits non-zero or times out.
    pub fn exec(&self, ns: &Ns, args: &[&str]) -> Result<Output> {
        self.exec_timeout(ns, args, EXEC_TIMEOUT)
    }

    /// [`Lab::exec`] with an explicit time limit.
    pub fn exec_timeout(&self, ns: &Ns, args: &[&str], timeout: Duration) -> Result<Output> {
        exec::exec_timeout(ns, args, timeout)
    }

    /// Runs `ip netns exec NS sh -c SCRIPT` (at most [`EXEC_TIMEOUT`]) and returns its stdout; fails,
    /// quoting stderr, if the script exits non-zero.
    pub fn sh(&self, ns: &Ns, script: &str) -> Result<String> {
        let out = self.exec(ns, &["sh", "-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MAC address of interface `dev` in `ns`.
    pub fn mac(&self, ns: &Ns, dev: &str) -> Result<[u8; 6]> {
        let out = self.sh(ns, &format!("cat /sys/class/net/{dev}/address"))?;
        parse_mac(out.trim()).with_context(|| format!("bad MAC address {out:?} of {dev} in {ns}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.children.kill_all();
        while let Some(ns) = self.created.pop() {
            teardown_ns(&ns);
        }
    }
}

/// Checks that we are root and that iproute2's `ip` runs.
fn check_prerequisites() -> Result<()> {
    if !is_root() {
        bail!(
            "the network lab needs root (it creates network namespaces, veths and bridges): \
             run as root, e.g. `sudo -E cargo test`"
        );
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "`ip -V` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("iproute2's `ip` is not in PATH: install it (`apt-get install iproute2`)")
        }
        Err(e) => Err(e).context("running `ip -V`"),
    }
}
