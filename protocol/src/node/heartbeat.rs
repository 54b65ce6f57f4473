//! The heartbeat thread of a stage process: its metrics to the supervisor every
//! `heartbeat_ms` while the process lives, and the per-source count list of the wire.

use super::*;

pub(super) fn spawn_heartbeat(
    up: IpcSender<UpWire>,
    metrics: Arc<Mutex<StageMetrics>>,
    alive: Arc<AtomicBool>,
    every_ms: u32,
) {
    let every = Duration::from_millis(u64::from(every_ms.max(10)));
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            while alive.load(Ordering::SeqCst) {
                let snapshot = match metrics.lock() {
                    Ok(m) => m.clone(),
                    Err(_) => return,
                };
                let Ok(bytes) = codec::encode("heartbeat", &Up::Heartbeat(snapshot)) else {
                    return;
                };
                if !alive.load(Ordering::SeqCst) || up.send(UpWire { bytes, reply: None }).is_err()
                {
                    return;
                }
                std::thread::sleep(until_next_beat(crate::clock::now_ns(), every));
            }
        })
        .ok();
}

/// How long from `now_ns` (the system-wide monotonic clock) to the next multiple of
/// `every`: every process of the machine beats at the same instants, so that the
/// supervisor's threads wake once a period for all of them rather than once for each, and
/// a core running a model is interrupted once a period, not once per process
/// (BENCHMARKS.md, session 36). A beat is never later than `every` after the one before.
fn until_next_beat(now_ns: u64, every: Duration) -> Duration {
    let period = (every.as_nanos() as u64).max(1);
    Duration::from_nanos(period - now_ns % period)
}

/// A per-source count map as the wire's list.
pub(super) fn source_totals(map: &BTreeMap<String, u64>) -> Vec<SourceTotal> {
    map.iter()
        .map(|(source, total)| SourceTotal {
            source: source.clone(),
            total: *total,
        })
        .collect()
}

impl Node {
    /// The switch of this process's heartbeats: storing `false` stops them for good, and
    /// the supervisor then takes the stage for hung (kills and restarts it). For a
    /// watchdog that finds the stage's own code stuck.
    pub fn heartbeat_switch(&self) -> Arc<AtomicBool> {
        self.alive.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::until_next_beat;
    use std::time::Duration;

    #[test]
    fn beats_fall_on_multiples_of_the_period_of_the_shared_clock() {
        let every = Duration::from_millis(100);
        // Two processes at different points of the period wake at the same instant.
        let a = 5_000_000_000 + 30_000_000;
        let b = 5_000_000_000 + 95_000_000;
        assert_eq!(
            a + until_next_beat(a, every).as_nanos() as u64,
            5_100_000_000
        );
        assert_eq!(
            b + until_next_beat(b, every).as_nanos() as u64,
            5_100_000_000
        );
        // On a multiple: a whole period to the next (never a busy loop of zero waits).
        assert_eq!(until_next_beat(5_100_000_000, every), every);
    }
}
