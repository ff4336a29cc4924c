//! The tc hook's packet context: an skb, written through the kernel helpers so that
//! `skb->csum` (CHECKSUM_COMPLETE) and CHECKSUM_PARTIAL offloads stay consistent, except for the
//! linear header bytes, written directly.
use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_F_RECOMPUTE_CSUM, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, bpf_redir_neigh,
    },
    cty::c_void,
    helpers::generated::{
        bpf_check_mtu, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_change_tail,
    },
    programs::TcContext,
};
use portfwd_common::maps::Hook;

use super::{Ctx, Plain};
use crate::types::NextHop;

impl Ctx for TcContext {
    const HOOK: Hook = Hook::Tc;
    const PEER_REDIRECT: bool = true;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }

    #[inline(always)]
    fn make_readable(&self, len: usize) {
        // Frames from AF_PACKET senders (trafgen) and some drivers arrive non-linear: only part
        // of the headers is directly readable until it is pulled.
        let len = if len > self.frame_len() {
            self.frame_len()
        } else {
            len
        };
        if self.data() + len > self.data_end() {
            let _ = self.skb.pull_data(len as u32);
        }
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        let skb = self.as_ptr() as *const __sk_buff;
        // SAFETY: `skb` is the program's context pointer, valid for the whole invocation, and
        // `ifindex` is a readable field of `__sk_buff` for tc programs.
        unsafe { (*skb).ifindex }
    }

    #[inline(always)]
    fn vlan_stripped(&self) -> bool {
        let skb = self.as_ptr() as *const __sk_buff;
        // SAFETY: as for `ingress_ifindex`; `vlan_present` is a readable field for tc programs.
        unsafe { (*skb).vlan_present != 0 }
    }

    #[inline(always)]
    fn ctx_ptr(&self) -> *mut c_void {
        self.as_ptr()
    }

    #[inline(always)]
    fn fib_checks_packet_mtu(&self) -> bool {
        true
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Result<T, i64> {
        TcContext::load(self, off)
    }

    #[inline(always)]
    fn store<T>(&self, off: usize, v: &T) -> Result<(), i64> {
        // Within the linear part (the headers, once `make_readable` pulled them) the bytes are
        // written directly: a helper call per field cost more than the write. The verifier
        // makes a program that writes packet data unclone the skb first, so the header written
        // here is this skb's own. Anything beyond goes through the helper.
        let (start, end) = tc_bounds(self);
        let direct = off & super::OFF_MASK;
        if start + direct + super::checked_len::<T>() <= end {
            // SAFETY: the check above keeps `size_of::<T>()` bytes at `start + direct` (`off`:
            // the mask changes no header offset, `OFF_MASK`) inside the
            // linear packet data, which a tc program may write; `v` is a valid `T` that does not
            // overlap the packet.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    v as *const T as *const u8,
                    (start + direct) as *mut u8,
                    size_of::<T>(),
                )
            };
            return Ok(());
        }
        TcContext::store(self, off, v, 0)
    }

    #[inline(always)]
    fn store_unbalanced<T>(&self, off: usize, v: &T) -> Result<(), i64> {
        TcContext::store(self, off, v, BPF_F_RECOMPUTE_CSUM as u64)
    }

    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), i64> {
        TcContext::l3_csum_replace(self, off, from, to, size)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), i64> {
        TcContext::l4_csum_replace(self, off, from, to, flags)
    }

    #[inline(always)]
    fn can_send(&self, _hop: &NextHop) -> bool {
        // tc redirects skbs to any device, and resolves neighbours itself.
        true
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        // SAFETY: plain helper call with no pointers.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }

    #[inline(always)]
    fn redirect_into_peer(&self, port: u32) -> Option<u32> {
        // SAFETY: plain helper call with no pointers; tc ingress is where it is allowed.
        Some(unsafe { bpf_redirect_peer(port, 0) as u32 })
    }

    #[inline(always)]
    fn redirect_resolving_neighbour(&self, ifindex: u32) -> Option<u32> {
        // SAFETY: a NULL params pointer with length 0 asks the kernel to use the packet's own
        // destination as next hop; the helper reads nothing else.
        let ret =
            unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut::<bpf_redir_neigh>(), 0, 0) };
        Some(ret as u32)
    }

    #[inline(always)]
    fn exceeds_mtu(&self, ifindex: u32) -> Option<u32> {
        // In: 0, to check the skb itself. Out: the device's MTU.
        let mut mtu: u32 = 0;
        // SAFETY: `mtu` is a live, writable u32 for the call; the context pointer is the
        // program's own. BPF_MTU_CHK_SEGS checks a GSO skb segment by segment, as the kernel's
        // forwarding does.
        let ret =
            unsafe { bpf_check_mtu(self.as_ptr(), ifindex, &mut mtu, 0, BPF_MTU_CHK_SEGS as u64) };
        // 0: fits; 1 (frag needed), 2 (segments too big): does not; < 0: no answer, let it go.
        (ret > 0).then_some(mtu)
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> Result<(), i64> {
        // SAFETY: plain helper call on the program's own skb; it also linearises the skb.
        let ret = unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) };
        if ret < 0 { Err(ret) } else { Ok(()) }
    }

    #[inline(always)]
    fn push_headers(&self, len: usize) -> Result<(), i64> {
        // `len` zero bytes after the Ethernet header; the network header pointer moves onto them.
        self.adjust_room(len as i32, BPF_ADJ_ROOM_MAC, 0)
    }

    #[inline(always)]
    fn can_bounce(&self) -> bool {
        true
    }

    #[inline(always)]
    fn bounce(&self) {
        // SAFETY: plain helper call with no pointers; the egress of the interface the packet
        // came in on.
        unsafe { bpf_redirect(self.ingress_ifindex(), 0) };
    }
}

/// `data` and `data_end` of a tc skb, read through volatile loads so that LLVM cannot relate one
/// bounds check to another: it would otherwise prove some checks redundant and remove them, and
/// the verifier, which cannot follow that reasoning, rejects the access (as in `xdp.rs`).
#[inline(always)]
fn tc_bounds(ctx: &TcContext) -> (usize, usize) {
    // SAFETY: `ctx.skb.skb` is a plain pointer field of a live reference. Read through a volatile
    // load so that LLVM computes the field addresses below from a fresh copy each time, as
    // offsets of the load, instead of keeping `skb + offset` in a register or on the stack:
    // the verifier refuses a context access through a modified context pointer.
    let skb = unsafe { core::ptr::read_volatile(&ctx.skb.skb) } as *const __sk_buff;
    // SAFETY: `skb` is the program's context pointer, valid for the whole invocation; `data` and
    // `data_end` are readable fields of `__sk_buff` for tc programs.
    unsafe {
        (
            core::ptr::read_volatile(&(*skb).data) as usize,
            core::ptr::read_volatile(&(*skb).data_end) as usize,
        )
    }
}
