//! The layout of a pool's region: header, holder list, one record per slot, then the
//! slots' data; sizes computed here for the supervisor (creating) and the stages
//! (attaching).

use super::{DATA_ALIGN, HEADER, RECORD_ALIGN, RECORD_FIXED, SLOT_ALIGN};

/// Bytes needed for a pool of `slots` slots of `slot_size` bytes whose holds are
/// attributed to `holders` holder ids, computed without overflow (plans that do not know
/// their holders yet pass 1: each holder adds 6 bytes per slot at most).
pub fn region_bytes(slots: u32, slot_size: u64, holders: usize) -> u128 {
    let (h, n) = (holders as u128, u128::from(slots));
    let align = |x: u128, to: usize| x.div_ceil(to as u128) * to as u128;
    let records = HEADER as u128 + align(2 * h, RECORD_ALIGN);
    let record = RECORD_FIXED as u128 + align(4 * h, RECORD_ALIGN);
    align(records + n * record, DATA_ALIGN) + n * align(u128::from(slot_size.max(1)), SLOT_ALIGN)
}

/// Where the slot records start: after the header and the holder list.
pub(super) fn records_offset(holders: usize) -> usize {
    HEADER + (2 * holders).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

pub(super) fn record_size(holders: usize) -> usize {
    RECORD_FIXED + (4 * holders).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

pub(super) fn data_offset(slots: u32, holders: usize) -> usize {
    (records_offset(holders) + slots as usize * record_size(holders)).div_ceil(DATA_ALIGN)
        * DATA_ALIGN
}

pub(super) fn round_slot(slot_size: u64) -> usize {
    (slot_size as usize).max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}
