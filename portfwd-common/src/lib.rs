//! Types and math shared by the portfwd eBPF programs and userspace.
//!
//! Everything in a map key or value is `#[repr(C)]` with explicit padding, so the kernel and
//! userspace agree on every byte. Addresses and ports inside map keys and values are kept in
//! **network byte order** (fields are suffixed `_be`): the eBPF side compares them with packet
//! bytes as they are, and userspace converts at exactly one place (`portfwd::datapath::maps`).
#![no_std]

pub mod checksum;
pub mod maps;
pub mod pool;
pub mod reason;
pub mod sock;

/// IP protocol numbers the datapath understands.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}
