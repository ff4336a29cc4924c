//! The benchmark's packet generator (`cargo xtask bench`), not part of the daemon.
//!
//! Userspace (`bench/pktgen`) runs this XDP program with BPF_PROG_TEST_RUN in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) on the client's veth: every repetition transmits the frame it
//! was given out of that veth (`XDP_TX` becomes a redirect to the same device). The frames reach
//! the host's side of the veth through its NAPI poll, as a NIC's would: one linear buffer each, no
//! socket, no copy of a sender's ring (the AF_PACKET ring trafgen uses is copied frame by frame
//! when it crosses a veth, which made the generator most of the cost it was meant to exclude).
//!
//! The kernel recycles the frame's page once the frame is freed, without restoring its content,
//! and whatever the frame crossed may have rewritten its headers (the forwarder's NAT, a router's
//! TTL and MACs). So every repetition writes the 42 header bytes (Ethernet, IPv4 without
//! options, UDP) again from `HEADERS`, which userspace fills in. The payload is never touched.
//!
//! With `UNIQUE` set, each frame then gets a random source address in the frame's /16 and a
//! random source port (1024–65535), and both checksums are fixed from the ones in `HEADERS`,
//! computed by userspace with those fields zero.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_get_prandom_u32, macros::xdp, programs::XdpContext,
};
use portfwd_common::checksum::{replace16, udp_replace16};

/// Set by the loader: non-zero for unique flows.
#[unsafe(no_mangle)]
static UNIQUE: u32 = 0;
/// Set by the loader: the frame's first 42 bytes (Ethernet, IPv4, UDP headers), then zeros.
#[unsafe(no_mangle)]
static HEADERS: [u64; 6] = [0; 6];

/// Byte offsets in the frame: the last two bytes of the IPv4 source, its checksum, the UDP source
/// port and checksum.
const SRC_LO: usize = 14 + 14;
const IP_CSUM: usize = 14 + 10;
const SPORT: usize = 14 + 20;
const UDP_CSUM: usize = 14 + 20 + 6;
const MIN_LEN: usize = 14 + 20 + 8;

#[xdp]
pub fn portfwd_pktgen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + MIN_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: globals the loader set before loading; read once per frame, never written.
    let (unique, headers) = unsafe {
        (
            core::ptr::read_volatile(&UNIQUE),
            core::ptr::read_volatile(&HEADERS),
        )
    };
    let p = start as *mut u8;
    // SAFETY: the writes cover bytes 0..42 (five words and two bytes), below MIN_LEN, and
    // `start + MIN_LEN <= end` was checked; unaligned stores are allowed on packet data.
    unsafe {
        for (i, word) in headers.iter().take(5).enumerate() {
            core::ptr::write_unaligned(p.add(i * 8).cast::<u64>(), *word);
        }
        core::ptr::write_unaligned(p.add(40).cast::<u16>(), headers[5] as u16);
    }
    if unique == 0 {
        return xdp_action::XDP_TX;
    }
    let ip_base = u16::from_be_bytes(byte_pair(&headers, IP_CSUM));
    let udp_base = u16::from_be_bytes(byte_pair(&headers, UDP_CSUM));
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    let addr_lo = r as u16;
    let port = ((r >> 16) as u16) | 0x400;
    // The bases were computed with both fields zero: each is a 16-bit word changing from 0.
    let ip = replace16(ip_base, 0, addr_lo);
    let udp = udp_replace16(udp_replace16(udp_base, 0, addr_lo), 0, port);
    // SAFETY: every offset written is below MIN_LEN, and `start + MIN_LEN <= end` was checked.
    unsafe {
        put16(p.add(SRC_LO), addr_lo);
        put16(p.add(IP_CSUM), ip);
        put16(p.add(SPORT), port);
        put16(p.add(UDP_CSUM), udp);
    }
    xdp_action::XDP_TX
}

/// The two bytes at `offset` of the header template, in frame order.
#[inline(always)]
fn byte_pair(headers: &[u64; 6], offset: usize) -> [u8; 2] {
    let word = headers[offset / 8].to_ne_bytes();
    [word[offset % 8], word[offset % 8 + 1]]
}

/// Writes `v` (16 bits) at `p` in network byte order.
///
/// # Safety
/// `p..p + 2` must be inside the frame.
#[inline(always)]
unsafe fn put16(p: *mut u8, v: u16) {
    // SAFETY: the caller guarantees both bytes are inside the frame.
    unsafe { core::ptr::write_unaligned(p.cast::<[u8; 2]>(), v.to_be_bytes()) }
}

/// The verifier rejects any program that could reach a panic; there is nothing to unwind.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
