//! Choosing one backend among several for a flow (issue #16): Maglev consistent hashing.
//!
//! The daemon builds a forward's lookup table here, in userspace ([`build_table`]); the
//! datapath will read it: the slot [`flow_slot`] of a packet's 5-tuple holds the backend's id.
//! Both halves are deterministic functions of their inputs (fixed hashes, fixed seeds, the
//! backends taken in address order), so a flow keeps its backend across daemon restarts and
//! after its flow entry is evicted, as long as the backend set is unchanged; when the set
//! changes, Maglev moves few flows besides those of the backends that left.
//!
//! - `maglev`: the table of a set of weighted backends, and the table size for a set's size;
//! - `flow`: the flow hash (the kernel's `jhash2` over the 5-tuple in a documented layout),
//!   which the eBPF side computes identically.
//!
//! `portfwd_model::maglev` is an independent implementation of both, which the tests in
//! `portfwd/tests/maglev.rs` compare with this one on random inputs.

mod flow;
mod maglev;
#[cfg(test)]
mod tests;

pub use flow::{FLOW_HASH_SEED, FlowTuple, flow_hash, flow_slot, jhash2};
pub use maglev::{
    Backend, DEFAULT_TABLE_SIZE, TABLE_SIZES, TableError, backend_key, build_table, table_size_for,
};
