//! The forwards of CNI attachments: `portfwd-cni` (a chained CNI plugin in place of
//! `portmap`) asks the daemon over the control socket ([`Request::Cni`]) to publish a
//! container's port mappings, owned by its attachment ([`CniOwner`]: network, container id,
//! interface), and to withdraw them.
//!
//! They are the daemon's own state: saved beside the control socket (`daemon::saved`), so
//! that a restarted or crashed daemon serves them from its first packet; never written to
//! the config. `portfwd list` shows them as `cni:NETWORK/SHORT_ID`; `portfwd del` refuses
//! them, naming the owner.
//!
//! ADD is all or nothing: every mapping is checked against what runs (a host port that
//! anyone else publishes refuses the whole request, naming it) before anything changes. A
//! later forward of the config on the same port goes first: the CNI one is then not served
//! (logged), as [`State::wanted`] orders them.
use std::collections::BTreeMap;

use super::{
    saved,
    state::{Origin, State},
};
use crate::{
    api::{CNI_API_VERSION, CniMapping, CniOwner, CniRequest, Response},
    error::{Error, chain},
    publish::{Forward, Listen, NamedForward},
};

const SAVED: &str = "cni-forwards.json";

/// The forwards each CNI attachment asked for.
pub(super) struct CniForwards {
    owned: BTreeMap<CniOwner, Vec<Forward>>,
    saved: std::path::PathBuf,
}

/// One attachment's forwards, as saved.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    owner: CniOwner,
    forwards: Vec<Forward>,
}

impl CniForwards {
    /// What a previous daemon saved under `state_dir`.
    pub(super) fn load(state_dir: &std::path::Path) -> CniForwards {
        let saved = state_dir.join(SAVED);
        let owned: BTreeMap<CniOwner, Vec<Forward>> =
            saved::load::<Vec<Saved>>(&saved, "CNI forwards")
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.owner, s.forwards))
                .collect();
        if !owned.is_empty() {
            tracing::info!(attachments = owned.len(), "serving the saved CNI forwards");
        }
        CniForwards { owned, saved }
    }

    fn store(&self) {
        let list: Vec<Saved> = self
            .owned
            .iter()
            .map(|(owner, forwards)| Saved {
                owner: owner.clone(),
                forwards: forwards.clone(),
            })
            .collect();
        if let Err(e) = saved::store(&self.saved, &list) {
            tracing::error!("{}", chain(&e));
        }
    }

    /// The CNI forwards that do not collide with `ahead` (the config's forwards that run) nor
    /// with `named` (the config's forwards to containers, running or not).
    pub(super) fn wanted(
        &self,
        ahead: &[(Forward, Origin)],
        named: &[NamedForward],
    ) -> Vec<(Forward, Origin)> {
        let mut out: Vec<(Forward, Origin)> = Vec::new();
        for (owner, forwards) in &self.owned {
            for f in forwards {
                let taken = ahead
                    .iter()
                    .chain(out.iter())
                    .map(|(a, _)| a.listen)
                    .chain(named.iter().map(|n| n.listen))
                    .any(|l| l.conflicts_with(&f.listen));
                if taken {
                    tracing::warn!(forward = %f, origin = %owner.label(), "not served: a forward of the config takes its port");
                    continue;
                }
                out.push((f.clone(), Origin::Cni(owner.clone())));
            }
        }
        out
    }
}

/// Parses the mappings of a request (in portfwd's grammar, which the plugin wrote).
fn forwards_of(mappings: &[CniMapping]) -> Result<Vec<Forward>, Error> {
    mappings
        .iter()
        .map(|m| Ok(Forward::new(m.listen.parse()?, m.to.parse()?)?))
        .collect()
}

impl State {
    /// Handles a request of `portfwd-cni`.
    pub(super) fn cni(&mut self, version: u32, request: CniRequest) -> Response {
        let result = if version != CNI_API_VERSION {
            Err(Error::CniVersion {
                asked: version,
                spoken: CNI_API_VERSION,
            })
        } else {
            match request {
                CniRequest::Add { owner, mappings } => self.cni_add(owner, &mappings),
                CniRequest::Del { owner } => Ok(self.cni_del(&[owner])),
                CniRequest::Check { owner, mappings } => self.cni_check(&owner, &mappings),
                CniRequest::Gc { network, keep } => {
                    let gone: Vec<CniOwner> = self
                        .cni
                        .owned
                        .keys()
                        .filter(|o| o.network == network && !keep.contains(o))
                        .cloned()
                        .collect();
                    Ok(self.cni_del(&gone))
                }
            }
        };
        match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error { message: chain(&e) },
        }
    }

    fn cni_add(&mut self, owner: CniOwner, mappings: &[CniMapping]) -> Result<String, Error> {
        let wanted = forwards_of(mappings)?;
        // All or nothing: every port is free (or the owner's own) before anything changes.
        for (i, f) in wanted.iter().enumerate() {
            if let Some(other) = wanted[..i]
                .iter()
                .find(|o| o.listen.conflicts_with(&f.listen))
            {
                return Err(Error::Overlaps {
                    listen: f.listen.to_string(),
                    existing: other.listen.to_string(),
                    to: other.to.to_string(),
                });
            }
            let taken = self
                .forwards
                .iter()
                .filter(|a| a.origin != Origin::Cni(owner.clone()))
                .map(|a| (a.fwd.listen, a.fwd.to.to_string(), a.origin.label()))
                .chain(
                    self.cfg
                        .named
                        .iter()
                        .map(|n| (n.listen, n.to.to_string(), "config".to_owned())),
                )
                .find(|(l, _, _)| l.conflicts_with(&f.listen));
            if let Some((listen, to, origin)) = taken {
                return Err(Error::PortTaken {
                    listen: f.listen.to_string(),
                    existing: listen.to_string(),
                    to,
                    origin,
                });
            }
        }
        let label = owner.label();
        let before = self.cni.owned.insert(owner.clone(), wanted.clone());
        self.sync_derived();
        let served = |st: &State, f: &Forward| {
            st.forwards
                .iter()
                .any(|a| &a.fwd == f && a.origin == Origin::Cni(owner.clone()))
        };
        if let Some(missing) = wanted.iter().find(|f| !served(self, f)) {
            // A map update failed (logged): back to what the owner had.
            let missing = missing.to_string();
            match before {
                Some(b) => self.cni.owned.insert(owner.clone(), b),
                None => self.cni.owned.remove(&owner),
            };
            self.sync_derived();
            return Err(Error::CniNotApplied(missing));
        }
        self.cni.store();
        tracing::info!(origin = %label, forwards = wanted.len(), "CNI attachment published");
        Ok(format!("published {} mappings for {label}", wanted.len()))
    }

    /// Withdraws every forward of `owners` (none is fine: DEL is idempotent).
    fn cni_del(&mut self, owners: &[CniOwner]) -> String {
        let mut removed = 0;
        for owner in owners {
            if let Some(f) = self.cni.owned.remove(owner) {
                removed += f.len();
                tracing::info!(origin = %owner.label(), forwards = f.len(), "CNI attachment withdrawn");
            }
        }
        if removed > 0 {
            self.sync_derived();
            self.cni.store();
        }
        format!("withdrew {removed} forwards")
    }

    fn cni_check(&self, owner: &CniOwner, mappings: &[CniMapping]) -> Result<String, Error> {
        let mut wanted = forwards_of(mappings)?;
        wanted.sort();
        let mut running: Vec<Forward> = self
            .forwards
            .iter()
            .filter(|a| a.origin == Origin::Cni(owner.clone()))
            .map(|a| a.fwd.clone())
            .collect();
        running.sort();
        if wanted != running {
            let show = |v: &[Forward]| {
                v.iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::CniCheck {
                owner: owner.label(),
                wanted: show(&wanted),
                running: show(&running),
            });
        }
        Ok(format!(
            "{} has its {} mappings",
            owner.label(),
            wanted.len()
        ))
    }

    /// `portfwd del LISTEN --owner cni:...`: withdraws an attachment its runtime lost.
    pub(super) fn cni_release(&mut self, owner: &CniOwner) -> String {
        tracing::warn!(origin = %owner.label(), "CNI attachment withdrawn by hand (portfwd del --owner)");
        let done = self.cni_del(std::slice::from_ref(owner));
        format!("{}: {done}", owner.label())
    }

    /// The CNI attachment owning the forward on `listen`, if one does.
    pub(super) fn cni_owner_of(&self, listen: &Listen) -> Option<&CniOwner> {
        self.forwards
            .iter()
            .find(|a| &a.fwd.listen == listen)
            .and_then(|a| match &a.origin {
                Origin::Cni(owner) => Some(owner),
                _ => None,
            })
    }
}
