//! The flow tables' fill level and evictions, derived from the datapath's per-CPU insert counters
//! (`PF_FLOW_INSERTS`) instead of walking the tables (a full table holds 131,072 flows by
//! default, up to 100 million with `max_flows:`, and every `portfwd status` and metrics scrape
//! asks).
//!
//! Each flow table is an LRU hash with a list per CPU (`BPF_F_NO_COMMON_LRU`): the kernel gives
//! each possible CPU an equal share of the entries, a CPU inserts only into its own share, and
//! evicts its own least recently used entries only when its share is full. The datapath never
//! deletes a flow. So a CPU's entries are its inserts capped at its share, and its inserts
//! beyond the share were evictions. Exact but for two things, both small: the kernel evicts up
//! to 4 entries at once (a CPU may hold up to 3 fewer than counted), and a flow re-inserted with
//! another translation (its forward changed under it) frees its old entry on the CPU that made
//! it, which then counts one entry too many. Entries written by userspace (tests) are not
//! counted, except the flows a restart carries over to a table of another size, which set the
//! counters to what they placed on each CPU (see [`super::resize`]).

use portfwd_common::maps::FlowTable;

/// One flow table's fill level, as `portfwd status` and the metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableFill {
    pub table: FlowTable,
    /// Flows it holds.
    pub entries: u64,
    /// Its capacity.
    pub max_entries: u64,
    /// Flows the datapath inserted since the table was created.
    pub inserted: u64,
    /// Flows the LRU evicted to make room for newer ones.
    pub evicted: u64,
}

impl FlowTableFill {
    /// The fill of `table` (capacity `max_entries`) from its inserts on each possible CPU.
    pub fn from_inserts(table: FlowTable, max_entries: u64, per_cpu: &[u64]) -> FlowTableFill {
        let share = max_entries / (per_cpu.len().max(1) as u64);
        let mut fill = FlowTableFill {
            table,
            entries: 0,
            max_entries,
            inserted: 0,
            evicted: 0,
        };
        for &n in per_cpu {
            fill.inserted += n;
            fill.entries += n.min(share);
            fill.evicted += n.saturating_sub(share);
        }
        fill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_a_share_every_insert_is_an_entry() {
        let f = FlowTableFill::from_inserts(FlowTable::New, 8, &[3, 1]);
        assert_eq!((f.entries, f.inserted, f.evicted), (4, 4, 0));
    }

    #[test]
    fn a_cpu_beyond_its_share_evicted_the_rest_whatever_the_other_holds() {
        let f = FlowTableFill::from_inserts(FlowTable::Est6, 8, &[10, 1]);
        assert_eq!((f.entries, f.inserted, f.evicted), (5, 11, 6));
        let full = FlowTableFill::from_inserts(FlowTable::New, 8, &[4, 4]);
        assert_eq!((full.entries, full.evicted), (8, 0));
    }
}
