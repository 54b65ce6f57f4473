//! Where each shape group of a GPU stage's batch writes its outputs when the groups are
//! sent to the agent at once: the batch's output slot cut into one range per group, in
//! proportion to the group's input size (MTCNN's and PP-OCR's outputs grow with their
//! inputs), 64-byte aligned. A group whose outputs do not fit its range is answered
//! "too small" by the agent; the stage then sends its groups one after the other, each
//! after the last one's outputs, as before.

/// `(offset, len)` ranges of `[0, len)`, one per weight, in order, proportional to the
/// weights, each starting on a 64-byte boundary and none overlapping.
pub fn split(len: u64, weights: &[u64]) -> Vec<(u64, u64)> {
    let total: u128 = weights.iter().map(|&w| u128::from(w.max(1))).sum();
    let mut out = Vec::with_capacity(weights.len());
    let mut at = 0u64;
    let mut acc: u128 = 0;
    for &w in weights {
        acc += u128::from(w.max(1));
        // The end of this range: the proportional share so far, aligned down.
        let end = ((u128::from(len) * acc / total.max(1)) as u64) / 64 * 64;
        let end = end.max(at);
        out.push((at, end - at));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_proportional_aligned_disjoint_and_inside_the_slot() {
        let len = 1_000_003;
        let w = [400_000u64, 100_000, 25_000, 6_000, 1_500, 0];
        let r = split(len, &w);
        assert_eq!(r.len(), w.len());
        let mut end = 0;
        for (k, &(off, l)) in r.iter().enumerate() {
            assert_eq!(off % 64, 0, "range {k} aligned");
            assert!(off >= end, "range {k} after the previous one");
            end = off + l;
        }
        assert!(end <= len);
        // the largest group gets about its share (400/532.5 of the slot)
        let share = r[0].1 as f64 / len as f64;
        assert!((share - 400.0 / 532.5).abs() < 0.001, "{share}");
        // one group: the whole slot, aligned down
        assert_eq!(split(1000, &[7]), vec![(0, 960)]);
    }
}
