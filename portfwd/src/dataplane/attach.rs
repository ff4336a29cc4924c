//! Where the tc program is attached.
use std::collections::BTreeMap;

use aya::programs::{SchedClassifier, TcAttachType, tc, tc::SchedClassifierLinkId};

use crate::error::Error;

/// The interfaces the tc program is attached to, by ifindex.
#[derive(Default)]
pub struct Attachments {
    links: BTreeMap<u32, (String, SchedClassifierLinkId)>,
}

impl Attachments {
    pub fn is_attached(&self, index: u32, name: &str) -> bool {
        self.links.get(&index).is_some_and(|(n, _)| n == name)
    }

    pub(super) fn insert(&mut self, index: u32, name: &str, link: SchedClassifierLinkId) {
        self.links.insert(index, (name.to_owned(), link));
    }

    pub(super) fn remove(&mut self, index: u32) -> Option<SchedClassifierLinkId> {
        self.links.remove(&index).map(|(_, link)| link)
    }

    /// Attached interfaces as (ifindex, name).
    pub fn list(&self) -> Vec<(u32, String)> {
        self.links
            .iter()
            .map(|(i, (n, _))| (*i, n.clone()))
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
