//! The hang detector: when a stage that went silent is taken for hung and killed.
//!
//! A stage is judged only on evidence about the stage itself. Its queued messages are
//! read before anyone is judged (the run loop drains its event queue first); a gap in
//! the supervisor's own loop (it was stopped, swapped out or starved of CPU) is not
//! counted against the stages, whose clocks restart after it; and the silence allowed
//! grows with the slowest service the stage has reported, so that a stage busy with
//! one big item on an overloaded machine is not mistaken for a hung one.

use crate::observe::timeline::Timeline;
use crate::run::apprun::AppRun;
use crate::run::starvation;
use protocol::messages::{StageMetrics, HISTOGRAM_BOUNDS_S};
use std::time::{Duration, Instant};

/// How many of its slowest services a stage may stay silent for before it is hung.
const SERVICES_OF_SILENCE: u32 = 3;

/// The silence after which a stage with these metrics is taken for hung: `hang_after`,
/// or three times the slowest service it has reported (upper bound of the highest
/// non-empty service-time bucket), whichever is longer.
pub fn bound(metrics: &StageMetrics, hang_after: Duration) -> Duration {
    let slowest = metrics
        .service_buckets
        .iter()
        .rposition(|&n| n > 0)
        .map(|k| {
            // The +Inf bucket: past the last bound; take the mean as a floor instead.
            let s = HISTOGRAM_BOUNDS_S.get(k).copied().unwrap_or_else(|| {
                let last = HISTOGRAM_BOUNDS_S[HISTOGRAM_BOUNDS_S.len() - 1];
                let mean = metrics.busy_ns as f64 / 1e9 / metrics.services.max(1) as f64;
                mean.max(last)
            });
            Duration::from_secs_f64(s)
        })
        .unwrap_or_default();
    hang_after.max(slowest * SERVICES_OF_SILENCE)
}

/// Watches the supervisor's own loop: a turn that came much later than the loop's
/// period means the supervisor itself stalled, and that time is not the stages'.
pub struct LoopWatch {
    last_turn: Instant,
    late_after: Duration,
    /// Stalls of the supervisor forgiven so far, and the longest.
    pub stalls: u64,
    pub longest: Duration,
}

impl LoopWatch {
    /// `period`: how often the loop turns when idle (its receive timeout).
    pub fn new(period: Duration) -> LoopWatch {
        LoopWatch {
            last_turn: Instant::now(),
            late_after: period * 2,
            stalls: 0,
            longest: Duration::ZERO,
        }
    }

    /// Note a turn of the loop; the supervisor's stall if this turn came late.
    pub fn turn(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let gap = now - self.last_turn;
        self.last_turn = now;
        if gap > self.late_after {
            self.stalls += 1;
            self.longest = self.longest.max(gap);
            Some(gap)
        } else {
            None
        }
    }
}

impl AppRun<'_> {
    /// The supervisor stalled for `gap`: what the stages sent meanwhile may not be
    /// read yet, so every live stage's silence counts from now.
    pub fn forgive_stall(&mut self, gap: Duration, timeline: &mut Timeline) {
        let now = Instant::now();
        for r in self.replicas.iter_mut() {
            if r.exited.is_none() {
                r.last_seen = r.last_seen.max(now);
            }
        }
        if gap > Duration::from_secs(1) {
            let note = format!(
                "the supervisor itself stalled for {} ms: no stage is judged hung for it",
                gap.as_millis()
            );
            tracing::warn!("{note}");
            timeline.event(note);
        }
    }

    /// Hang detection: a live process silent for longer than its bound (see [`bound`])
    /// is killed (and then restarted like a crash).
    pub fn kill_hung(&mut self, hang_after: Duration, timeline: &mut Timeline) {
        let mut pressure = None;
        for r in self.replicas.iter_mut() {
            let silent = r.last_seen.elapsed();
            let allowed = bound(&r.metrics, hang_after);
            if r.exited.is_some() || r.report.is_some() || r.hung || silent <= allowed / 2 {
                r.starve_sample = None;
                continue;
            }
            // Half the bound gone: note how long its heartbeat thread has waited for a CPU
            // so far, to tell starvation from a hang if the silence goes on.
            if r.starve_sample.is_none() {
                r.starve_sample =
                    starvation::heartbeat_thread(r.pid).map(|h| (h.run_delay_ns, Instant::now()));
            }
            if silent <= allowed {
                continue;
            }
            if pressure.is_none() {
                pressure = Some(starvation::cpu_pressure());
            }
            let pressure = pressure.flatten();
            let starved = !starvation::grace_over(silent, allowed)
                && starvation::heartbeat_thread(r.pid)
                    .is_some_and(|h| starvation::starved(h, r.starve_sample, pressure));
            if starved {
                tracing::debug!(stage = %r.label, silent_ms = silent.as_millis(), "silent but starved of CPU: waiting");
                continue;
            }
            // Our child's own process group; it has not been reaped.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(r.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let why = format!(
                "stage {} stopped answering (no heartbeat for {} ms, {} ms allowed) and was killed",
                r.label,
                silent.as_millis(),
                allowed.as_millis()
            );
            tracing::error!("{why}");
            timeline.event(why.clone());
            r.hung = true;
            r.failed = None;
            r.last_seen = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::messages::observe;

    #[test]
    fn a_stage_with_fast_services_gets_the_configured_bound() {
        let mut m = StageMetrics::default();
        for _ in 0..100 {
            observe(&mut m.service_buckets, 0.003);
        }
        assert_eq!(
            bound(&m, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            bound(&StageMetrics::default(), Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_stage_that_took_half_a_second_per_item_may_be_silent_longer() {
        let mut m = StageMetrics::default();
        observe(&mut m.service_buckets, 0.004);
        observe(&mut m.service_buckets, 0.45);
        // 0.45 s falls in the bucket up to 0.5 s: three of those.
        assert_eq!(
            bound(&m, Duration::from_millis(300)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn a_service_past_the_last_bucket_counts_at_least_the_last_bound() {
        let mut m = StageMetrics::default();
        observe(&mut m.service_buckets, 30.0);
        m.busy_ns = 30_000_000_000;
        m.services = 1;
        assert_eq!(
            bound(&m, Duration::from_millis(300)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn a_late_turn_of_the_loop_is_a_stall_and_a_prompt_one_is_not() {
        // A 10 s period: the prompt turns stay prompt however long this thread waits
        // for a core while other tests run.
        let mut w = LoopWatch::new(Duration::from_secs(10));
        assert_eq!(w.turn(), None);
        w.last_turn -= Duration::from_secs(30);
        let gap = w.turn();
        assert!(gap.is_some_and(|g| g >= Duration::from_secs(30)), "{gap:?}");
        assert_eq!(w.stalls, 1);
        assert_eq!(w.turn(), None);
    }
}
