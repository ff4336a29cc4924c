//! Map names, sizes, keys and values.
//!
//! Each type here is a fixed-layout struct shared with the kernel. Padding is explicit and must
//! be zero, so that a key built in userspace hashes the same as one built in the kernel.

/// The forwarding table: published (host address, port, protocol) -> target.
pub const FORWARDS: &str = "PF_FORWARDS";
/// Reverse translations of live flows, keyed as the target's replies look on the wire.
pub const FLOWS: &str = "PF_FLOWS";
/// The host's own IPv4 addresses; a packet is "for the host" when its destination is here.
pub const HOST_ADDRS: &str = "PF_HOST_ADDRS";
/// Interfaces on which published ports are exposed (ifindex -> [`IFACE_EXPOSE`] flags).
pub const IFACES: &str = "PF_IFACES";
/// Per-forward counters, indexed by [`ForwardValue::stats_slot`] (per CPU).
pub const FORWARD_STATS: &str = "PF_FWD_STATS";
/// Counters of every verdict the datapath takes, per hook, indexed by
/// `hook * Reason::COUNT + reason` (see [`Hook`]), per CPU.
pub const VERDICTS: &str = "PF_VERDICTS";
/// Egress interfaces that accept XDP_REDIRECT frames (ifindex -> ifindex, a DEVMAP_HASH). XDP
/// finishes a translation only towards these; anything else is passed untouched to tc.
pub const XDP_EGRESS: &str = "PF_XDP_EGRESS";

/// The hooks, for the per-hook verdict counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tc = 0,
    Xdp = 1,
}

impl Hook {
    pub const COUNT: u32 = 2;
    pub const ALL: [Hook; 2] = [Hook::Tc, Hook::Xdp];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::Tc => "tc",
            Hook::Xdp => "xdp",
        }
    }
}

pub const MAX_FORWARDS: u32 = 16_384;
pub const MAX_FLOWS: u32 = 131_072;
pub const MAX_HOST_ADDRS: u32 = 1_024;
pub const MAX_IFACES: u32 = 1_024;

/// `IFACES` flag: published ports are reachable through this interface. Interfaces without it
/// still translate replies of flows that entered elsewhere.
pub const IFACE_EXPOSE: u32 = 1;

/// Key of the forwarding table.
///
/// `addr_be == 0` means "any of the host's addresses" (Docker's `-p 8080:80`); a non-zero address
/// is the host address the forward is bound to (`-p 192.0.2.1:8080:80`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ForwardKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of the forwarding table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardValue {
    pub target_addr_be: u32,
    pub target_port_be: u16,
    pub _pad: u16,
    /// Index into [`FORWARD_STATS`].
    pub stats_slot: u32,
    pub _pad2: u32,
}

/// A flow as the target's replies carry it: source = target, destination = the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What a reply's source is translated back to: the address and port the client used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub orig_addr_be: u32,
    pub orig_port_be: u16,
    pub _pad: u16,
    pub stats_slot: u32,
    /// Hairpin to itself: the caller (the target itself) was translated to `orig_addr_be` on the
    /// way in, so replies also get their destination translated back to this address. 0 for
    /// every other flow, whose replies keep their destination.
    pub client_addr_be: u32,
}

/// Per-forward counters. `to_target` counts client -> target packets, `to_client` the replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardStats {
    pub to_target_packets: u64,
    pub to_target_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    /// Flows first seen (a TCP SYN, or a UDP packet with no reverse entry yet).
    pub new_flows: u64,
}

impl ForwardStats {
    /// Sum of per-CPU values.
    pub fn add(&mut self, other: &Self) {
        self.to_target_packets += other.to_target_packets;
        self.to_target_bytes += other.to_target_bytes;
        self.to_client_packets += other.to_client_packets;
        self.to_client_bytes += other.to_client_bytes;
        self.new_flows += other.new_flows;
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is `#[repr(C)]`, made only of integers, with explicit padding
    // fields, so any bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for ForwardKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ForwardValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ForwardStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ForwardKey>(), 8);
        assert_eq!(size_of::<ForwardValue>(), 16);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowValue>(), 16);
        assert_eq!(size_of::<ForwardStats>(), 40);
    }
}
