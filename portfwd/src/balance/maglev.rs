//! Maglev lookup tables: Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer" (NSDI 2016), section 3.4, with weights as Katran's `MaglevHashV2` honours them.
//!
//! # The algorithm
//!
//! The table has `M` slots, `M` prime. Each backend gets a permutation of the slots from two
//! hashes of its address: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`, and its `j`-th
//! preferred slot is `(offset + j * skip) % M` (a full permutation, as `skip` and a prime `M`
//! are coprime). The backends then take turns: in its turn a backend claims its most
//! preferred slot still free. With weights, a backend of weight `w` takes a turn in a round
//! only when its credit, raised by `w` each round, reaches the largest weight `W` (then it
//! loses `W`): so it takes `w / W` turns per round, and fills about `w / sum` of the table.
//! Backends of weight 0 take no turn (they get no new flows: a draining backend).
//!
//! # What is fixed, so that tables are the same on every run and every machine
//!
//! - the hashes: SipHash-1-3 (the `siphasher` crate) with the fixed keys [`OFFSET_KEYS`] for
//!   `h1` and [`SKIP_KEYS`] for `h2`, over [`backend_key`]: the backend's address bytes then
//!   its port, big-endian. The key is the address, not the backend's position or id, so a
//!   backend keeps its permutation (and most of its slots) when others come and go;
//! - the order of turns within a round: the backends sorted by address ([`SocketAddr`]'s
//!   order), whatever order the caller lists them in.

use std::net::SocketAddr;

use siphasher::sip::SipHasher13;

/// The table size when the backends are few: Cilium's default, and the issue's.
pub const DEFAULT_TABLE_SIZE: usize = 16381;

/// The table sizes [`table_size_for`] chooses from (Cilium's list of allowed sizes): primes,
/// each about twice the one before.
pub const TABLE_SIZES: [usize; 13] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071, 262139, 524287, 1048573,
];

/// SipHash-1-3 keys of the hash giving a backend's first slot (`offset`).
pub const OFFSET_KEYS: (u64, u64) = (0x706f_7274_6677_642d, 0x6d61_676c_6576_2d31);
/// SipHash-1-3 keys of the hash giving a backend's stride through the table (`skip`).
pub const SKIP_KEYS: (u64, u64) = (0x706f_7274_6677_642d, 0x6d61_676c_6576_2d32);

/// One backend of a forward, as the table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// What the table's slots hold for this backend (the datapath's index of it).
    pub id: u32,
    /// Its address: the stable key its permutation is hashed from.
    pub addr: SocketAddr,
    /// Its relative share of new flows; 0 gives it none.
    pub weight: u32,
}

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the Maglev table size {0} is not a prime")]
    SizeNotPrime(usize),
    #[error("no backend has a weight above 0")]
    NoBackend,
    #[error("the backend {0} is listed twice")]
    DuplicateBackend(SocketAddr),
}

/// The table size for a forward of `backends` backends: the smallest size of [`TABLE_SIZES`]
/// at least 100 times the backends (so that each backend's share is within about 1% of its
/// due), and never below [`DEFAULT_TABLE_SIZE`]: a change of size reshuffles every flow, so the
/// size stays put until a forward has more than 163 backends. Beyond the largest size, that
/// size.
pub fn table_size_for(backends: usize) -> usize {
    let wanted = backends.saturating_mul(100).max(DEFAULT_TABLE_SIZE);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&size| size >= wanted)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

/// The bytes a backend's permutation is hashed from: its IP address (4 or 16 bytes, network
/// order) followed by its port (2 bytes, network order).
pub fn backend_key(addr: SocketAddr) -> Vec<u8> {
    let mut key = match addr {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    };
    key.extend_from_slice(&addr.port().to_be_bytes());
    key
}

/// Builds the lookup table of `backends` with `size` slots: slot `i` holds the id of the
/// backend that flows hashed to `i` go to. Backends of weight 0 get no slot.
pub fn build_table(backends: &[Backend], size: usize) -> Result<Vec<u32>, TableError> {
    if !is_prime(size) {
        return Err(TableError::SizeNotPrime(size));
    }
    let mut sorted: Vec<&Backend> = backends.iter().collect();
    sorted.sort_by_key(|b| b.addr);
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].addr == pair[1].addr) {
        return Err(TableError::DuplicateBackend(pair[0].addr));
    }
    sorted.retain(|b| b.weight > 0);
    let max_weight = sorted
        .iter()
        .map(|b| u64::from(b.weight))
        .max()
        .ok_or(TableError::NoBackend)?;

    let mut turns: Vec<Turn> = sorted.iter().map(|b| Turn::new(b, size)).collect();
    let mut table = vec![0u32; size];
    let mut taken = vec![false; size];
    let mut filled = 0;
    // Each round, a backend of the largest weight takes a turn, and each turn fills a slot
    // (a permutation visits every slot), so the loop ends after at most `size` rounds.
    loop {
        for turn in &mut turns {
            turn.credit += turn.weight;
            if turn.credit < max_weight {
                continue;
            }
            turn.credit -= max_weight;
            while taken[turn.next] {
                turn.advance(size);
            }
            taken[turn.next] = true;
            table[turn.next] = turn.id;
            turn.advance(size);
            filled += 1;
            if filled == size {
                return Ok(table);
            }
        }
    }
}

/// A backend's place in the filling of a table: where its permutation is, and its credit.
struct Turn {
    id: u32,
    weight: u64,
    credit: u64,
    /// The slot its permutation offers next.
    next: usize,
    skip: usize,
}

impl Turn {
    fn new(backend: &Backend, size: usize) -> Turn {
        let key = backend_key(backend.addr);
        let h1 = SipHasher13::new_with_keys(OFFSET_KEYS.0, OFFSET_KEYS.1).hash(&key);
        let h2 = SipHasher13::new_with_keys(SKIP_KEYS.0, SKIP_KEYS.1).hash(&key);
        let size64 = size as u64;
        Turn {
            id: backend.id,
            weight: u64::from(backend.weight),
            credit: 0,
            // Both below `size`, a usize: the casts back are lossless.
            next: (h1 % size64) as usize,
            skip: (h2 % (size64 - 1) + 1) as usize,
        }
    }

    /// Moves to the permutation's next slot: `(next + skip) % size`, with both below `size`.
    fn advance(&mut self, size: usize) {
        self.next += self.skip;
        if self.next >= size {
            self.next -= size;
        }
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
