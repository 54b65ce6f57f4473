//! How long one receive on the inbox waits. ipc-channel polls in whole milliseconds and
//! rounds a timeout down: a wait with less than a millisecond left returned at once, and a
//! loop waiting out its deadline spun there (up to a millisecond of CPU at the end of every
//! timed wait; each idle replica of the faces app burned 2–3 ms of CPU a second so).

use std::time::Duration;

/// The timeout of one receive for `left` until a deadline: whole milliseconds, rounded up
/// (a receive ends at most a millisecond after the deadline instead of spinning before it).
pub(crate) fn receive_wait(left: Duration) -> Duration {
    let ms = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_waits_whole_milliseconds_rounded_up() {
        assert_eq!(receive_wait(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            receive_wait(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            receive_wait(Duration::from_micros(999)),
            Duration::from_millis(1)
        );
        assert_eq!(
            receive_wait(Duration::from_millis(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            receive_wait(Duration::from_micros(199_001)),
            Duration::from_millis(200)
        );
        assert_eq!(receive_wait(Duration::MAX), Duration::from_millis(u64::MAX));
    }
}
