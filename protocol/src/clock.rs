//! One clock for all processes: `CLOCK_MONOTONIC` is system-wide on Linux, so a
//! timestamp taken in one process can be compared with one taken in another.

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux: the call cannot fail.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
    })
}
