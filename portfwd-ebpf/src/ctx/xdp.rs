//! The XDP hook's packet context: a linear frame, written directly with the RFC 1624 arithmetic
//! from `portfwd_common`, and only sent to egress devices that take XDP frames (listed by
//! userspace in `PF_XDP_EGRESS`).
use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_MARK_MANGLED_0, xdp_action},
    cty::c_void,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use portfwd_common::{checksum, maps::Hook};

use super::{Ctx, Plain};
use crate::{
    maps::XDP_EGRESS,
    types::{HopKind, NextHop},
};

impl Ctx for XdpContext {
    const HOOK: Hook = Hook::Xdp;
    const PEER_REDIRECT: bool = false;

    #[inline(always)]
    fn data(&self) -> usize {
        xdp_bounds(self).0
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        xdp_bounds(self).1
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        let (data, end) = xdp_bounds(self);
        end - data
    }

    #[inline(always)]
    fn make_readable(&self, _len: usize) {
        // An XDP frame is linear.
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }

    #[inline(always)]
    fn vlan_stripped(&self) -> bool {
        // XDP sees the frame as it arrived: a tag is in the frame, where the parser finds it.
        false
    }

    #[inline(always)]
    fn ctx_ptr(&self) -> *mut c_void {
        self.as_ptr()
    }

    #[inline(always)]
    fn fib_checks_packet_mtu(&self) -> bool {
        false
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Result<T, i64> {
        let p = xdp_bytes::<T>(self, off)?;
        // SAFETY: `xdp_bytes` checked that `size_of::<T>()` bytes at `p` are inside the frame;
        // the read is unaligned-safe.
        Ok(unsafe { (p as *const T).read_unaligned() })
    }

    #[inline(always)]
    fn store<T>(&self, off: usize, v: &T) -> Result<(), i64> {
        let p = xdp_bytes::<T>(self, off)?;
        // SAFETY: `xdp_bytes` checked that `size_of::<T>()` bytes at `p` are inside the frame,
        // which XDP may write; `v` is a valid `T` that does not overlap the frame.
        unsafe { core::ptr::copy_nonoverlapping(v as *const T as *const u8, p, size_of::<T>()) };
        Ok(())
    }

    #[inline(always)]
    fn store_unbalanced<T>(&self, off: usize, v: &T) -> Result<(), i64> {
        // An XDP frame has no checksum state to keep.
        self.store(off, v)
    }

    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), i64> {
        let csum: u16 = self.load(off)?;
        let new = match size {
            2 => checksum::replace16(csum, from as u16, to as u16),
            4 => checksum::replace32(csum, from as u32, to as u32),
            _ => return Err(-22),
        };
        self.store(off, &new)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), i64> {
        let csum: u16 = self.load(off)?;
        let udp = flags & BPF_F_MARK_MANGLED_0 as u64 != 0;
        let new = match (flags & 0xf, udp) {
            (2, false) => checksum::replace16(csum, from as u16, to as u16),
            (4, false) => checksum::replace32(csum, from as u32, to as u32),
            (2, true) => checksum::udp_replace16(csum, from as u16, to as u16),
            (4, true) => checksum::udp_replace32(csum, from as u32, to as u32),
            _ => return Err(-22),
        };
        self.store(off, &new)
    }

    #[inline(always)]
    fn can_send(&self, hop: &NextHop) -> bool {
        match hop.kind {
            HopKind::Resolved => XDP_EGRESS.get(hop.ifindex).is_some(),
            // The kernel's forwarding is behind tc's pass.
            HopKind::Unresolved | HopKind::Stack => false,
        }
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        XDP_EGRESS
            .redirect(ifindex, 0)
            .unwrap_or(xdp_action::XDP_ABORTED)
    }

    #[inline(always)]
    fn redirect_into_peer(&self, _port: u32) -> Option<u32> {
        // XDP cannot deliver into another namespace's device.
        None
    }

    #[inline(always)]
    fn redirect_resolving_neighbour(&self, _ifindex: u32) -> Option<u32> {
        None
    }

    #[inline(always)]
    fn exceeds_mtu(&self, _ifindex: u32) -> Option<u32> {
        // The FIB lookup compared the IP length with the route's MTU.
        None
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> Result<(), i64> {
        let delta = len as i32 - self.frame_len() as i32;
        // SAFETY: plain helper call on the program's own frame; the frame's bounds are re-read
        // after it (`xdp_bounds` on every access).
        let ret = unsafe { bpf_xdp_adjust_tail(self.ctx, delta) };
        if ret < 0 { Err(ret) } else { Ok(()) }
    }

    #[inline(always)]
    fn push_headers(&self, len: usize) -> Result<(), i64> {
        // SAFETY: as in `truncate`; the frame grows into its headroom.
        let ret = unsafe { bpf_xdp_adjust_head(self.ctx, -(len as i32)) };
        if ret < 0 { Err(ret) } else { Ok(()) }
    }

    #[inline(always)]
    fn can_bounce(&self) -> bool {
        XDP_EGRESS.get(Ctx::ingress_ifindex(self)).is_some()
    }

    #[inline(always)]
    fn bounce(&self) {
        // XDP_TX, returned by the hook, is all it takes.
    }
}

/// `data` and `data_end` of an XDP frame, read through volatile loads so that LLVM cannot
/// relate one bounds check to another: it would otherwise prove some checks redundant and
/// remove them, and the verifier, which cannot follow that reasoning, rejects the access.
#[inline(always)]
fn xdp_bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: `ctx.ctx` is the program's context pointer, valid for the whole invocation;
    // `data` and `data_end` are readable fields of `xdp_md`.
    unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    }
}

/// A pointer to `size_of::<T>()` bytes at `off` in an XDP frame, bounds-checked.
#[inline(always)]
fn xdp_bytes<T>(ctx: &XdpContext, off: usize) -> Result<*mut u8, i64> {
    let (start, end) = xdp_bounds(ctx);
    let off = off & super::OFF_MASK;
    if start + off + super::checked_len::<T>() > end {
        return Err(-14);
    }
    Ok((start + off) as *mut u8)
}
