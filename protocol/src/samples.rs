//! Bounded samples of per-item figures (end-to-end latencies, hop times) for runs of any
//! length: up to [`SAMPLE_CAP`] items every item is kept; past it a uniform sample of
//! that many (Algorithm R, drawn from a fixed hash of the item's rank, so a run gives the
//! same sample every time). Counts and the largest value are kept exactly beside it.

/// Items a sample keeps: percentiles from 262,144 uniform draws are within a few
/// hundredths of a percentile point of the whole run's.
pub const SAMPLE_CAP: usize = 1 << 18;

/// A uniform draw in `0..n` for the item of rank `rank` (SplitMix64 of the rank).
fn draw(rank: u64, n: u64) -> u64 {
    let mut z = rank.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % n.max(1)
}

/// Where item number `seen` (0 for the first) goes in a sample of `len` items holding
/// at most `cap`: `Some(len)` = appended, `Some(i)` = in place of item `i`, `None` = not
/// kept.
pub fn place(seen: u64, len: usize, cap: usize) -> Option<usize> {
    if len < cap {
        return Some(len);
    }
    let j = draw(seen, seen + 1);
    (j < cap as u64).then_some(j as usize)
}

/// `k` of `len` indices, spread evenly (a uniform sample stays uniform when thinned so).
pub fn spread(len: usize, k: usize) -> impl Iterator<Item = usize> {
    let k = k.min(len);
    (0..k).map(move |i| i * len / k.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_keeps_everything_up_to_its_cap_then_stays_uniform() {
        let cap = 1000;
        let mut kept: Vec<u64> = Vec::new();
        for seen in 0..100_000u64 {
            match place(seen, kept.len(), cap) {
                Some(i) if i == kept.len() => kept.push(seen),
                Some(i) => kept[i] = seen,
                None => {}
            }
            if seen < cap as u64 {
                assert_eq!(kept.len() as u64, seen + 1, "all kept below the cap");
            }
        }
        assert_eq!(kept.len(), cap);
        // Uniform over the run: each tenth of it holds about a tenth of the sample.
        for tenth in 0..10u64 {
            let n = kept.iter().filter(|&&s| s / 10_000 == tenth).count();
            assert!((60..=140).contains(&n), "tenth {tenth}: {n} of {cap}");
        }
        assert_eq!(spread(10, 5).collect::<Vec<_>>(), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(3, 5).count(), 3);
    }
}
