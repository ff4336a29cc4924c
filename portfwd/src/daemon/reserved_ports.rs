//! Keeps the kernel from choosing a published port as an ephemeral (local) port.
//!
//! When the host connects out from a published port, the remote's replies come back to that
//! port and look like new inbound connections to the datapath. The kernel skips the ports listed
//! in `net.ipv4.ip_local_reserved_ports` (used by both families) when it picks a local port, so
//! the daemon adds the published ports and ranges to that list, merged with what was there, and
//! writes back the previous value when it stops. An application that binds a reserved port
//! explicitly still gets it: the list only steers the kernel's own choice.
//!
//! The sysctl's syntax is a comma-separated list of ports and inclusive ranges: `"1,2-4"`.
use std::{fmt, fs, io, path::PathBuf};

use crate::publish::Forward;

/// The sysctl, in the namespace the daemon runs in.
pub const SYSCTL_PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// A set of ports as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(Vec<(u16, u16)>);

#[derive(Debug, thiserror::Error)]
pub enum ReservedPortsError {
    #[error("invalid port list item {0:?} (expected PORT or FIRST-LAST)")]
    Syntax(String),
    #[error("reading or writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PortSet {
    /// Parses the sysctl's syntax; an empty string (or only whitespace) is the empty set.
    pub fn parse(text: &str) -> Result<Self, ReservedPortsError> {
        let mut set = PortSet::default();
        for item in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let bad = || ReservedPortsError::Syntax(item.to_owned());
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let port = item.parse().map_err(|_| bad())?;
                    (port, port)
                }
            };
            if first > last {
                return Err(bad());
            }
            set.insert(first, last);
        }
        Ok(set)
    }

    /// Adds the inclusive range `first..=last`, merging it with overlapping or adjacent ranges.
    pub fn insert(&mut self, first: u16, last: u16) {
        let (mut first, mut last) = (first.min(last), first.max(last));
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            // Disjoint and not adjacent: kept as is. (u32 so that 65535 + 1 does not overflow.)
            if u32::from(b) + 1 < u32::from(first) || u32::from(last) + 1 < u32::from(a) {
                kept.push((a, b));
            } else {
                first = first.min(a);
                last = last.max(b);
            }
        }
        kept.push((first, last));
        kept.sort_unstable();
        self.0 = kept;
    }

    /// Every port in `self` or in `other`.
    pub fn union(&self, other: &PortSet) -> PortSet {
        let mut set = self.clone();
        for &(a, b) in &other.0 {
            set.insert(a, b);
        }
        set
    }

    /// The ports of `self` that are not in `other`.
    pub fn difference(&self, other: &PortSet) -> PortSet {
        let mut out = PortSet::default();
        for &(a, b) in &self.0 {
            let mut from = u32::from(a);
            for &(x, y) in &other.0 {
                let (x, y) = (u32::from(x), u32::from(y));
                if y < from || x > u32::from(b) {
                    continue;
                }
                if x > from {
                    out.0.push((from as u16, (x - 1) as u16));
                }
                from = y + 1;
            }
            if from <= u32::from(b) {
                out.0.push((from as u16, b));
            }
        }
        out
    }

    /// The ports of `forwards`' listen ports and ranges.
    pub fn of_forwards<'a>(forwards: impl IntoIterator<Item = &'a Forward>) -> PortSet {
        let mut set = PortSet::default();
        for fwd in forwards {
            set.insert(fwd.listen.port, fwd.listen.end);
        }
        set
    }
}

/// The sysctl's syntax: `"1,2-4"`; the empty set is the empty string.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// The daemon's reservation: the list as it found it, and the ports it reserves on top.
///
/// Only the ports the daemon added are ever removed again: a port that was reserved before the
/// daemon started stays reserved, and so does one someone else reserved meanwhile.
#[derive(Debug)]
pub struct Reservation {
    path: PathBuf,
    /// Ports reserved before the daemon touched the list: never removed.
    previous: PortSet,
    /// The published ports and ranges the daemon reserves now.
    ours: PortSet,
}

impl Reservation {
    /// Reads the current list at `path` (normally [`SYSCTL_PATH`]).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ReservedPortsError> {
        let path = path.into();
        let previous = PortSet::parse(&read(&path)?)?;
        Ok(Self {
            path,
            previous,
            ours: PortSet::default(),
        })
    }

    /// Reserves exactly `published` (on top of what was there): ports of forwards that went are
    /// released, unless they were reserved before.
    pub fn set(&mut self, published: PortSet) -> Result<(), ReservedPortsError> {
        let current = PortSet::parse(&read(&self.path)?)?;
        // What someone else added since we last wrote is kept like what was there at first.
        let others = current.difference(&self.ours).union(&self.previous);
        write(&self.path, &others.union(&published))?;
        self.previous = others;
        self.ours = published;
        Ok(())
    }

    /// The ports the daemon reserved that were not reserved already (for `status`).
    pub fn added(&self) -> PortSet {
        self.ours.difference(&self.previous)
    }

    /// Releases every port the daemon added: the list is what it would be without the daemon.
    pub fn restore(&mut self) -> Result<(), ReservedPortsError> {
        self.set(PortSet::default())
    }
}

/// The list, in one `read(2)`: this sysctl answers only a read at offset 0 (any later read gets
/// end-of-file), so `read_to_string`, which starts with a small buffer, would cut it short. The
/// longest list (every other port of 65,536) takes under 200 KiB.
fn read(path: &PathBuf) -> Result<String, ReservedPortsError> {
    use std::io::Read as _;
    let io = |source| ReservedPortsError::Io {
        path: path.clone(),
        source,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .map_err(io)?;
    buf.truncate(n);
    String::from_utf8(buf).map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn write(path: &PathBuf, set: &PortSet) -> Result<(), ReservedPortsError> {
    // The kernel refuses an empty write; a lone newline clears the list.
    fs::write(path, format!("{set}\n")).map_err(|source| ReservedPortsError::Io {
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> PortSet {
        PortSet::parse(text).unwrap()
    }

    #[test]
    fn parses_and_prints_the_sysctl_syntax() {
        assert_eq!(set("").to_string(), "");
        assert_eq!(set("\n").to_string(), "");
        assert_eq!(set("1,2-4\n").to_string(), "1-4");
        assert_eq!(
            set("8080, 20000-20999,53").to_string(),
            "53,8080,20000-20999"
        );
        assert_eq!(set("65535,65534").to_string(), "65534-65535");
        assert!(PortSet::parse("5-3").is_err());
        assert!(PortSet::parse("x").is_err());
        assert!(PortSet::parse("1-").is_err());
        assert!(PortSet::parse("70000").is_err());
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let merged = set("1,10-20").union(&set("2-4,15-30,40"));
        assert_eq!(merged.to_string(), "1-4,10-30,40");
        assert_eq!(set("0-65535").union(&set("80")).to_string(), "0-65535");
    }

    #[test]
    fn difference_splits_ranges() {
        assert_eq!(
            set("1-10").difference(&set("3,5-6")).to_string(),
            "1-2,4,7-10"
        );
        assert_eq!(set("1-10").difference(&set("0-65535")).to_string(), "");
        assert_eq!(set("65535").difference(&set("1")).to_string(), "65535");
    }

    #[test]
    fn reserves_and_restores_only_its_own_ports() {
        let dir = std::env::temp_dir().join(format!("portfwd-reserved-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ip_local_reserved_ports");
        fs::write(&path, "22,8080\n").unwrap();

        let mut reservation = Reservation::open(&path).unwrap();
        reservation.set(set("8080,20000-20999")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "22,8080,20000-20999\n");
        assert_eq!(reservation.added().to_string(), "20000-20999");

        // Someone else reserves a port meanwhile; a forward goes.
        fs::write(&path, "22,8080,9000,20000-20999\n").unwrap();
        reservation.set(set("8080")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "22,8080,9000\n");

        reservation.restore().unwrap();
        // 8080 was reserved before the daemon: it stays.
        assert_eq!(fs::read_to_string(&path).unwrap(), "22,8080,9000\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
