//! What a hook (tc or XDP) must provide for the shared translation path, and the tc version.
//!
//! The translation logic in `forward`, `rewrite` and `route` is written once against
//! [`Packet`]. Hooks differ in how bytes are written and checksums kept: tc must go through the
//! kernel helpers so that `skb->csum` (CHECKSUM_COMPLETE) and CHECKSUM_PARTIAL offloads stay
//! consistent, while XDP writes directly and does the RFC 1624 math from `portfwd_common`.
use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_redir_neigh},
    cty::c_void,
    helpers::generated::bpf_redirect_neigh,
    programs::TcContext,
};

/// A packet at a hook. Offsets are from the start of the Ethernet header.
pub trait Packet {
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
    /// The context pointer, for helpers such as `bpf_fib_lookup`.
    fn ctx_ptr(&self) -> *mut c_void;
    /// Whether the FIB lookup should check the MTU against the IP length (XDP) or against the
    /// packet itself, which is GSO-aware (tc).
    fn fib_checks_packet_mtu(&self) -> bool;

    /// Reads a `T` at `off`, also beyond the directly readable bytes.
    fn load<T: Copy>(&self, off: usize) -> Result<T, i64>;
    /// Writes `v` at `off`.
    fn store<T>(&self, off: usize, v: &T) -> Result<(), i64>;
    /// Updates the IPv4 header checksum at `off` for a `size`-byte field changing `from` -> `to`.
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), i64>;
    /// Updates the L4 checksum at `off`; `flags` as for `bpf_l4_csum_replace` (size in the low
    /// bits, `BPF_F_PSEUDO_HDR`, `BPF_F_MARK_MANGLED_0`).
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), i64>;
    /// Redirects to `ifindex` letting the kernel resolve the next hop's MAC, where the hook can.
    /// Returns the hook's action code.
    fn redirect_resolving_neighbour(&self, ifindex: u32) -> Option<u32>;
}

impl Packet for TcContext {
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
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), i64> {
        TcContext::l3_csum_replace(self, off, from, to, size)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), i64> {
        TcContext::l4_csum_replace(self, off, from, to, flags)
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
