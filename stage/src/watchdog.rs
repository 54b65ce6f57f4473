//! Hang detection for a stage's own code: a stage whose function holds one item longer
//! than `SMARTPIPE_ITEM_TIMEOUT_MS` (default 30 s) stops asking for items, so its
//! heartbeats are stopped too and the supervisor takes it for hung (kills it after its
//! missed heartbeats and restarts it by its policy), as it does for a frozen process.

use protocol::clock::now_ns;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the stage's function may hold one item.
pub fn item_timeout() -> Duration {
    let ms = std::env::var("SMARTPIPE_ITEM_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000u64);
    Duration::from_millis(ms.max(1))
}

/// Marks when the stage's function took its current item (0: it is not in a call).
#[derive(Clone)]
pub struct Watchdog {
    busy_since: Arc<AtomicU64>,
}

impl Watchdog {
    /// Watch calls; `heartbeats` is the switch of the process's heartbeats.
    pub fn start(heartbeats: Arc<AtomicBool>, limit: Duration) -> Watchdog {
        let busy_since = Arc::new(AtomicU64::new(0));
        let watched = busy_since.clone();
        let limit_ns = limit.as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick = (limit / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                if !heartbeats.load(Ordering::SeqCst) {
                    return;
                }
                let since = watched.load(Ordering::SeqCst);
                if since != 0 && now_ns().saturating_sub(since) > limit_ns {
                    tracing::error!(
                        "the stage's function has held one item for more than {} ms without asking for the next; heartbeats stop so the supervisor restarts this process (SMARTPIPE_ITEM_TIMEOUT_MS)",
                        limit.as_millis()
                    );
                    heartbeats.store(false, Ordering::SeqCst);
                    return;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no watchdog thread ({e}): a stuck stage is not detected");
        }
        Watchdog { busy_since }
    }

    pub fn enter(&self) {
        self.busy_since.store(now_ns().max(1), Ordering::SeqCst);
    }

    pub fn leave(&self) {
        self.busy_since.store(0, Ordering::SeqCst);
    }
}
