//! Repairs after a process dies: every hold attributed to it freed at once, and the holds
//! no listed holder accounts for (found by the supervisor's leak check) dropped.

use super::SlotPool;
use crate::ids::HolderId;
use std::sync::atomic::Ordering;

impl SlotPool {
    /// Free every hold attributed to `holder` (a process that died: the slots it was
    /// writing, reading, or that sat in its inbox). Returns how many holds.
    pub fn reclaim_holder(&self, holder: HolderId) -> u32 {
        let Ok(column) = self.column(holder) else {
            return 0;
        };
        let mut freed = 0;
        for slot in 0..self.slots {
            let n = self.holds(slot, column).swap(0, Ordering::AcqRel);
            if n > 0 {
                self.drop_refs(slot, n as u32);
                freed += n as u32;
            } else if n < 0 {
                self.holds(slot, column).fetch_add(n, Ordering::AcqRel);
            }
        }
        freed
    }

    /// Counts on `slot` that no holder accounts for, with the slot's generation: the
    /// refcount less the holds of every holder. Non-zero for an instant while a process
    /// is between the two updates of an acquire, release or transfer; lasting, it is
    /// what a process killed there left behind (every update is ordered so that such a
    /// kill leaves a count too many, never one too few).
    pub fn unattributed(&self, slot: u32) -> (u32, i64) {
        if slot >= self.slots {
            return (0, 0);
        }
        let generation = self.generation(slot).load(Ordering::Acquire);
        let held: i64 = (0..self.holder_ids.len())
            .map(|c| i64::from(self.holds(slot, c).load(Ordering::Acquire)))
            .sum();
        let count = i64::from(self.refcount(slot).load(Ordering::Acquire));
        (generation, count - held)
    }

    /// Drop `n` counts no holder accounts for from `slot`, if it is still at
    /// `generation` and still has that many (the supervisor's repair, once the excess
    /// has lasted long enough not to be another process's update in progress).
    pub fn drop_unattributed(&self, slot: u32, generation: u32, n: u32) -> bool {
        if slot >= self.slots || n == 0 {
            return false;
        }
        let (now, excess) = self.unattributed(slot);
        if now != generation || excess < i64::from(n) {
            return false;
        }
        self.drop_refs(slot, n);
        true
    }

    /// Holds currently attributed to `holder`, over all slots.
    pub fn holds_of(&self, holder: HolderId) -> i64 {
        let Ok(column) = self.column(holder) else {
            return 0;
        };
        (0..self.slots)
            .map(|s| i64::from(self.holds(s, column).load(Ordering::Acquire)))
            .sum()
    }
}
