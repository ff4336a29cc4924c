//! Checksum arithmetic as each hook does it: the kernel helpers (tc) and the software update
//! (XDP, and quoted L4 checksums on both hooks), RFC 1624 in end-around-carry arithmetic.

use portfwd_common::maps::Hook;

/// What `l3_csum_replace` does on `hook`: the kernel helper (tc) or the RFC 1624 software
/// update (XDP).
pub(crate) fn l3_update(hook: Hook, csum: u16, old: &[u16], new: &[u16]) -> u16 {
    match hook {
        Hook::Tc => helper_update(csum, old, new),
        Hook::Xdp => software_update(csum, old, new, false),
    }
}

/// What `l4_csum_replace` does on `hook`, with `BPF_F_MARK_MANGLED_0` when `udp`.
pub(crate) fn l4_update(hook: Hook, csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    match hook {
        Hook::Tc => helper_update_l4(csum, old, new, udp),
        Hook::Xdp => software_update(csum, old, new, udp),
    }
}

/// The Internet checksum (RFC 1071) of `parts` laid end to end, each of an even length but the
/// last: computed from scratch, for a packet the datapath builds.
pub(crate) fn internet(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut s: u32 = 0;
    for pair in bytes.chunks(2) {
        let w = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        s = add1(s, u32::from(w));
    }
    !(s as u16)
}

/// One's-complement addition with end-around carry.
fn add1(a: u32, b: u32) -> u32 {
    let s = a + b;
    (s & 0xffff) + (s >> 16)
}

/// The kernel checksum helpers (`bpf_l3_csum_replace`, and `bpf_l4_csum_replace` without
/// `BPF_F_MARK_MANGLED_0`) on a field made of `old` words becoming `new` words. Their sum starts
/// from a value that is never 0, so it is in 1..=0xffff and the checksum never 0xffff.
fn helper_update(csum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(!csum);
    for w in old {
        s = add1(s, u32::from(!*w));
    }
    for w in new {
        s = add1(s, u32::from(*w));
    }
    let s = add1(s, 0);
    // A sum of 0 is "negative zero" for the helpers (see above).
    let s = if s == 0 { 0xffff } else { s };
    !(s as u16)
}

/// `bpf_l4_csum_replace`, with `BPF_F_MARK_MANGLED_0` for UDP: a UDP checksum of 0 is left
/// alone, and an update that comes out 0 is written as 0xffff.
fn helper_update_l4(csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    if udp && csum == 0 {
        return 0;
    }
    match helper_update(csum, old, new) {
        0 if udp => 0xffff,
        c => c,
    }
}

/// The software update used for quoted L4 checksums: RFC 1624 eqn. 3 with a 32-bit accumulator
/// folded twice, one 16-bit word after the other (a sum of 0 gives 0xffff, unlike the kernel
/// helpers). For UDP a checksum of 0 stays 0, and a result of 0 becomes 0xffff; that mapping is
/// applied once per field, after all its words.
pub(crate) fn software_update(csum: u16, old: &[u16], new: &[u16], udp: bool) -> u16 {
    if udp && csum == 0 {
        return 0;
    }
    let mut c = csum;
    for (o, n) in old.iter().zip(new) {
        let mut s = u32::from(!c) + u32::from(!*o) + u32::from(*n);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        c = !(s as u16);
    }
    match c {
        0 if udp => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 over big-endian words, from scratch.
    fn full(words: &[u16]) -> u16 {
        let mut s: u32 = 0;
        for w in words {
            s = add1(s, u32::from(*w));
        }
        !(s as u16)
    }

    #[test]
    fn helper_update_matches_recomputation() {
        let mut w = [
            0x4500u16, 0x0073, 0, 0x4000, 0x4011, 0, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        w[5] = full(&w);
        assert_eq!(w[5], 0xb861, "the classic example header");
        for (i, new) in [(7usize, 0x1234u16), (9, 0xffff), (6, 0), (4, 0x3f11)] {
            let c = helper_update(w[5], &[w[i]], &[new]);
            w[i] = new;
            w[5] = 0;
            assert_eq!(c, full(&w), "word {i}");
            w[5] = c;
        }
    }

    #[test]
    fn helper_update_never_gives_ffff_and_software_can() {
        assert_eq!(helper_update(0xffff, &[0xffff], &[0]), 0);
        assert_eq!(software_update(0xffff, &[0xffff], &[0], false), 0xffff);
    }

    #[test]
    fn udp_zero_stays_zero_and_zero_result_is_ffff() {
        assert_eq!(helper_update_l4(0, &[1, 2], &[3, 4], true), 0);
        // ~(~c + ~1 + 2) = 0 needs ~c + 1 = 0xffff, c = 1.
        assert_eq!(helper_update(1, &[1], &[2]), 0);
        assert_eq!(helper_update_l4(1, &[1], &[2], true), 0xffff);
        assert_eq!(helper_update_l4(1, &[1], &[2], false), 0);
    }
}
