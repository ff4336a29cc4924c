//! Replies to the host's own flows on published ports (`portfwd-ebpf`'s `local`): passed to the
//! stack rather than forwarded. The model sees the flows tc egress recorded (`PF_LOCAL_FLOWS`),
//! not the kernel's sockets: it predicts a world without a local socket owning the packet, which
//! is the test namespace's (the socket lookup is tested against real sockets on its own).

use portfwd_common::{
    maps::{FlowKeyOf, ForwardValueOf},
    proto,
    reason::Reason,
};

use crate::family::{Fam, Ip};
use crate::wire::wire16;
use crate::world::World;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Why `pkt`, to the published port of `fwd`, belongs to the host, if it does: never for a TCP
/// SYN without ACK, nor for a packet of a flow portfwd forwards; else when its replies' key is
/// among the local flows.
pub(crate) fn owner<F: Fam>(
    f: &[u8],
    world: &impl World,
    pkt: &Ip<F::A>,
    fwd: &ForwardValueOf<F::A>,
) -> Option<Reason> {
    if pkt.proto == proto::TCP && f[pkt.l4 + 13] & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return None;
    }
    let hairpin = pkt.saddr == fwd.target_addr_be;
    let forwarded = FlowKeyOf {
        saddr_be: fwd.target_addr_be,
        daddr_be: if hairpin { pkt.daddr } else { pkt.saddr },
        sport_be: fwd.target_port_be,
        dport_be: wire16(pkt.sport),
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if F::flow(world, &forwarded).is_some() {
        return None;
    }
    F::local_flow(world, &pkt.key()).then_some(Reason::PassLocalFlow)
}
