//! Tests of the slot pools: credits, holds, reclaim after a crash, stale references.

use super::*;

/// Holder ids of these numbers.
fn holders(ids: &[u16]) -> Vec<HolderId> {
    ids.iter().copied().map(HolderId::new).collect()
}

/// An 8-byte item written to a fresh slot of `pool` for `holders` consumers.
fn written(pool: &SlotPool, holders: u32) -> ShmRef {
    pool.try_acquire(holders)
        .expect("slot")
        .commit(8)
        .expect("fits")
}

#[test]
fn write_read_release_reuses_with_new_generation() {
    let pool = SlotPool::create(PoolId::new(1), 2, 100, &[]).expect("create");
    let mut w = pool.try_acquire(1).expect("free slot");
    w.bytes_mut()[..3].copy_from_slice(b"abc");
    let r = w.commit(3).expect("fits");
    assert_eq!(pool.read(&r).expect("read"), b"abc");
    assert_eq!(pool.free_slots(), 1);
    pool.release(&r).expect("release");
    assert_eq!(pool.free_slots(), 2);
    assert!(pool.read(&r).is_ok(), "generation only moves on reuse");
    let a = pool.try_acquire(1).expect("slot").commit(1).expect("fits");
    let b = pool.try_acquire(1).expect("slot").commit(1).expect("fits");
    assert!(pool.try_acquire(1).is_none(), "no credit left");
    let reused = if a.slot == r.slot { a } else { b };
    assert_ne!(reused.generation, r.generation);
    assert!(matches!(pool.read(&r), Err(ShmError::Stale { .. })));
    assert!(matches!(pool.release(&r), Err(ShmError::Stale { .. })));
}

#[test]
fn fan_out_frees_after_the_last_holder() {
    let pool = SlotPool::create(PoolId::new(1), 1, 8, &[]).expect("create");
    let r = written(&pool, 2);
    pool.add_holders(&r, 1).expect("add");
    for _ in 0..2 {
        pool.release(&r).expect("release");
        assert_eq!(pool.free_slots(), 0);
    }
    pool.release(&r).expect("release");
    assert_eq!(pool.free_slots(), 1);
    assert!(matches!(
        pool.release(&r),
        Err(ShmError::OverRelease { .. })
    ));
}

#[test]
fn attached_view_shares_memory_and_checks_bounds() {
    let pool = SlotPool::create(PoolId::new(7), 3, 16, &[]).expect("create");
    let other = SlotPool::attach(
        PoolId::new(7),
        Region::open(PoolId::new(7), pool.handle()).expect("open"),
    )
    .expect("attach");
    assert_eq!(other.slot_count(), 3);
    let mut w = pool.try_acquire(1).expect("slot");
    w.bytes_mut()[..4].copy_from_slice(&[1, 2, 3, 4]);
    let r = w.commit(4).expect("fits");
    assert_eq!(other.read(&r).expect("read"), &[1, 2, 3, 4]);
    other.release(&r).expect("release");
    assert_eq!(pool.free_slots(), 3);
    let bad = ShmRef { len: 17, ..r };
    assert!(matches!(pool.read(&bad), Err(ShmError::OutOfBounds { .. })));
    let bad = ShmRef { slot: 3, ..r };
    assert!(matches!(pool.read(&bad), Err(ShmError::NoSuchSlot { .. })));
    assert!(pool.try_acquire(1).expect("slot").commit(17).is_err());
}

#[test]
fn attach_rejects_foreign_memory() {
    let junk = Region::create(PoolId::new(2), 8192).expect("region");
    // SAFETY: our own fresh 8192-byte region.
    unsafe { std::ptr::write_bytes(junk.as_ptr(), 7, 8192) };
    assert_eq!(
        SlotPool::attach(PoolId::new(2), junk).unwrap_err(),
        ShmError::BadHeader {
            pool: PoolId::new(2)
        }
    );
    let tiny = Region::create(PoolId::new(2), 8).expect("region");
    assert!(matches!(
        SlotPool::attach(PoolId::new(2), tiny),
        Err(ShmError::TooSmall { .. })
    ));
}

#[test]
fn a_waiting_producer_is_woken_by_a_release_in_another_thread() {
    let pool = std::sync::Arc::new(SlotPool::create(PoolId::new(1), 1, 8, &[]).expect("create"));
    let r = pool.try_acquire(1).expect("slot").commit(1).expect("fits");
    let releaser = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.release(&r))
    };
    let w = pool.acquire(1, Duration::from_secs(10));
    assert!(w.is_some(), "woken by the release");
    releaser.join().expect("thread").expect("release");
}

#[test]
fn a_count_left_by_a_release_cut_short_is_found_and_dropped() {
    let pool = SlotPool::create(PoolId::new(1), 2, 8, &holders(&[1, 2])).expect("create");
    let producer =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(1)).expect("attach");
    let consumer =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(2)).expect("attach");
    let r = written(&producer, 1);
    producer.transfer(&r, HolderId::new(2)).expect("transfer");
    assert_eq!(pool.unattributed(r.slot), (r.generation, 0));
    // The consumer is killed between the two steps of its release: its hold is
    // gone, the slot's count is not.
    consumer
        .holds(r.slot, consumer.holder)
        .fetch_sub(1, Ordering::AcqRel);
    assert_eq!(
        pool.reclaim_holder(HolderId::new(2)),
        0,
        "nothing attributed to it any more"
    );
    assert_eq!(pool.free_slots(), 1, "held by nobody");
    assert_eq!(pool.unattributed(r.slot), (r.generation, 1));
    assert!(
        !pool.drop_unattributed(r.slot, r.generation + 1, 1),
        "other generation"
    );
    assert!(
        !pool.drop_unattributed(r.slot, r.generation, 2),
        "more than is there"
    );
    assert!(pool.drop_unattributed(r.slot, r.generation, 1));
    assert_eq!(pool.free_slots(), 2);
    assert_eq!(pool.unattributed(r.slot), (r.generation, 0));
}

#[test]
fn reclaiming_a_dead_holder_frees_exactly_its_holds() {
    let pool = SlotPool::create(PoolId::new(1), 4, 8, &holders(&[1, 2, 3])).expect("create");
    let producer =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(1)).expect("attach");
    let alive = SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(2)).expect("attach");
    // One item to each consumer (3 dies), one fanned out to both.
    let a = written(&producer, 1);
    producer.transfer(&a, HolderId::new(2)).expect("transfer");
    let b = written(&producer, 1);
    producer.transfer(&b, HolderId::new(3)).expect("transfer");
    let c = written(&producer, 2);
    producer.transfer(&c, HolderId::new(2)).expect("transfer");
    producer.transfer(&c, HolderId::new(3)).expect("transfer");
    // The producer is still writing a fourth.
    let writing = producer.try_acquire(1).expect("slot");
    assert_eq!(pool.free_slots(), 0);
    assert_eq!(
        pool.reclaim_holder(HolderId::new(3)),
        2,
        "b and its share of c"
    );
    assert_eq!(pool.free_slots(), 1, "b is free, c is still held by 2");
    alive.release(&c).expect("release");
    alive.release(&a).expect("release");
    assert_eq!(pool.free_slots(), 3);
    // A send to the dead consumer that failed after the reclaim drops nothing twice.
    assert_eq!(producer.release_for(&b, HolderId::new(3)), Ok(false));
    drop(writing);
    assert_eq!(pool.free_slots(), 4);
    for h in (0..4).map(HolderId::new) {
        assert_eq!(pool.holds_of(h), 0, "holder {h}");
    }
}

#[test]
fn a_failed_send_releases_the_consumers_hold_once() {
    let pool = SlotPool::create(PoolId::new(1), 1, 8, &holders(&[1, 5])).expect("create");
    let producer =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(1)).expect("attach");
    let r = written(&producer, 1);
    producer.transfer(&r, HolderId::new(5)).expect("transfer");
    // The supervisor reclaimed 5 first: the producer's undo finds nothing to drop.
    assert_eq!(pool.reclaim_holder(HolderId::new(5)), 1);
    assert_eq!(producer.release_for(&r, HolderId::new(5)), Ok(false));
    assert_eq!(pool.free_slots(), 1);
    let r = written(&producer, 1);
    producer.transfer(&r, HolderId::new(5)).expect("transfer");
    assert_eq!(producer.release_for(&r, HolderId::new(5)), Ok(true));
    assert_eq!(pool.reclaim_holder(HolderId::new(5)), 0);
    assert_eq!(pool.free_slots(), 1);
}

#[test]
fn dropping_an_uncommitted_writer_frees_the_slot() {
    let pool = SlotPool::create(PoolId::new(1), 1, 8, &[]).expect("create");
    drop(pool.try_acquire(1).expect("slot"));
    assert_eq!(pool.free_slots(), 1);
}

#[test]
fn a_pool_tracks_hundreds_of_holders_and_only_those_listed() {
    // Holder ids far past the 63 a fixed-size record once allowed.
    let ids: Vec<HolderId> = (1..=600).map(HolderId::new).collect();
    let pool = SlotPool::create(PoolId::new(1), 3, 8, &ids).expect("create");
    assert_eq!(
        pool.holder_ids().len(),
        601,
        "the listed ids and the supervisor's 0"
    );
    let producer =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(1)).expect("attach");
    let last =
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(600)).expect("attach");
    let a = written(&producer, 1);
    producer.transfer(&a, HolderId::new(600)).expect("transfer");
    let b = written(&producer, 1);
    producer.transfer(&b, HolderId::new(599)).expect("transfer");
    assert_eq!(pool.holds_of(HolderId::new(600)), 1);
    assert_eq!(
        pool.reclaim_holder(HolderId::new(599)),
        1,
        "the dead holder's item only"
    );
    assert_eq!(pool.free_slots(), 2);
    last.release(&a).expect("release");
    assert_eq!(pool.free_slots(), 3);
    for slot in 0..3 {
        assert_eq!(pool.unattributed(slot).1, 0, "slot {slot}");
    }
    // A holder the pool was not made for is refused, not written past the record.
    assert_eq!(
        SlotPool::open_as(PoolId::new(1), pool.handle(), HolderId::new(601)).unwrap_err(),
        ShmError::BadHolder {
            pool: PoolId::new(1),
            holder: HolderId::new(601)
        }
    );
    let c = written(&producer, 1);
    assert!(matches!(
        producer.transfer(&c, HolderId::new(700)),
        Err(ShmError::BadHolder { holder, .. }) if holder == HolderId::new(700)
    ));
    assert_eq!(pool.reclaim_holder(HolderId::new(700)), 0);
    assert_eq!(pool.holds_of(HolderId::new(700)), 0);
}

#[test]
fn attach_rejects_a_corrupt_holder_list() {
    let pool = SlotPool::create(PoolId::new(3), 2, 8, &holders(&[4, 9])).expect("create");
    assert_eq!(pool.holder_ids(), holders(&[0, 4, 9]));
    // SAFETY: test only; nobody else uses this pool. Swap the list out of order.
    unsafe {
        let base = pool.base;
        std::ptr::write(base.add(HEADER + 2) as *mut u16, 9);
        std::ptr::write(base.add(HEADER + 4) as *mut u16, 4);
    }
    assert_eq!(
        SlotPool::attach(
            PoolId::new(3),
            Region::open(PoolId::new(3), pool.handle()).expect("open")
        )
        .unwrap_err(),
        ShmError::BadHeader {
            pool: PoolId::new(3)
        }
    );
    // A holder count the region cannot hold.
    pool.header_u32(12).store(u32::MAX, Ordering::Relaxed);
    assert!(matches!(
        SlotPool::attach(
            PoolId::new(3),
            Region::open(PoolId::new(3), pool.handle()).expect("open")
        ),
        Err(ShmError::BadGeometry { .. })
    ));
}

#[test]
fn a_new_pool_takes_no_memory_until_written_and_every_opener_shares_it() {
    // 8 slots of 64 MiB: 512 MiB of address space, only the header and records touched.
    let pool = SlotPool::create(PoolId::new(5), 8, 64 << 20, &holders(&[3])).expect("create");
    let blocks = |pool: &SlotPool| {
        let h = pool.handle();
        let meta = std::fs::metadata(format!("/proc/{}/fd/{}", h.pid, h.fd)).expect("fd");
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512
    };
    let before = blocks(&pool);
    assert!(before < 1 << 20, "a fresh pool holds {before} bytes");
    // Another process (here: this one, through the same path) opens the same memory.
    let other = SlotPool::open_as(PoolId::new(5), pool.handle(), HolderId::new(3)).expect("open");
    let mut w = other.try_acquire(1).expect("slot");
    w.bytes_mut()[..5].copy_from_slice(b"shard");
    let r = w.commit(5).expect("fits");
    assert_eq!(pool.read(&r).expect("read"), b"shard");
    let after = blocks(&pool);
    assert!(
        after > before && after < before + (1 << 20),
        "one written page, not the slot: {before} -> {after} bytes"
    );
    // A handle to a pool that is gone names the pool and the path.
    let gone = PoolHandle {
        pid: std::process::id(),
        fd: i32::MAX,
    };
    let e = SlotPool::open_as(PoolId::new(9), gone, HolderId::new(0)).unwrap_err();
    assert!(
        matches!(e, ShmError::Open { pool, .. } if pool == PoolId::new(9)),
        "{e}"
    );
    assert!(e.to_string().contains("/proc/"), "{e}");
}
