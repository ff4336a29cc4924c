//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).
//!
//! The one's-complement sum is byte-order independent: the functions work on 16-bit words as long
//! as every word passed in (old value, new value, checksum) is in the same representation. The
//! eBPF programs pass raw words read from the packet; tests pass big-endian values.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Updates checksum `csum` for a 16-bit field changing from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub const fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    !fold((!csum) as u32 + (!old) as u32 + new as u32)
}

/// Updates checksum `csum` for a 32-bit field (an IPv4 address) changing from `old` to `new`.
/// The halves are taken in memory order, so `old`/`new` must be read the same way as `csum`.
#[inline(always)]
pub const fn replace32(csum: u16, old: u32, new: u32) -> u16 {
    let c = replace16(csum, old as u16, new as u16);
    replace16(c, (old >> 16) as u16, (new >> 16) as u16)
}

/// Like [`replace16`] for a UDP checksum: 0 means "no checksum" and stays 0, and a computed 0 is
/// sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn udp_replace16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    match replace16(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// Like [`replace32`] for a UDP checksum (see [`udp_replace16`]).
#[inline(always)]
pub const fn udp_replace32(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    match replace32(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// Updates checksum `csum` for an IPv6 address (four 32-bit words, in memory order) changing
/// from `old` to `new`.
#[inline(always)]
pub const fn replace128(csum: u16, old: [u32; 4], new: [u32; 4]) -> u16 {
    let c = replace32(csum, old[0], new[0]);
    let c = replace32(c, old[1], new[1]);
    let c = replace32(c, old[2], new[2]);
    replace32(c, old[3], new[3])
}

/// Like [`replace128`] for a UDP checksum (see [`udp_replace16`]); the 0 -> 0xffff mapping is
/// applied once, to the result.
#[inline(always)]
pub const fn udp_replace128(csum: u16, old: [u32; 4], new: [u32; 4]) -> u16 {
    if csum == 0 {
        return 0;
    }
    match replace128(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward RFC 1071 checksum over big-endian words, written independently of the
    /// incremental functions above so that they can be checked against it.
    fn full(words: &[u16]) -> u16 {
        let mut sum: u64 = 0;
        for w in words {
            sum += *w as u64;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (checksum = !ddf2).
        assert_eq!(full(&[0x0001, 0xf203, 0xf4f5, 0xf6f7]), !0xddf2);
    }

    #[test]
    fn replace16_matches_full_recompute() {
        let mut words = [
            0x4500u16, 0x0073, 0x0000, 0x4000, 0x4011, 0x0000, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let c = full(&words);
        for (i, new) in [(3usize, 0x1234u16), (7, 0xffff), (9, 0x0000), (0, 0x4600)] {
            let old = words[i];
            let before = full(&words);
            words[i] = new;
            assert_eq!(replace16(before, old, new), full(&words), "word {i}");
        }
        let _ = c;
    }

    #[test]
    fn replace32_matches_full_recompute() {
        let mut words = [
            0x4500u16, 0x003c, 0x1c46, 0x4000, 0x4006, 0x0000, 0xac10, 0x0a63, 0xac10, 0x0a0c,
        ];
        let before = full(&words);
        let old = ((words[8] as u32) << 16) | words[9] as u32;
        let new = 0xac11_0002u32;
        words[8] = (new >> 16) as u16;
        words[9] = new as u16;
        // replace32 takes the low half first; with big-endian words the halves are swapped
        // consistently, which the one's-complement sum does not care about.
        assert_eq!(replace32(before, old, new), full(&words));
    }

    #[test]
    fn replace128_matches_full_recompute() {
        // A message of an IPv6 address (eight words) and two more words.
        let old_addr: [u16; 8] = [0xfd77, 0, 0, 0, 0, 0, 0, 0x0001];
        let new_addr: [u16; 8] = [0xfd17, 0, 0, 0, 0, 0, 0, 0x0002];
        let msg = |a: &[u16; 8]| {
            let mut m = a.to_vec();
            m.extend_from_slice(&[0x0006, 0x1234]);
            m
        };
        let before = full(&msg(&old_addr));
        let word = |a: &[u16; 8], i: usize| ((a[2 * i + 1] as u32) << 16) | a[2 * i] as u32;
        let old = [0, 1, 2, 3].map(|i| word(&old_addr, i));
        let new = [0, 1, 2, 3].map(|i| word(&new_addr, i));
        assert_eq!(replace128(before, old, new), full(&msg(&new_addr)));
        assert_eq!(udp_replace128(0, old, new), 0);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(udp_replace16(0, 0x1f90, 0x0bb8), 0);
        assert_eq!(udp_replace32(0, 0x0a00_0001, 0xac11_0002), 0);
    }

    #[test]
    fn udp_computed_zero_is_sent_as_ffff() {
        // Choose a checksum whose update lands on 0: !(~c + ~old + new) == 0.
        let old = 0x0001u16;
        let new = 0x0002u16;
        let c = (0..=0xffffu16)
            .find(|c| *c != 0 && replace16(*c, old, new) == 0)
            .expect("some checksum folds to zero");
        assert_eq!(udp_replace16(c, old, new), 0xffff);
    }

    #[test]
    fn exhaustive_replace16_small_space() {
        // Every (old, new) pair for a two-word message agrees with a full recompute.
        for old in (0..=0xffffu32).step_by(257) {
            for new in (0..=0xffffu32).step_by(263) {
                let other = 0xbeefu16;
                let before = full(&[other, old as u16]);
                assert_eq!(
                    replace16(before, old as u16, new as u16),
                    full(&[other, new as u16])
                );
            }
        }
    }
}
