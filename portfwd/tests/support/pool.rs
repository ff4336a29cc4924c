//! Forwards with several backends (issue #16): their YAML, clients whose flows the test picks
//! (an explicit source port each), which backend answered, the per-backend rows of
//! `portfwd list --json`, and where Maglev sends a flow (the daemon's own table builder and
//! flow hash, to pick flows that a change of the backend set would move).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use portfwd::balance::{Backend, FlowTuple, build_table, flow_slot, table_size_for};
use portfwd_lab::{Lab, Ns};
use serde_json::Value;

use super::Scenario;

/// One forward of several targets, as YAML under `forwards:`: `to` as a list, then `extra`
/// lines of the forward (`health: {...}`, `all_down: refuse`, `grace: "2s"`), indented here.
pub fn pool_yaml(listen: &str, targets: &[String], extra: &[&str]) -> String {
    let to: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let mut yaml = format!("  - listen: \"{listen}\"\n    to: [{}]\n", to.join(", "));
    for line in extra {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}

/// `c1`, `c2`, … `cN`.
pub fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("c{i}")).collect()
}

/// The server that answered: the tag before ` from ` in a line-echo reply (`c3:3000`).
pub fn backend_of(reply: &str) -> &str {
    reply.split(" from ").next().unwrap_or(reply)
}

/// How long a connect or exchange of a test's own client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// A TCP connection from the client's address and source port `sport`, made in `ns`.
pub struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    pub sport: u16,
}

impl Conn {
    /// Connects from `Lab::CLIENT_ADDR:sport` in `ns` to `to` within `timeout`.
    pub fn open(ns: &Ns, sport: u16, to: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let SocketAddr::V4(to4) = to else {
            panic!("Conn::open takes IPv4 only, not {to}");
        };
        let fd = ns.run(|| {
            socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
        })?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        let tv = nix::sys::time::TimeVal::new(
            timeout.as_secs() as i64,
            i64::from(timeout.subsec_micros()),
        );
        // A blocking connect gives up after the send timeout (ETIMEDOUT or EINPROGRESS).
        setsockopt(&fd, sockopt::SendTimeout, &tv)?;
        let from = std::net::SocketAddrV4::new(Lab::CLIENT_ADDR, sport);
        bind(fd.as_raw_fd(), &SockaddrIn::from(from))?;
        let started = Instant::now();
        let timed_out = || {
            std::io::Error::new(
                ErrorKind::TimedOut,
                format!("connect from port {sport} to {to}: no answer within {timeout:?}"),
            )
        };
        match connect(fd.as_raw_fd(), &SockaddrIn::from(to4)) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN) => {
                return Err(timed_out());
            }
            // A signal to this process (the test binary runs many tests and their children)
            // interrupted the wait; the connection attempt goes on: wait for its outcome.
            Err(nix::errno::Errno::EINTR) => {
                let left = timeout.saturating_sub(started.elapsed());
                if !connected_within(fd.as_raw_fd(), left)? {
                    return Err(timed_out());
                }
            }
            Err(e) => return Err(e.into()),
        }
        let stream = TcpStream::from(fd);
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            stream,
            pending: Vec::new(),
            sport,
        })
    }

    /// Sends `line` and reads one reply line within `timeout`.
    pub fn request_within(&mut self, line: &str, timeout: Duration) -> Result<String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("sending on the connection from port {}", self.sport))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.pending.drain(..=pos).collect();
                return Ok(String::from_utf8_lossy(&raw[..pos]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no reply on the connection from port {} within {timeout:?}",
                    self.sport
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the connection from port {} was closed", self.sport),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                // A signal to this process interrupted the wait (as for `connect` above): the
                // deadline still holds, so read again.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("the connection from port {}", self.sport));
                }
            }
        }
    }

    /// Sends `line` and reads the reply within the client's usual time limit.
    pub fn request(&mut self, line: &str) -> Result<String> {
        self.request_within(line, CLIENT_TIMEOUT)
    }
}

/// Waits up to `left` for the outcome of an interrupted `connect()` on `fd`: `true` once
/// connected, `false` when still pending, the connection's error otherwise (e.g. refused).
fn connected_within(fd: std::os::fd::RawFd, left: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + left;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        // SAFETY: one valid pollfd for the call's duration; `fd` is open (owned by the caller).
        let n = unsafe { libc::poll(&mut pfd, 1, ms.min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(false);
        }
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are valid for writing the int SO_ERROR returns.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return if err == 0 {
            Ok(true)
        } else {
            Err(std::io::Error::from_raw_os_error(err))
        };
    }
}

/// One TCP request from source port `sport` to `to`: the backend that answered (its tag).
pub fn tcp_backend(ns: &Ns, sport: u16, to: SocketAddr) -> Result<String> {
    let mut conn = Conn::open(ns, sport, to, CLIENT_TIMEOUT)
        .with_context(|| format!("connecting from port {sport} to {to}"))?;
    let reply = conn.request(&format!("hello from {sport}"))?;
    Ok(backend_of(&reply).to_owned())
}

/// A UDP socket of the client bound to source port `sport`: one flow per socket.
pub struct Datagrams {
    socket: UdpSocket,
    to: SocketAddr,
}

impl Datagrams {
    pub fn open(ns: &Ns, sport: u16, to: SocketAddr) -> Datagrams {
        let socket = ns
            .run(|| UdpSocket::bind(SocketAddr::from((Lab::CLIENT_ADDR, sport))))
            .unwrap_or_else(|e| panic!("binding UDP port {sport} in the client: {e}"));
        Datagrams { socket, to }
    }

    /// Sends `line`, returns the reply (which must come from the published address).
    pub fn request(&self, line: &str) -> Result<String> {
        self.socket.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        self.socket
            .send_to(format!("{line}\n").as_bytes(), self.to)?;
        let mut buf = [0u8; 2048];
        // A receive with a timeout fails with EINTR when a signal reaches this process, even
        // with SA_RESTART; the reply may still come (within a fresh timeout, at worst longer).
        let (n, from) = loop {
            match self.socket.recv_from(&mut buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => {
                    break other
                        .with_context(|| format!("no UDP reply to {line:?} from {}", self.to))?;
                }
            }
        };
        if from != self.to {
            bail!("the UDP reply came from {from}, not {}", self.to);
        }
        Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
    }

    /// The backend that answered one datagram.
    pub fn backend(&self, line: &str) -> Result<String> {
        Ok(backend_of(&self.request(line)?).to_owned())
    }
}

/// One backend's row in `portfwd list --json` (under the forward's `backends`).
#[derive(Debug, Clone)]
pub struct BackendRow {
    pub target: String,
    pub weight: u64,
    /// `up`, `down`, `draining` or `unchecked`.
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub live_flows: u64,
}

/// The backends of the forward listening on `listen` (e.g. `8080/tcp`) in `portfwd list --json`.
pub fn backends_in(list: &[Value], listen: &str) -> Vec<BackendRow> {
    let forward = list
        .iter()
        .find(|f| f["listen"] == listen)
        .unwrap_or_else(|| panic!("no forward {listen} in {list:?}"));
    let rows = forward["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("forward {listen} has no backends array: {forward}"));
    let num = |b: &Value, k: &str| {
        b[k].as_u64()
            .unwrap_or_else(|| panic!("backend without a numeric {k}: {b}"))
    };
    rows.iter()
        .map(|b| BackendRow {
            target: b["target"].as_str().expect("backend target").to_owned(),
            weight: num(b, "weight"),
            state: b["state"].as_str().expect("backend state").to_owned(),
            packets: num(b, "packets"),
            bytes: num(b, "bytes"),
            new_flows: num(b, "new_flows"),
            live_flows: num(b, "live_flows"),
        })
        .collect()
}

impl Scenario {
    /// The backends of the forward `listen` now.
    pub fn backends(&self, listen: &str) -> Vec<BackendRow> {
        backends_in(&self.list_json(), listen)
    }

    /// The row of backend `target` (`172.17.0.2:3000`) of the forward `listen`.
    pub fn backend(&self, listen: &str, target: &str) -> BackendRow {
        let rows = self.backends(listen);
        rows.iter()
            .find(|b| b.target == target)
            .cloned()
            .unwrap_or_else(|| panic!("no backend {target} under {listen}: {rows:?}"))
    }

    /// Polls `portfwd list` until backend `target` of `listen` is in `state`, for up to
    /// `limit`; returns how long that took.
    pub fn wait_backend_state(
        &self,
        listen: &str,
        target: &str,
        state: &str,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let row = self.backend(listen, target);
            if row.state == state {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!("{target} of {listen} not {state} within {limit:?}: {row:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file (renamed over it, so no reader sees half of it) and runs
    /// `portfwd reload`, which must succeed.
    pub fn reload_with(&self, config: &str) {
        let next = self.d.config.with_extension("next");
        std::fs::write(&next, config).unwrap();
        std::fs::rename(&next, &self.d.config).unwrap();
        let out = self.cli(&["reload"]);
        assert!(out.status.success(), "portfwd reload: {out:?}");
    }

    /// Runs `portfwd ARGS`, which must succeed.
    pub fn cli_ok(&self, args: &[&str]) {
        let out = self.cli(args);
        assert!(out.status.success(), "portfwd {args:?}: {out:?}");
    }
}

/// Which of `targets` (all weight 1) Maglev gives the TCP or UDP flow from the client's
/// `sport` to `published`: the daemon's table builder and flow hash, which the datapath reads.
pub fn predicted(
    targets: &[SocketAddr],
    proto: u8,
    sport: u16,
    published: SocketAddr,
) -> SocketAddr {
    let backends: Vec<Backend> = targets
        .iter()
        .enumerate()
        .map(|(id, &addr)| Backend {
            id: id as u32,
            addr,
            weight: 1,
        })
        .collect();
    let size = table_size_for(backends.len());
    let table = build_table(&backends, size).expect("a Maglev table");
    let tuple = FlowTuple {
        src: IpAddr::V4(Lab::CLIENT_ADDR),
        dst: published.ip(),
        src_port: sport,
        dst_port: published.port(),
        proto,
    };
    targets[table[flow_slot(&tuple, size)] as usize]
}

/// IP protocol numbers, for [`predicted`].
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
