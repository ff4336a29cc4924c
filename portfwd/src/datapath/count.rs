//! Counting the entries of a hash map with `BPF_MAP_LOOKUP_BATCH`: one system call per 1,024
//! entries instead of one per entry, as walking the keys takes. aya 0.14 has no batch
//! operations, so this is a raw `bpf(2)` call (as are `link`'s, for taking over cgroup links).
//!
//! `portfwd status` and every metrics scrape count the flow tables. Full, they hold 131,072 and
//! 65,536 flows, and a key walk took about a quarter of a CPU-second.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;
use nix::errno::Errno;

/// `BPF_MAP_LOOKUP_BATCH` from `<linux/bpf.h>` (kernel 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries read per call, to start with.
const CHUNK: usize = 1024;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The number of entries in `map`, a (not per-CPU) hash or LRU hash map. Entries added or
/// removed meanwhile may or may not be counted, as with a key walk.
pub fn hash_entries(map: &MapData) -> std::io::Result<u64> {
    let info = map.info().map_err(std::io::Error::other)?;
    let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
    let fd = map.fd().as_fd().as_raw_fd();
    let mut chunk = CHUNK;
    let mut keys = vec![0u8; key_size * chunk];
    let mut values = vec![0u8; value_size * chunk];
    // For hash maps the batch position is a bucket index (a u32); the kernel writes the next one.
    let (mut position, mut next) = (0u32, 0u32);
    let mut first = true;
    let mut total = 0u64;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&position) as u64
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` batch member for the size given; the kernel
        // writes at most `count` keys and values into buffers sized for `count` of each, and
        // one u32 into `next`; all of them outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc == 0 {
            total += u64::from(attr.count);
            position = next;
            first = false;
            continue;
        }
        match Errno::last() {
            // The end: the last call's entries count too.
            Errno::ENOENT => return Ok(total + u64::from(attr.count)),
            // One bucket holds more entries than the buffers: retry with larger ones.
            Errno::ENOSPC if attr.count == 0 && chunk < 1 << 20 => {
                chunk *= 2;
                keys.resize(key_size * chunk, 0);
                values.resize(value_size * chunk, 0);
            }
            e => return Err(e.into()),
        }
    }
}
