//! What a daemon taking over a pinned bpf link needs and aya 0.14 does not offer for cgroup
//! links: reading where the link is attached, and swapping its program in place
//! (`BPF_LINK_UPDATE`; aya has `attach_to_link` for tc and XDP only, and no way to reach the
//! descriptor inside its `FdLink`). Three raw `bpf(2)` calls, as `count` makes one.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// `enum bpf_cmd` values from `<linux/bpf.h>`.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `BPF_LINK_TYPE_CGROUP` from `enum bpf_link_type`.
pub const LINK_TYPE_CGROUP: u32 = 3;

/// `union bpf_attr`'s `BPF_OBJ_*` member.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr`'s `info` member.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr`'s `link_update` member.
#[repr(C)]
#[derive(Default)]
struct UpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `struct bpf_link_info` through its `cgroup` member, then zeroes for the rest of the union
/// (the kernel copies out as much as both sides know, and wants unknown tail bytes zero).
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 9],
}

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// `enum bpf_link_type` ([`LINK_TYPE_CGROUP`] for a cgroup link).
    pub link_type: u32,
    /// The program attached through the link now.
    pub prog_id: u32,
    /// For a cgroup link: the cgroup's id (the inode number of its directory in cgroup2), 0
    /// once the cgroup is gone.
    pub cgroup_id: u64,
    /// For a cgroup link: `enum bpf_attach_type`.
    pub attach_type: u32,
}

/// `bpf(cmd, attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: every `T` passed here is the `union bpf_attr` member `cmd` reads, `#[repr(C)]`,
    // and the pointers inside it point to buffers that outlive the call, as large as the
    // lengths given beside them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the bpf object pinned at `path` (`BPF_OBJ_GET`).
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        ..ObjAttr::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: a successful BPF_OBJ_GET returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Where the link `link` is attached and which program it runs.
pub fn info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut raw = RawLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: std::ptr::from_mut(&mut raw) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo {
        link_type: raw.link_type,
        prog_id: raw.prog_id,
        cgroup_id: raw.cgroup_id,
        attach_type: raw.attach_type,
    })
}

/// Replaces the program of `link` with `prog`, atomically: every event runs either the old
/// program or the new one, never none and never both.
pub fn update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = UpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..UpdateAttr::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn layouts_match_the_kernels() {
        // `union bpf_attr` members (include/uapi/linux/bpf.h).
        assert_eq!(offset_of!(ObjAttr, path_fd), 16);
        assert_eq!(size_of::<InfoAttr>(), 16);
        assert_eq!(offset_of!(UpdateAttr, old_prog_fd), 12);
        // `struct bpf_link_info`: the union starts 8-aligned after three u32.
        assert_eq!(offset_of!(RawLinkInfo, prog_id), 8);
        assert_eq!(offset_of!(RawLinkInfo, cgroup_id), 16);
        assert_eq!(offset_of!(RawLinkInfo, attach_type), 24);
    }
}
