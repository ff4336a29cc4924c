//! The network-namespace lab: a Docker-like host, a client machine and containers, each in a network
//! namespace that the lab creates (and deletes again when dropped).
//!
//! Topology (what `docker run -p` sees under the hood):
//!
//! ```text
//!  client ns                      host ns (ip_forward=1)                    container ns "c1"
//!  eth0 10.77.0.2/24  <--veth-->  eth0 10.77.0.1/24
//!  default via 10.77.0.1          docker0 (bridge) 172.17.0.1/16
//!                                   └─ vethXXXXXXX  <--------veth------->  eth0 172.17.0.2/16
//!                                                                          default via 172.17.0.1
//! ```
//!
//! Every namespace name starts with a prefix unique to the [`Lab`] (`pf{pid}x{counter}-{tag}`), so
//! several labs (parallel tests) coexist. All interfaces live inside the lab's namespaces (veth pairs
//! are created directly across namespaces), so interface names never collide between labs and the
//! root namespace is never touched. The lab's namespaces have no link to the root namespace: traffic
//! sent inside them cannot leave them.
//!
//! Servers and clients ([`tcp_server`], [`udp_server`], [`tcp_request`], [`tcp_session`],
//! [`udp_request`]) are plain std sockets created inside a namespace with [`Ns::run`]; every
//! blocking call they make is bounded by a timeout.
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`.

#![warn(missing_docs)]

mod net;
mod proc;

pub use net::{
    TcpServer, TcpSession, UdpServer, tcp_request, tcp_server, tcp_session, udp_request, udp_server,
};

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// Directory where iproute2 keeps its named network namespaces (bind mounts of `/proc/PID/ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

/// How long [`Lab::exec`] and [`Lab::sh`] let a command run before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-process counter that makes lab prefixes unique within one process.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (a file in `/run/netns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ns {
    /// The namespace's name, as `ip netns list` shows it and `ip netns exec NAME` takes it.
    pub name: String,
}

impl Ns {
    /// A handle on the existing named namespace `name` (nothing is created).
    pub fn new(name: impl Into<String>) -> Ns {
        Ns { name: name.into() }
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Runs `f` on a new thread whose network namespace is this one (`setns` on `/run/netns/NAME`
    /// with `CLONE_NEWNET`) and returns its result; a panic in `f` is resumed on the caller's thread.
    /// Sockets created inside stay in this namespace for their whole life and can be used from any
    /// thread afterwards. Only the network namespace changes: mounts (and so `/sys`) stay the caller's.
    ///
    /// # Panics
    /// If the namespace cannot be entered (see [`Ns::try_run`] for the fallible form).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.try_run(f) {
            Ok(v) => v,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`Ns::run`], but returns an error instead of panicking when the namespace cannot be
    /// entered (e.g. it does not exist, or we are not root).
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.path();
        let file = File::open(&path)
            .with_context(|| format!("opening network namespace {}", path.display()))?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, move || -> Result<T> {
                    // SAFETY: `file` is an open descriptor of a namespace file that outlives the
                    // call; setns only changes this (fresh, unshared) thread's network namespace.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("setns into {}", path.display()));
                    }
                    drop(file);
                    Ok(f())
                })
                .context("spawning a thread to enter a network namespace")?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// This namespace's cookie (`SO_NETNS_COOKIE`), the value `bpf_get_netns_cookie` returns for
    /// sockets and packets in it: what an eBPF program compares to act on one namespace only.
    pub fn cookie(&self) -> Result<u64> {
        self.try_run(netns_cookie_of_current_thread)?
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>` (not in the libc crate).
const SO_NETNS_COOKIE: libc::c_int = 71;

fn netns_cookie_of_current_thread() -> Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("socket for SO_NETNS_COOKIE")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is a valid socket owned by `sock`; `cookie`/`len` are valid for writes and
    // `len` holds the buffer's size, as getsockopt requires.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getsockopt(SO_NETNS_COOKIE)");
    }
    Ok(cookie)
}

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
    children: HashMap<u32, Child>,
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
            children: HashMap::new(),
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
        let path = CString::new(ns.path().into_os_string().into_encoded_bytes())
            .context("namespace path contains a NUL byte")?;
        let sysfs_name = CString::new(ns.name.clone()).context("namespace name with a NUL")?;
        let sys_flags = if sys_is_read_only() {
            libc::MS_RDONLY
        } else {
            0
        };
        // SAFETY: the hook runs in the forked child before exec and only makes raw system calls
        // (open, setns, close, unshare, mount, umount2) on data prepared before the fork; it does not
        // allocate, lock or touch the parent's state.
        unsafe {
            cmd.pre_exec(move || {
                proc::enter_netns_like_ip_netns_exec(&path, &sysfs_name, sys_flags)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in namespace {}", cmd.get_program(), ns))?;
        let pid = child.id();
        self.children.insert(pid, child);
        Ok(pid)
    }

    /// The pids of the processes started with [`Lab::spawn`] and still held by the lab.
    pub fn children(&self) -> Vec<u32> {
        self.children.keys().copied().collect()
    }

    /// The [`Child`] of a process started with [`Lab::spawn`], left in the lab's hands.
    pub fn child_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.get_mut(&pid)
    }

    /// Takes the [`Child`] of a process started with [`Lab::spawn`] out of the lab: the lab no longer
    /// kills it at drop (but still kills whatever is left in its namespaces when deleting them).
    pub fn take_child(&mut self, pid: u32) -> Option<Child> {
        self.children.remove(&pid)
    }

    /// Kills (SIGKILL) a process started with [`Lab::spawn`] and reaps it; returns its exit status.
    pub fn kill(&mut self, pid: u32) -> Result<ExitStatus> {
        let mut child = self
            .children
            .remove(&pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this lab (or was taken)"))?;
        proc::kill_and_reap(&mut child)
    }

    /// Stops a process started with [`Lab::spawn`] gracefully: SIGTERM, then SIGKILL if it has not
    /// exited within `grace`. Returns its exit status.
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Result<ExitStatus> {
        let mut child = self
            .children
            .remove(&pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this lab (or was taken)"))?;
        proc::terminate(&mut child, grace)
    }

    /// Runs `ip netns exec NS args…` (at most [`EXEC_TIMEOUT`]) and returns its output; fails,
    /// quoting stderr, if it cannot start, exits non-zero or times out.
    pub fn exec(&self, ns: &Ns, args: &[&str]) -> Result<Output> {
        self.exec_timeout(ns, args, EXEC_TIMEOUT)
    }

    /// [`Lab::exec`] with an explicit time limit.
    pub fn exec_timeout(&self, ns: &Ns, args: &[&str], timeout: Duration) -> Result<Output> {
        let Some(program) = args.first() else {
            bail!("exec in namespace {ns}: no command given");
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).args(args);
        let what = format!("`{}` in namespace {ns}", args.join(" "));
        let out = proc::output_with_timeout(&mut cmd, timeout)
            .with_context(|| format!("running {what} ({program})"))?;
        proc::check_status(&what, out)
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

/// `02:00:00:00:00:01` as six bytes; `None` if it is not a MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = proc::kill_and_reap(&mut child);
        }
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

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A prefix `pf{pid}x{n}-{tag}` (or `pf{pid}x{n}` without a tag) not used by any namespace yet.
fn unique_prefix(tag: &str) -> String {
    let pid = std::process::id();
    let existing = list_netns();
    loop {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = if tag.is_empty() {
            format!("pf{pid}x{n}")
        } else {
            format!("pf{pid}x{n}-{tag}")
        };
        // A namespace left by an earlier process with our pid would collide: skip its prefix.
        let dash = format!("{prefix}-");
        if !existing.iter().any(|name| name.starts_with(&dash)) {
            return prefix;
        }
    }
}

/// Names of the namespaces in `/run/netns`.
fn list_netns() -> Vec<String> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The pid that created a lab namespace, from its name `pf{pid}x…`.
fn lab_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pf")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 || !rest[digits..].starts_with('x') {
        return None;
    }
    rest[..digits].parse().ok()
}

/// Deletes the namespaces (and kills the processes inside them) of labs whose process is gone.
pub fn cleanup_stale() {
    for name in list_netns() {
        if let Some(pid) = lab_owner_pid(&name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            teardown_ns(&Ns::new(name));
        }
    }
}

/// Kills every process inside `ns` and deletes it; never fails (what is gone is gone).
fn teardown_ns(ns: &Ns) {
    proc::kill_processes_in(ns);
    if let Err(e) = ip(&["netns", "delete", &ns.name])
        && ns.path().exists()
    {
        eprintln!("lab: could not delete namespace {ns}: {e:#}");
    }
}

/// Writes a sysctl of `ns` (`net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`) from a thread
/// inside it (`/proc/sys/net` shows the namespace of the task that looks it up).
fn set_sysctl(ns: &Ns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.try_run(|| std::fs::write(&path, value))?
        .with_context(|| format!("setting {key}={value} in namespace {ns}"))
}

/// IPv6 settings of every lab namespace, before its interfaces exist (so they inherit them):
/// router advertisements ignored, no duplicate address detection (link-local addresses
/// included), so that addresses are usable as soon as they are added.
fn ipv6_defaults(ns: &Ns) -> Result<()> {
    for conf in ["all", "default"] {
        set_sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_ra"), "0")?;
        set_sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_dad"), "0")?;
    }
    Ok(())
}

/// Adds the IPv6 address `cidr` to `dev` in `ns`, usable at once (`nodad`).
fn add_addr6(ns: &Ns, cidr: &str, dev: &str) -> Result<()> {
    ip(&["-n", &ns.name, "addr", "add", cidr, "dev", dev, "nodad"])
}

/// Runs `ip ARGS…` (at most 30 s) and fails with its stderr if it exits non-zero.
fn ip(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let what = format!("`ip {}`", args.join(" "));
    let out = proc::output_with_timeout(&mut cmd, Duration::from_secs(30))
        .with_context(|| format!("running {what}"))?;
    proc::check_status(&what, out).map(drop)
}

/// Whether `/sys` is mounted read-only here (then `ip netns exec` mounts the new sysfs read-only too).
fn sys_is_read_only() -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: the path is a NUL-terminated literal and `st` is valid for writes of a statvfs.
    let rc = unsafe { libc::statvfs(c"/sys".as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statvfs succeeded (rc == 0), so it initialised `st`; otherwise we don't read it.
    rc == 0 && unsafe { st.assume_init() }.f_flag & libc::ST_RDONLY != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
    use std::process::Stdio;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("36:67:20:20:2b:c0"),
            Some([0x36, 0x67, 0x20, 0x20, 0x2b, 0xc0])
        );
        assert_eq!(parse_mac("36:67:20"), None);
        assert_eq!(parse_mac("zz:67:20:20:2b:c0"), None);
    }

    const T: Duration = Duration::from_secs(5);

    /// Root is needed: under CI=true its absence is a failure, elsewhere the test is skipped loudly.
    fn have_root() -> bool {
        if is_root() {
            return true;
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the lab tests need root, and CI=true: run them as root");
        }
        // Straight to stderr: libtest captures eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: needs root (the network lab creates namespaces) !!!!!!!!\n"
        );
        false
    }

    fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    }

    #[test]
    fn lab_topology_is_built() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("topo").unwrap();
        let c1 = lab.add_container("c1").unwrap();
        let c2 = lab.add_container("c2").unwrap();
        assert_eq!(c1.addr, Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(c2.addr, Ipv4Addr::new(172, 17, 0, 3));
        assert!(c1.host_veth.starts_with("veth") && c1.host_veth.len() <= 15);
        assert_ne!(c1.host_veth, c2.host_veth);
        assert!(lab.add_container("c1").is_err());
        assert!(lab.add_container("bad name").is_err());

        let host = lab.host().clone();
        let fwd = lab.sh(&host, "cat /proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(fwd.trim(), "1");
        let master = lab
            .sh(
                &host,
                &format!("ip -o link show {} master docker0", c1.host_veth),
            )
            .unwrap();
        assert!(master.contains("state UP"), "{master}");
        let addrs = lab.sh(&host, "ip -4 -o addr show").unwrap();
        assert!(addrs.contains("docker0    inet 172.17.0.1/16"), "{addrs}");
        assert!(addrs.contains("eth0    inet 10.77.0.1/24"), "{addrs}");
        let route = lab.sh(&c1.ns, "ip route show default").unwrap();
        assert!(route.contains("via 172.17.0.1 dev eth0"), "{route}");
        let route = lab.sh(lab.client(), "ip route show default").unwrap();
        assert!(route.contains("via 10.77.0.1 dev eth0"), "{route}");

        // Ns::run really runs in the namespace; the host can reach a container over the bridge.
        let ifs = c1.ns.run(|| {
            let s = UdpSocket::bind("172.17.0.2:0");
            s.is_ok()
        });
        assert!(ifs, "172.17.0.2 is not local in c1");
        let cookies = [host.cookie().unwrap(), c1.ns.cookie().unwrap()];
        assert_ne!(cookies[0], cookies[1]);
        let server = tcp_server(&c2.ns, sa(c2.addr, 80), "c2:80").unwrap();
        let reply = tcp_request(&host, sa(c2.addr, 80), "from host", T).unwrap();
        assert!(reply.starts_with("c2:80 from 172.17.0.1:"), "{reply}");
        let reply = tcp_request(&c1.ns, sa(c2.addr, 80), "from c1", T).unwrap();
        assert!(reply.starts_with("c2:80 from 172.17.0.2:"), "{reply}");
        // Port 0 picks a port.
        let any = udp_server(&host, sa(Lab::HOST_ADDR, 0), "any").unwrap();
        assert_ne!(any.local_addr().port(), 0);
        drop(server);
    }

    #[test]
    fn ipv6_is_routed_between_client_and_containers() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("six").unwrap();
        let c1 = lab.add_container("c1").unwrap();
        let c2 = lab.add_container("c2").unwrap();
        let six = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!((c1.addr6, c2.addr6), (six("fd00:17::2"), six("fd00:17::3")));
        let (host, client) = (lab.host().clone(), lab.client().clone());
        let sysctl = |ns: &Ns, key: &str| {
            lab.sh(ns, &format!("cat /proc/sys/net/ipv6/conf/{key}"))
                .unwrap()
        };
        assert_eq!(sysctl(&host, "all/forwarding").trim(), "1");
        assert_eq!(sysctl(&client, "all/forwarding").trim(), "0");
        assert_eq!(sysctl(&c1.ns, "eth0/accept_ra").trim(), "0");
        let addrs = lab.sh(&host, "ip -6 -o addr show scope global").unwrap();
        assert!(addrs.contains("docker0    inet6 fd00:17::1/64"), "{addrs}");
        assert!(addrs.contains("eth0    inet6 fd00:77::1/64"), "{addrs}");
        assert!(!addrs.contains("tentative"), "nodad: {addrs}");

        // Plain routing, no NAT: the container sees the client's own IPv6 address.
        let to = SocketAddr::new(c1.addr6.into(), 3000);
        let server = tcp_server(&c1.ns, to, "c1:3000").unwrap();
        let reply = tcp_request(&client, to, "hello", T).unwrap();
        assert!(reply.starts_with("c1:3000 from [fd00:77::2]:"), "{reply}");
        assert_eq!(server.peers()[0].ip(), Lab::CLIENT_ADDR6);
        let to = SocketAddr::new(c2.addr6.into(), 5353);
        let _udp = udp_server(&c2.ns, to, "c2:5353").unwrap();
        let reply = udp_request(&c1.ns, to, "ping", T).unwrap();
        assert!(reply.starts_with("c2:5353 from [fd00:17::2]:"), "{reply}");
    }

    #[test]
    fn client_reaches_container_over_tcp_without_nat() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("tcp").unwrap();
        let c1 = lab.add_container("c1").unwrap();
        let client = lab.client().clone();
        lab.exec(
            &client,
            &[
                "ip",
                "route",
                "replace",
                "172.17.0.0/16",
                "via",
                "10.77.0.1",
            ],
        )
        .unwrap();
        let server = tcp_server(&c1.ns, sa(c1.addr, 3000), "c1:3000").unwrap();
        let reply = tcp_request(&client, sa(c1.addr, 3000), "hello", T).unwrap();
        let peers = server.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].ip(), Lab::CLIENT_ADDR);
        assert_eq!(
            reply,
            format!("c1:3000 from 10.77.0.2:{}: hello", peers[0].port())
        );

        // A long-lived session: several lines on one connection.
        let mut session = tcp_session(&client, sa(c1.addr, 3000), T).unwrap();
        let port = session.local_addr().port();
        for i in 0..3 {
            let reply = session.request(&format!("line {i}")).unwrap();
            assert_eq!(reply, format!("c1:3000 from 10.77.0.2:{port}: line {i}"));
        }
        // The session's socket can be used from another thread.
        let reply = std::thread::spawn(move || session.request("from a thread"))
            .join()
            .unwrap()
            .unwrap();
        assert!(reply.ends_with(": from a thread"), "{reply}");
        assert_eq!(server.peers().len(), 2);

        // Nothing listens on 3001: refused, and the error says so.
        let err = tcp_request(&client, sa(c1.addr, 3001), "x", T).unwrap_err();
        assert!(format!("{err:#}").contains("refused"), "{err:#}");
    }

    #[test]
    fn client_reaches_container_over_udp_without_nat() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("udp").unwrap();
        let c1 = lab.add_container("c1").unwrap();
        let client = lab.client().clone();
        lab.exec(
            &client,
            &[
                "ip",
                "route",
                "replace",
                "172.17.0.0/16",
                "via",
                "10.77.0.1",
            ],
        )
        .unwrap();
        let server = udp_server(&c1.ns, sa(c1.addr, 3000), "c1:3000/udp").unwrap();
        let reply = udp_request(&client, sa(c1.addr, 3000), "ping", T).unwrap();
        let peers = server.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].ip(), Lab::CLIENT_ADDR);
        assert_eq!(
            reply,
            format!("c1:3000/udp from 10.77.0.2:{}: ping", peers[0].port())
        );

        // No server: a bounded wait and a clear error.
        let err = udp_request(&client, sa(c1.addr, 3001), "x", Duration::from_millis(300));
        assert!(format!("{:#}", err.unwrap_err()).contains("no UDP reply"));

        // A reply from another address than the one asked is an error naming the real source.
        let sock_in = c1.ns.run(|| UdpSocket::bind("172.17.0.2:4000")).unwrap();
        let sock_out = c1.ns.run(|| UdpSocket::bind("172.17.0.2:4001")).unwrap();
        let echo = std::thread::spawn(move || {
            sock_in.set_read_timeout(Some(T)).unwrap();
            let mut buf = [0u8; 100];
            let (n, peer) = sock_in.recv_from(&mut buf).unwrap();
            sock_out.send_to(&buf[..n], peer).unwrap();
        });
        let err = udp_request(&client, sa(c1.addr, 4000), "x", T).unwrap_err();
        echo.join().unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains("172.17.0.2:4001"), "{msg}");
    }

    #[test]
    fn two_labs_coexist() {
        if !have_root() {
            return;
        }
        let mut a = Lab::new("a").unwrap();
        let mut b = Lab::new("b").unwrap();
        assert_ne!(a.prefix(), b.prefix());
        let ca = a.add_container("c1").unwrap();
        let cb = b.add_container("c1").unwrap();
        assert_eq!(ca.addr, cb.addr);
        assert_ne!(ca.ns, cb.ns);
        // Same addresses and ports in both labs, no clash.
        let _sa = tcp_server(&ca.ns, sa(ca.addr, 3000), "lab-a").unwrap();
        let _sb = tcp_server(&cb.ns, sa(cb.addr, 3000), "lab-b").unwrap();
        let _ua = udp_server(a.host(), sa(Lab::HOST_ADDR, 5000), "host-a").unwrap();
        let _ub = udp_server(b.host(), sa(Lab::HOST_ADDR, 5000), "host-b").unwrap();
        let ra = tcp_request(a.client(), sa(ca.addr, 3000), "x", T).unwrap();
        let rb = tcp_request(b.client(), sa(cb.addr, 3000), "x", T).unwrap();
        assert!(ra.starts_with("lab-a from 10.77.0.2:"), "{ra}");
        assert!(rb.starts_with("lab-b from 10.77.0.2:"), "{rb}");
        let ra = udp_request(a.client(), sa(Lab::HOST_ADDR, 5000), "y", T).unwrap();
        let rb = udp_request(b.client(), sa(Lab::HOST_ADDR, 5000), "y", T).unwrap();
        assert!(ra.starts_with("host-a from 10.77.0.2:"), "{ra}");
        assert!(rb.starts_with("host-b from 10.77.0.2:"), "{rb}");
    }

    #[test]
    fn drop_deletes_namespaces() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("drop").unwrap();
        lab.add_container("c1").unwrap();
        let names: Vec<String> = lab.namespaces().iter().map(|n| n.name.clone()).collect();
        assert_eq!(names.len(), 3);
        let listed = || {
            let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let before = listed();
        for n in &names {
            assert!(before.contains(n.as_str()), "{n} not in {before}");
        }
        drop(lab);
        let after = listed();
        for n in &names {
            assert!(!after.contains(n.as_str()), "{n} still in {after}");
        }
    }

    #[test]
    fn spawned_processes_are_killed_at_drop() {
        if !have_root() {
            return;
        }
        let mut lab = Lab::new("spawn").unwrap();
        let c1 = lab.add_container("c1").unwrap();
        let host = lab.host().clone();
        let sleeper = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
        // A grandchild, not known to the lab, dies too (it is inside a lab namespace).
        let out = lab
            .sh(&c1.ns, "sleep 100 >/dev/null 2>&1 </dev/null & echo $!")
            .unwrap();
        let grandchild: u32 = out.trim().parse().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{sleeper}")).exists());
        assert!(std::path::Path::new(&format!("/proc/{grandchild}")).exists());

        // Spawned processes see the namespace (including its own /sys) and keep their stdio.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ls /sys/class/net; ip -4 -o addr show dev eth0"])
            .stdout(Stdio::piped());
        let pid = lab.spawn(&c1.ns, &mut cmd).unwrap();
        let out = lab.take_child(pid).unwrap().wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("eth0") && out.contains("172.17.0.2/16"),
            "{out}"
        );
        assert!(!out.contains("docker0"), "{out}");

        // Early kill, and restart.
        let early = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
        let status = lab.kill(early).unwrap();
        assert!(!status.success());
        let late = lab.spawn(&host, Command::new("sleep").arg("100")).unwrap();
        assert!(lab.children().contains(&late));

        drop(lab);
        // Our children are reaped at drop; the orphaned grandchild is reaped by init, a bit later.
        let dead = |pid: u32| match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        };
        for pid in [sleeper, late] {
            assert!(dead(pid), "pid {pid} survived the lab");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !dead(grandchild) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(grandchild), "pid {grandchild} survived the lab");
    }

    #[test]
    fn exec_reports_failures() {
        if !have_root() {
            return;
        }
        let lab = Lab::new("exec").unwrap();
        let err = lab.sh(lab.host(), "echo oops >&2; exit 3").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("oops") && msg.contains('3'), "{msg}");
        let err = lab
            .exec_timeout(lab.host(), &["sleep", "5"], Duration::from_millis(200))
            .unwrap_err();
        assert!(format!("{err:#}").contains("timed out"), "{err:#}");
        assert_eq!(lab.sh(lab.client(), "echo hi").unwrap(), "hi\n");
    }

    #[test]
    fn stale_names_are_parsed() {
        assert_eq!(lab_owner_pid("pf123x0-e2e-host"), Some(123));
        assert_eq!(lab_owner_pid("pf123x17-client"), Some(123));
        assert_eq!(lab_owner_pid("pfx0-host"), None);
        assert_eq!(lab_owner_pid("pf12-host"), None);
        assert_eq!(lab_owner_pid("other"), None);
    }
}
