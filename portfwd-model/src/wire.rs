//! Header sizes and constants, and big-endian access to the frame's bytes.

pub(crate) const ETH_LEN: usize = 14;
pub(crate) const ETH_P_IPV4: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const IPV4_MIN: usize = 20;
pub(crate) const IPV6_LEN: usize = 40;
pub(crate) const IPV6_FRAG_LEN: usize = 8;
pub(crate) const NEXTHDR_FRAGMENT: u8 = 44;
pub(crate) const TCP_MIN: usize = 20;
pub(crate) const UDP_LEN: usize = 8;
pub(crate) const ICMP_LEN: usize = 8;
pub(crate) const IP_MF: u16 = 0x2000;
pub(crate) const IP_OFFSET: u16 = 0x1fff;

pub(crate) fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

pub(crate) fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// A port as the maps keep it: the two wire bytes read as a native `u16`.
pub(crate) fn wire16(port: u16) -> u16 {
    port.to_be()
}
