//! One clock for all processes: `CLOCK_MONOTONIC` is system-wide on Linux, so a
//! timestamp taken in one process can be compared with one taken in another. And the
//! timeouts of waits that take whole milliseconds.

use std::time::Duration;

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux: the call cannot fail.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// A wait's timeout for `left` until a deadline, in whole milliseconds rounded up, for the
/// waits that take milliseconds (`poll(2)`, ipc-channel's `try_recv_timeout`, which rounds
/// down). Rounded down, a loop waiting out its deadline got 0 for the last millisecond and
/// spun there (each idle replica of the faces app burned 2–3 ms of CPU a second so); rounded
/// up, a wait ends at most a millisecond after its deadline, asleep.
pub fn whole_ms_up(left: Duration) -> Duration {
    let ms = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_takes_whole_milliseconds_rounded_up() {
        assert_eq!(whole_ms_up(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            whole_ms_up(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            whole_ms_up(Duration::from_micros(999)),
            Duration::from_millis(1)
        );
        assert_eq!(
            whole_ms_up(Duration::from_millis(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            whole_ms_up(Duration::from_micros(199_001)),
            Duration::from_millis(200)
        );
        assert_eq!(whole_ms_up(Duration::MAX), Duration::from_millis(u64::MAX));
    }
}
