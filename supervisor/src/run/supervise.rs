//! Restart decisions, like an OTP supervisor: which ends of a stage are restarted
//! (its `restart` policy), how long to wait first (backoff from 100 ms doubling to 5 s
//! while processes die young; back to 100 ms once one ran for [`STABLE_AFTER`]), and
//! when to give up (more than 5 restarts of a task within 10 s: the app fails).

use protocol::spec::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restarts allowed per task within [`INTENSITY_WINDOW`] before the app is failed.
pub const MAX_RESTARTS: usize = 5;
// `SMARTPIPE_MAX_RESTARTS` overrides [`MAX_RESTARTS`] (e.g. for a soak test):
// `crate::env::appenv::max_restarts`.
pub const INTENSITY_WINDOW: Duration = Duration::from_secs(10);
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A process that ran this long before it died was healthy: the backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(1);
/// Hangs in a row of a task's processes that sent nothing on after which the app fails:
/// the replayed input hangs every process that gets it (the restart intensity does not
/// catch it, since each hang takes the hang bound, seconds to minutes, to be seen).
pub const MAX_FRUITLESS_HANGS: u32 = 3;

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
    /// Processes in a row that died before [`STABLE_AFTER`].
    young_deaths: u32,
    /// Processes in a row that were killed as hung without sending an item on.
    fruitless_hangs: u32,
}

impl Default for RestartBook {
    fn default() -> Self {
        let max_restarts = crate::env::appenv::max_restarts(MAX_RESTARTS).unwrap_or(MAX_RESTARTS);
        RestartBook {
            recent: VecDeque::new(),
            total: 0,
            max_restarts,
            young_deaths: 0,
            fruitless_hangs: 0,
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
    /// Count an unplanned end at `now` of a process that ran for `ran_for`, and decide.
    pub fn on_end(&mut self, now: Instant, ran_for: Duration) -> Verdict {
        if ran_for >= STABLE_AFTER {
            self.young_deaths = 0;
        }
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
            .saturating_mul(1u32 << self.young_deaths.min(16))
            .min(BACKOFF_MAX);
        self.young_deaths += 1;
        self.recent.push_back(now);
        self.total += 1;
        Verdict::RestartAfter(delay)
    }

    /// Count how a process ended for the hang streak: `Some(n)` once `n` =
    /// [`MAX_FRUITLESS_HANGS`] processes in a row were killed as hung without sending
    /// anything on (the app is to be failed); any other end breaks the streak.
    pub fn on_hang_streak(&mut self, hung: bool, sent_something: bool) -> Option<u32> {
        if hung && !sent_something {
            self.fruitless_hangs += 1;
        } else {
            self.fruitless_hangs = 0;
        }
        (self.fruitless_hangs >= MAX_FRUITLESS_HANGS).then_some(self.fruitless_hangs)
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
    fn three_hangs_in_a_row_without_output_fail_and_any_progress_breaks_the_streak() {
        let mut book = RestartBook::default();
        assert_eq!(book.on_hang_streak(true, false), None);
        assert_eq!(book.on_hang_streak(true, false), None);
        assert_eq!(book.on_hang_streak(true, true), None, "it sent an item on");
        assert_eq!(book.on_hang_streak(true, false), None);
        assert_eq!(
            book.on_hang_streak(false, false),
            None,
            "a crash is not a hang"
        );
        assert_eq!(book.on_hang_streak(true, false), None);
        assert_eq!(book.on_hang_streak(true, false), None);
        assert_eq!(book.on_hang_streak(true, false), Some(MAX_FRUITLESS_HANGS));
    }

    #[test]
    fn backoff_doubles_then_the_app_is_failed() {
        let mut book = RestartBook::default();
        let t0 = Instant::now();
        let delays: Vec<Verdict> = (0..6)
            .map(|k| book.on_end(t0 + Duration::from_millis(k * 10), Duration::ZERO))
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
    fn old_restarts_leave_the_window_and_a_healthy_run_resets_the_backoff() {
        let mut book = RestartBook::default();
        let t0 = Instant::now();
        for k in 0..4 {
            book.on_end(t0 + Duration::from_millis(k), Duration::ZERO);
        }
        let later = t0 + INTENSITY_WINDOW + Duration::from_secs(1);
        // Still dying young: the backoff goes on doubling, but the window has room again.
        assert_eq!(
            book.on_end(later, Duration::ZERO),
            Verdict::RestartAfter(Duration::from_millis(1600))
        );
        // A process that ran for a while was healthy: the backoff starts over.
        assert_eq!(
            book.on_end(later, STABLE_AFTER),
            Verdict::RestartAfter(BACKOFF_FIRST)
        );
    }

    #[test]
    fn backoff_is_capped_at_five_seconds() {
        let mut book = RestartBook {
            max_restarts: 100,
            ..RestartBook::default()
        };
        let t0 = Instant::now();
        let last = (0..10)
            .map(|k| book.on_end(t0 + Duration::from_millis(k), Duration::ZERO))
            .last();
        assert_eq!(last, Some(Verdict::RestartAfter(BACKOFF_MAX)));
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
