//! The model's verdict on one frame: the counter, the action, and the map updates.

use portfwd_common::reason::Reason;

use crate::world::FlowEntry;

/// What happens to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Passed on untouched (tc: `TC_ACT_UNSPEC`, XDP: `XDP_PASS`).
    Pass,
    /// Dropped untouched (tc: `TC_ACT_SHOT`, XDP: `XDP_DROP`).
    Drop,
    /// Rewritten and redirected out of `ifindex` (tc: `TC_ACT_REDIRECT`, XDP: `XDP_REDIRECT`).
    Redirect { ifindex: u32 },
    /// Replaced by an answer to its sender, sent back out of the ingress interface (tc:
    /// `TC_ACT_REDIRECT` to it, XDP: `XDP_TX`).
    Bounce,
}

/// Which way a translated packet went, for the per-forward counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToTarget,
    ToClient,
}

/// A per-forward counter update (`PF_FWD_STATS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub slot: u32,
    pub direction: Direction,
    /// The whole frame's length.
    pub bytes: u64,
    /// Whether the packet created (or replaced) its flow entry.
    pub new_flow: bool,
}

/// The model's verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict counter that is incremented (`PF_VERDICTS`).
    pub reason: Reason,
    pub action: Action,
    /// A flow entry written (inserted, or replacing a different value).
    pub flow: Option<FlowEntry>,
    pub count: Option<Count>,
}

impl Outcome {
    pub(crate) fn untouched(reason: Reason) -> Self {
        Outcome {
            reason,
            action: if reason == Reason::IcmpTooBigSent {
                Action::Bounce
            } else if reason.is_drop() {
                Action::Drop
            } else {
                Action::Pass
            },
            flow: None,
            count: None,
        }
    }
}
