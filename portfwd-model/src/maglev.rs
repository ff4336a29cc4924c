//! A reference model of backend selection (issue #16): the Maglev lookup table and the flow
//! hash, written from their specifications, not from the daemon's code
//! (`portfwd::balance`), which `portfwd/tests/maglev.rs` compares with this on random inputs.
//!
//! **Table**: Pseudocode 1 of Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer" (NSDI 2016), spelled out as the paper gives it: every backend's whole
//! permutation is computed first (`permutation[i][j] = (offset + j * skip) mod M`, `offset =
//! h1 mod M`, `skip = h2 mod (M - 1) + 1`), then the backends take turns claiming their next
//! preferred free slot (`next[i]`) until `M` slots are filled. What the paper leaves open is
//! fixed as the daemon documents it:
//! - `h1`, `h2`: SipHash-1-3 with the keys below, over the address bytes then the port, both
//!   big-endian;
//! - the order of turns: backends sorted by socket address (IPv4 before IPv6, then address,
//!   then port), backends of weight 0 left out;
//! - weights: in round `r` (from 1), a backend of weight `w` takes a turn iff
//!   `floor(r * w / W) > floor((r - 1) * w / W)`, `W` the largest weight: `w / W` turns a round.
//!
//! **Flow hash**: lookup3's `hashword` (Bob Jenkins; the kernel's `jhash2`) with `initval`
//! 0x706f7274, over the tuple's bytes in network order cut into big-endian 32-bit words: source
//! address, destination address, source port, destination port, protocol, three zero bytes.
//! IPv4 when both addresses are IPv4, else IPv6 (an IPv4 address mapped). Slot = hash mod M.

use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

/// A backend: the id its slots hold, its address (the hashed key), its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    pub id: u32,
    pub addr: SocketAddr,
    pub weight: u32,
}

const H1_KEYS: [u64; 2] = [0x706f_7274_6677_642d, 0x6d61_676c_6576_2d31];
const H2_KEYS: [u64; 2] = [0x706f_7274_6677_642d, 0x6d61_676c_6576_2d32];

/// The lookup table of `backends` (distinct addresses) with `m` slots (`m` prime), or `None`
/// when no backend has a weight above 0.
pub fn maglev_table(backends: &[MaglevBackend], m: usize) -> Option<Vec<u32>> {
    assert!(
        m >= 2 && (2..m).all(|d| !m.is_multiple_of(d)),
        "M = {m} must be a prime"
    );
    let mut turn_order: Vec<MaglevBackend> =
        backends.iter().copied().filter(|b| b.weight > 0).collect();
    turn_order.sort_by_key(|b| b.addr);
    let top = turn_order.iter().map(|b| u128::from(b.weight)).max()?;

    let permutation: Vec<Vec<usize>> = turn_order.iter().map(|b| permutation(b.addr, m)).collect();
    let mut next = vec![0usize; turn_order.len()];
    let mut entry: Vec<Option<u32>> = vec![None; m];
    let mut n = 0;
    let mut round: u128 = 0;
    while n < m {
        round += 1;
        for (i, backend) in turn_order.iter().enumerate() {
            let w = u128::from(backend.weight);
            if round * w / top == (round - 1) * w / top {
                continue; // not this backend's turn in this round
            }
            let mut c = permutation[i][next[i]];
            while entry[c].is_some() {
                next[i] += 1;
                c = permutation[i][next[i]];
            }
            entry[c] = Some(backend.id);
            next[i] += 1;
            n += 1;
            if n == m {
                break;
            }
        }
    }
    Some(
        entry
            .into_iter()
            .map(|e| e.expect("all M slots filled"))
            .collect(),
    )
}

/// A backend's preference list: all `m` slots, most preferred first.
fn permutation(addr: SocketAddr, m: usize) -> Vec<usize> {
    let mut name: Vec<u8> = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().into(),
        IpAddr::V6(ip) => ip.octets().into(),
    };
    name.extend(addr.port().to_be_bytes());
    let h1 = SipHasher13::new_with_keys(H1_KEYS[0], H1_KEYS[1]).hash(&name);
    let h2 = SipHasher13::new_with_keys(H2_KEYS[0], H2_KEYS[1]).hash(&name);
    let m = m as u128;
    let offset = u128::from(h1) % m;
    let skip = u128::from(h2) % (m - 1) + 1;
    (0..m)
        .map(|j| usize::try_from((offset + j * skip) % m).expect("below M"))
        .collect()
}

/// The flow hash of a 5-tuple (see the module's documentation).
pub fn maglev_flow_hash(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, proto: u8) -> u32 {
    let mut bytes = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend(s.octets());
            bytes.extend(d.octets());
        }
        _ => {
            for ip in [src, dst] {
                bytes.extend(ip.to_canonical_v6_octets());
            }
        }
    }
    bytes.extend(src_port.to_be_bytes());
    bytes.extend(dst_port.to_be_bytes());
    bytes.extend([proto, 0, 0, 0]);
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
        .collect();
    hashword(&words, 0x706f_7274)
}

/// The slot of an `m`-slot table that a 5-tuple's flow reads.
pub fn maglev_flow_slot(
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    m: usize,
) -> usize {
    let hash = maglev_flow_hash(src, dst, src_port, dst_port, proto);
    usize::try_from(hash).expect("32-bit hash fits") % m
}

trait CanonicalV6 {
    fn to_canonical_v6_octets(self) -> [u8; 16];
}

impl CanonicalV6 for IpAddr {
    fn to_canonical_v6_octets(self) -> [u8; 16] {
        match self {
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            IpAddr::V6(ip) => ip.octets(),
        }
    }
}

/// Rotations of lookup3's `mix`, one per step; each step is `x -= z; x ^= rot(z, r); z += y`
/// over the state rotated by one.
const MIX: [u32; 6] = [4, 6, 8, 16, 19, 4];
/// Rotations of lookup3's `final`, one per step: `z ^= y; z -= rot(y, r)`.
const FINAL: [u32; 7] = [14, 11, 25, 16, 4, 14, 24];

/// lookup3's `hashword(k, length, initval)`; returns `c`.
fn hashword(k: &[u32], initval: u32) -> u32 {
    let start = 0xdead_beef_u32
        .wrapping_add((k.len() as u32).wrapping_mul(4))
        .wrapping_add(initval);
    let mut s = [start; 3]; // a, b, c
    let mut blocks = k.chunks(3).peekable();
    while let Some(block) = blocks.next() {
        for (x, v) in s.iter_mut().zip(block) {
            *x = x.wrapping_add(*v);
        }
        if blocks.peek().is_none() {
            // The last block (1 to 3 words, possibly full): final mixing.
            for (step, r) in FINAL.iter().enumerate() {
                // Steps operate on (c, b), (a, c), (b, a), (c, b), ...
                let (z, y) = [(2, 1), (0, 2), (1, 0)][step % 3];
                s[z] = (s[z] ^ s[y]).wrapping_sub(s[y].rotate_left(*r));
            }
        } else {
            for (step, r) in MIX.iter().enumerate() {
                // Steps operate on (a, c, b), (b, a, c), (c, b, a), ...
                let (x, z, y) = [(0, 2, 1), (1, 0, 2), (2, 1, 0)][step % 3];
                s[x] = s[x].wrapping_sub(s[z]) ^ s[z].rotate_left(*r);
                s[z] = s[z].wrapping_add(s[y]);
            }
        }
    }
    s[2]
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn hashword_is_lookup3() {
        // From the kernel's include/linux/jhash.h (jhash2) compiled with gcc.
        assert_eq!(hashword(&[], 0), 0xdead_beef);
        assert_eq!(hashword(&[1], 0), 0x72a8_2a9b);
        assert_eq!(hashword(&[1, 2, 3, 4, 5], 7), 0x5a4f_3b1e);
        let ports = (40000 << 16) | 8080;
        assert_eq!(
            hashword(&[0x0a00_0001, 0xc0a8_0102, ports, 6 << 24], 0),
            0xcdaa_1043
        );
        let v6 = maglev_flow_hash(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
            40000,
            8080,
            17,
        );
        assert_eq!(v6, 0x578f_913e);
    }

    #[test]
    fn a_table_covers_its_backends_in_proportion() {
        let backends: Vec<MaglevBackend> = (0..4)
            .map(|i| MaglevBackend {
                id: i,
                addr: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1 + i as u8).into(), 80),
                weight: 1 + i,
            })
            .collect();
        let table = maglev_table(&backends, 1021).unwrap();
        for b in &backends {
            let share = table.iter().filter(|&&id| id == b.id).count() as f64 / 1021.0;
            let due = f64::from(b.weight) / 10.0;
            assert!(
                (share - due).abs() < 0.01,
                "backend {}: {share} for {due}",
                b.id
            );
        }
        assert_eq!(maglev_table(&[], 1021), None);
    }
}
