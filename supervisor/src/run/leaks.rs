//! Repair of shared-memory counts a killed process left behind. Every update of a
//! slot's counters is ordered so that a process killed between its two steps leaves
//! the slot's refcount one count (or a batch's worth) above what its holders account
//! for — a slot held by nobody, which would never be freed. After any process ends
//! the supervisor looks for such excess; what is still there, on the same generation,
//! a second later (no live process takes that long between two instructions) is
//! dropped, and the slot is free again.

use crate::run::wiring::{ReplicaId, Wiring};
use std::time::{Duration, Instant};

/// How long an excess must last before it is taken for a dead process's.
const CONFIRM: Duration = Duration::from_secs(1);

struct Suspect {
    pool: ReplicaId,
    slot: u32,
    generation: u32,
    excess: i64,
    seen: Instant,
}

#[derive(Default)]
pub struct LeakRepair {
    suspects: Vec<Suspect>,
    /// Counts dropped so far.
    pub repaired: u64,
}

impl LeakRepair {
    /// A process was killed or crashed: note every slot whose counts exceed what its
    /// holders hold (a process that ended by itself finished its updates).
    pub fn note_exit(&mut self, wiring: &Wiring) {
        let now = Instant::now();
        for (&pool, p) in &wiring.pools {
            for slot in 0..p.slot_count() {
                let (generation, excess) = p.unattributed(slot);
                let known = self
                    .suspects
                    .iter()
                    .any(|s| s.pool == pool && s.slot == slot && s.generation == generation);
                if excess > 0 && !known {
                    self.suspects.push(Suspect {
                        pool,
                        slot,
                        generation,
                        excess,
                        seen: now,
                    });
                }
            }
        }
    }

    /// Drop the excess that lasted [`CONFIRM`] (at once when `quiet`: no process runs,
    /// so none is between two updates). Only slots noted at a kill or crash are
    /// looked at, so a hold that a bug never released still shows at the end of the run.
    /// Returns how many counts were dropped.
    pub fn step(&mut self, wiring: &Wiring, quiet: bool) -> u64 {
        let mut dropped = 0;
        self.suspects.retain(|s| {
            if !quiet && s.seen.elapsed() < CONFIRM {
                return true;
            }
            let Some(p) = wiring.pools.get(&s.pool) else {
                return false;
            };
            let (generation, excess) = p.unattributed(s.slot);
            let n = excess.min(s.excess);
            if generation == s.generation
                && n > 0
                && p.drop_unattributed(s.slot, generation, n as u32)
            {
                tracing::warn!(
                    pool = %wiring.label(s.pool),
                    slot = s.slot,
                    counts = n,
                    "freed a slot held by no process (left by one killed mid-update)"
                );
                dropped += n as u64;
            }
            false
        });
        self.repaired += dropped;
        dropped
    }
}
