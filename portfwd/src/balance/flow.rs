//! The flow hash: which slot of a Maglev table a packet's flow reads.
//!
//! The datapath computes it for every new flow, so it is the kernel's `jhash2` (Bob Jenkins'
//! lookup3 `hashword`, `include/linux/jhash.h`), as Cilium and Katran use: a few adds, xors
//! and rotations on 32-bit words, easy to write in eBPF and well mixed.
//!
//! # The exact layout (the datapath must build the same words)
//!
//! The 5-tuple is laid out as bytes, in network order, and read as 32-bit words big-endian
//! (`u32::from_be_bytes` of each 4 bytes; in eBPF, `u32::from_be` of a word loaded from the
//! packet):
//!
//! | family | bytes | words |
//! |---|---|---|
//! | IPv4 | src addr (4), dst addr (4), src port (2), dst port (2), protocol (1), 0 (3) | 4 |
//! | IPv6 | src addr (16), dst addr (16), src port (2), dst port (2), protocol (1), 0 (3) | 10 |
//!
//! that is, with ports and protocol as numbers: `... , (src_port << 16) | dst_port,
//! protocol << 24`. The hash is `jhash2(words, FLOW_HASH_SEED)` and the slot is
//! `hash % table_size` (32-bit unsigned). A tuple whose two addresses are of different
//! families (never on the wire) is laid out as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`).
//!
//! The seed is fixed, so that every daemon (and every restart) picks the same slot for a flow.

use std::net::{IpAddr, Ipv6Addr};

pub use portfwd_common::pool::FLOW_HASH_SEED;

/// A flow's 5-tuple, as the packet carries it from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
}

impl FlowTuple {
    /// The words the hash reads (see the module's layout), and how many of the 10 are used.
    fn words(&self) -> ([u32; 10], usize) {
        let mut words = [0u32; 10];
        let ports = (u32::from(self.src_port) << 16) | u32::from(self.dst_port);
        let proto = u32::from(self.proto) << 24;
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                words[..4].copy_from_slice(&[src.to_bits(), dst.to_bits(), ports, proto]);
                (words, 4)
            }
            (src, dst) => {
                for (i, addr) in [as_v6(src), as_v6(dst)].into_iter().enumerate() {
                    for (j, chunk) in addr.octets().chunks_exact(4).enumerate() {
                        words[i * 4 + j] =
                            u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    }
                }
                words[8] = ports;
                words[9] = proto;
                (words, 10)
            }
        }
    }
}

fn as_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The flow hash of `tuple` (see the module's layout).
pub fn flow_hash(tuple: &FlowTuple) -> u32 {
    let (words, len) = tuple.words();
    jhash2(&words[..len], FLOW_HASH_SEED)
}

/// The slot of a table of `table_size` slots that `tuple`'s flow reads: `flow_hash % size`.
pub fn flow_slot(tuple: &FlowTuple, table_size: usize) -> usize {
    assert!(
        table_size > 0 && u32::try_from(table_size).is_ok(),
        "a Maglev table has 1 to 2^32 - 1 slots, not {table_size}"
    );
    // Below `table_size`, a usize: lossless.
    (u64::from(flow_hash(tuple)) % table_size as u64) as usize
}

/// The kernel's `jhash2(k, length, initval)` over `words` (at most 10: an IPv6 5-tuple): the
/// datapath's own implementation, `portfwd_common::pool::jhash2`, so both sides hash alike.
pub fn jhash2(words: &[u32], initval: u32) -> u32 {
    assert!(words.len() <= 10, "a flow tuple is at most 10 words");
    let mut fixed = [0u32; 10];
    fixed[..words.len()].copy_from_slice(words);
    portfwd_common::pool::jhash2(&fixed, words.len(), initval)
}
