//! The TCP loads: one iperf3 stream, request/response on one connection, and a new connection
//! per request. The two loops run on a thread of this process inside the client namespace, against
//! the lab's line-echo server in the container (one line in, one line of about 30 bytes out).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::stats;
use super::testbed::Testbed;

/// Upper bound on transactions per run (far above what the lab does in a few seconds).
const MAX_TRANSACTIONS: usize = 5_000_000;
/// Each connect, send and receive of the loops is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Transactions (or connections) done before timing starts.
const WARMUP: usize = 200;

/// Rate and latency of a request/response loop.
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One iperf3 stream of `secs` seconds from the client to the testbed's destination; Gbit/s
/// received.
pub fn stream(tb: &Testbed, secs: u32) -> Result<f64> {
    let client = tb.lab.client().clone();
    let bound = (secs + 15).to_string();
    let (ip, port, secs_s) = (
        tb.dst.ip().to_string(),
        tb.dst.port().to_string(),
        secs.to_string(),
    );
    let out = tb.lab.exec_timeout(
        &client,
        &[
            "timeout", "-s", "KILL", &bound, "iperf3", "-c", &ip, "-p", &port, "-t", &secs_s, "-J",
        ],
        Duration::from_secs(u64::from(secs) + 20),
    )?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing iperf3 -J output")?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 -J output has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// Request/response on one connection for `window` (after a warm-up).
pub fn rr(tb: &Testbed, window: Duration) -> Result<RateSample> {
    let dst = tb.dst;
    tb.lab.client().try_run(move || rr_loop(dst, window))?
}

/// A new connection per request for `window` (after a warm-up).
pub fn crr(tb: &Testbed, window: Duration) -> Result<RateSample> {
    let dst = tb.dst;
    tb.lab.client().try_run(move || crr_loop(dst, window))?
}

fn connect(dst: SocketAddrV4) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(dst), IO_TIMEOUT)
        .with_context(|| format!("connecting to {dst}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends one line and reads the one reply line.
fn transact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<()> {
    stream.write_all(b"x\n").context("sending a request")?;
    loop {
        let n = stream.read(buf).context("reading a reply")?;
        if n == 0 {
            bail!("the server closed the connection before replying");
        }
        if buf[n - 1] == b'\n' {
            return Ok(());
        }
    }
}

fn rr_loop(dst: SocketAddrV4, window: Duration) -> Result<RateSample> {
    let mut stream = connect(dst)?;
    let mut buf = [0u8; 4096];
    for _ in 0..WARMUP {
        transact(&mut stream, &mut buf)?;
    }
    let mut lat = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let end = start + window;
    while lat.len() < MAX_TRANSACTIONS {
        let t = Instant::now();
        if t >= end {
            break;
        }
        transact(&mut stream, &mut buf)?;
        lat.push(t.elapsed());
    }
    summarize(&lat, start.elapsed())
}

fn crr_loop(dst: SocketAddrV4, window: Duration) -> Result<RateSample> {
    let mut buf = [0u8; 4096];
    let one = |buf: &mut [u8]| -> Result<()> {
        let mut stream = connect(dst)?;
        transact(&mut stream, buf)
    };
    for _ in 0..WARMUP / 4 {
        one(&mut buf)?;
    }
    let mut lat = Vec::with_capacity(1 << 16);
    let mut failures = 0usize;
    let mut last_error = None;
    let start = Instant::now();
    let end = start + window;
    while lat.len() < MAX_TRANSACTIONS {
        let t = Instant::now();
        if t >= end {
            break;
        }
        match one(&mut buf) {
            Ok(()) => lat.push(t.elapsed()),
            Err(e) => {
                failures += 1;
                last_error = Some(e);
            }
        }
    }
    if failures * 100 > lat.len() + failures {
        let e = last_error.map(|e| format!("{e:#}")).unwrap_or_default();
        bail!(
            "{failures} of {} connections failed (last: {e})",
            lat.len() + failures
        );
    }
    summarize(&lat, start.elapsed())
}

fn summarize(lat: &[Duration], elapsed: Duration) -> Result<RateSample> {
    if lat.is_empty() {
        bail!("no transaction completed");
    }
    let mut us: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    Ok(RateSample {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: stats::percentile_sorted(&us, 50.0),
        p99_us: stats::percentile_sorted(&us, 99.0),
    })
}
