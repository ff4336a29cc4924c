//! Path MTU: a packet being translated that does not fit the device it would be sent out of.
//!
//! A router answers such a packet, when it carries DF (IPv6: always), with ICMP "fragmentation
//! needed" (type 3 code 4) / ICMPv6 "packet too big" (type 2) carrying the MTU, and the sender
//! learns the path's MTU from it (RFC 1191, RFC 8201). portfwd does the same ([`too_big`]): the
//! answer is built in the packet's own buffer and sent back out of the interface the packet came
//! in on, so the sender's path MTU discovery works through a published port as it does through
//! iptables DNAT. Without it, the packet would be dropped silently: a path-MTU black hole.
//!
//! The answer:
//! - Ethernet: back to the sender's MAC, from the MAC it sent to;
//! - IP: from the address the sender talked to (the published address, for a client; for a
//!   target's reply, the published address it is translated to), to the sender; IPv4: TOS 0xc0
//!   (internetwork control, as Linux sends errors), DF, ID 0, TTL 64; IPv6: hop limit 64;
//! - ICMP: the MTU, then the untranslated packet's start: IPv4 548 bytes (the answer is 576,
//!   RFC 1812 4.3.2.3, as Linux's `icmp_send`), IPv6 1232 (the answer is 1280, RFC 4443 2.4).
//!
//! Building it: cut the frame to Ethernet + the quote, make room for the new IP and ICMP headers
//! in front of the quote (tc: `bpf_skb_adjust_room`, XDP: `bpf_xdp_adjust_head`), write the
//! headers, sum the checksums over the packet (`bpf_csum_diff`), bounce. The quoted bytes never
//! move nor get copied. XDP answers only on a device that takes XDP frames (`XDP_TX`), and
//! otherwise hands the packet to tc, which does. tc: a CHECKSUM_PARTIAL skb (from a veth or
//! tap) keeps that state over its quoted L4 header; its receiver, on the same kind of device,
//! trusts it, as it would the original. A non-GSO skb from a NIC is never CHECKSUM_PARTIAL.
//!
//! The answers are rate-limited: a token bucket per CPU, [`IcmpBudget::BURST`] at once and
//! then 1000 per second (the kernel's own global ICMP limits), so that a flood of oversized
//! packets cannot make the host reflect as many answers. Linux exempts "too big" from its
//! limits; a sender needs one answer per oversized packet it sends before it reacts, which the
//! burst covers. An answer over the limit is dropped and counted (`drop_too_big_rate_limited`).
//!
//! The same builder answers a new flow of a forward with several backends that refuses new
//! flows (every backend down, `all_down: refuse`) with ICMP port unreachable
//! ([`port_unreachable`], quoting the IP header and 8 bytes of TCP/UDP), from the same bucket.
//!
//! IPv4 without DF may be fragmented on the way: the packet is translated and handed to the
//! kernel ([`NextHop::Stack`]), whose forwarding fragments it, as after iptables DNAT. MSS
//! clamping is no substitute for any of this: UDP, and TCP whose path narrows after the
//! handshake, are not covered by it.
use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use portfwd_common::{checksum, maps::IcmpBudget, proto, reason::Reason};

use crate::{
    ctx::Ctx,
    family::Family,
    maps::{self, ICMP_BUDGET},
    parse::L3_OFF,
    types::{IpL4, NextHop, Tuple},
};

/// IPv4: the bytes of the packet an answer quotes: 576 - 20 - 8.
const QUOTE4: usize = 548;
/// IPv6: 1280 - 40 - 8.
const QUOTE6: usize = 1232;
const ICMP_HDR_LEN: usize = 8;
/// DF, in the first byte of the IPv4 flags and fragment offset field (header byte 6).
const IP_DF: u8 = 0x40;
const IPV4_FLAGS: usize = 6;
const IPV4_CSUM: usize = 10;
const ETHERTYPE: usize = 12;
/// `bpf_csum_diff` sums at most this many bytes at once.
const CSUM_CHUNK: usize = 512;
const TTL: u8 = 64;

/// A packet `pkt`, to be sent on as `next`, does not fit the MTU `mtu` of its egress: answered,
/// or handed to the kernel to fragment (IPv4 without DF: `Ok(NextHop::Stack)`, the caller
/// translates it as usual). Otherwise returns why it goes no further: the answer was sent
/// ([`Reason::IcmpTooBigSent`], the packet replaced by it), or it was dropped.
#[inline(always)]
pub fn too_big<C: Ctx, F: Family>(
    ctx: &C,
    pkt: &IpL4<F::Addr>,
    next: &Tuple<F::Addr>,
    mtu: u32,
) -> Result<NextHop, Reason> {
    if F::IP_CSUM {
        let flags: u8 = ctx
            .load(pkt.l3_off + IPV4_FLAGS)
            .map_err(|_| Reason::DropFragNeeded)?;
        if flags & IP_DF == 0 {
            return Ok(NextHop::STACK);
        }
    }
    let quote = if F::IP_CSUM { QUOTE4 } else { QUOTE6 };
    // An ICMP error is never answered with another (RFC 1122 3.2.2). An IPv4 packet shorter
    // than the quote means an egress MTU below 548: not worth a variable-length answer.
    if pkt.proto == F::ICMP || pkt.l3_end - pkt.l3_off < quote {
        return Err(Reason::DropFragNeeded);
    }
    // XDP on a device that cannot send the answer back: tc behind it will.
    if !ctx.can_bounce() {
        return Err(Reason::PassToTc);
    }
    if !take_token() {
        return Err(Reason::DropTooBigRateLimited);
    }
    // The address the sender talked to: the destination of a client's packet; the address a
    // reply's source is translated to.
    let from = if pkt.saddr == next.saddr {
        pkt.daddr
    } else {
        next.saddr
    };
    let mtu_be = mtu.to_be_bytes();
    let icmp = if F::IP_CSUM {
        // Fragmentation needed: type 3, code 4; unused, next-hop MTU.
        [3, 4, 0, 0, 0, 0, mtu_be[2], mtu_be[3]]
    } else {
        // Packet too big: type 2, code 0; MTU.
        [2, 0, 0, 0, mtu_be[0], mtu_be[1], mtu_be[2], mtu_be[3]]
    };
    match answer::<C, F>(ctx, pkt.saddr, from, icmp, quote) {
        Ok(()) => {
            ctx.bounce();
            Err(Reason::IcmpTooBigSent)
        }
        // Cut or grown already: not the packet it was.
        Err(_) => Err(Reason::DropRewriteFailed),
    }
}

/// Takes a token from this CPU's bucket, refilling it first; `false` when none is left.
#[inline(always)]
fn take_token() -> bool {
    let mut taken = false;
    maps::update(&ICMP_BUDGET, 0, |b: &mut IcmpBudget| {
        if b.tokens < IcmpBudget::BURST {
            // SAFETY: plain helper call with no arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            let refill = now.saturating_sub(b.stamp_ns) / IcmpBudget::REFILL_NS;
            if refill > 0 {
                let tokens = b.tokens + refill;
                b.tokens = if tokens > IcmpBudget::BURST {
                    IcmpBudget::BURST
                } else {
                    tokens
                };
                b.stamp_ns = now;
            }
        }
        if b.tokens > 0 {
            b.tokens -= 1;
            taken = true;
        }
    });
    taken
}

/// A new flow of a pool forward that refuses them (every backend down, `all_down: refuse`):
/// answered with ICMP port unreachable (type 3 code 3) / ICMPv6 port unreachable (type 1 code
/// 4), from the published address, quoting the packet's IP header and the first 8 bytes of its
/// UDP header or the 20 of its TCP base header (RFC 792's minimum is 8: the ports, and TCP's
/// sequence number, which the client's kernel matches to its socket; see below for TCP's 20). Built and rate-limited as the "too
/// big" answer (the same bucket). Returns the reason counted: `refused_all_down` (the packet
/// replaced by the answer), `drop_refused_rate_limited`, or XDP's `pass_to_tc`.
#[inline(always)]
pub fn port_unreachable<C: Ctx, F: Family>(ctx: &C, pkt: &IpL4<F::Addr>) -> Reason {
    if !ctx.can_bounce() {
        return Reason::PassToTc;
    }
    // The IP header, then 8 bytes of UDP, or TCP's whole base header (20 bytes): a TCP
    // segment from a veth or tap may carry a partial checksum (`CHECKSUM_PARTIAL`), and the
    // kernel refuses to cut an skb before the end of its checksum field (bytes 16-17). At most
    // 60 + 20 (IPv4 with options), 48 + 20 (IPv6 with a fragment header).
    let l4_quote = if pkt.proto == proto::TCP { 20 } else { 8 };
    let quote = pkt.l4_off - pkt.l3_off + l4_quote;
    // A packet shorter than its quote (a TCP header cut short) is never rewritten.
    if quote > MAX_UNREACHABLE_QUOTE || pkt.l3_end - pkt.l3_off < quote {
        return Reason::DropRewriteFailed;
    }
    if !take_token() {
        return Reason::DropRefusedRateLimited;
    }
    let icmp = if F::IP_CSUM {
        [3, 3, 0, 0, 0, 0, 0, 0]
    } else {
        [1, 4, 0, 0, 0, 0, 0, 0]
    };
    match answer::<C, F>(ctx, pkt.saddr, pkt.daddr, icmp, quote) {
        Ok(()) => {
            ctx.bounce();
            Reason::RefusedAllDown
        }
        Err(_) => Reason::DropRewriteFailed,
    }
}

/// The longest quote of a port unreachable answer: an IPv4 header with 40 bytes of options and
/// TCP's 20-byte base header.
const MAX_UNREACHABLE_QUOTE: usize = 80;

/// Replaces the frame with an ICMP(v6) error to its sender `to`, from `from`: its ICMP header
/// `icmp` (type, code, checksum 0, the rest) and the first `quote` bytes of the IP packet (a
/// multiple of 4).
#[inline(always)]
fn answer<C: Ctx, F: Family>(
    ctx: &C,
    to: F::Addr,
    from: F::Addr,
    icmp: [u8; ICMP_HDR_LEN],
    quote: usize,
) -> Result<(), i64> {
    let dmac: [u8; 6] = ctx.load(0)?;
    let smac: [u8; 6] = ctx.load(6)?;
    let ip_len = if F::IP_CSUM { 20 } else { 40 };
    let icmp_off = L3_OFF + ip_len;
    let icmp_len = ICMP_HDR_LEN + quote;
    ctx.truncate(L3_OFF + quote)?;
    ctx.push_headers(ip_len + ICMP_HDR_LEN)?;
    ctx.make_readable(icmp_off + icmp_len);

    ctx.store(0, &smac)?;
    ctx.store(6, &dmac)?;
    let ethertype: [u8; 2] = if F::IP_CSUM {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    };
    ctx.store(ETHERTYPE, &ethertype)?;

    let [len_hi, len_lo] = (if F::IP_CSUM {
        ip_len + icmp_len
    } else {
        icmp_len
    } as u16)
        .to_be_bytes();
    if F::IP_CSUM {
        // Version and IHL, TOS, total length, ID, DF, TTL, protocol, checksum (0 for now).
        let head = [
            0x45,
            0xc0,
            len_hi,
            len_lo,
            0,
            0,
            IP_DF,
            0,
            TTL,
            F::ICMP,
            0,
            0,
        ];
        ctx.store(L3_OFF, &head)?;
    } else {
        // Version, traffic class and flow label 0, payload length, next header, hop limit.
        let head = [0x60, 0, 0, 0, len_hi, len_lo, F::ICMP, TTL];
        ctx.store(L3_OFF, &head)?;
    }
    ctx.store(icmp_off, &icmp)?;
    ctx.store(L3_OFF + F::SADDR, &from)?;
    ctx.store(L3_OFF + F::DADDR, &to)?;

    // Every sum below is of the bytes as they lie in memory, so the folded result is stored as
    // it is (RFC 1071: the sum does not depend on byte order).
    let seed = if F::IP_CSUM {
        let ip = ctx.csum(L3_OFF, ip_len, 0).ok_or(-14i64)?;
        ctx.store(L3_OFF + IPV4_CSUM, &!checksum::fold(ip))?;
        0
    } else {
        // The pseudo-header: both addresses (in the header just written), the upper-layer
        // length and the next header, as 32-bit wire words.
        let addrs = ctx.csum(L3_OFF + F::SADDR, 32, 0).ok_or(-14i64)?;
        let len = u32::from_ne_bytes((icmp_len as u32).to_be_bytes());
        let next = u32::from_ne_bytes([0, 0, 0, F::ICMP]);
        add(add(addrs, len), next)
    };
    let sum = sum_chunks(ctx, icmp_off, icmp_len, seed).ok_or(-14i64)?;
    ctx.store(icmp_off + 2, &!checksum::fold(sum))
}

/// The partial sum of `len` bytes at `off` (a multiple of 4, below 1536), added to `seed`, in
/// chunks whose size the verifier knows, to check them against the packet's bounds: whole
/// [`CSUM_CHUNK`]s, then the rest at once when it is at least [`CSUM_WORDS_BELOW`] (a "too big"
/// answer over IPv6: 1240 bytes = 2 x 512 + 216, all constants), else 4 bytes at a time (IPv4's
/// 556 = 512 + 11 x 4; a port unreachable answer, 36 to 76 bytes of a length the verifier only
/// knows a bound of: one path per word, where a split into powers of two would be one per
/// combination of them).
#[inline(always)]
fn sum_chunks<C: Ctx>(ctx: &C, off: usize, len: usize, seed: u32) -> Option<u32> {
    let mut sum = seed;
    let mut done = 0;
    for _ in 0..2 {
        if len - done >= CSUM_CHUNK {
            sum = ctx.csum(off + done, CSUM_CHUNK, sum)?;
            done += CSUM_CHUNK;
        }
    }
    if len - done >= CSUM_WORDS_BELOW {
        return ctx.csum(off + done, len - done, sum);
    }
    for _ in 0..CSUM_WORDS_BELOW / 4 {
        if len - done < 4 {
            break;
        }
        sum = ctx.csum(off + done, 4, sum)?;
        done += 4;
    }
    Some(sum)
}

/// See [`sum_chunks`].
const CSUM_WORDS_BELOW: usize = 128;

/// One's-complement addition of two 32-bit partial sums.
#[inline(always)]
fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u32
}
