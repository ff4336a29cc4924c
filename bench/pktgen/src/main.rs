//! The packet generator of `cargo xtask bench`: 64-byte UDP frames out of a veth, sent by the
//! kernel itself (XDP live frames, see `bench/pktgen-ebpf/src/main.rs`).
//!
//! ```text
//! pktgen --dev eth0 --dst-mac 02:.. --src-mac 02:.. --src 10.77.0.2 --dst 10.77.0.1:8080 \
//!        [--unique] --seconds 8 --count 40000000
//! ```
//!
//! Runs in the namespace of `--dev` (the bench starts it with `ip netns exec`), one thread per
//! CPU, each pinned to its CPU. It stops after `--seconds` or once `--count` frames are sent,
//! whichever comes first, and prints the number of frames sent. With `--unique` every frame has a
//! random source address in the /16 of `--src` and a random source port.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use clap::Parser;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd-pktgen"));

/// Frame length without the FCS: 64 bytes on the wire.
const FRAME_LEN: usize = 60;
/// Ethernet, IPv4 and UDP headers: what the program writes into every frame.
const HEADERS_LEN: usize = 42;
/// Frames per BPF_PROG_TEST_RUN call: about a tenth of a second at the rates seen here, so the
/// time limit is checked often.
const REPEAT: u32 = 100_000;
/// Frames the kernel transmits per batch (the kernel's default and maximum is 64 and 256).
const BATCH: u32 = 64;

#[derive(Parser)]
struct Args {
    /// The device to send out of (in this process's namespace).
    #[arg(long)]
    dev: String,
    #[arg(long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    #[arg(long, value_parser = parse_mac)]
    src_mac: [u8; 6],
    /// Source address (with --unique, its /16 is used).
    #[arg(long)]
    src: Ipv4Addr,
    /// Source port of the one flow.
    #[arg(long, default_value_t = 40_000)]
    sport: u16,
    #[arg(long)]
    dst: SocketAddrV4,
    /// A random source address and port for every frame.
    #[arg(long)]
    unique: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: u64,
    /// Stop after about this many frames (checked every 100,000 frames per CPU).
    #[arg(long)]
    count: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let frame = template(&args);
    let mut ebpf = load(&frame, args.unique)?;
    let prog: &Xdp = program(&mut ebpf)?;

    let ifindex = ifindex(&args.dev)?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let sent = AtomicU64::new(0);
    let per_cpu = args.count.div_ceil(cpus as u64);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..cpus)
            .map(|cpu| {
                let (frame, ctx, sent) = (&frame, &ctx, &sent);
                s.spawn(move || -> Result<()> {
                    pin_to(cpu)?;
                    let mut mine = 0u64;
                    while mine < per_cpu && Instant::now() < deadline {
                        let opts = TestRunOptions {
                            data_in: Some(frame),
                            ctx_in: Some(ctx),
                            repeat: REPEAT,
                            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                            ..TestRunOptions::new()
                        };
                        prog.test_run(opts)
                            .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                        mine += u64::from(REPEAT);
                        sent.fetch_add(u64::from(REPEAT), Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok(())
    })?;
    println!("{}", sent.load(Ordering::Relaxed));
    Ok(())
}

/// Loads and verifies the generator, which writes `frame`'s headers into every frame (and with
/// `unique`, fills in the source fields and fixes the checksums, see [`template`]).
fn load(frame: &[u8; FRAME_LEN], unique: bool) -> Result<aya::Ebpf> {
    // The header template, in frame order: the first HEADERS_LEN bytes of the frame, then zeros.
    let mut bytes = [0u8; 48];
    bytes[..HEADERS_LEN].copy_from_slice(&frame[..HEADERS_LEN]);
    let mut headers = [0u64; 6];
    for (word, chunk) in headers.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunks"));
    }
    let unique = u32::from(unique);
    let mut ebpf = EbpfLoader::new()
        .override_global("UNIQUE", &unique, true)
        .override_global("HEADERS", &headers, true)
        .load(OBJECT)
        .context("loading the generator program")?;
    let prog: &mut Xdp = ebpf
        .program_mut("portfwd_pktgen")
        .context("no generator program in the object")?
        .try_into()?;
    prog.load().context("verifying the generator program")?;
    Ok(ebpf)
}

fn program(ebpf: &mut aya::Ebpf) -> Result<&Xdp> {
    let prog: &Xdp = ebpf
        .program("portfwd_pktgen")
        .context("no generator program in the object")?
        .try_into()?;
    Ok(prog)
}

/// The frame the program starts from. With `--unique` the fields it fills in (the last two bytes
/// of the source address, the source port) are zero, so that the checksums are its bases.
fn template(a: &Args) -> [u8; FRAME_LEN] {
    if a.unique {
        let [s0, s1, ..] = a.src.octets();
        build_frame(a, Ipv4Addr::new(s0, s1, 0, 0), 0)
    } else {
        build_frame(a, a.src, a.sport)
    }
}

/// Ethernet, IPv4 (DF, TTL 64), UDP from `src:sport` to `--dst`, zero payload: 60 bytes, with
/// both checksums (etherparse computes them).
fn build_frame(a: &Args, src: Ipv4Addr, sport: u16) -> [u8; FRAME_LEN] {
    let builder = etherparse::PacketBuilder::ethernet2(a.src_mac, a.dst_mac)
        .ipv4(src.octets(), a.dst.ip().octets(), 64)
        .udp(sport, a.dst.port());
    let mut frame = [0u8; FRAME_LEN];
    builder
        .write(&mut &mut frame[..], &[0u8; FRAME_LEN - HEADERS_LEN])
        .expect("a 60-byte frame fits");
    frame
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    portfwd_lab::parse_mac(s).with_context(|| format!("not a MAC address: {s}"))
}

fn ifindex(dev: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(dev).with_context(|| format!("no device {dev}"))
}

fn pin_to(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("no CPU {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to CPU {cpu}"))
}

/// The program run once per frame with BPF_PROG_TEST_RUN in its ordinary mode, which returns the
/// frame as the program left it: the same kernel and program as the bench, without sending.
#[cfg(test)]
mod tests {
    use super::*;

    fn args(unique: bool) -> Args {
        Args::parse_from(
            [
                "pktgen",
                "--dev",
                "eth0",
                "--dst-mac",
                "02:00:00:00:00:01",
                "--src-mac",
                "02:00:00:00:00:02",
                "--src",
                "10.78.0.1",
                "--dst",
                "10.77.0.1:8080",
                "--seconds",
                "1",
                "--count",
                "1",
            ]
            .into_iter()
            .chain(unique.then_some("--unique")),
        )
    }

    fn root() -> bool {
        if portfwd_lab::is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the generator tests load eBPF and need root; under CI=true they must run"
        );
        eprintln!("SKIPPED: the generator tests load eBPF and need root");
        false
    }

    /// Runs the program on `input`; returns its action and the frame it left.
    fn run(ebpf: &mut aya::Ebpf, input: &[u8; FRAME_LEN]) -> (u32, [u8; FRAME_LEN]) {
        let mut out = [0u8; FRAME_LEN];
        let result = program(ebpf)
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .unwrap();
        (result.return_value, out)
    }

    const XDP_TX: u32 = 3;

    /// Both checksums of `f` as etherparse computes them equal the ones in the frame.
    fn checksums_hold(f: &[u8; FRAME_LEN]) -> bool {
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap();
        let (udp, payload) = etherparse::UdpHeader::from_slice(rest).unwrap();
        ip.header_checksum == ip.calc_header_checksum()
            && udp.checksum == udp.calc_checksum_ipv4(&ip, payload).unwrap()
    }

    #[test]
    fn checksums_are_checked() {
        let mut frame = template(&args(false));
        assert!(checksums_hold(&frame));
        frame[30] ^= 1;
        assert!(!checksums_hold(&frame));
    }

    /// What the frame crossed may have rewritten it (NAT, TTL, MACs) before its page came back:
    /// the program restores every header byte.
    #[test]
    fn one_flow_frames_are_restored_whatever_they_were() {
        if !root() {
            return;
        }
        let frame = template(&args(false));
        let mut ebpf = load(&frame, false).unwrap();
        let mut rewritten = frame;
        rewritten[..HEADERS_LEN].iter_mut().for_each(|b| *b = !*b);
        for input in [frame, rewritten] {
            let (action, out) = run(&mut ebpf, &input);
            assert_eq!(action, XDP_TX);
            assert_eq!(out, frame);
        }
    }

    #[test]
    fn unique_frames_vary_source_and_keep_checksums_valid() {
        if !root() {
            return;
        }
        let frame = template(&args(true));
        let mut ebpf = load(&frame, true).unwrap();
        let mut sources = std::collections::HashSet::new();
        for _ in 0..200 {
            let (action, out) = run(&mut ebpf, &frame);
            assert_eq!(action, XDP_TX);
            assert!(checksums_hold(&out), "bad checksum in {out:02x?}");
            let sport = u16::from_be_bytes([out[34], out[35]]);
            assert!(sport >= 1024, "source port {sport}");
            assert_eq!(out[..24], frame[..24], "MACs or IP header changed");
            assert_eq!(out[26..28], frame[26..28], "source /16 changed");
            assert_eq!(out[30..34], frame[30..34], "destination changed");
            assert_eq!(
                out[36..40],
                frame[36..40],
                "destination port or length changed"
            );
            sources.insert(out[28..36].to_vec());
        }
        assert!(
            sources.len() > 190,
            "only {} distinct sources",
            sources.len()
        );
    }
}
