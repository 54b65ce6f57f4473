//! Restart decisions, like an OTP supervisor: which ends of a stage are restarted
//! (its `restart` policy), how long to wait first (backoff from 100 ms doubling to 5 s),
//! and when to give up (more than 5 restarts of a task within 10 s: the app fails).

use protocol::spec::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restarts allowed per task within [`INTENSITY_WINDOW`] before the app is failed.
pub const MAX_RESTARTS: usize = 5;
/// Environment variable that overrides [`MAX_RESTARTS`] (e.g. for a soak test).
pub const ENV_MAX_RESTARTS: &str = "SMARTPIPE_MAX_RESTARTS";
pub const INTENSITY_WINDOW: Duration = Duration::from_secs(10);
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a stage process ended before its stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// Killed by a signal or exited non-zero without saying why.
    Crash,
    /// Missed its heartbeats and was killed.
    Hang,
    /// Reported an error it diagnosed itself (bad input, missing model…).
    Error,
    /// Exited 0 without finishing its stream.
    Early,
}

/// Whether `policy` restarts a stage that ended this way.
pub fn restarts(policy: RestartPolicy, end: EndKind) -> bool {
    match policy {
        RestartPolicy::Permanent => true,
        // A stage's own diagnosis (a missing model, a bad parameter) would only repeat.
        RestartPolicy::Transient => matches!(end, EndKind::Crash | EndKind::Hang),
        RestartPolicy::Temporary => false,
    }
}

/// The restart history of one task.
#[derive(Debug)]
pub struct RestartBook {
    recent: VecDeque<Instant>,
    pub total: u32,
    max_restarts: usize,
}

impl Default for RestartBook {
    fn default() -> Self {
        let max_restarts = std::env::var(ENV_MAX_RESTARTS)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_RESTARTS);
        RestartBook {
            recent: VecDeque::new(),
            total: 0,
            max_restarts,
        }
    }
}

/// What to do about one more end of a task.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many restarts: give up on the app.
    Escalate { restarts: usize, within: Duration },
}

impl RestartBook {
    /// Count an unplanned end at `now` and decide.
    pub fn on_end(&mut self, now: Instant) -> Verdict {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > INTENSITY_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max_restarts {
            return Verdict::Escalate {
                restarts: self.recent.len(),
                within: INTENSITY_WINDOW,
            };
        }
        let delay = BACKOFF_FIRST
            .saturating_mul(1u32 << self.recent.len().min(16))
            .min(BACKOFF_MAX);
        self.recent.push_back(now);
        self.total += 1;
        Verdict::RestartAfter(delay)
    }

    /// Count a restart someone asked for (not a fault: no backoff, no intensity).
    pub fn on_manual(&mut self) {
        self.total += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_the_app_is_failed() {
        let mut book = RestartBook::default();
        let t0 = Instant::now();
        let delays: Vec<Verdict> = (0..6)
            .map(|k| book.on_end(t0 + Duration::from_millis(k * 10)))
            .collect();
        let ms = |v: &Verdict| match v {
            Verdict::RestartAfter(d) => d.as_millis(),
            Verdict::Escalate { .. } => 0,
        };
        assert_eq!(
            delays[..5].iter().map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600]
        );
        assert_eq!(
            delays[5],
            Verdict::Escalate {
                restarts: 5,
                within: INTENSITY_WINDOW
            }
        );
        assert_eq!(book.total, 5);
    }

    #[test]
    fn old_restarts_leave_the_window_and_the_backoff_resets() {
        let mut book = RestartBook::default();
        let t0 = Instant::now();
        for k in 0..4 {
            book.on_end(t0 + Duration::from_millis(k));
        }
        let later = t0 + INTENSITY_WINDOW + Duration::from_secs(1);
        assert_eq!(book.on_end(later), Verdict::RestartAfter(BACKOFF_FIRST));
    }

    #[test]
    fn policies() {
        use EndKind::*;
        use RestartPolicy::*;
        assert!(restarts(Permanent, Error));
        assert!(restarts(Transient, Crash) && restarts(Transient, Hang));
        assert!(!restarts(Transient, Error) && !restarts(Transient, Early));
        assert!(!restarts(Temporary, Crash));
    }
}
