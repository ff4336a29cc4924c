//! Pins in bpffs, so that the datapath outlives the daemon.
//!
//! Layout under the pin directory:
//! - `maps/NAME`: every map (forwards, flows, counters...). A restarted or upgraded daemon loads
//!   its programs against these, so flows and counters survive.
//! - `links/KIND-IFINDEX-IFNAME` (KIND `tc`, `egress` or `xdp`; dots in IFNAME written `%2E`,
//!   since bpffs reserves dots in names): the attachments. A pinned link keeps its program
//!   attached when the daemon dies (even `kill -9`); the next daemon swaps its own program into
//!   the same link atomically (`attach_to_link`), so it never attaches twice.
//! - `sock/PROGRAM` (e.g. `sock/portfwd_connect4`): the socket hooks' links to the cgroup v2
//!   root, taken over the same way (`super::cgroup`), so host-local access survives the daemon.
use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use portfwd_common::maps::Program;

use crate::{
    error::{Cause, Error},
    sys::{self, is_bpffs},
};

/// Where bpffs is normally mounted.
const STANDARD_BPFFS: &str = "/sys/fs/bpf";

fn io_err(path: &Path, what: &'static str) -> impl Fn(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Pin {
        path: path.clone(),
        source: Cause::Io {
            action: what.to_owned(),
            source,
        },
    }
}

pub fn maps_dir(dir: &Path) -> PathBuf {
    dir.join("maps")
}

pub fn links_dir(dir: &Path) -> PathBuf {
    dir.join("links")
}

pub fn hooks_dir(dir: &Path) -> PathBuf {
    dir.join("sock")
}

/// The pin path of the socket hook `program`'s cgroup link.
pub fn hook_path(dir: &Path, program: Program) -> PathBuf {
    hooks_dir(dir).join(program.name())
}

/// The socket hooks' pinned links in `dir`, as left by a previous daemon: each path with the
/// program it was made for, `None` for a name this binary has no program for.
pub fn pinned_hooks(dir: &Path) -> Vec<(PathBuf, Option<Program>)> {
    let Ok(entries) = std::fs::read_dir(hooks_dir(dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let name = e.file_name();
            let program = Program::SOCKET_HOOKS
                .into_iter()
                .find(|p| name.to_str() == Some(p.name()));
            (e.path(), program)
        })
        .collect()
}

/// The pin path of an interface's link of `kind` ("tc", "egress" or "xdp").
pub fn link_path(dir: &Path, ifindex: u32, ifname: &str, kind: &str) -> PathBuf {
    let name = ifname.replace('%', "%25").replace('.', "%2E");
    links_dir(dir).join(format!("{kind}-{ifindex}-{name}"))
}

/// The (kind, ifindex, ifname) a link pin's file name stands for.
fn parse_link_file(file: &str) -> Option<(String, u32, String)> {
    let (kind, rest) = file.split_once('-')?;
    let (index, name) = rest.split_once('-')?;
    let name = name.replace("%2E", ".").replace("%25", "%");
    Some((kind.to_owned(), index.parse().ok()?, name))
}

/// A pinned link found in the pin directory.
pub struct PinnedLinkFile {
    pub path: PathBuf,
    pub ifindex: u32,
    pub ifname: String,
    pub kind: String,
}

/// The pinned links in `dir`, as left by a previous daemon.
pub fn pinned_links(dir: &Path) -> Vec<PinnedLinkFile> {
    let Ok(entries) = std::fs::read_dir(links_dir(dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        match parse_link_file(file) {
            Some((kind, ifindex, ifname)) => out.push(PinnedLinkFile {
                path,
                ifindex,
                ifname,
                kind,
            }),
            None => tracing::warn!(path = %path.display(), "unexpected file in the pin directory"),
        }
    }
    out
}

fn mount_bpffs(at: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(at).map_err(io_err(at, "creating the mount point"))?;
    sys::mount(sys::FsType::Bpf, at).map_err(|e| io_err(at, "mounting bpffs")(e.into()))?;
    tracing::info!(at = %at.display(), "mounted bpffs");
    Ok(())
}

/// Makes sure `dir` is on bpffs, mounting it where needed: at /sys/fs/bpf when `dir` is below
/// it (as on hosts whose boot did not mount it, or under `ip netns exec`, which remounts /sys),
/// otherwise at `dir` itself. Then creates `maps/`, `links/` and `sock/`.
pub fn prepare(dir: &Path) -> Result<(), Error> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !is_bpffs(&probe) {
        let standard = Path::new(STANDARD_BPFFS);
        if dir.starts_with(standard) && !is_bpffs(standard) {
            mount_bpffs(standard)?;
        } else if !dir.starts_with(standard) {
            mount_bpffs(dir)?;
        }
    }
    for sub in [maps_dir(dir), links_dir(dir), hooks_dir(dir)] {
        std::fs::create_dir_all(&sub).map_err(io_err(&sub, "creating"))?;
    }
    if !is_bpffs(dir) {
        return Err(Error::Pin {
            path: dir.to_owned(),
            source: Cause::Refused("not on a bpffs"),
        });
    }
    Ok(())
}

/// Replaces pinned maps whose layout differs from the ones this binary was built with (an
/// upgrade that changed a key or value): their state cannot be read by the new programs, so
/// the pin is removed and a fresh map is created. `expected` lists each map's [`MapLayout`]
/// from the embedded object (with the sizes the daemon asks for).
///
/// A map named in `resizable` whose layout differs only in `max_entries` (a flow table whose
/// size `max_flows:` changed) loses its pin too, but is returned open: its entries are to be
/// copied into the new map (see `super::resize`), and it is freed once this descriptor is
/// dropped (and the previous programs, which still use it, are replaced).
pub fn replace_incompatible_maps(
    dir: &Path,
    expected: &[(String, MapLayout)],
    resizable: impl Fn(&str) -> bool,
) -> Vec<(String, MapData)> {
    let mut resized = Vec::new();
    for (name, want) in expected {
        let path = maps_dir(dir).join(name);
        if !path.exists() {
            continue;
        }
        let have = MapData::from_pin(&path).and_then(|m| {
            let layout = MapLayout::of(&m.info()?);
            Ok((m, layout))
        });
        match have {
            Ok((_, have)) if have == *want => {
                tracing::info!(map = %name, "reusing pinned map");
            }
            Ok((map, have)) if have.resized_to(want) && resizable(name) => {
                tracing::info!(
                    map = %name,
                    from = have.max_entries,
                    to = want.max_entries,
                    "pinned flow table has another size: its flows are carried over to a new one"
                );
                let _ = std::fs::remove_file(&path);
                resized.push((name.clone(), map));
            }
            Ok((_, have)) => {
                tracing::warn!(
                    map = %name,
                    ?have,
                    ?want,
                    "pinned map has another layout (upgrade): replacing it, its state is lost"
                );
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                tracing::warn!(map = %name, "pinned map unreadable ({e}): replacing it");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    resized
}

/// What must match for a pinned map to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Creation flags, e.g. `BPF_F_NO_COMMON_LRU`: a map created without the flag a new
    /// version asks for would keep working, but not the way that version was measured.
    pub map_flags: u32,
}

impl MapLayout {
    /// Whether `self` and `want` differ in their size alone.
    pub fn resized_to(&self, want: &MapLayout) -> bool {
        self.max_entries != want.max_entries
            && MapLayout {
                max_entries: want.max_entries,
                ..*self
            } == *want
    }

    pub fn of(info: &aya::maps::MapInfo) -> Self {
        MapLayout {
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            map_flags: info.map_flags(),
        }
    }
}

/// Removes every pin under `dir`: links first (which detaches their programs), then maps.
/// Used by `portfwd daemon --cleanup` and by a daemon stopping on SIGTERM.
pub fn cleanup(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for sub in [links_dir(dir), hooks_dir(dir), maps_dir(dir)] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            std::fs::remove_file(&p).map_err(io_err(&p, "removing pin"))?;
            removed.push(p);
        }
        let _ = std::fs::remove_dir(&sub);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_size_alone_is_a_resize() {
        let have = MapLayout {
            map_type: 9,
            key_size: 16,
            value_size: 16,
            max_entries: 131_072,
            map_flags: 2,
        };
        let bigger = MapLayout {
            max_entries: 1_000_000,
            ..have
        };
        assert!(have.resized_to(&bigger) && bigger.resized_to(&have));
        assert!(
            !have.resized_to(&have),
            "the same layout is reused, not resized"
        );
        let other_value = MapLayout {
            value_size: 24,
            ..bigger
        };
        assert!(!have.resized_to(&other_value));
        let other_flags = MapLayout {
            map_flags: 0,
            ..bigger
        };
        assert!(!have.resized_to(&other_flags));
    }

    #[test]
    fn link_file_names_have_no_dots_and_round_trip() {
        for name in ["eth0", "eth0.100", "a%2Eb", "veth-1.2"] {
            let path = link_path(Path::new("/p"), 7, name, "xdp");
            let file = path.file_name().unwrap().to_str().unwrap();
            assert!(!file.contains('.'), "{file}");
            assert_eq!(
                parse_link_file(file),
                Some(("xdp".to_owned(), 7, name.to_owned()))
            );
        }
    }
}
