//! What a hook (tc or XDP) must provide for the shared translation path, and the tc version.
//!
//! The translation logic in `forward`, `rewrite` and `route` is written once against
//! [`Packet`]. Hooks differ in how bytes are written and checksums kept: tc must go through the
//! kernel helpers so that `skb->csum` (CHECKSUM_COMPLETE) and CHECKSUM_PARTIAL offloads stay
//! consistent, while XDP writes directly and does the RFC 1624 math from `portfwd_common`.
use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_RECOMPUTE_CSUM, bpf_redir_neigh, xdp_action,
    },
    cty::c_void,
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use portfwd_common::{checksum, maps::Hook};

use crate::{maps::XDP_EGRESS, route::NextHop};

/// A packet at a hook. Offsets are from the start of the Ethernet header.
pub trait Packet {
    /// Which hook this is, for the verdict counters.
    const HOOK: Hook;
    /// Start of the directly readable bytes.
    fn data(&self) -> usize;
    /// End of the directly readable bytes.
    fn data_end(&self) -> usize;
    /// Length of the whole frame, including any part not directly readable.
    fn frame_len(&self) -> usize;
    /// Tries to make the first `len` bytes directly readable. Never fails the packet: parsing
    /// re-checks bounds afterwards.
    fn make_readable(&self, len: usize);
    /// Interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Whether the frame came with a VLAN tag that the device stripped into metadata (tc on a
    /// NIC with VLAN offload). Such a frame belongs to the VLAN's own interface, where tc runs
    /// again on it; at the parent it is not ours, as a tagged frame is to the parser.
    fn vlan_stripped(&self) -> bool;
    /// The context pointer, for helpers such as `bpf_fib_lookup`.
    fn ctx_ptr(&self) -> *mut c_void;
    /// Whether the FIB lookup should check the MTU against the IP length (XDP) or against the
    /// packet itself, which is GSO-aware (tc).
    fn fib_checks_packet_mtu(&self) -> bool;

    /// Reads a `T` at `off`, also beyond the directly readable bytes.
    fn load<T: Copy>(&self, off: usize) -> Result<T, i64>;
    /// Writes `v` at `off`.
    fn store<T>(&self, off: usize, v: &T) -> Result<(), i64>;
    /// Writes `v` at `off`, a change no checksum in the packet compensates (the IPv6 hop
    /// limit): tc also updates `skb->csum` (CHECKSUM_COMPLETE) for it.
    fn store_unbalanced<T>(&self, off: usize, v: &T) -> Result<(), i64>;
    /// Updates the IPv4 header checksum at `off` for a `size`-byte field changing `from` -> `to`.
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), i64>;
    /// Updates the L4 checksum at `off`; `flags` as for `bpf_l4_csum_replace` (size in the low
    /// bits, `BPF_F_PSEUDO_HDR`, `BPF_F_MARK_MANGLED_0`).
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), i64>;
    /// Whether this hook can deliver to `hop` itself. Checked before anything is written: when
    /// it cannot, the packet is passed untouched to the next hook.
    fn can_send(&self, hop: &NextHop) -> bool;
    /// Redirects to `ifindex` (MACs already set). Returns the hook's action code.
    fn redirect(&self, ifindex: u32) -> u32;
    /// Whether [`Packet::redirect_into_peer`] can work at this hook.
    const PEER_REDIRECT: bool;
    /// Delivers straight into the peer of veth `port` (the container's end, MACs already set),
    /// where the hook can. Returns the hook's action code.
    fn redirect_into_peer(&self, port: u32) -> Option<u32>;
    /// Redirects to `ifindex` letting the kernel resolve the next hop's MAC, where the hook can.
    /// Returns the hook's action code.
    fn redirect_resolving_neighbour(&self, ifindex: u32) -> Option<u32>;
}

impl Packet for TcContext {
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
    fn load<T: Copy>(&self, off: usize) -> Result<T, i64> {
        TcContext::load(self, off)
    }

    #[inline(always)]
    fn store<T>(&self, off: usize, v: &T) -> Result<(), i64> {
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
}

/// XDP: frames are written directly, with the RFC 1624 arithmetic from `portfwd_common`, and
/// only sent to egress devices that take XDP frames (listed by userspace in `XDP_EGRESS`).
impl Packet for XdpContext {
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
    fn load<T: Copy>(&self, off: usize) -> Result<T, i64> {
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
        match hop {
            NextHop::Resolved { ifindex, .. } => XDP_EGRESS.get(*ifindex).is_some(),
            NextHop::Unresolved { .. } => false,
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
    if start + off + size_of::<T>() > end {
        return Err(-14);
    }
    Ok((start + off) as *mut u8)
}
