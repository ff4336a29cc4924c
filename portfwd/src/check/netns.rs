//! Finding the network namespace that holds a target address: every namespace on the machine
//! (named ones in `/run/netns` and `/run/docker/netns`, and those of running processes, from
//! `/proc/*/ns/net`) is entered on a short-lived thread with `setns(CLONE_NEWNET)`, where its
//! interfaces (`getifaddrs`) and bound sockets (`/proc/thread-self/net`) are read.
//!
//! Entering other namespaces needs root (CAP_SYS_ADMIN); without it only the caller's own
//! namespace is seen.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::sockets::{self, Bound, Process};
use crate::sys::{self, InterfaceAddr};

/// Directories of named network namespaces: iproute2's, and Docker's.
const NAMED_DIRS: [(&str, &str); 2] = [("/run/netns", ""), ("/run/docker/netns", "docker:")];

/// At most this many namespaces are looked into (a bound on the work of one check).
const MAX_NAMESPACES: usize = 4096;

/// An interface of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    /// The link-layer address, `aa:bb:cc:dd:ee:ff` (empty for loopback and L3 devices).
    pub mac: String,
    /// Its IPv4 and IPv6 addresses.
    pub addrs: Vec<IpAddr>,
}

/// A network namespace and what is in it.
#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    /// The namespace's inode (`ip netns identify`, `lsns -t net` show it too).
    pub inode: u64,
    /// Its name in `/run/netns` (`docker:ID` for Docker's), if it has one.
    pub name: Option<String>,
    /// A process inside it (the lowest pid), if any.
    pub process: Option<Process>,
    /// Whether this is the namespace `portfwd check` runs in (the host's).
    pub is_host: bool,
    #[serde(skip)]
    pub interfaces: Vec<Interface>,
    #[serde(skip)]
    pub sockets: Vec<Bound>,
}

impl Namespace {
    /// How to name it in a sentence: `network namespace web`, `the network namespace of pid 42
    /// (node)`, `this host`.
    pub fn label(&self) -> String {
        if self.is_host {
            return "this host".into();
        }
        match (&self.name, &self.process) {
            (Some(n), _) => format!("network namespace {n}"),
            (None, Some(p)) => format!("the network namespace of {p}"),
            (None, None) => format!("network namespace net:[{}]", self.inode),
        }
    }

    /// The interface holding `addr`, if any.
    pub fn interface_with(&self, addr: IpAddr) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.addrs.contains(&addr))
    }

    /// A command that runs `cmd` inside it, for fix hints.
    pub fn enter_command(&self, cmd: &str) -> Option<String> {
        if self.is_host {
            return Some(cmd.to_owned());
        }
        match (&self.name, &self.process) {
            (Some(n), _) if !n.starts_with("docker:") => Some(format!("ip netns exec {n} {cmd}")),
            (_, Some(p)) => Some(format!("nsenter -t {} -n {cmd}", p.pid)),
            _ => None,
        }
    }
}

/// The result of [`scan`]: the namespaces seen, and why some could not be looked into.
#[derive(Debug, Default)]
pub struct Scan {
    pub namespaces: Vec<Namespace>,
    pub errors: Vec<String>,
}

/// The inode of the calling thread's network namespace.
pub fn current_inode() -> std::io::Result<u64> {
    Ok(fs::metadata("/proc/thread-self/ns/net")?.ino())
}

struct Candidate {
    path: PathBuf,
    name: Option<String>,
    process: Option<Process>,
}

/// Every network namespace of the machine with its interfaces and bound sockets; the caller's
/// own one first (`is_host`).
pub fn scan() -> Scan {
    let mut scan = Scan::default();
    let host = match current_inode() {
        Ok(i) => i,
        Err(e) => {
            scan.errors
                .push(format!("cannot read /proc/thread-self/ns/net: {e}"));
            0
        }
    };
    scan.namespaces.push(Namespace {
        inode: host,
        name: None,
        process: None,
        is_host: true,
        interfaces: interfaces().unwrap_or_default(),
        sockets: sockets::bound(),
    });

    let candidates = candidates(host);
    let mut denied = 0usize;
    for (inode, c) in candidates.into_iter().take(MAX_NAMESPACES) {
        match look_into(&c.path) {
            Ok((interfaces, sockets)) => scan.namespaces.push(Namespace {
                inode,
                name: c.name,
                process: c.process,
                is_host: false,
                interfaces,
                sockets,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied += 1,
            // Gone in between (a process that exited): nothing to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => scan
                .errors
                .push(format!("cannot enter {}: {e}", c.path.display())),
        }
    }
    if denied > 0 {
        scan.errors.push(format!(
            "{denied} network namespace(s) could not be entered (permission denied): run as root"
        ));
    }
    scan
}

/// The distinct namespaces other than `host`, by inode, with a name and a process where known.
fn candidates(host: u64) -> BTreeMap<u64, Candidate> {
    let mut out: BTreeMap<u64, Candidate> = BTreeMap::new();
    for (dir, prefix) in NAMED_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.ino() == host {
                continue;
            }
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            out.entry(meta.ino()).or_insert(Candidate {
                path,
                name: Some(name),
                process: None,
            });
        }
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.ino() == host {
            continue;
        }
        let comm = || {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_else(|_| "?".into())
        };
        let c = out.entry(meta.ino()).or_insert(Candidate {
            path,
            name: None,
            process: None,
        });
        if c.process.is_none() {
            c.process = Some(Process {
                pid,
                comm: comm(),
                engine: None,
                proxies_to: None,
            });
        }
    }
    out
}

/// Enters the namespace at `path` on a new thread and reads its interfaces and sockets.
fn look_into(path: &Path) -> std::io::Result<(Vec<Interface>, Vec<Bound>)> {
    let file = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // Only this thread enters the namespace, and it ends right after reading (it is
            // never reused).
            sys::enter_netns(&file)?;
            Ok((interfaces()?, sockets::bound()))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace reader panicked")))
    })
}

/// The interfaces of the calling thread's network namespace, with their MAC and IPv4 and IPv6
/// addresses.
pub fn interfaces() -> std::io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for (name, addr) in sys::interface_addrs()? {
        let entry = by_name.entry(name.clone()).or_insert_with(|| Interface {
            name,
            ..Interface::default()
        });
        match addr {
            Some(InterfaceAddr::Ip(a)) => entry.addrs.push(a),
            Some(InterfaceAddr::Link(mac)) => entry.mac = format_mac(&mac),
            None => {}
        }
    }
    Ok(by_name.into_values().collect())
}

/// `aa:bb:cc:dd:ee:ff`; empty for an all-zero or empty address.
pub fn format_mac(bytes: &[u8]) -> String {
    if bytes.iter().all(|&b| b == 0) {
        return String::new();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn our_own_namespace_has_loopback() {
        let ifs = interfaces().unwrap();
        let lo = ifs.iter().find(|i| i.name == "lo").expect("lo exists");
        assert!(lo.addrs.contains(&Ipv4Addr::LOCALHOST.into()), "{lo:?}");
        assert_eq!(lo.mac, "");
    }

    #[test]
    fn macs_are_formatted() {
        assert_eq!(
            format_mac(&[2, 0x42, 0xac, 0x11, 0, 2]),
            "02:42:ac:11:00:02"
        );
        assert_eq!(format_mac(&[0; 6]), "");
    }

    #[test]
    fn labels_name_the_namespace() {
        let mut ns = Namespace {
            inode: 7,
            name: Some("web".into()),
            process: Some(Process {
                pid: 42,
                comm: "node".into(),
                engine: None,
                proxies_to: None,
            }),
            is_host: false,
            interfaces: vec![],
            sockets: vec![],
        };
        assert_eq!(ns.label(), "network namespace web");
        assert_eq!(
            ns.enter_command("ss -ltn").unwrap(),
            "ip netns exec web ss -ltn"
        );
        ns.name = None;
        assert_eq!(ns.label(), "the network namespace of node (pid 42)");
        assert_eq!(
            ns.enter_command("ss -ltn").unwrap(),
            "nsenter -t 42 -n ss -ltn"
        );
        ns.is_host = true;
        assert_eq!(ns.label(), "this host");
    }
}
