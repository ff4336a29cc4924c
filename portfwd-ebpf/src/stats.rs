//! Counters: one per verdict reason and hook, one per socket verdict, and packets/bytes/flows
//! per forward. All per CPU, so the datapath never contends on a cache line; userspace sums them.
use portfwd_common::{maps::Hook, reason::Reason, sock::SockVerdict};

use crate::{
    maps::{self, FORWARD_STATS, SOCK_VERDICTS, VERDICTS},
    pool,
    types::Direction,
};

/// Counts a packet's verdict at `hook`.
#[inline(always)]
pub fn count_verdict(hook: Hook, reason: Reason) {
    maps::bump(&VERDICTS, hook as u32 * Reason::COUNT + reason as u32);
}

/// Counts a socket hook's verdict.
#[inline(always)]
pub fn count_sock_verdict(v: SockVerdict) {
    maps::bump(&SOCK_VERDICTS, v as u32);
}

/// The per-forward counters a translated packet adds to.
#[derive(Clone, Copy)]
pub struct Tally {
    /// The forward's counter slot.
    pub slot: u32,
    pub dir: Direction,
    /// Whether the packet started a flow.
    pub new_flow: bool,
    /// The backend of a pool it is sent to (`pool::NO_BACKEND`: none).
    pub backend: u32,
}

#[inline(always)]
pub fn count_forward(t: Tally, bytes: u64) {
    maps::update(&FORWARD_STATS, t.slot, |s| {
        match t.dir {
            Direction::ToTarget => {
                s.to_target_packets += 1;
                s.to_target_bytes += bytes;
            }
            Direction::ToClient => {
                s.to_client_packets += 1;
                s.to_client_bytes += bytes;
            }
        }
        if t.new_flow {
            s.new_flows += 1;
        }
    });
    pool::count_packet(t.backend, bytes);
}
