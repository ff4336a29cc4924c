//! Forwards derived from containers rather than written in the config: Docker's bindings
//! (`docker`), the config's forwards to containers by name (resolved through `docker`), and
//! CNI attachments' (`cni`). When what they derive from changes (a container event, a CNI
//! request, a config change), [`State::sync_derived`] brings the running forwards in line
//! with [`State::wanted`], one forward at a time.
use super::{
    follow::Change,
    state::{Active, Origin, State},
};
use crate::{
    error::{Error, chain},
    publish::{Forward, Listen},
};

impl State {
    /// Publishes and withdraws the derived forwards to match [`State::wanted`] (each one
    /// appears or goes as a whole, like `portfwd add`/`del`), lets existing UDP flows follow,
    /// and saves Docker's containers.
    pub(super) fn sync_derived(&mut self) {
        let config = self.config();
        let wanted: Vec<(Forward, Origin)> = self
            .wanted(&config)
            .into_iter()
            .filter(|(_, o)| o.is_derived())
            .collect();
        // A pool whose replicas changed (a compose service scaled, a replica restarted) is
        // changed in place: its flows stay on their backends and a removed one drains.
        for (fwd, origin) in &wanted {
            if let Err(e) = self.repool(fwd, origin) {
                tracing::error!(forward = %fwd, "{}", chain(&e));
            }
        }
        let stale: Vec<Listen> = self
            .forwards
            .iter()
            .filter(|a| a.origin.is_derived())
            .filter(|a| !wanted.iter().any(|(f, o)| *f == a.fwd && *o == a.origin))
            .map(|a| a.fwd.listen)
            .collect();
        for listen in stale {
            match self.unpublish(&listen) {
                Ok(a) => {
                    tracing::info!(forward = %a.fwd, origin = %a.origin.label(), "withdrawn");
                    self.follow(&[Change::Removed(&a.fwd)]);
                }
                Err(e) => tracing::error!("withdrawing {listen}: {}", chain(&e)),
            }
        }
        for (fwd, origin) in wanted {
            if self
                .forwards
                .iter()
                .any(|a| a.fwd == fwd && a.origin == origin)
            {
                continue;
            }
            let label = origin.label();
            match self.publish(fwd.clone(), origin) {
                Ok(()) => {
                    tracing::info!(forward = %fwd, origin = %label, "published");
                    self.follow(&[Change::Added(&fwd)]);
                }
                Err(e) => tracing::error!(forward = %fwd, origin = %label, "{}", chain(&e)),
            }
        }
        if let Some(d) = &self.docker {
            d.save();
        }
    }

    /// Changes a running pool to `fwd`'s backends in place, if it is the same pool otherwise
    /// (listen side, allowlist, origin): its forward entry stays as it is (one slot, flagged as
    /// a pool), only its backends and table change.
    pub(super) fn repool(&mut self, fwd: &Forward, origin: &Origin) -> Result<(), Error> {
        let Some(i) = self.forwards.iter().position(|a| {
            a.fwd.listen == fwd.listen
                && a.fwd.allow == fwd.allow
                && &a.origin == origin
                && a.fwd.pool.is_some()
                && fwd.pool.is_some()
                && a.fwd != *fwd
        }) else {
            return Ok(());
        };
        let active = Active {
            fwd: fwd.clone(),
            slot: self.forwards[i].slot,
            origin: origin.clone(),
        };
        self.pools
            .prepare(&mut self.dp.maps, std::slice::from_ref(&active))?;
        tracing::info!(forward = %fwd, origin = %origin.label(), "pool changed");
        self.forwards[i] = active;
        self.after_pools_change();
        Ok(())
    }

    /// Withdraws Docker's forwards that overlap `listen`, which a forward of the config is
    /// about to take (the config wins).
    pub(super) fn displace_docker(&mut self, listen: &Listen) -> Result<Vec<Active>, Error> {
        let in_the_way: Vec<Listen> = self
            .forwards
            .iter()
            .filter(|a| matches!(a.origin, Origin::Docker { .. }))
            .filter(|a| a.fwd.listen.conflicts_with(listen))
            .map(|a| a.fwd.listen)
            .collect();
        in_the_way.iter().map(|l| self.unpublish(l)).collect()
    }
}
