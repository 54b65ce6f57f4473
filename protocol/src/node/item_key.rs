//! Which replica of a consumer gets an item: round robin, or by the item's key where the
//! consumer pairs parts of one item coming from several producers (`table.merge`).

/// The key of one item (its source and sequence number), which routes it to a replica
/// of a consumer that pairs parts ([`crate::messages::OutputRoute::by_item`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct ItemKey<'a> {
    pub source: &'a str,
    pub seq: u64,
}

impl ItemKey<'_> {
    /// A number spread evenly over items, the same in every process (FNV-1a of the
    /// source, mixed with the seq by SplitMix64's finaliser): consecutive items of one
    /// source land on replicas independently of how an upstream stage split them.
    pub fn spread(self) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.source.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = h ^ self.seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::ItemKey;

    fn shares(seqs: impl Iterator<Item = u64>, replicas: u32) -> Vec<u32> {
        let mut counts = vec![0u32; replicas as usize];
        for seq in seqs {
            let turn = ItemKey { source: "cam", seq }.spread();
            counts[(turn % replicas) as usize] += 1;
        }
        counts
    }

    #[test]
    fn items_spread_evenly_even_when_an_upstream_replica_took_every_other_one() {
        for replicas in [2, 3] {
            for counts in [
                shares(0..3000, replicas),
                shares((0..6000).step_by(2), replicas),
            ] {
                let even = 3000 / replicas;
                for c in counts {
                    assert!(
                        c.abs_diff(even) < even / 10,
                        "{c} of 3000 on one of {replicas} replicas"
                    );
                }
            }
        }
    }

    #[test]
    fn an_item_goes_to_the_same_replica_from_every_producer() {
        let a = ItemKey {
            source: "cam",
            seq: 41,
        }
        .spread();
        let b = ItemKey {
            source: &String::from("cam"),
            seq: 41,
        }
        .spread();
        assert_eq!(a, b);
        assert_ne!(
            ItemKey {
                source: "cam",
                seq: 41
            }
            .spread(),
            ItemKey {
                source: "cam2",
                seq: 41
            }
            .spread()
        );
    }
}
