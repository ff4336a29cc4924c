//! Counter slots: each published forward counts into its own slot of `PF_FWD_STATS`, which is
//! also its identity in the allowlist tries. A slot is handed out when a forward is published
//! and handed back when it is removed; the lowest slots are used first, so the array's used
//! part stays as short as the number of forwards allows.
use portfwd_common::maps::MAX_FORWARDS;

use crate::error::Error;

/// The slots handed out and the ones free for reuse.
#[derive(Debug)]
pub struct Slots {
    /// Handed back, below `next`; the most recently freed is reused first.
    free: Vec<u32>,
    /// Every slot from here up has never been handed out.
    next: u32,
    /// One past the highest slot (the counter array's size).
    limit: u32,
}

impl Default for Slots {
    fn default() -> Self {
        Slots::with_limit(MAX_FORWARDS)
    }
}

impl Slots {
    /// No slot handed out, `limit` of them in all.
    pub fn with_limit(limit: u32) -> Self {
        Slots {
            free: Vec::new(),
            next: 0,
            limit,
        }
    }

    /// The slots of the forwards taken over from a previous daemon are in use; every slot
    /// below the highest of them that is not in use is free.
    pub fn adopt(&mut self, used: impl IntoIterator<Item = u32>) {
        let used: std::collections::BTreeSet<u32> = used.into_iter().collect();
        self.next = used.last().map_or(0, |s| s + 1);
        self.free = (0..self.next).filter(|s| !used.contains(s)).rev().collect();
    }

    /// A slot no forward uses.
    pub fn alloc(&mut self) -> Result<u32, Error> {
        if let Some(s) = self.free.pop() {
            return Ok(s);
        }
        if self.next >= self.limit {
            return Err(Error::TooManyForwards(self.limit));
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// A slot no one uses, or `None` when all are (for callers with an error of their own).
    pub fn try_alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        (self.next < self.limit).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Hands `slot` back.
    pub fn free(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_handed_out_in_order_and_reused() {
        let mut s = Slots::with_limit(3);
        assert_eq!(s.alloc().unwrap(), 0);
        assert_eq!(s.alloc().unwrap(), 1);
        s.free(0);
        assert_eq!(s.alloc().unwrap(), 0);
        assert_eq!(s.alloc().unwrap(), 2);
    }

    #[test]
    fn the_limit_is_an_error_until_a_slot_is_freed() {
        let mut s = Slots::with_limit(2);
        s.alloc().unwrap();
        s.alloc().unwrap();
        assert!(matches!(s.alloc(), Err(Error::TooManyForwards(2))));
        s.free(1);
        assert_eq!(s.alloc().unwrap(), 1);
    }

    #[test]
    fn adopted_slots_stay_taken_and_the_holes_are_free() {
        let mut s = Slots::with_limit(8);
        s.adopt([4, 1]);
        let mut got: Vec<u32> = (0..4).map(|_| s.alloc().unwrap()).collect();
        assert_eq!(got[..3], [0, 2, 3]);
        got.sort();
        assert_eq!(got, [0, 2, 3, 5]);
        s.adopt([]);
        assert_eq!(s.alloc().unwrap(), 0);
    }

    #[test]
    fn default_limit_is_the_counter_array() {
        let mut s = Slots::default();
        s.adopt([MAX_FORWARDS - 1]);
        for _ in 0..MAX_FORWARDS - 1 {
            s.alloc().unwrap();
        }
        assert!(s.alloc().is_err());
    }
}
