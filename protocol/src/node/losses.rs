//! Which losses a stage counted: in a request-guarantee app the heads replay what the
//! tails have not acknowledged after any restart, so an item a stage could not process
//! (a bad input is bad every time) comes back and is lost again. Its skip goes out again
//! (a restarted tail may need it); its loss is counted once.

use std::collections::{BTreeSet, HashMap};

/// Losses remembered per source: replays come within the items in flight (a pool's
/// slots), far fewer than this.
pub const LOSS_MEMORY: usize = 4096;

/// The (source, seq) of the losses this process counted lately.
#[derive(Debug, Default)]
pub struct CountedLosses {
    per_source: HashMap<String, BTreeSet<u64>>,
}

impl CountedLosses {
    /// Note a loss of item `seq` of `source`; `false` when it was counted already.
    pub fn first_time(&mut self, source: &str, seq: u64) -> bool {
        let seqs = match self.per_source.get_mut(source) {
            Some(seqs) => seqs,
            None => self.per_source.entry(source.to_string()).or_default(),
        };
        if !seqs.insert(seq) {
            return false;
        }
        if seqs.len() > LOSS_MEMORY {
            seqs.pop_first();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_counted_once_per_item_and_the_memory_stays_bounded() {
        let mut losses = CountedLosses::default();
        assert!(losses.first_time("cam", 7));
        assert!(!losses.first_time("cam", 7), "a replay of a lost item");
        assert!(losses.first_time("cam2", 7), "another source's item");
        for seq in 100..100 + LOSS_MEMORY as u64 {
            assert!(losses.first_time("cam", seq));
        }
        assert_eq!(losses.per_source["cam"].len(), LOSS_MEMORY);
        assert!(losses.first_time("cam", 7), "the oldest was forgotten");
    }
}
