//! The two generations of the forwarding state, and switching between them in one step.
//!
//! Every key of the forwarding tables (forwards, port ranges, allowlists, both families)
//! carries a generation, 0 or 1; the datapath reads the active one (`PF_GEN`) once per packet
//! and finds only its entries. A new forwarding state is written complete under the inactive
//! generation while the active one goes on serving, then made live by one update of `PF_GEN`:
//! every packet is translated by the old state or by the new one, never by part of each.
//! Once no packet that read the old generation can still be in the programs (an RCU grace
//! period), the old generation's entries are removed.
use aya::maps::{MapData, lpm_trie::LpmTrie};

use super::maps::{FamilyMaps, MapAddr, Maps, gone, map_err};
use crate::error::Error;

/// The generation that is not `generation`.
pub fn other(generation: u8) -> u8 {
    generation ^ 1
}

impl Maps {
    /// The generation the datapath reads (0 in fresh maps).
    pub fn active_generation(&self) -> Result<u8, Error> {
        let g = self
            .generation
            .get(&0, 0)
            .map_err(map_err("active generation"))?;
        // Only 0 and 1 are ever written; the low bit is what counts, here as in the datapath.
        Ok((g & 1) as u8)
    }

    /// Makes `generation` the one the datapath reads: one update of a one-element array, seen
    /// by each packet either before or after.
    pub fn switch_generation(&mut self, generation: u8) -> Result<(), Error> {
        self.generation
            .set(0, u32::from(generation), 0)
            .map_err(map_err("active generation"))
    }

    /// Removes every entry of `generation` from the forwarding tables of both families.
    /// Returns how many were removed.
    pub fn clear_generation(&mut self, generation: u8) -> Result<usize, Error> {
        Ok(self.v4.clear_generation(generation)? + self.v6.clear_generation(generation)?)
    }
}

impl<A: MapAddr> FamilyMaps<A> {
    fn clear_generation(&mut self, generation: u8) -> Result<usize, Error> {
        let forwards: Vec<_> = self
            .forwards
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == generation)
            .collect();
        for key in &forwards {
            gone(self.forwards.remove(key), "forwarding table")?;
        }
        let ranges = clear_trie(&mut self.ranges, "port ranges", |k| {
            k.generation == generation
        })?;
        let allow = clear_trie(&mut self.allow, "allowlists", |k| {
            k.generation == generation
        })?;
        Ok(forwards.len() + ranges + allow)
    }
}

/// Removes the entries of `trie` whose key data `pick` selects; returns how many.
fn clear_trie<K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    what: &'static str,
    pick: impl Fn(&K) -> bool,
) -> Result<usize, Error> {
    let keys: Vec<_> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| pick(&k.data()))
        .collect();
    for key in &keys {
        gone(trie.remove(key), what)?;
    }
    Ok(keys.len())
}

/// Waits until every packet that was in the datapath's programs when this was called has left
/// them: the programs run inside RCU read-side sections, and `membarrier(MEMBARRIER_CMD_GLOBAL)`
/// returns after an RCU grace period. Where the kernel refuses it (`nohz_full` CPUs), a pause
/// far longer than any packet's way through the programs stands in.
pub fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes two integers and a CPU id, touches no memory of ours and only
    // blocks the caller.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!("membarrier: {e}; waiting 50 ms instead");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
