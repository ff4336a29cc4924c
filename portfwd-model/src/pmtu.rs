//! A packet too big for the MTU towards its (translated) destination: the datapath's `pmtu`.
//!
//! - IPv4 without DF: translated as usual and handed to the kernel, which fragments it as it
//!   forwards (`forwarded_via_stack`; XDP hands it to tc untouched first);
//! - an ICMP error (never answered with another), or IPv4 shorter than the 548 bytes an answer
//!   quotes: dropped (`drop_frag_needed`);
//! - otherwise answered (`icmp_too_big_sent`): the frame becomes, in place, an ICMP
//!   "fragmentation needed" (3/4) / ICMPv6 "packet too big" (2/0) carrying the MTU, from the
//!   address the sender talked to back to the sender, MACs swapped, quoting the untranslated
//!   packet's first 548 (IPv4) / 1232 (IPv6) bytes, and bounced out of the ingress interface.
//!   IPv4 header: TOS 0xc0, ID 0, DF, TTL 64; IPv6: traffic class and flow label 0, hop limit
//!   64. XDP answers only on an ingress device in `PF_XDP_EGRESS`, else hands the packet to tc
//!   (`pass_to_tc`). The answers' rate limit is not modelled: the tests lift it.
use portfwd_common::{maps::Hook, reason::Reason};

use crate::checksum::internet;
use crate::family::{At, Fam, Ip};
use crate::wire::ETH_LEN;
use crate::world::World;

const QUOTE4: usize = 548;
const QUOTE6: usize = 1232;
const ICMP_LEN: usize = 8;
const TTL: u8 = 64;

/// `pkt` (in `f`), arriving `at`, does not fit `mtu`; `from` is the address its sender talked
/// to. `Ok` when the kernel may fragment it (IPv4 without DF): the caller translates it and
/// hands it over. Otherwise why it goes no further (`f` replaced by the answer when sent).
pub(crate) fn too_big<F: Fam>(
    f: &mut Vec<u8>,
    (at, world): (At, &impl World),
    pkt: &Ip<F::A>,
    from: F::A,
    mtu: u32,
) -> Result<(), Reason> {
    if F::IP_CSUM && f[pkt.l3 + 6] & 0x40 == 0 {
        return Ok(());
    }
    let quote = if F::IP_CSUM { QUOTE4 } else { QUOTE6 };
    if pkt.proto == F::ICMP || pkt.end - pkt.l3 < quote {
        return Err(Reason::DropFragNeeded);
    }
    // XDP answers (XDP_TX) only on a device that takes XDP frames; tc does otherwise.
    if at.hook == Hook::Xdp && !world.xdp_egress(at.ifindex) {
        return Err(Reason::PassToTc);
    }
    *f = answer::<F>(f, pkt.saddr, from, mtu, quote);
    Err(Reason::IcmpTooBigSent)
}

/// The answer to the sender of frame `f`, `to`, from `from`.
fn answer<F: Fam>(f: &[u8], to: F::A, from: F::A, mtu: u32, quote: usize) -> Vec<u8> {
    let q = &f[ETH_LEN..ETH_LEN + quote];
    let (from, to) = (&F::octets(from)[..F::LEN], &F::octets(to)[..F::LEN]);
    let icmp_len = ICMP_LEN + quote;
    let mut icmp = if F::IP_CSUM {
        let [_, _, hi, lo] = mtu.to_be_bytes();
        vec![3, 4, 0, 0, 0, 0, hi, lo]
    } else {
        let mut h = vec![2, 0, 0, 0];
        h.extend_from_slice(&mtu.to_be_bytes());
        h
    };
    icmp.extend_from_slice(q);
    let mut ip = Vec::new();
    let csum = if F::IP_CSUM {
        let total = (20 + icmp_len) as u16;
        ip.extend_from_slice(&[0x45, 0xc0]);
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, TTL, F::ICMP, 0, 0]);
        ip.extend_from_slice(from);
        ip.extend_from_slice(to);
        let c = internet(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        internet(&[&icmp])
    } else {
        ip.extend_from_slice(&[0x60, 0, 0, 0]);
        ip.extend_from_slice(&(icmp_len as u16).to_be_bytes());
        ip.extend_from_slice(&[F::ICMP, TTL]);
        ip.extend_from_slice(from);
        ip.extend_from_slice(to);
        let len = (icmp_len as u32).to_be_bytes();
        internet(&[from, to, &len, &[0, 0, 0, F::ICMP], &icmp])
    };
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut out = Vec::with_capacity(ETH_LEN + ip.len() + icmp.len());
    out.extend_from_slice(&f[6..12]);
    out.extend_from_slice(&f[0..6]);
    out.extend_from_slice(&f[12..14]);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&icmp);
    out
}
