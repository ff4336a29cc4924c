//! Where the programs are attached, and how each attachment is held (interfaces here; the
//! socket hooks' handles are kept by `super::cgroup`).
use std::{collections::BTreeMap, path::PathBuf};

use aya::programs::{
    SchedClassifier, TcAttachType, cgroup_sock_addr::CgroupSockAddrLinkId, links::FdLink, tc,
    tc::SchedClassifierLinkId, xdp::XdpLinkId,
};
use portfwd_common::maps::Program;

use crate::error::AttachError;

/// How an attachment is held by the daemon.
pub(super) enum Handle {
    /// A link pinned in bpffs: it stays attached if the daemon dies. Detaching removes the pin
    /// and closes the fd.
    Pinned { link: FdLink, path: PathBuf },
    /// A tc attachment owned by this process only (no pin directory, or a kernel without tcx).
    Tc(SchedClassifierLinkId),
    /// The same, at tc egress.
    TcEgress(SchedClassifierLinkId),
    /// An XDP attachment owned by this process only.
    Xdp(XdpLinkId),
    /// A socket hook's attachment to the cgroup v2 root owned by this process only (no pin
    /// directory, or a kernel without cgroup links).
    Cgroup(Program, CgroupSockAddrLinkId),
}

/// What is attached to one interface.
pub(super) struct Attachment {
    pub(super) name: String,
    pub(super) tc: Handle,
    /// tc egress (`local`: flows leaving from published ports).
    pub(super) egress: Option<Handle>,
    pub(super) xdp: Option<Handle>,
    /// Native XDP was tried and refused by the driver: do not retry on every resync.
    pub(super) xdp_unsupported: bool,
}

/// The interfaces the programs are attached to, by ifindex.
#[derive(Default)]
pub struct Attachments {
    pub(super) links: BTreeMap<u32, Attachment>,
}

impl Attachments {
    pub fn is_attached(&self, index: u32, name: &str) -> bool {
        self.links.get(&index).is_some_and(|a| a.name == name)
    }

    pub(super) fn insert(&mut self, index: u32, name: &str, tc: Handle) {
        self.links.insert(
            index,
            Attachment {
                name: name.to_owned(),
                tc,
                egress: None,
                xdp: None,
                xdp_unsupported: false,
            },
        );
    }

    pub(super) fn has_egress(&self, index: u32) -> bool {
        self.links.get(&index).is_some_and(|a| a.egress.is_some())
    }

    pub(super) fn has_xdp(&self, index: u32) -> bool {
        self.links.get(&index).is_some_and(|a| a.xdp.is_some())
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

/// Attaches at tc ingress or egress (`at`). On kernels with tcx (>= 6.6) aya uses a tcx link;
/// older kernels need the clsact qdisc, which is added if missing.
pub(super) fn attach_tc(
    prog: &mut SchedClassifier,
    name: &str,
    at: TcAttachType,
) -> Result<SchedClassifierLinkId, AttachError> {
    match prog.attach(name, at) {
        Ok(link) => Ok(link),
        Err(first) => {
            // Legacy netlink attachment needs clsact; "already exists" is fine.
            let _ = tc::qdisc_add_clsact(name);
            prog.attach(name, at).map_err(|source| AttachError::Clsact {
                first: Box::new(first),
                source: Box::new(source),
            })
        }
    }
}
