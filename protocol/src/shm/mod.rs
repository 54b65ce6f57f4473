//! Shared-memory slot pools: the data plane.
//!
//! A pool is one memfd-backed region ([`Region`]: created without writing it, so pages
//! come zeroed on first touch; no name in `/dev/shm` and nothing to leak when a process
//! is killed) created by the supervisor for one producing stage and mapped by the
//! producer and every stage downstream, which open it through a [`PoolHandle`].
//!
//! Layout: a 64-byte header, the list of holder ids, then one record per slot
//! (refcount, generation, owner pid, one hold counter per listed holder), then the
//! slots themselves. A producer takes a slot whose
//! refcount is zero, sets it to the number of consumers, bumps the generation, writes
//! the payload once and sends a [`ShmRef`]. Every consumer releases it when done; a
//! pass-through stage forwards the reference (adding holders for fan-out) and copies
//! nothing. Free slots are the producer's credits: when there are none it waits on a
//! futex in the header that releases wake.
//!
//! Every hold is also attributed to a *holder* (one id per stage replica, set when a
//! process maps the pool): the record keeps a counter per holder beside the refcount,
//! and a sender moves the hold to its consumer's id before it sends. So when a process
//! dies, the supervisor frees exactly the holds that process had (including items
//! still in its inbox) with [`SlotPool::reclaim_holder`]: no slot leaks after a crash.
//!
//! A pool has counters only for the holders that can touch it (the supervisor lists
//! them when it creates the pool: its producer, the replicas downstream that map it,
//! the GPU agent, and 0 for the supervisor itself). The list is stored, sorted, after
//! the header, and a record has one counter per listed holder: an app of hundreds of
//! processes costs each pool only its own readers' counters.

use crate::ids::{HolderId, PoolId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const MAGIC: u32 = 0x5350_4f4c; // "SPOL"
const LAYOUT_VERSION: u32 = 3;
const HEADER: usize = 64;
/// The largest holder id, as a number: it bounds an app's processes ([`HolderId::NONE`],
/// one more, means "no holder").
pub const MAX_HOLDER_ID: u16 = HolderId::MAX.get();
/// Per slot: refcount, generation, owner pid (64 bytes with padding), then one i32
/// hold counter per listed holder, padded to a cache line.
const RECORD_FIXED: usize = 64;
const RECORD_ALIGN: usize = 64;
const DATA_ALIGN: usize = 4096;
const SLOT_ALIGN: usize = 64;

/// Where a payload lives: pool, slot, and the generation the slot had when written
/// (a stale reference to a reused slot is detected, never read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShmRef {
    pub pool: PoolId,
    pub slot: u32,
    pub generation: u32,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShmError {
    #[error("pool {pool}: region of {len} bytes is too small for its header")]
    TooSmall { pool: PoolId, len: usize },
    #[error("pool {pool}: not a SmartPipe slot pool (bad magic or layout version)")]
    BadHeader { pool: PoolId },
    #[error("pool {pool}: {slots} slots of {slot_size} bytes do not fit in {len} bytes")]
    BadGeometry {
        pool: PoolId,
        slots: u32,
        slot_size: u64,
        len: usize,
    },
    #[error("pool {pool}: no slot {slot} (the pool has {slots})")]
    NoSuchSlot { pool: PoolId, slot: u32, slots: u32 },
    #[error("pool {pool} slot {slot}: reference to generation {want}, slot is at {have} (stale reference)")]
    Stale {
        pool: PoolId,
        slot: u32,
        want: u32,
        have: u32,
    },
    #[error("pool {pool} slot {slot}: {offset}+{len} is outside the {slot_size}-byte slot")]
    OutOfBounds {
        pool: PoolId,
        slot: u32,
        offset: u64,
        len: u64,
        slot_size: u64,
    },
    #[error("pool {pool} slot {slot}: released more often than it was held")]
    OverRelease { pool: PoolId, slot: u32 },
    #[error("pool {pool}: holder id {holder} is out of range")]
    BadHolder { pool: PoolId, holder: HolderId },
    #[error("pool {pool}: {slots} slots of {slot_size} bytes: {detail}")]
    TooLarge {
        pool: PoolId,
        slots: u32,
        slot_size: u64,
        detail: String,
    },
    #[error("pool {pool}: payload of {len} bytes does not fit a {slot_size}-byte slot")]
    PayloadTooLarge {
        pool: PoolId,
        len: u64,
        slot_size: u64,
    },
    #[error("pool {pool}: {what} failed: {errno}")]
    Os {
        pool: PoolId,
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("pool {pool}: cannot open its memory at {path}: {detail}")]
    Open {
        pool: PoolId,
        path: String,
        detail: String,
    },
}

/// A mapped slot pool.
pub struct SlotPool {
    id: PoolId,
    shm: Region,
    base: *mut u8,
    slots: u32,
    slot_size: u64,
    stride: usize,
    data: usize,
    cursor: AtomicU32,
    /// The holder ids this pool has counters for, sorted (column k is `holder_ids[k]`).
    holder_ids: Vec<HolderId>,
    /// Bytes per slot record.
    record: usize,
    /// The column this process's holds are attributed to.
    holder: usize,
}

// SAFETY: all shared state in the region is accessed through atomics; payload bytes
// are written only by the holder of a freshly acquired slot and read only while a
// reference is held, which the refcount protocol makes exclusive of writers.
unsafe impl Send for SlotPool {}
// SAFETY: as for Send above: shared state through atomics, payloads under the refcount.
unsafe impl Sync for SlotPool {}

impl std::fmt::Debug for SlotPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPool")
            .field("id", &self.id)
            .field("slots", &self.slots)
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

impl SlotPool {
    /// Create a new pool (supervisor side) whose holds can be attributed to `holders`
    /// (the holder ids of every process that will map it; 0, the supervisor's, is
    /// always added). The pool must fit the pool limit of the environment
    /// ([`crate::limits`]). Only the header and the slot records are written: the slots'
    /// pages are taken when a payload first touches them.
    pub fn create(
        id: PoolId,
        slots: u32,
        slot_size: u64,
        holders: &[HolderId],
    ) -> Result<SlotPool, ShmError> {
        let mut holder_ids: Vec<HolderId> = holders.to_vec();
        holder_ids.push(HolderId::SUPERVISOR);
        holder_ids.sort_unstable();
        holder_ids.dedup();
        if let Some(&bad) = holder_ids.iter().find(|&&h| h > HolderId::MAX) {
            return Err(ShmError::BadHolder {
                pool: id,
                holder: bad,
            });
        }
        let n = holder_ids.len();
        let too_large = |detail: String| ShmError::TooLarge {
            pool: id,
            slots,
            slot_size,
            detail,
        };
        let bytes = region_bytes(slots, slot_size, n);
        let limits = crate::limits::Limits::from_env().unwrap_or_default();
        limits
            .check_pool("the region", bytes)
            .map_err(|e| too_large(e.to_string()))?;
        let len = usize::try_from(bytes)
            .ok()
            .filter(|l| isize::try_from(*l).is_ok())
            .ok_or_else(|| {
                too_large(format!(
                    "{bytes} bytes do not fit this machine's address space"
                ))
            })?;
        let shm = Region::create(id, len)?;
        // SAFETY: the region was just created, `len` bytes long, and nobody else has it yet.
        let bytes = unsafe { std::slice::from_raw_parts_mut(shm.as_ptr(), len) };
        for (k, h) in holder_ids.iter().enumerate() {
            bytes[HEADER + 2 * k..HEADER + 2 * k + 2].copy_from_slice(&h.to_le_bytes());
        }
        let base = shm.as_ptr();
        let pool = SlotPool {
            id,
            shm,
            base,
            slots,
            slot_size,
            stride: round_slot(slot_size),
            data: data_offset(slots, n),
            cursor: AtomicU32::new(0),
            record: record_size(n),
            holder_ids,
            holder: 0,
        };
        pool.header_u32(0).store(MAGIC, Ordering::Relaxed);
        pool.header_u32(4).store(LAYOUT_VERSION, Ordering::Relaxed);
        pool.header_u32(8).store(slots, Ordering::Relaxed);
        pool.header_u32(12).store(n as u32, Ordering::Relaxed);
        pool.header_u64(16).store(slot_size, Ordering::Release);
        Ok(pool)
    }

    /// Map a pool's region (from another process: [`Region::open`]).
    pub fn attach(id: PoolId, shm: Region) -> Result<SlotPool, ShmError> {
        let len = shm.len();
        if len < HEADER {
            return Err(ShmError::TooSmall { pool: id, len });
        }
        // We only ever touch the region through atomics and held slots.
        let base = shm.as_ptr();
        let mut pool = SlotPool {
            id,
            shm,
            base,
            slots: 0,
            slot_size: 0,
            stride: 0,
            data: 0,
            cursor: AtomicU32::new(0),
            holder_ids: Vec::new(),
            record: 0,
            holder: 0,
        };
        if pool.header_u32(0).load(Ordering::Acquire) != MAGIC
            || pool.header_u32(4).load(Ordering::Acquire) != LAYOUT_VERSION
        {
            return Err(ShmError::BadHeader { pool: id });
        }
        let slots = pool.header_u32(8).load(Ordering::Acquire);
        let n = pool.header_u32(12).load(Ordering::Acquire) as usize;
        let slot_size = pool.header_u64(16).load(Ordering::Acquire);
        let geometry = ShmError::BadGeometry {
            pool: id,
            slots,
            slot_size,
            len,
        };
        if n == 0 || n > usize::from(u16::MAX) || records_offset(n) > len {
            return Err(geometry);
        }
        if region_bytes(slots, slot_size, n) > len as u128 {
            return Err(geometry);
        }
        // SAFETY: the holder list lies inside the mapping (checked above) and is
        // written once by the supervisor before the pool is handed out.
        let list = unsafe { std::slice::from_raw_parts(pool.base.add(HEADER), 2 * n) };
        let holder_ids: Vec<HolderId> = list
            .chunks_exact(2)
            .map(|c| HolderId::from_le_bytes([c[0], c[1]]))
            .collect();
        if holder_ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ShmError::BadHeader { pool: id });
        }
        pool.slots = slots;
        pool.slot_size = slot_size;
        pool.stride = round_slot(slot_size);
        pool.data = data_offset(slots, n);
        pool.record = record_size(n);
        pool.holder = holder_ids.binary_search(&HolderId::SUPERVISOR).unwrap_or(0);
        pool.holder_ids = holder_ids;
        Ok(pool)
    }

    /// Map a pool received from the supervisor, attributing this process's holds to
    /// `holder` (its stage replica's id), which must be one of the pool's holders.
    pub fn attach_as(id: PoolId, shm: Region, holder: HolderId) -> Result<SlotPool, ShmError> {
        let mut pool = SlotPool::attach(id, shm)?;
        pool.holder = pool.column(holder)?;
        Ok(pool)
    }

    /// Open and map the pool `handle` points at (made by another process), as
    /// [`SlotPool::attach_as`].
    pub fn open_as(id: PoolId, handle: PoolHandle, holder: HolderId) -> Result<SlotPool, ShmError> {
        SlotPool::attach_as(id, Region::open(id, handle)?, holder)
    }

    /// The counter column of holder id `holder`.
    fn column(&self, holder: HolderId) -> Result<usize, ShmError> {
        self.holder_ids
            .binary_search(&holder)
            .map_err(|_| ShmError::BadHolder {
                pool: self.id,
                holder,
            })
    }

    /// The holder ids this pool keeps counters for, sorted.
    pub fn holder_ids(&self) -> &[HolderId] {
        &self.holder_ids
    }

    /// A handle to send to another process (it maps the same memory).
    pub fn handle(&self) -> PoolHandle {
        self.shm.handle()
    }

    pub fn id(&self) -> PoolId {
        self.id
    }
    pub fn slot_count(&self) -> u32 {
        self.slots
    }
    pub fn slot_size(&self) -> u64 {
        self.slot_size
    }

    fn header_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offset < HEADER, 4-aligned, inside the mapping for the pool's lifetime.
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }
    fn header_u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as above, 8-aligned.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }
    /// The futex word bumped whenever a slot becomes free.
    fn free_epoch(&self) -> &AtomicU32 {
        self.header_u32(32)
    }
    fn waiters(&self) -> &AtomicU32 {
        self.header_u32(36)
    }
    fn record_u32(&self, slot: u32, offset: usize) -> &AtomicU32 {
        // SAFETY: slot < slots is checked by callers; records lie inside the mapping.
        unsafe { &*(self.base.add(self.record_start(slot) + offset) as *const AtomicU32) }
    }
    fn refcount(&self, slot: u32) -> &AtomicU32 {
        self.record_u32(slot, 0)
    }
    fn generation(&self, slot: u32) -> &AtomicU32 {
        self.record_u32(slot, 4)
    }
    fn owner(&self, slot: u32) -> &AtomicU32 {
        self.record_u32(slot, 8)
    }
    fn record_start(&self, slot: u32) -> usize {
        records_offset(self.holder_ids.len()) + slot as usize * self.record
    }
    /// The hold counter of column `column` (an index into `holder_ids`).
    fn holds(&self, slot: u32, column: usize) -> &AtomicI32 {
        let offset = self.record_start(slot) + RECORD_FIXED + 4 * column;
        // SAFETY: column < holder_ids.len() (columns come from `column`), slot < slots; the
        // counter lies inside this slot's record, 4-aligned.
        unsafe { &*(self.base.add(offset) as *const AtomicI32) }
    }

    /// Number of slots nobody holds.
    pub fn free_slots(&self) -> u32 {
        (0..self.slots)
            .filter(|&s| self.refcount(s).load(Ordering::Acquire) == 0)
            .count() as u32
    }

    /// Take a free slot for `holders` consumers, if there is one.
    pub fn try_acquire(&self, holders: u32) -> Option<SlotWriter<'_>> {
        let holders = holders.max(1);
        let start = self.cursor.load(Ordering::Relaxed);
        for k in 0..self.slots {
            let slot = (start + k) % self.slots;
            if self
                .refcount(slot)
                .compare_exchange(0, holders, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.cursor
                    .store((slot + 1) % self.slots, Ordering::Relaxed);
                let generation = self
                    .generation(slot)
                    .fetch_add(1, Ordering::AcqRel)
                    .wrapping_add(1);
                self.owner(slot)
                    .store(std::process::id(), Ordering::Relaxed);
                self.holds(slot, self.holder)
                    .fetch_add(holders as i32, Ordering::AcqRel);
                return Some(SlotWriter {
                    pool: self,
                    slot,
                    generation,
                    holders,
                    done: false,
                });
            }
        }
        None
    }

    /// Take a free slot, waiting up to `timeout` for one to be released; `None` at the
    /// deadline, or when woken without a slot to take (another process took it, or a
    /// [`SlotPool::wake_waiters`] nudge).
    pub fn acquire(&self, holders: u32, timeout: Duration) -> Option<SlotWriter<'_>> {
        if let Some(w) = self.try_acquire(holders) {
            return Some(w);
        }
        let deadline = std::time::Instant::now() + timeout;
        self.waiters().fetch_add(1, Ordering::SeqCst);
        // Woken by a release or a nudge (`wake_waiters`): one more try, then return,
        // so that the caller can look at its inbox.
        let mut woken = false;
        let result = loop {
            let epoch = self.free_epoch().load(Ordering::SeqCst);
            if let Some(w) = self.try_acquire(holders) {
                break Some(w);
            }
            let now = std::time::Instant::now();
            if woken || now >= deadline {
                break None;
            }
            futex_wait(self.free_epoch(), epoch, deadline - now);
            woken = self.free_epoch().load(Ordering::SeqCst) != epoch;
        };
        self.waiters().fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn check(&self, r: &ShmRef) -> Result<(), ShmError> {
        if r.slot >= self.slots {
            return Err(ShmError::NoSuchSlot {
                pool: self.id,
                slot: r.slot,
                slots: self.slots,
            });
        }
        let have = self.generation(r.slot).load(Ordering::Acquire);
        if have != r.generation {
            return Err(ShmError::Stale {
                pool: self.id,
                slot: r.slot,
                want: r.generation,
                have,
            });
        }
        if r.offset
            .checked_add(r.len)
            .is_none_or(|end| end > self.slot_size)
        {
            return Err(ShmError::OutOfBounds {
                pool: self.id,
                slot: r.slot,
                offset: r.offset,
                len: r.len,
                slot_size: self.slot_size,
            });
        }
        Ok(())
    }

    /// The payload bytes of a reference the caller holds.
    pub fn read(&self, r: &ShmRef) -> Result<&[u8], ShmError> {
        self.check(r)?;
        let start = self.data + r.slot as usize * self.stride + r.offset as usize;
        // SAFETY: bounds checked above; the caller holds the slot, so no writer touches it.
        Ok(unsafe { std::slice::from_raw_parts(self.base.add(start), r.len as usize) })
    }

    /// Write `data` at `offset` inside a slot the caller was handed for writing (the GPU
    /// agent filling a stage's output slot), bounds-checked against the slot.
    pub fn write_at(&self, r: &ShmRef, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        let target = ShmRef {
            offset,
            len: data.len() as u64,
            ..*r
        };
        self.check(&target)?;
        let start = self.data + r.slot as usize * self.stride + offset as usize;
        // SAFETY: bounds checked; the slot's holder lent it to us for this write.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(start), data.len()) };
        Ok(())
    }

    /// Add `n` holders to a reference (a pass-through stage fanning out).
    pub fn add_holders(&self, r: &ShmRef, n: u32) -> Result<(), ShmError> {
        self.check(r)?;
        if n > 0 {
            // Count first, attribute second: a process killed in between leaves a count
            // no holder accounts for (repaired by the supervisor, see `unattributed`),
            // never an attribution without a count (which would free the slot early).
            self.refcount(r.slot).fetch_add(n, Ordering::AcqRel);
            self.holds(r.slot, self.holder)
                .fetch_add(n as i32, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Move one of this process's holds on `r` to `to` (the consumer it is about to
    /// send `r` to). Done *before* the send, so the consumer can never release a
    /// hold that is not attributed to it yet.
    pub fn transfer(&self, r: &ShmRef, to: HolderId) -> Result<(), ShmError> {
        self.check(r)?;
        let to = self.column(to)?;
        if to != self.holder {
            // Ours off first (see `add_holders`: a kill in between leaves the hold
            // unattributed, not attributed twice).
            self.holds(r.slot, self.holder)
                .fetch_sub(1, Ordering::AcqRel);
            self.holds(r.slot, to).fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Drop one hold attributed to `holder` (a consumer the item could not be sent
    /// to), unless the supervisor already reclaimed it. True when a hold was dropped.
    pub fn release_for(&self, r: &ShmRef, holder: HolderId) -> Result<bool, ShmError> {
        self.check(r)?;
        let held = self.holds(r.slot, self.column(holder)?);
        let mut cur = held.load(Ordering::Acquire);
        loop {
            if cur <= 0 {
                return Ok(false);
            }
            match held.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.drop_refs(r.slot, 1);
        Ok(true)
    }

    /// Drop one hold on a reference; the last release frees the slot.
    pub fn release(&self, r: &ShmRef) -> Result<(), ShmError> {
        self.check(r)?;
        if self.refcount(r.slot).load(Ordering::Acquire) == 0 {
            return Err(ShmError::OverRelease {
                pool: self.id,
                slot: r.slot,
            });
        }
        self.holds(r.slot, self.holder)
            .fetch_sub(1, Ordering::AcqRel);
        self.drop_refs(r.slot, 1);
        Ok(())
    }

    /// Take `n` off a slot's refcount (never below zero); wake waiting producers when
    /// it becomes free.
    fn drop_refs(&self, slot: u32, n: u32) {
        let rc = self.refcount(slot);
        let mut cur = rc.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_sub(n);
            match rc.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur > 0 && cur <= n {
            self.free_epoch().fetch_add(1, Ordering::SeqCst);
            if self.waiters().load(Ordering::SeqCst) > 0 {
                futex_wake(self.free_epoch());
            }
        }
    }

    /// Wake whoever waits in [`SlotPool::acquire`] on this pool, so that it returns
    /// (with a slot if one is free, else `None`) and looks at its inbox: the supervisor
    /// calls this after acknowledging a head's items, which frees slots only once the
    /// head has read the acknowledgement.
    pub fn wake_waiters(&self) {
        self.free_epoch().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) > 0 {
            futex_wake(self.free_epoch());
        }
    }
}

mod futex;
mod layout;
pub use layout::region_bytes;
mod region;
mod repair;
use layout::{data_offset, record_size, records_offset, round_slot};
pub use region::{PoolHandle, Region};
#[cfg(test)]
mod tests;
mod writer;

use futex::{futex_wait, futex_wake};
pub use writer::SlotWriter;
