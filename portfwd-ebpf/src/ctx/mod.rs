//! The packet context: what a hook (tc or XDP) must provide for the shared datapath, with the
//! bounds-checked reads every parser uses. All unsafe access to a program's context is here and
//! in the hook files:
//! - `tc`: the skb, written through the kernel helpers so that `skb->csum` (CHECKSUM_COMPLETE)
//!   and CHECKSUM_PARTIAL offloads stay consistent;
//! - `xdp`: the frame, written directly with the RFC 1624 arithmetic from `portfwd_common`.
//!
//! The datapath is written once against [`Ctx`]. The socket hooks' context is in `sock`.
pub mod sock;
mod tc;
mod xdp;

use core::mem::size_of;

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    cty::c_void,
    helpers::generated::{bpf_csum_diff, bpf_fib_lookup as fib_lookup},
};
use network_types::{ip::Ipv4Hdr, udp::UdpHdr};
use portfwd_common::maps::Hook;

use crate::types::NextHop;

/// What may be read out of a packet: types for which every bit pattern is a value (integers,
/// arrays of them, headers made of byte arrays).
///
/// # Safety
///
/// Implement only for `Copy` types without padding, references, or invalid bit patterns.
pub unsafe trait Plain: Copy {}

// SAFETY: integers and arrays of integers have no invalid bit patterns nor padding.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl<const N: usize> Plain for [u8; N] {}
// SAFETY: as above.
unsafe impl<const N: usize> Plain for [u32; N] {}
// SAFETY: the IPv4 header is `repr(C)` of `u8` and `[u8; N]` fields only.
unsafe impl Plain for Ipv4Hdr {}
// SAFETY: the UDP header is `repr(C)` of `[u8; 2]` fields only.
unsafe impl Plain for UdpHdr {}

/// The mask of an offset into a packet that is read or written directly. Offsets the verifier
/// cannot bound itself (those kept in the per-CPU parse scratch, `maps::packet_scratch`) are
/// masked with it before the pointer arithmetic, which the verifier refuses on an unbounded
/// value; and the verifier derives a readable range only while offset + length stays within
/// 0xffff. A mask rather than a compare: LLVM turns the compare into a signed one the verifier
/// cannot use. The datapath only touches headers, within the first few hundred bytes, so the
/// mask never changes an offset (and the access is bounds-checked after it anyway).
pub const OFF_MASK: usize = 0x7fff;

/// The bytes a bounds check asks for to access a `T`: its size, and at least 2. For a one-byte
/// access, LLVM folds `p + 1 <= end` into `p < end`, from which the verifier derives no readable
/// range when `p` has a variable offset. Every one-byte field the datapath touches (TTL, hop
/// limit, TCP flags, ICMP type) is followed by more of its header, so asking for one more byte
/// fails no packet a one-byte check would have let through.
#[inline(always)]
pub const fn checked_len<T>() -> usize {
    if size_of::<T>() < 2 {
        2
    } else {
        size_of::<T>()
    }
}

/// A packet at a hook. Offsets are from the start of the Ethernet header.
pub trait Ctx {
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
    fn load<T: Plain>(&self, off: usize) -> Result<T, i64>;
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
    /// Redirects to `ifindex` (MACs already set). Returns the hook's return code.
    fn redirect(&self, ifindex: u32) -> u32;
    /// Whether [`Ctx::redirect_into_peer`] can work at this hook.
    const PEER_REDIRECT: bool;
    /// Delivers straight into the peer of veth `port` (the container's end, MACs already set),
    /// where the hook can. Returns the hook's return code.
    fn redirect_into_peer(&self, port: u32) -> Option<u32>;
    /// Redirects to `ifindex` letting the kernel resolve the next hop's MAC, where the hook can.
    /// Returns the hook's return code.
    fn redirect_resolving_neighbour(&self, ifindex: u32) -> Option<u32>;

    /// The MTU of `ifindex` when this packet does not fit it (a GSO packet: when its segments do
    /// not), `None` when it fits. tc asks the kernel (`bpf_check_mtu`); XDP's FIB lookup already
    /// compared the IP length with the route's MTU, so it never asks.
    fn exceeds_mtu(&self, ifindex: u32) -> Option<u32>;
    /// Cuts the frame to its first `len` bytes.
    fn truncate(&self, len: usize) -> Result<(), i64>;
    /// Makes room for `len` bytes of new headers in front of the IP header: the IP packet and
    /// what follows move `len` bytes further into the frame, and the first `14 + len` bytes are
    /// the caller's to write (tc inserts after the Ethernet header, XDP grows the head).
    fn push_headers(&self, len: usize) -> Result<(), i64>;
    /// Whether [`Ctx::bounce`] delivers at this hook: XDP_TX only where the ingress device
    /// takes XDP frames (listed in `PF_XDP_EGRESS`; a veth whose peer runs no XDP drops them).
    fn can_bounce(&self) -> bool;
    /// Asks for the frame to go back out of the interface it came in on (MACs already set), for
    /// [`crate::types::Action::Bounce`].
    fn bounce(&self);

    /// Copies the `T` at `off` out of the directly readable bytes, if they hold all of it. The
    /// parsers read every header through this, so each bound is checked once, where it is read.
    #[inline(always)]
    fn read<T: Plain>(&self, off: usize) -> Option<T> {
        let start = self.data();
        let off = off & OFF_MASK;
        if start + off + checked_len::<T>() > self.data_end() {
            return None;
        }
        // SAFETY: the check above keeps `size_of::<T>()` bytes at `start + off` inside the
        // directly readable packet data, valid for the whole invocation; `T` is plain bytes or
        // integers, for which any bit pattern is a value ([`Plain`]). The address may not be
        // aligned for `T` (the `u16` ethertype, the IPv6 header's `u32` words): BPF loads have
        // no alignment requirement outside strict-alignment architectures, where the verifier
        // refuses the program rather than fault, and `read_unaligned` would split each such
        // load into byte loads.
        Some(unsafe { *((start + off) as *const T) })
    }

    /// The one's-complement sum of the `len` directly readable bytes at `off` (`len` a multiple
    /// of 4, at most 512: `bpf_csum_diff`'s limits), added to `seed`: a 32-bit partial sum, to
    /// fold. `None` when the bytes are not all readable.
    #[inline(always)]
    fn csum(&self, off: usize, len: usize, seed: u32) -> Option<u32> {
        let start = self.data();
        if start + off + len > self.data_end() {
            return None;
        }
        // SAFETY: the check above keeps `len` bytes at `start + off` inside the directly readable
        // packet data, which the helper only reads; no `from` buffer is passed (NULL, 0).
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                (start + off) as *mut u32,
                len as u32,
                seed,
            )
        };
        (sum >= 0).then_some(sum as u32)
    }

    /// The FIB lookup of `params` from this packet's context (`bpf_fib_lookup`): the helper's
    /// return code, `params` filled with the result.
    #[inline(always)]
    fn fib_lookup(&self, params: &mut bpf_fib_lookup) -> i64 {
        // SAFETY: `params` is a valid, initialised `bpf_fib_lookup` that lives across the call,
        // its size is passed alongside, and the context pointer is the program's own.
        unsafe {
            fib_lookup(
                self.ctx_ptr(),
                params,
                size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        }
    }
}
