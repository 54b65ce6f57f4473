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
                std::thread::sleep(every);
            }
        })
        .ok();
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
