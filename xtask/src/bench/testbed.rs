//! One fresh lab per measurement, set up for one system and one case.
//!
//! A fresh lab (namespaces, veths, bridge, conntrack table) for every run of every case keeps the
//! runs independent: lab.md records TCP connection rates falling from 24k/s to 0.4k/s after
//! conntrack entries of one system clashed with the next one's.
//!
//! ```text
//! client ns (trafgen, iperf3 -c,        host ns (the system under test)        container ns c1
//!  TCP clients)                          eth0 10.77.0.1, docker0 172.17.0.1     eth0 172.17.0.2
//!  eth0 10.77.0.2 ------------------->   10.78.0.0/16 via 10.77.0.2 ------->    UDP: dropped at tc
//!  sends to 10.77.0.1:8080               (sources of the unique flows)           ingress, counted
//!  (routing: to 172.17.0.2:PORT)                                                TCP: iperf3 -s,
//!                                                                               line-echo server
//! ```

use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use portfwd_lab::{Container, Lab, Ns, TcpServer, tcp_server};

use super::netfilter;
use super::plan::{Case, Forward, Generator, Proto, System};
use super::portfwd::Daemon;
use super::probe;

/// The host port every system publishes (the measured forward).
pub const PUBLISHED_PORT: u16 = 8080;
/// The host ports of the other forwards in the scaling cases: 10000, 10001, ...
pub const FIRST_EXTRA_PORT: u16 = 10_000;
/// UDP target port in the container (discard); UDP is dropped at the container's ingress anyway.
pub const UDP_SINK_PORT: u16 = 9;
/// iperf3's port in the container.
pub const IPERF_PORT: u16 = 5201;
/// The line-echo server's port in the container.
pub const ECHO_PORT: u16 = 3000;
/// Source network of the unique UDP flows: the host routes it back to the client, so replies and
/// reverse-path checks behave as for real clients behind a router.
pub const UNIQUE_SRC_NET: &str = "10.78.0.0/16";
/// Docker's default bridge network.
const SUBNET: &str = "172.17.0.0/16";
/// Upper bound for the servers the testbed starts (the lab kills them much earlier, at drop).
const SERVER_LIFETIME_SECS: &str = "600";

/// Classic BPF for a `cls_bpf` filter in direct-action mode (tc's `bytecode` syntax): IPv4 UDP
/// frames get TC_ACT_SHOT (2), everything else TC_ACT_UNSPEC (-1). At the container's ingress it
/// drops the measured UDP load before the container's stack (which would answer every datagram
/// with an ICMP port unreachable) while ARP still gets through. No compiler needed: this kernel
/// has no matchall classifier and no gact action, but cls_bpf runs classic BPF.
///   ldh [12]; jeq #0x800 ? next : +3; ldb [23]; jeq #17 ? next : +1; ret #2; ret #-1
pub const DROP_UDP_CBPF: &str =
    "6,40 0 0 12,21 0 3 2048,48 0 0 23,21 0 1 17,6 0 0 2,6 0 0 4294967295";
/// Classic BPF dropping every frame (ret #TC_ACT_SHOT): the ceiling's host ingress.
pub const DROP_ALL_CBPF: &str = "1,6 0 0 2";

/// What every testbed needs to know.
#[derive(Debug)]
pub struct Env {
    /// The portfwd binary.
    pub portfwd: PathBuf,
    /// Whether the daemon has `--mode xdp`; `Err` says why not.
    pub xdp: Result<(), String>,
    /// Where config files and logs go (one subdirectory per lab).
    pub workdir: PathBuf,
    /// What sends the UDP load.
    pub generator: Generator,
    /// `--max-flows`: the daemon's flow tables' size (its default when `None`).
    pub max_flows: Option<u64>,
}

/// A lab set up for one system and one case.
pub struct Testbed {
    // Dropped first: the echo server's threads stop before the lab goes away.
    echo: Option<TcpServer>,
    pub daemon: Option<Daemon>,
    pub lab: Lab,
    pub container: Container,
    /// The other backends of a pool (`c2`, `c3`, …; see `pools.rs`), empty otherwise: their
    /// `eth0` counts delivered UDP packets too.
    pub others: Vec<Container>,
    /// Where the client sends: the published port on the host, or the container for `routing`.
    pub dst: SocketAddrV4,
    pub generator: Generator,
    system: System,
    /// `SYSTEM-CASE`, naming the run's profiles (`--profile`).
    label: String,
    dir: PathBuf,
}

impl Testbed {
    pub fn build(env: &Env, system: System, case: Case) -> Result<Testbed> {
        let mut lab = Lab::new("bench")?;
        let container = lab.add_container("c1")?;
        let dir = env.workdir.join(lab.prefix());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tb = Testbed {
            echo: None,
            daemon: None,
            lab,
            dst: SocketAddrV4::new(Lab::HOST_ADDR, PUBLISHED_PORT),
            container,
            others: Vec::new(),
            generator: env.generator.clone(),
            system,
            label: format!("{}-{}", system.name(), case.name()),
            dir,
        };
        tb.setup(env, case)
            .with_context(|| format!("setting up {system} for {}", case.name()))?;
        Ok(tb)
    }

    fn setup(&mut self, env: &Env, case: Case) -> Result<()> {
        let host = self.lab.host().clone();
        let client = self.lab.client().clone();
        let cns = self.container.ns.clone();
        let caddr = self.container.addr;
        sh(
            &self.lab,
            &host,
            &format!("ip route add {UNIQUE_SRC_NET} via {}", Lab::CLIENT_ADDR),
        )?;

        // The container's side of the case.
        let (proto, target_port) = match case {
            Case::Udp { .. } => {
                tc_cbpf(&self.lab, &cns, Lab::ETH, DROP_UDP_CBPF)?;
                self.prepare_generator()?;
                (Proto::Udp, UDP_SINK_PORT)
            }
            Case::TcpStream => {
                let mut cmd = Command::new("timeout");
                cmd.args(["-s", "KILL", SERVER_LIFETIME_SECS, "iperf3", "-s"])
                    .args(["-p", &IPERF_PORT.to_string(), "-B", &caddr.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                self.lab.spawn(&cns, &mut cmd)?;
                probe::wait_tcp_listening(&cns, IPERF_PORT, Duration::from_secs(10))?;
                (Proto::Tcp, IPERF_PORT)
            }
            Case::TcpRr | Case::TcpCrr => {
                let bind = SocketAddr::V4(SocketAddrV4::new(caddr, ECHO_PORT));
                self.echo = Some(tcp_server(&cns, bind, "c1")?);
                (Proto::Tcp, ECHO_PORT)
            }
        };
        if proto == Proto::Tcp {
            // Tens of thousands of connections per run from one address: use every port, and
            // reuse TIME_WAIT ones (per namespace settings, in our namespaces only).
            for ns in [&client, &host] {
                sh(
                    &self.lab,
                    ns,
                    "sysctl -qw net.ipv4.ip_local_port_range='1024 65535' \
                     net.ipv4.tcp_tw_reuse=1",
                )?;
            }
        }

        let target = SocketAddrV4::new(caddr, target_port);
        let n = match case {
            Case::Udp { forwards, .. } => forwards.max(1),
            _ => 1,
        };
        let forwards: Vec<Forward> = (0..n - 1)
            .map(|i| Forward {
                port: FIRST_EXTRA_PORT + u16::try_from(i).expect("fewer than 55,000 forwards"),
                proto,
                to: target,
            })
            .chain([Forward {
                port: PUBLISHED_PORT,
                proto,
                to: target,
            }])
            .collect();

        match self.system {
            System::PortfwdTc | System::PortfwdXdp => {
                let mode = match (self.system, &env.xdp) {
                    (System::PortfwdXdp, _) => Some("xdp"),
                    // When the daemon has modes, do not let `auto` choose for the tc figures.
                    (_, Ok(())) => Some("tc"),
                    (_, Err(_)) => None,
                };
                let daemon = Daemon::start(
                    &mut self.lab,
                    &env.portfwd,
                    &self.dir,
                    &forwards,
                    env.max_flows,
                    mode,
                )?;
                self.daemon = Some(daemon);
            }
            System::Iptables => {
                let rules = netfilter::iptables_restore(Lab::BRIDGE, SUBNET, &forwards);
                let file = self.write("iptables.rules", &rules)?;
                exec(&self.lab, &host, &["iptables-restore", &file])?;
            }
            System::Nftables => {
                let rules = netfilter::nft_ruleset(Lab::BRIDGE, SUBNET, &forwards);
                let file = self.write("ruleset.nft", &rules)?;
                exec(&self.lab, &host, &["nft", "-f", &file])?;
            }
            System::Routing => self.dst = target,
            System::Proxy => {
                let mut cmd = Command::new("timeout");
                cmd.args(["-s", "KILL", SERVER_LIFETIME_SECS, "socat"])
                    .arg(format!("TCP-LISTEN:{PUBLISHED_PORT},fork,reuseaddr"))
                    .arg(format!("TCP:{target}"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                self.lab.spawn(&host, &mut cmd)?;
                probe::wait_tcp_listening(&host, PUBLISHED_PORT, Duration::from_secs(10))?;
            }
            System::Ceiling => tc_cbpf(&self.lab, &host, Lab::ETH, DROP_ALL_CBPF)?,
        }
        // A fresh namespace has an empty conntrack table already; flushing says so explicitly
        // (it fails harmlessly where nothing has loaded conntrack yet).
        let _ = self.lab.exec(&host, &["conntrack", "-F"]);
        Ok(())
    }

    /// With the XDP generator: frames sent by XDP into a veth need a NAPI instance on the
    /// receiving side (GRO on gives it one; without, they are dropped silently), and a receive
    /// queue per CPU lets each sending CPU's frames be polled on that CPU.
    pub fn prepare_generator(&self) -> Result<()> {
        if let Generator::Xdp { .. } = self.generator {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            sh(
                &self.lab,
                self.lab.host(),
                &format!(
                    "ethtool -L {eth} rx {cpus} tx {cpus} && ethtool -K {eth} gro on",
                    eth = Lab::ETH
                ),
            )?;
        }
        Ok(())
    }

    fn write(&self, name: &str, text: &str) -> Result<String> {
        let path = self.dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// Where delivered UDP packets are counted: the containers' `eth0` (its `rx_packets` counts
    /// every frame handed to it, before the tc drop), or the host's `eth0` for the ceiling.
    pub fn sinks(&self) -> Vec<(&Ns, &'static str)> {
        if self.system == System::Ceiling {
            vec![(self.lab.host(), Lab::ETH)]
        } else {
            std::iter::once(&self.container)
                .chain(&self.others)
                .map(|c| (&c.ns, Lab::ETH))
                .collect()
        }
    }

    /// The packets delivered so far: `rx_packets` summed over [`Testbed::sinks`].
    pub fn delivered(&self) -> Result<u64> {
        self.sinks()
            .into_iter()
            .map(|(ns, iface)| probe::rx_packets(ns, iface))
            .sum()
    }

    /// A lab of `backends` containers (`c1`, `c2`, …) with the unique flows' route, for the
    /// pool scenarios (`pools.rs`), which set up the containers and the daemon themselves.
    pub fn for_pool(env: &Env, backends: usize) -> Result<Testbed> {
        let mut lab = Lab::new("benchpool")?;
        let mut containers = Vec::with_capacity(backends);
        for i in 1..=backends.max(1) {
            containers.push(lab.add_container(&format!("c{i}"))?);
        }
        let container = containers.remove(0);
        let dir = env.workdir.join(lab.prefix());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        sh(
            &lab,
            lab.host(),
            &format!("ip route add {UNIQUE_SRC_NET} via {}", Lab::CLIENT_ADDR),
        )?;
        Ok(Testbed {
            echo: None,
            daemon: None,
            lab,
            dst: SocketAddrV4::new(Lab::HOST_ADDR, PUBLISHED_PORT),
            container,
            others: containers,
            generator: env.generator.clone(),
            system: System::PortfwdTc,
            label: "portfwd-tc-pool".into(),
            dir,
        })
    }

    /// Every backend container, `c1` first.
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        std::iter::once(&self.container).chain(&self.others)
    }

    /// Sets a container up as a UDP sink (see [`DROP_UDP_CBPF`]), and with the XDP generator
    /// gives the host's `eth0` a NAPI instance and a queue per CPU (see `setup`).
    pub fn udp_sink(&self, ns: &Ns) -> Result<()> {
        tc_cbpf(&self.lab, ns, Lab::ETH, DROP_UDP_CBPF)
    }

    /// The MAC address of `eth0` in `ns`.
    pub fn mac(&self, ns: &Ns) -> Result<[u8; 6]> {
        self.lab.mac(ns, Lab::ETH)
    }

    /// `SYSTEM-CASE`, what the run measures.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// The testbed's directory (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops a load started in the client namespace with [`Lab::spawn`] (`pid`, a `timeout`
    /// wrapper), then SIGKILLs, by pid, whatever is left in the client namespace: trafgen's
    /// worker processes outlive the wrapper.
    pub fn stop_load(&mut self, pid: u32) {
        let _ = self.lab.kill(pid);
        let client = self.lab.client().name.clone();
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &client]).output() {
            let me = std::process::id().to_string();
            let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter(|p| *p != me)
                .map(str::to_string)
                .collect();
            if !pids.is_empty() {
                let _ = Command::new("kill").arg("-KILL").args(&pids).status();
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Adds a clsact qdisc and a classic-BPF direct-action filter at `iface`'s ingress in `ns`.
fn tc_cbpf(lab: &Lab, ns: &Ns, iface: &str, bytecode: &str) -> Result<()> {
    exec(lab, ns, &["tc", "qdisc", "add", "dev", iface, "clsact"])?;
    exec(
        lab,
        ns,
        &[
            "tc", "filter", "add", "dev", iface, "ingress", "bpf", "da", "bytecode", bytecode,
        ],
    )
}

fn exec(lab: &Lab, ns: &Ns, args: &[&str]) -> Result<()> {
    lab.exec(ns, args).map(drop)
}

fn sh(lab: &Lab, ns: &Ns, script: &str) -> Result<String> {
    lab.sh(ns, script)
}
