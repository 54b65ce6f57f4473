//! Making an app's shared-memory pools at start, several at once. A pool is a memfd
//! created without writing it (`protocol::shm::Region`), so this takes milliseconds;
//! when pools were ipc-channel regions filled byte by byte (≈ 3.5 GB for the faces app)
//! making them side by side on one thread per core was most of the start (issue 14).

use anyhow::Context;
use protocol::shm::SlotPool;
use protocol::{HolderId, PoolId};

/// One pool to make: its key (task, replica), id, slots, slot size, holders, and the
/// name used in errors.
pub struct PoolJob<K> {
    pub key: K,
    pub id: PoolId,
    pub slots: u32,
    pub slot_size: u64,
    pub holders: Vec<HolderId>,
    pub name: String,
}

/// Makes every pool of `jobs` on up to `threads` threads; the pools by key in the jobs'
/// order, or the first error (naming its stage).
pub fn create_all<K: Send>(
    jobs: Vec<PoolJob<K>>,
    threads: usize,
) -> anyhow::Result<Vec<(K, SlotPool)>> {
    let threads = threads.clamp(1, jobs.len().max(1));
    let mut chunks: Vec<Vec<(usize, PoolJob<K>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        chunks[i % threads].push((i, job));
    }
    let mut made: Vec<(usize, anyhow::Result<(K, SlotPool)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, j)| {
                            let pool = SlotPool::create(j.id, j.slots, j.slot_size, &j.holders)
                                .with_context(|| format!("cannot create the pool of {}", j.name));
                            (i, pool.map(|p| (j.key, p)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        usize::MAX,
                        Err(anyhow::anyhow!("a pool-making thread panicked")),
                    )]
                })
            })
            .collect()
    });
    made.sort_by_key(|(i, _)| *i);
    made.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_made_side_by_side_keep_their_ids_sizes_and_order_and_errors_name_the_stage() {
        let jobs: Vec<PoolJob<(usize, u32)>> = (0..5u32)
            .map(|k| PoolJob {
                key: (k as usize, 0),
                id: PoolId::new(10 + k),
                slots: 2 + k,
                slot_size: 4096 * u64::from(k + 1),
                holders: vec![HolderId::new(1), HolderId::new(2)],
                name: format!("stage{k}#0"),
            })
            .collect();
        let pools = create_all(jobs, 2).expect("pools");
        assert_eq!(pools.len(), 5);
        for (k, ((t, r), pool)) in pools.iter().enumerate() {
            assert_eq!((*t, *r), (k, 0));
            assert_eq!(pool.id(), PoolId::new(10 + k as u32));
            assert_eq!(pool.slot_count(), 2 + k as u32);
            assert_eq!(pool.slot_size(), 4096 * (k as u64 + 1));
        }
        let bad = vec![PoolJob {
            key: 0,
            id: PoolId::new(1),
            slots: 1,
            slot_size: 64,
            holders: vec![HolderId::NONE],
            name: "pnet-pre#1".into(),
        }];
        let e = create_all(bad, 2).map(|_| ()).unwrap_err();
        assert!(format!("{e:#}").contains("pnet-pre#1"), "{e:#}");
    }
}
