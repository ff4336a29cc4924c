//! The sockets of a network namespace, from `/proc/thread-self/net/{tcp,tcp6,udp,udp6}`, and the
//! processes that own them, from `/proc/*/fd`.
//!
//! `/proc/thread-self/net` shows the network namespace of the calling thread, so calling
//! [`bound`] on a thread that entered another namespace (see `netns`) lists that namespace's
//! sockets.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::Serialize;

use crate::publish::Protocol;

/// `TCP_LISTEN` in the `st` column.
const TCP_LISTEN: u8 = 0x0a;
/// `TCP_CLOSE` in the `st` column of a UDP socket: bound, not connected.
const UDP_UNCONNECTED: u8 = 0x07;

/// A socket that accepts new peers: a listening TCP socket, or a bound, unconnected UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    pub protocol: Protocol,
    /// The bind address; IPv4-mapped IPv6 addresses are given as IPv4.
    pub addr: IpAddr,
    pub port: u16,
    /// The socket's inode, as `/proc/PID/fd/N` links name it (`socket:[INODE]`).
    #[serde(skip)]
    pub inode: u64,
    /// The processes holding it (filled in by [`name_owners`]).
    pub owners: Vec<Process>,
}

/// Which peers a bound address accepts, seen from a given target address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `0.0.0.0` or `::`: every address of the namespace (`::` also takes IPv4 unless the
    /// socket is IPv6-only, which the tables do not show).
    Any,
    /// Exactly the target address.
    Target,
    /// `127.0.0.0/8` or `::1`: only from inside the namespace.
    Loopback,
    /// Another address.
    Other,
}

impl Bound {
    /// How this socket's bind address relates to `target`.
    pub fn scope(&self, target: IpAddr) -> Scope {
        match self.addr {
            // `0.0.0.0` takes no IPv6 connection; `::` takes both (see [`Scope::Any`]).
            IpAddr::V4(a) if a.is_unspecified() && target.is_ipv6() => Scope::Other,
            a if a.is_unspecified() => Scope::Any,
            a if a == target => Scope::Target,
            a if a.is_loopback() => Scope::Loopback,
            _ => Scope::Other,
        }
    }

    /// Whether a connection to `target:self.port` reaches this socket.
    pub fn accepts(&self, target: IpAddr) -> bool {
        matches!(self.scope(target), Scope::Any | Scope::Target)
    }

    /// `0.0.0.0:3000`, `[::1]:3000`.
    pub fn addr_port(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// The engine every owner of this socket holds it for, when they are all one engine's
    /// port holders (none unknown).
    pub fn engine(&self) -> Option<&'static str> {
        let first = self.owners.first()?.engine?;
        self.owners
            .iter()
            .all(|p| p.engine == Some(first))
            .then_some(first)
    }

    /// `python3 (pid 42)`, `python3 (pid 42), gunicorn (pid 43)`, or `an unknown process`.
    pub fn owner_names(&self) -> String {
        if self.owners.is_empty() {
            return "an unknown process".into();
        }
        self.owners
            .iter()
            .map(Process::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A process, as `/proc/PID/comm` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// The container engine this process holds published ports for (`Docker` for
    /// docker-proxy and dockerd, `Podman` for conmon, ...), from its comm and executable (see
    /// [`engine_of`](super::engine::engine_of)); `None` for any other process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<&'static str>,
    /// For Docker's docker-proxy: where it sends the connections it takes (its command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxies_to: Option<std::net::SocketAddr>,
}

impl Process {
    /// The process `pid` from its `/proc/PID` directory `dir`: its comm (`?` when unreadable)
    /// and whether it is a container engine's port holder.
    fn read(pid: u32, dir: &std::path::Path) -> Process {
        let comm = fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_else(|_| "?".into());
        let exe = fs::read_link(dir.join("exe")).unwrap_or_default();
        let engine = super::engine::engine_of(&comm, &exe.to_string_lossy());
        let proxies_to = if engine.is_some() && comm == super::engine::DOCKER_PROXY {
            let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            super::engine::proxy_target(cmdline.split('\0'))
        } else {
            None
        };
        Process {
            pid,
            comm,
            engine,
            proxies_to,
        }
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.comm, self.pid)
    }
}

/// The listening TCP and bound unconnected UDP sockets of the calling thread's network
/// namespace. Tables that cannot be read (no IPv6, say) are skipped.
pub fn bound() -> Vec<Bound> {
    let mut out = Vec::new();
    for (file, protocol, state) in [
        ("tcp", Protocol::Tcp, TCP_LISTEN),
        ("tcp6", Protocol::Tcp, TCP_LISTEN),
        ("udp", Protocol::Udp, UDP_UNCONNECTED),
        ("udp6", Protocol::Udp, UDP_UNCONNECTED),
    ] {
        if let Ok(text) = fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            out.extend(parse_table(&text, protocol, state));
        }
    }
    out
}

/// Parses one `/proc/net/{tcp,udp}[6]` table, keeping the sockets in `state`.
pub fn parse_table(text: &str, protocol: Protocol, state: u8) -> Vec<Bound> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || u8::from_str_radix(f[3], 16).ok()? != state {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            Some(Bound {
                protocol,
                addr: parse_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode: f[9].parse().ok()?,
                owners: Vec::new(),
            })
        })
        .collect()
}

/// The kernel prints each 32-bit word of the address as a native-endian number in hex.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// Every process holding a socket, by socket inode: one pass over `/proc/*/fd` (needs root to
/// see other users' processes; what cannot be read is skipped).
pub fn socket_owners() -> HashMap<u64, Vec<Process>> {
    let mut owners: HashMap<u64, Vec<Process>> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return owners;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let mut process = None;
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok())
            else {
                continue;
            };
            let process = process
                .get_or_insert_with(|| Process::read(pid, &entry.path()))
                .clone();
            let list = owners.entry(inode).or_default();
            if !list.iter().any(|p| p.pid == pid) {
                list.push(process);
            }
        }
    }
    owners
}

/// Fills in [`Bound::owners`] from `owners`.
pub fn name_owners(sockets: &mut [Bound], owners: &HashMap<u64, Vec<Process>>) {
    for s in sockets {
        if let Some(p) = owners.get(&s.inode) {
            s.owners = p.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 020011AC:0BB8 010011AC:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF0000020011AC:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn tcp_listeners_are_parsed() {
        let s = parse_table(TCP, Protocol::Tcp, TCP_LISTEN);
        assert_eq!(s.len(), 2, "the established socket is not a listener");
        assert_eq!(s[0].addr_port(), "0.0.0.0:3000");
        assert_eq!(s[0].inode, 1001);
        assert_eq!(s[1].addr_port(), "127.0.0.1:8000");
        let target = IpAddr::from(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(s[0].scope(target), Scope::Any);
        assert_eq!(s[1].scope(target), Scope::Loopback);
        assert!(s[0].accepts(target) && !s[1].accepts(target));
        let v6: IpAddr = "fd00:17::2".parse().unwrap();
        assert!(!s[0].accepts(v6), "0.0.0.0 takes no IPv6 connection");
    }

    #[test]
    fn tcp6_listeners_are_parsed_with_mapped_addresses_as_ipv4() {
        let s = parse_table(TCP6, Protocol::Tcp, TCP_LISTEN);
        assert_eq!(s[0].addr_port(), "[::1]:3000");
        assert_eq!(
            s[0].scope(Ipv4Addr::new(172, 17, 0, 2).into()),
            Scope::Loopback
        );
        assert_eq!(s[1].addr_port(), "172.17.0.2:80");
        assert_eq!(
            s[1].scope(Ipv4Addr::new(172, 17, 0, 2).into()),
            Scope::Target
        );
        assert_eq!(
            s[1].scope(Ipv4Addr::new(172, 17, 0, 3).into()),
            Scope::Other
        );
        // An IPv6 target: `::1` is loopback-only, an IPv4 socket is another address.
        let v6: IpAddr = "fd00:17::2".parse().unwrap();
        assert_eq!(s[0].scope(v6), Scope::Loopback);
        assert_eq!(s[1].scope(v6), Scope::Other);
    }

    #[test]
    fn our_own_sockets_are_found_with_their_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut all = bound();
        let owners = socket_owners();
        name_owners(&mut all, &owners);
        let me = all
            .iter()
            .find(|s| s.protocol == Protocol::Tcp && s.port == port)
            .expect("our listener is in /proc/thread-self/net/tcp");
        assert_eq!(me.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(
            me.owners.iter().any(|p| p.pid == std::process::id()),
            "{me:?}"
        );
    }
}
