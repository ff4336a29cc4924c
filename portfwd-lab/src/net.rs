//! Line-echo servers and clients bound to a namespace: std sockets created inside [`Ns::run`], every
//! blocking call bounded by a timeout.
//!
//! The reply to each line (TCP) or datagram (UDP) is `"{tag} from {peer}: {line}\n"` (the peer as `IP:PORT`, IPv6 as `[IP]:PORT`):
//! it names the server that answered and the source address the server saw, which is what a port
//! publishing test checks.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::ns::Ns;
use crate::sys;

/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The reply to `line` from a server tagged `tag`, for a peer `peer` (with the newline).
fn reply(tag: &str, peer: SocketAddr, line: &str) -> String {
    format!("{tag} from {peer}: {line}\n")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a TCP and a UDP server share: the address and tag, the peers seen so far, and the
/// thread that serves until the stop flag is set at drop.
#[derive(Debug)]
struct Server {
    local: SocketAddr,
    tag: String,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Runs `serve(tag, stop, peers)` on a thread named `name`; `serve` must return soon after
    /// `stop` is set (it waits at most [`POLL`] at a time).
    fn start<F>(local: SocketAddr, tag: &str, name: &str, serve: F) -> Result<Server>
    where
        F: FnOnce(&str, &AtomicBool, &Mutex<Vec<SocketAddr>>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, peers, tag) = (stop.clone(), peers.clone(), tag.to_string());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || serve(&tag, &stop, &peers))?
        };
        Ok(Server {
            local,
            tag: tag.to_string(),
            stop,
            peers,
            thread: Some(thread),
        })
    }

    fn peers(&self) -> Vec<SocketAddr> {
        lock(&self.peers).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP line-echo server running in a namespace (see [`tcp_server`]). Stops on drop.
#[derive(Debug)]
pub struct TcpServer(Server);

/// Starts a TCP server in `ns` listening on `bind` (SO_REUSEADDR; port 0 picks one, see
/// [`TcpServer::local_addr`]). Each connection is served on its own thread: every line received gets
/// the reply `"{tag} from {peer_ip}:{peer_port}: {line}\n"` (a last line without newline is answered
/// at EOF), until the peer closes. `tag` names the server in replies (e.g. `"c1:3000"`).
pub fn tcp_server(ns: &Ns, bind: SocketAddr, tag: &str) -> Result<TcpServer> {
    let listener = ns
        .try_run(move || TcpListener::bind(bind))?
        .with_context(|| format!("TCP listen on {bind} in namespace {ns}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let server = Server::start(local, tag, "lab-tcp-accept", move |tag, stop, peers| {
        accept_loop(listener, tag, stop, peers)
    })?;
    Ok(TcpServer(server))
}

impl TcpServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local
    }

    /// The tag naming this server in its replies.
    pub fn tag(&self) -> &str {
        &self.0.tag
    }

    /// The peer address of every connection accepted so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.0.peers()
    }

    /// Stops the server: no more accepts, open connections are closed. Same as dropping it.
    pub fn stop(self) {}
}

fn accept_loop(
    listener: TcpListener,
    tag: &str,
    stop: &AtomicBool,
    peers: &Mutex<Vec<SocketAddr>>,
) {
    std::thread::scope(|scope| {
        while !stop.load(Ordering::SeqCst) {
            if !sys::wait_readable(&listener, POLL) {
                continue;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    lock(peers).push(peer);
                    let _ = std::thread::Builder::new()
                        .name("lab-tcp-conn".into())
                        .spawn_scoped(scope, move || serve_tcp(stream, peer, tag, stop));
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(POLL),
            }
        }
    });
}

fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, tag: &str, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => {
                if !pending.is_empty() {
                    let line = String::from_utf8_lossy(&pending).into_owned();
                    let _ = stream.write_all(reply(tag, peer, &line).as_bytes());
                }
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&raw[..pos]);
                    let line = line.strip_suffix('\r').unwrap_or(&line);
                    if stream.write_all(reply(tag, peer, line).as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A UDP line-echo server running in a namespace (see [`udp_server`]). Stops on drop.
#[derive(Debug)]
pub struct UdpServer(Server);

/// Starts a UDP server in `ns` bound to `bind` (port 0 picks one, see [`UdpServer::local_addr`]).
/// Every datagram gets the reply `"{tag} from {peer_ip}:{peer_port}: {text}\n"`, sent back to its
/// source from the server's socket (`text` is the datagram without a trailing newline).
pub fn udp_server(ns: &Ns, bind: SocketAddr, tag: &str) -> Result<UdpServer> {
    let socket = ns
        .try_run(move || UdpSocket::bind(bind))?
        .with_context(|| format!("UDP bind on {bind} in namespace {ns}"))?;
    socket.set_read_timeout(Some(POLL))?;
    socket.set_write_timeout(Some(Duration::from_secs(1)))?;
    let local = socket.local_addr()?;
    let server = Server::start(local, tag, "lab-udp", move |tag, stop, peers| {
        udp_loop(&socket, tag, stop, peers)
    })?;
    Ok(UdpServer(server))
}

fn udp_loop(socket: &UdpSocket, tag: &str, stop: &AtomicBool, peers: &Mutex<Vec<SocketAddr>>) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                lock(peers).push(peer);
                let text = String::from_utf8_lossy(&buf[..n]);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                let _ = socket.send_to(reply(tag, peer, text).as_bytes(), peer);
            }
            Err(_) => continue,
        }
    }
}

impl UdpServer {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local
    }

    /// The tag naming this server in its replies.
    pub fn tag(&self) -> &str {
        &self.0.tag
    }

    /// The source address of every datagram received so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.0.peers()
    }

    /// Stops the server. Same as dropping it.
    pub fn stop(self) {}
}

/// A TCP connection made from a namespace (see [`tcp_session`]): send lines and read the reply lines
/// on the same connection. The socket stays in its namespace, so the session can be used (and moved)
/// to any thread.
#[derive(Debug)]
pub struct TcpSession {
    stream: TcpStream,
    pending: Vec<u8>,
    timeout: Duration,
    local: SocketAddr,
    peer: SocketAddr,
}

/// Connects from `ns` to `to` (giving up after `timeout`) and returns the session; every later read
/// or write on it is bounded by `timeout` too (see [`TcpSession::set_timeout`]).
pub fn tcp_session(ns: &Ns, to: SocketAddr, timeout: Duration) -> Result<TcpSession> {
    if timeout.is_zero() {
        bail!("tcp_session: zero timeout");
    }
    let stream = ns
        .try_run(move || TcpStream::connect_timeout(&to, timeout))?
        .map_err(|e| connect_error(e, ns, to, timeout))?;
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    Ok(TcpSession {
        stream,
        pending: Vec::new(),
        timeout,
        local,
        peer: to,
    })
}

fn connect_error(e: std::io::Error, ns: &Ns, to: SocketAddr, timeout: Duration) -> anyhow::Error {
    match e.kind() {
        ErrorKind::ConnectionRefused => anyhow!(
            "TCP connection from namespace {ns} to {to} refused (RST: nothing listens there, or \
             the SYN reached the wrong place)"
        ),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => anyhow!(
            "TCP connection from namespace {ns} to {to} timed out after {timeout:?} (no SYN-ACK: \
             dropped somewhere)"
        ),
        _ => anyhow::Error::new(e).context(format!("TCP connect from namespace {ns} to {to}")),
    }
}

impl TcpSession {
    /// The session's own address (the source address of its packets).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The time limit of each send and receive.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the time limit of each later send and receive (must not be zero).
    pub fn set_timeout(&mut self, timeout: Duration) {
        if !timeout.is_zero() {
            self.timeout = timeout;
        }
    }

    /// The underlying stream, e.g. to shut it down or set socket options.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `line` followed by a newline (`line` must not contain one).
    pub fn send(&mut self, line: &str) -> Result<()> {
        if line.contains('\n') {
            bail!("a line to send must not contain a newline: {line:?}");
        }
        self.stream.set_write_timeout(Some(self.timeout))?;
        let mut data = Vec::with_capacity(line.len() + 1);
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
        self.stream
            .write_all(&data)
            .with_context(|| format!("sending a line to {}", self.peer))
    }

    /// Reads the next reply line (without its newline), waiting at most the session's timeout.
    pub fn recv(&mut self) -> Result<String> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.pending.drain(..=pos).collect();
                return Ok(String::from_utf8_lossy(&raw[..pos]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no reply line from {} within {:?}{}",
                    self.peer,
                    self.timeout,
                    self.partial()
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "{} closed the connection before a full reply line{}",
                    self.peer,
                    self.partial()
                ),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading a reply from {}", self.peer));
                }
            }
        }
    }

    fn partial(&self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            format!(" (got {:?})", String::from_utf8_lossy(&self.pending))
        }
    }

    /// Sends `line` and returns the reply line.
    pub fn request(&mut self, line: &str) -> Result<String> {
        self.send(line)?;
        self.recv()
    }

    /// Closes the connection (same as dropping the session).
    pub fn close(self) {}
}

/// Connects from `ns` to `to`, sends `line` plus a newline, and returns the one reply line (without
/// newline). Connecting and the whole exchange are each bounded by `timeout`; errors say whether the
/// connection was refused, timed out or closed early.
pub fn tcp_request(ns: &Ns, to: SocketAddr, line: &str, timeout: Duration) -> Result<String> {
    let mut session = tcp_session(ns, to, timeout)?;
    session.request(line)
}

/// An HTTP/1.0 `GET /` from `ns` to `to` (e.g. the Docker test image's busybox httpd); returns
/// the whole answer, read until the server closes, within `timeout`.
pub fn http_get(ns: &Ns, to: SocketAddr, timeout: Duration) -> Result<String> {
    let session = tcp_session(ns, to, timeout)?;
    let deadline = Instant::now() + timeout;
    let mut stream = session.stream;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no complete HTTP answer from {to} within {timeout:?}");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading the HTTP answer from {to}")),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Sends `line` (plus a newline) from `ns` to `to` over a fresh unconnected UDP socket and returns the
/// first datagram received (without its trailing newline), within `timeout`. The reply must come
/// from `to` exactly: a reply from any other address (a sign of broken NAT) is an error naming it.
pub fn udp_request(ns: &Ns, to: SocketAddr, line: &str, timeout: Duration) -> Result<String> {
    if timeout.is_zero() {
        bail!("udp_request: zero timeout");
    }
    let unspecified: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = ns
        .try_run(move || UdpSocket::bind(unspecified))?
        .with_context(|| format!("UDP socket in namespace {ns}"))?;
    let deadline = Instant::now() + timeout;
    socket.set_write_timeout(Some(timeout))?;
    let mut data = line.as_bytes().to_vec();
    data.push(b'\n');
    socket
        .send_to(&data, to)
        .with_context(|| format!("UDP send from namespace {ns} to {to}"))?;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "no UDP reply from {to} to namespace {ns} within {timeout:?} (nothing listens, or \
                 the datagram or its reply was dropped)"
            );
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
                if from != to {
                    bail!(
                        "UDP reply to a datagram sent to {to} came from {from} instead \
                         (reply translation broken?): {text:?}"
                    );
                }
                return Ok(text);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).with_context(|| format!("UDP receive from {to}")),
        }
    }
}
