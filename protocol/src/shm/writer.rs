//! [`SlotWriter`]: a slot taken from a pool and being written; committed, or freed on drop.

use std::sync::atomic::Ordering;

use super::futex::futex_wake;
use super::{ShmError, ShmRef, SlotPool};

/// A slot being written. Dropping it without [`SlotWriter::commit`] frees the slot.
pub struct SlotWriter<'a> {
    pub(super) pool: &'a SlotPool,
    pub(super) slot: u32,
    pub(super) generation: u32,
    pub(super) holders: u32,
    pub(super) done: bool,
}

impl SlotWriter<'_> {
    /// The whole slot, to write the payload into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let start = self.pool.data + self.slot as usize * self.pool.stride;
        // SAFETY: we hold this freshly acquired slot exclusively until commit.
        unsafe {
            std::slice::from_raw_parts_mut(self.pool.base.add(start), self.pool.slot_size as usize)
        }
    }

    /// Hand the first `len` bytes over to the consumers.
    pub fn commit(mut self, len: u64) -> Result<ShmRef, ShmError> {
        if len > self.pool.slot_size {
            return Err(ShmError::PayloadTooLarge {
                pool: self.pool.id,
                len,
                slot_size: self.pool.slot_size,
            });
        }
        self.done = true;
        Ok(ShmRef {
            pool: self.pool.id,
            slot: self.slot,
            generation: self.generation,
            offset: 0,
            len,
        })
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool
                .holds(self.slot, self.pool.holder)
                .fetch_sub(self.holders as i32, Ordering::AcqRel);
            self.pool.refcount(self.slot).store(0, Ordering::Release);
            self.pool.free_epoch().fetch_add(1, Ordering::SeqCst);
            futex_wake(self.pool.free_epoch());
        }
    }
}
