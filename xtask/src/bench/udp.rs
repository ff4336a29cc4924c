//! The UDP load: 64-byte frames from the client namespace to the published port, and what
//! reaches the container.
//!
//! Two generators, both sending out of the client's veth with the frames addressed to the host:
//! - `xdp` (the default): `portfwd-pktgen` (`bench/pktgen`), an XDP program run by the kernel in
//!   BPF_PROG_TEST_RUN's live-frames mode, one thread per CPU. The frames reach the host's veth
//!   through its NAPI poll as single linear buffers, the way a NIC driver hands them over; the
//!   bench turns GRO on (which gives the veth a NAPI instance) and gives it a receive queue per CPU.
//! - `trafgen`: an AF_PACKET TX ring, one process per CPU. The kernel copies every ring frame
//!   into fresh pages when it crosses the veth (`skb_copy_ubufs`), which makes the generator
//!   the larger part of the cost per packet and compresses every ratio between systems.
//!
//! Either way each frame crosses the host in the softirq of the sending CPU, so packets per second
//! measure the whole path's cost per packet: generator, host (the system under test), container.
//!
//! A run: start the generator (bounded by a packet count and `timeout -s KILL`), wait for the
//! first packet at the sink, let it warm up, then read the sink's `rx_packets` and `/proc/stat`
//! at both ends of the window; stop the generator; for portfwd, read its verdict counters.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use portfwd_lab::Lab;

use super::plan::{Flows, Generator, Settings};
use super::testbed::Testbed;
use super::{probe, profile};

/// Frame length without the FCS: 64 bytes on the wire.
pub const FRAME_LEN: usize = 60;
/// Source port of the one-flow load.
const ONE_FLOW_SPORT: u16 = 40_000;
/// More than the lab can deliver in a second (the ceiling measured about 3.5 Mpps): with the
/// run's length it bounds the packets sent.
const MAX_PPS: u64 = 6_000_000;
/// How long the first packet may take to reach the sink.
const FIRST_PACKET_TIMEOUT: Duration = Duration::from_secs(5);

/// The unique flows' source network, as the pktgen generator takes it (any address in the /16).
const UNIQUE_SRC: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);

/// What one UDP run measured.
#[derive(Debug, Clone)]
pub struct UdpSample {
    /// Packets delivered to the sink per second, in millions.
    pub mpps: f64,
    /// Kernel CPU time (system + irq + softirq, all CPUs) per delivered packet, in nanoseconds.
    pub cpu_ns_per_packet: f64,
    /// Packets delivered from the start of the load to its end.
    pub delivered: u64,
    /// Packets delivered during the measurement window.
    pub in_window: u64,
    /// portfwd's counters at the end: `forwarded`, and every other non-zero one.
    pub verdicts: Option<Vec<(String, u64)>>,
}

impl UdpSample {
    /// Whether the load stalled: the window, most of the run's time after the first packet,
    /// saw less than a quarter of the packets delivered (they came in a burst before or after).
    pub fn stalled(&self) -> bool {
        self.in_window * 4 < self.delivered
    }
}

/// The trafgen packet config: Ethernet `dmac` <- `smac`, IPv4, UDP to `dst`, 18 bytes of zeros
/// (60 bytes). One flow: from the client's address and port 40000. Unique: random source address
/// in 10.78.0.0/16 and random source port, drawn for every packet. Checksums are computed by
/// trafgen (`csumip`, `csumudp`), per packet when a field is random.
pub fn trafgen_config(dmac: [u8; 6], smac: [u8; 6], flows: Flows, dst: SocketAddrV4) -> String {
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("0x{x:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let [d0, d1, d2, d3] = dst.ip().octets();
    let (src_addr, src_port) = match flows {
        Flows::One => {
            let [s0, s1, s2, s3] = Lab::CLIENT_ADDR.octets();
            (
                format!("{s0}, {s1}, {s2}, {s3}"),
                format!("const16({ONE_FLOW_SPORT})"),
            )
        }
        Flows::Unique => ("10, 78, drnd(), drnd()".into(), "drnd(), drnd()".into()),
    };
    let payload = FRAME_LEN - 14 - 20 - 8;
    let mut s = String::from("/* written by `cargo xtask bench` */\n{\n");
    let _ = writeln!(
        s,
        "  /* Ethernet */ {}, {}, 0x08, 0x00,",
        hex(&dmac),
        hex(&smac)
    );
    let _ = writeln!(
        s,
        "  /* IPv4, DF, TTL 64, UDP */ 0x45, 0x00, const16({}), const16(0), 0x40, 0x00, 64, 17, \
         csumip(14, 33),",
        FRAME_LEN - 14
    );
    let _ = writeln!(s, "  /* source */ {src_addr},");
    let _ = writeln!(s, "  /* destination */ {d0}, {d1}, {d2}, {d3},");
    let _ = writeln!(
        s,
        "  /* UDP */ {src_port}, const16({}), const16({}), csumudp(14, 34),",
        dst.port(),
        FRAME_LEN - 14 - 20
    );
    let _ = writeln!(s, "  fill(0x00, {payload})\n}}");
    s
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// One UDP run on a testbed that is set up (and is dropped by the caller afterwards).
pub fn run(tb: &mut Testbed, flows: Flows, settings: &Settings) -> Result<UdpSample> {
    let client = tb.lab.client().clone();
    let host = tb.lab.host().clone();
    let dmac = tb.mac(&host)?;
    let smac = tb.mac(&client)?;

    let start_count = tb.delivered()?;

    // Bounds: the whole run at most `limit`, and never more than MAX_PPS for that long.
    let limit =
        FIRST_PACKET_TIMEOUT + settings.udp_warmup + settings.udp_window + Duration::from_secs(2);
    let count = MAX_PPS * limit.as_secs().max(1);
    let secs = limit.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &secs]);
    match &tb.generator {
        Generator::Xdp { pktgen } => {
            let (src, sport) = match flows {
                Flows::One => (Lab::CLIENT_ADDR, ONE_FLOW_SPORT),
                Flows::Unique => (UNIQUE_SRC, 0),
            };
            cmd.arg(pktgen)
                .args(["--dev", Lab::ETH, "--dst-mac", &mac_text(dmac)])
                .args(["--src-mac", &mac_text(smac), "--src", &src.to_string()])
                .args(["--sport", &sport.to_string(), "--dst", &tb.dst.to_string()])
                .args(["--seconds", &secs, "--count", &count.to_string()]);
            if flows == Flows::Unique {
                cmd.arg("--unique");
            }
        }
        Generator::Trafgen => {
            let config = trafgen_config(dmac, smac, flows, tb.dst);
            let cfg_path = tb.dir().join("trafgen.cfg");
            std::fs::write(&cfg_path, config)
                .with_context(|| format!("writing {}", cfg_path.display()))?;
            cmd.args(["trafgen", "--dev", Lab::ETH, "--conf"])
                .arg(&cfg_path)
                .args(["--num", &count.to_string()]);
        }
    }
    let log_path = tb.dir().join("generator.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    cmd.stdout(Stdio::null()).stderr(log);
    let pid = tb.lab.spawn(&client, &mut cmd)?;
    let result = measure(tb, start_count, settings);
    tb.stop_load(pid);
    let (mpps, cpu_ns_per_packet) =
        result.map_err(|e| match std::fs::read_to_string(&log_path) {
            Ok(log) if !log.trim().is_empty() => {
                e.context(format!("the generator said: {}", log.trim()))
            }
            _ => e,
        })?;
    let in_window = (mpps * 1e6 * settings.udp_window.as_secs_f64()).round() as u64;

    // Let the last frames drain, then count them all.
    std::thread::sleep(Duration::from_millis(100));
    let delivered = tb.delivered()? - start_count;
    let verdicts = match &tb.daemon {
        Some(daemon) => {
            let all = daemon.verdicts()?;
            let forwarded = all.get("forwarded").copied().unwrap_or(0);
            if forwarded == 0 {
                bail!(
                    "portfwd forwarded nothing ({delivered} packets reached the container some \
                     other way): verdicts {all:?}"
                );
            }
            let mut list = vec![("forwarded".to_string(), forwarded)];
            list.extend(all.into_iter().filter(|(k, v)| *v > 0 && k != "forwarded"));
            Some(list)
        }
        None => None,
    };
    Ok(UdpSample {
        mpps,
        cpu_ns_per_packet,
        delivered,
        in_window,
        verdicts,
    })
}

/// Waits for the load to arrive, warms up, and measures one window: (Mpps, kernel ns/packet).
fn measure(tb: &Testbed, start_count: u64, settings: &Settings) -> Result<(f64, f64)> {
    let sink = sink_names(tb);
    let deadline = Instant::now() + FIRST_PACKET_TIMEOUT;
    while tb.delivered()? == start_count {
        if Instant::now() > deadline {
            let hint = tb
                .daemon
                .as_ref()
                .and_then(|d| d.verdicts().ok())
                .map(|v| format!("; portfwd verdicts {v:?}"))
                .unwrap_or_default();
            bail!(
                "no packet reached {sink} within {FIRST_PACKET_TIMEOUT:?} of starting the \
                 generator{hint}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settings.udp_warmup);
    let (c0, s0, t0) = sample(tb)?;
    match &settings.profile {
        Some(dir) => profile::window(dir, &tb.label(), settings.udp_window)?,
        None => std::thread::sleep(settings.udp_window),
    }
    let (c1, s1, t1) = sample(tb)?;
    let packets = c1.saturating_sub(c0);
    if packets == 0 {
        bail!("no packet reached {sink} during the window");
    }
    let secs = (t1 - t0).as_secs_f64();
    let kernel = probe::TICK.as_secs_f64() * (s1.kernel - s0.kernel) as f64;
    Ok((packets as f64 / secs / 1e6, kernel * 1e9 / packets as f64))
}

/// `IFACE in NS` for each sink, for error messages.
fn sink_names(tb: &Testbed) -> String {
    tb.sinks()
        .iter()
        .map(|(ns, iface)| format!("{iface} in {ns}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sinks' counter, the CPU ticks and the time, read as close together as possible.
fn sample(tb: &Testbed) -> Result<(u64, probe::CpuTicks, Instant)> {
    let before = Instant::now();
    let count = tb.delivered()?;
    let ticks = probe::cpu_ticks()?;
    let after = Instant::now();
    Ok((count, ticks, before + (after - before) / 2))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_run_whose_packets_missed_the_window_is_stalled() {
        let sample = |in_window, delivered| UdpSample {
            mpps: 0.0,
            cpu_ns_per_packet: 0.0,
            delivered,
            in_window,
            verdicts: None,
        };
        assert!(!sample(800, 1000).stalled());
        assert!(!sample(250, 1000).stalled());
        assert!(sample(249, 1000).stalled());
        assert!(sample(0, 14_708).stalled());
    }

    #[test]
    fn trafgen_frame_is_60_bytes() {
        let cfg = trafgen_config(
            [0x36, 0x67, 0x20, 0x20, 0x2b, 0xc0],
            [2, 0, 0, 0, 0, 1],
            Flows::Unique,
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 8080),
        );
        assert!(
            cfg.contains("0x36, 0x67, 0x20, 0x20, 0x2b, 0xc0, 0x02, 0x00"),
            "{cfg}"
        );
        assert!(cfg.contains("10, 78, drnd(), drnd(),"), "{cfg}");
        assert!(cfg.contains("drnd(), drnd(), const16(8080), const16(26), csumudp(14, 34)"));
        assert!(cfg.contains("const16(46)"));
        // 14 + 20 + 8 header bytes and the fill.
        assert!(cfg.contains("fill(0x00, 18)"));
        let one = trafgen_config(
            [0; 6],
            [0; 6],
            Flows::One,
            SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 9),
        );
        assert!(one.contains("10, 77, 0, 2,"), "{one}");
        assert!(one.contains("const16(40000), const16(9)"), "{one}");
    }
}
