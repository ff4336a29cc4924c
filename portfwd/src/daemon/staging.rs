//! Replacing the set of forwards in one step for the datapath (reloads and start-up).
//!
//! The new set is staged: written complete under the inactive generation of the forwarding
//! tables (see `datapath::generation`) while the running set goes on serving. Making it live
//! is one update of the active generation, so every packet is translated by the old set or by
//! the new one, never by part of each (a range half rewritten, an allowlist of one with the
//! target of the other, a forward removed before its replacement is written). Then, once no
//! packet can still be reading the old generation, its entries are removed and the counter
//! slots of the forwards that went are handed back.
//!
//! A forward that stays exactly as it was keeps its counter slot, so its counters carry on;
//! every other forward of the new set counts into a fresh, zeroed slot. A staged set that is
//! not made live is discarded: the running set and its slots are as they were.
//!
//! `portfwd add` and `del` change one forward in the active generation directly (see
//! [`State::publish`]): a single forward appears or goes as a whole, with nothing to mix.
use std::collections::BTreeSet;

use super::state::{Active, Origin, State};
use crate::{
    datapath::generation::{self, other},
    error::{Error, chain},
    publish::Forward,
};

/// A set of forwards written under the inactive generation, not yet live.
#[must_use = "a staged set is made live or discarded"]
pub(super) struct Staged {
    generation: u8,
    forwards: Vec<Active>,
    /// The slots handed out for it (given back if it is discarded).
    fresh: Vec<u32>,
}

impl State {
    /// Writes `wanted` complete under the inactive generation. On failure whatever was written
    /// is removed again and nothing has changed.
    pub(super) fn stage(&mut self, wanted: &[(Forward, Origin)]) -> Result<Staged, Error> {
        let generation = other(self.dp.maps.active_generation()?);
        // Whatever is left there (a daemon stopped part-way through a reload) goes first.
        self.dp.maps.clear_generation(generation)?;
        let mut staged = Staged {
            generation,
            forwards: Vec::with_capacity(wanted.len()),
            fresh: Vec::new(),
        };
        match self.write_staged(wanted, &mut staged) {
            Ok(()) => Ok(staged),
            Err(e) => {
                self.discard(staged);
                Err(e)
            }
        }
    }

    fn write_staged(
        &mut self,
        wanted: &[(Forward, Origin)],
        staged: &mut Staged,
    ) -> Result<(), Error> {
        for (fwd, origin) in wanted {
            // A pool keeps its slot when only its backends change: its backends, its table
            // and its flows' affinity are the slot's (see `super::pools`).
            let same = |a: &&Active| {
                &a.fwd == fwd
                    || (a.fwd.pool.is_some() && fwd.pool.is_some() && a.fwd.listen == fwd.listen)
            };
            let slot = match self.forwards.iter().find(same) {
                Some(a) => a.slot,
                None => {
                    let slot = self.slots.alloc()?;
                    staged.fresh.push(slot);
                    self.dp.maps.reset_counters(slot)?;
                    slot
                }
            };
            self.dp.maps.write_forward(fwd, slot, staged.generation)?;
            staged.forwards.push(Active {
                fwd: fwd.clone(),
                slot,
                origin: origin.clone(),
            });
        }
        Ok(())
    }

    /// Drops a staged set that is not to be made live.
    pub(super) fn discard(&mut self, staged: Staged) {
        if let Err(e) = self.dp.maps.clear_generation(staged.generation) {
            // Harmless where it is (never read); the next staging clears it.
            tracing::warn!("removing a discarded forwarding state: {}", chain(&e));
        }
        for slot in staged.fresh {
            self.slots.free(slot);
        }
    }

    /// Makes `staged` the running set: switches the datapath to its generation, waits until
    /// no packet is still translated with the old one, then removes the old generation and
    /// hands back the slots no forward uses any more. Fails only if the switch itself fails,
    /// and then the staged set is discarded and nothing has changed.
    pub(super) fn go_live(&mut self, staged: Staged) -> Result<(), Error> {
        // The pools' tables before the forwards that read them.
        let pooled = self.pools.prepare(&mut self.dp.maps, &staged.forwards);
        if let Err(e) = pooled.and_then(|()| self.dp.maps.switch_generation(staged.generation)) {
            self.discard(staged);
            self.restore_pools();
            return Err(e);
        }
        generation::wait_for_readers();
        if let Err(e) = self.dp.maps.clear_generation(other(staged.generation)) {
            // Never read again; the next staging clears what is left.
            tracing::warn!("removing the previous forwarding state: {}", chain(&e));
        }
        let live: BTreeSet<u32> = staged.forwards.iter().map(|a| a.slot).collect();
        for a in &self.forwards {
            if !live.contains(&a.slot) {
                self.slots.free(a.slot);
            }
        }
        for slot in std::mem::take(&mut self.orphan_slots) {
            self.slots.free(slot);
        }
        self.forwards = staged.forwards;
        self.retire_pools();
        Ok(())
    }

    /// Stages `wanted` and makes it live at once (start-up: nothing else to apply in between).
    pub(super) fn replace_forwards(&mut self, wanted: &[(Forward, Origin)]) -> Result<(), Error> {
        let staged = self.stage(wanted)?;
        self.go_live(staged)?;
        self.sync_reserved_ports();
        Ok(())
    }
}
