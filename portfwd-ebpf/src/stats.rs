//! Counters: one per verdict reason, and packets/bytes/flows per forward. All per CPU, so the
//! datapath never contends on a cache line; userspace sums them.
use portfwd_common::{maps::Hook, reason::Reason};

use crate::maps::{FORWARD_STATS, VERDICTS};

#[inline(always)]
pub fn count_verdict(hook: Hook, reason: Reason) {
    if let Some(c) = VERDICTS.get_ptr_mut(hook as u32 * Reason::COUNT + reason as u32) {
        // SAFETY: per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *c += 1 };
    }
}

/// Direction of a translated packet, for the per-forward counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToTarget,
    ToClient,
}

#[inline(always)]
pub fn count_forward(slot: u32, dir: Direction, bytes: u64, new_flow: bool) {
    let Some(s) = FORWARD_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: per-CPU slot, written only by this CPU with preemption disabled.
    let s = unsafe { &mut *s };
    match dir {
        Direction::ToTarget => {
            s.to_target_packets += 1;
            s.to_target_bytes += bytes;
        }
        Direction::ToClient => {
            s.to_client_packets += 1;
            s.to_client_bytes += bytes;
        }
    }
    if new_flow {
        s.new_flows += 1;
    }
}
