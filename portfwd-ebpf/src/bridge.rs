//! A shortcut past the bridge for translated packets.
//!
//! A container hangs off a bridge (docker0) through a veth pair. After translation the FIB
//! lookup names the bridge as egress; redirecting there makes the packet cross the bridge and
//! the veth queue, which costs as much as plain routing. Instead, when the next hop's MAC was
//! seen arriving on one of the bridge's veth ports, the packet goes straight into that veth's
//! peer, the container's interface (`bpf_redirect_peer`, tc only).
//!
//! MACs are learned from the frames the containers send, as the bridge itself learns them
//! (and with the same trust: a container that sends with another's MAC takes its traffic,
//! on the bridge as here). Only veth ports are listed in [`BRIDGE_PORTS`] by userspace.
use portfwd_common::maps::{MacKey, PortEntry};

use crate::{
    maps::{BRIDGE_PORTS, PORT_MACS},
    packet::Packet,
};

/// Offset of the source MAC in the Ethernet header.
const SRC_MAC_OFF: usize = 6;

/// Records the source MAC of a frame arriving on a veth bridge port (the caller checked the
/// port's `IFACE_BRIDGE_PORT` flag).
#[inline(always)]
pub fn learn<P: Packet>(p: &P) {
    let port = p.ingress_ifindex();
    let Some(bridge) = BRIDGE_PORTS.get_ptr(port) else {
        return;
    };
    // SAFETY: the pointer comes from a successful lookup of a plain u32 and is read at once.
    let bridge = unsafe { *bridge };
    let Ok(mac) = p.load::<[u8; 6]>(SRC_MAC_OFF) else {
        return;
    };
    let key = MacKey { mac, _pad: [0; 2] };
    let entry = PortEntry { port, bridge };
    // SAFETY: as above; the value is plain integers, copied out at once.
    let known = PORT_MACS.get_ptr(key).map(|e| unsafe { *e });
    if known != Some(entry) {
        let _ = PORT_MACS.insert(key, entry, 0);
    }
}

/// The veth port of `bridge` behind which `mac` was last seen, if any.
#[inline(always)]
pub fn port_behind(bridge: u32, mac: &[u8; 6]) -> Option<u32> {
    let key = MacKey {
        mac: *mac,
        _pad: [0; 2],
    };
    // SAFETY: the pointer comes from a successful lookup; the value is copied out at once.
    let entry = unsafe { *PORT_MACS.get_ptr(key)? };
    // The port must still be a port of that bridge (a container restarted with the same MAC
    // gets a new veth; until it sends, the learned port is stale and the bridge decides).
    // SAFETY: as above, a plain u32.
    let current = unsafe { *BRIDGE_PORTS.get_ptr(entry.port)? };
    (entry.bridge == bridge && current == bridge).then_some(entry.port)
}
