//! Where the tc program is attached.
use std::collections::BTreeMap;

use aya::programs::{SchedClassifier, TcAttachType, tc, tc::SchedClassifierLinkId, xdp::XdpLinkId};

use crate::error::Error;

/// What is attached to one interface.
struct Attachment {
    name: String,
    tc: SchedClassifierLinkId,
    xdp: Option<XdpLinkId>,
    /// Native XDP was tried and refused by the driver: do not retry on every resync.
    xdp_unsupported: bool,
}

/// The interfaces the programs are attached to, by ifindex.
#[derive(Default)]
pub struct Attachments {
    links: BTreeMap<u32, Attachment>,
}

impl Attachments {
    pub fn is_attached(&self, index: u32, name: &str) -> bool {
        self.links.get(&index).is_some_and(|a| a.name == name)
    }

    pub(super) fn insert(&mut self, index: u32, name: &str, tc: SchedClassifierLinkId) {
        self.links.insert(
            index,
            Attachment {
                name: name.to_owned(),
                tc,
                xdp: None,
                xdp_unsupported: false,
            },
        );
    }

    pub(super) fn remove(
        &mut self,
        index: u32,
    ) -> Option<(SchedClassifierLinkId, Option<XdpLinkId>)> {
        self.links.remove(&index).map(|a| (a.tc, a.xdp))
    }

    pub(super) fn xdp(&self, index: u32) -> Option<&XdpLinkId> {
        self.links.get(&index).and_then(|a| a.xdp.as_ref())
    }

    pub(super) fn set_xdp(&mut self, index: u32, link: XdpLinkId) {
        if let Some(a) = self.links.get_mut(&index) {
            a.xdp = Some(link);
        }
    }

    pub(super) fn take_xdp(&mut self, index: u32) -> Option<XdpLinkId> {
        self.links.get_mut(&index).and_then(|a| a.xdp.take())
    }

    pub(super) fn xdp_unsupported(&self, index: u32) -> bool {
        self.links.get(&index).is_some_and(|a| a.xdp_unsupported)
    }

    pub(super) fn mark_xdp_unsupported(&mut self, index: u32) {
        if let Some(a) = self.links.get_mut(&index) {
            a.xdp_unsupported = true;
        }
    }

    /// Attached interfaces as (ifindex, name, whether XDP is in front of tc).
    pub fn list(&self) -> Vec<(u32, String, bool)> {
        self.links
            .iter()
            .map(|(i, a)| (*i, a.name.clone(), a.xdp.is_some()))
            .collect()
    }

    pub fn indexes(&self) -> Vec<u32> {
        self.links.keys().copied().collect()
    }
}

/// Attaches at tc ingress. On kernels with tcx (>= 6.6) aya uses a tcx link; older kernels need
/// the clsact qdisc, which is added if missing.
pub(super) fn attach_tc(
    prog: &mut SchedClassifier,
    name: &str,
) -> Result<SchedClassifierLinkId, Error> {
    match prog.attach(name, TcAttachType::Ingress) {
        Ok(link) => Ok(link),
        Err(first) => {
            // Legacy netlink attachment needs clsact; "already exists" is fine.
            let _ = tc::qdisc_add_clsact(name);
            prog.attach(name, TcAttachType::Ingress)
                .map_err(|e| Error::Attach {
                    interface: name.to_owned(),
                    message: format!("{first}; after adding clsact: {e}"),
                })
        }
    }
}
