//! A reference model of the datapath's backend selection for a forward with several backends
//! (issue #16), written from the contract of `portfwd_common::pool`, with the model's own
//! Maglev table and flow hash ([`crate::maglev`]), not the datapath's or the daemon's code.
//! `portfwd/tests/datapath/pools.rs` runs random flows through the kernel programs and through
//! this, and compares the backends chosen.
//!
//! A client's packet (its 5-tuple as it arrives):
//! 1. a remembered placement (affinity) naming a backend that still has the same epoch, is
//!    live and of this forward, and is not draining unless the packet is TCP and opens no
//!    connection (not a SYN): that backend;
//! 2. otherwise a forward that refuses new flows (no table) refuses;
//! 3. otherwise the table's slot `flow_hash % M`; its backend must be live and of this forward,
//!    and the flow is placed there (remembered).
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use crate::maglev::maglev_flow_slot;

/// A backend as the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolBackend {
    pub addr: SocketAddr,
    pub live: bool,
    pub draining: bool,
    /// The stats slot of the forward it belongs to.
    pub slot: u32,
    pub epoch: u32,
}

/// A flow's 5-tuple as the client's packet carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

/// What a new packet of a pool's forward gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    /// Sent to this backend id.
    Backend(u32),
    /// The forward refuses new flows: answered with ICMP port unreachable.
    Refuse,
    /// The table's slot names no live backend of this forward: dropped.
    NoBackend,
}

/// One forward's pool: its stats slot, its table (`None`: refuses new flows), the backends by
/// id, and the placements remembered.
#[derive(Clone, Debug, Default)]
pub struct PoolModel {
    pub slot: u32,
    pub table: Option<Vec<u32>>,
    pub backends: HashMap<u32, PoolBackend>,
    /// Flow -> (backend id, its epoch when placed).
    pub affinity: HashMap<PoolFlow, (u32, u32)>,
}

const TCP: u8 = 6;

impl PoolModel {
    /// The choice for the first packet of `flow` (for TCP, a SYN), remembering a new
    /// placement.
    pub fn select(&mut self, flow: PoolFlow) -> Choice {
        self.select_packet(flow, flow.proto == TCP)
    }

    /// The choice for a packet of `flow` that `opens` a TCP connection (a SYN) or not.
    pub fn select_packet(&mut self, flow: PoolFlow, opens: bool) -> Choice {
        if let Some(&(id, epoch)) = self.affinity.get(&flow)
            && let Some(b) = self.backends.get(&id)
            && b.live
            && b.slot == self.slot
            && b.epoch == epoch
            && (!b.draining || (flow.proto == TCP && !opens))
        {
            return Choice::Backend(id);
        }
        let Some(table) = &self.table else {
            return Choice::Refuse;
        };
        let at = maglev_flow_slot(
            flow.src,
            flow.dst,
            flow.src_port,
            flow.dst_port,
            flow.proto,
            table.len(),
        );
        let id = table[at];
        match self.backends.get(&id) {
            Some(b) if b.live && b.slot == self.slot => {
                self.affinity.insert(flow, (id, b.epoch));
                Choice::Backend(id)
            }
            _ => Choice::NoBackend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{MaglevBackend, maglev_table};

    fn pool() -> PoolModel {
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|i| format!("172.17.0.2:{}", 3000 + i).parse().unwrap())
            .collect();
        let ms: Vec<MaglevBackend> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| MaglevBackend {
                id: i as u32,
                addr,
                weight: 1,
            })
            .collect();
        let backends = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| {
                let b = PoolBackend {
                    addr,
                    live: true,
                    draining: false,
                    slot: 7,
                    epoch: 1,
                };
                (i as u32, b)
            })
            .collect();
        PoolModel {
            slot: 7,
            table: maglev_table(&ms, 13),
            backends,
            affinity: HashMap::new(),
        }
    }

    fn flow(proto: u8) -> PoolFlow {
        PoolFlow {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 40000,
            dst_port: 8080,
            proto,
        }
    }

    #[test]
    fn a_placed_flow_stays_until_its_backend_goes() {
        for proto in [6, 17] {
            let mut p = pool();
            let Choice::Backend(id) = p.select(flow(proto)) else {
                panic!("no backend");
            };
            // Another table: the placement wins.
            p.table = Some(vec![(id + 1) % 3; 13]);
            assert_eq!(p.select(flow(proto)), Choice::Backend(id));
            // Draining: an established TCP flow stays, UDP is hashed again.
            p.backends.get_mut(&id).unwrap().draining = true;
            let again = if proto == 6 { id } else { (id + 1) % 3 };
            assert_eq!(p.select_packet(flow(proto), false), Choice::Backend(again));
            // Refusing: placed flows stay, new ones are refused.
            p.table = None;
            assert_eq!(p.select_packet(flow(proto), false), Choice::Backend(again));
            let mut other = flow(proto);
            other.src_port += 1;
            assert_eq!(p.select(other), Choice::Refuse);
        }
    }
}
