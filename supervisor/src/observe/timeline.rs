//! What happened during a run, sampled from the children's heartbeats: per stage
//! counters over time, and notable events (failures, hang kills, drains).

use protocol::messages::StageMetrics;
use serde::Serialize;
use std::time::Instant;

/// One stage's counters at a sample time.
#[derive(Debug, Clone, Serialize)]
pub struct StagePoint {
    pub items_in: u64,
    pub items_out: u64,
    pub lost: u64,
    pub busy_ns: u64,
}

/// All stages at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub stages: Vec<StagePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunEvent {
    pub t: f64,
    pub what: String,
}

/// Samples a timeline keeps: past this, every other one is dropped and the spacing
/// doubles, so a run of any length keeps its whole course in bounded memory (at 0.1 s
/// a sample, the first 7 minutes at full resolution).
pub const MAX_SAMPLES: usize = 4096;

/// Entries an event list of a run keeps (the timeline's events, the live tuning's
/// changes): its first half of this many and its latest half; those between are
/// counted, not kept, so an app that runs for months keeps a bounded list.
pub const MAX_EVENTS: usize = 1024;

/// Append `entry` to `log` within [`MAX_EVENTS`]; `true` when an older one was left out.
pub fn push_bounded<T>(log: &mut Vec<T>, entry: T) -> bool {
    let full = log.len() >= MAX_EVENTS;
    if full {
        log.remove(MAX_EVENTS / 2);
    }
    log.push(entry);
    full
}

/// Samples taken every `every` seconds (doubled whenever [`MAX_SAMPLES`] are reached),
/// plus events.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub stage_labels: Vec<String>,
    pub samples: Vec<Sample>,
    pub events: Vec<RunEvent>,
    /// Events left out of the middle of `events` ([`MAX_EVENTS`]).
    pub events_left_out: u64,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    last: Option<Instant>,
    every_s: f64,
}

impl Timeline {
    pub fn new(stage_labels: Vec<String>, every_s: f64) -> Timeline {
        Timeline {
            stage_labels,
            samples: Vec::new(),
            events: Vec::new(),
            events_left_out: 0,
            started: Some(Instant::now()),
            last: None,
            every_s,
        }
    }

    fn now(&self) -> f64 {
        self.started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }

    /// Record the counters if a sample is due (or `force`).
    /// True when the next [`Timeline::sample`] would record one (so callers gather the
    /// metrics only then).
    pub fn due(&self) -> bool {
        self.last
            .is_none_or(|l| l.elapsed().as_secs_f64() >= self.every_s)
    }

    pub fn sample<'a>(&mut self, metrics: impl Iterator<Item = &'a StageMetrics>, force: bool) {
        if !(self.due() || force) {
            return;
        }
        self.last = Some(Instant::now());
        let t = self.now();
        let stages = metrics
            .map(|m| StagePoint {
                items_in: m.items_in,
                items_out: m.items_out,
                lost: m.lost.iter().sum(),
                busy_ns: m.busy_ns,
            })
            .collect();
        self.samples.push(Sample { t, stages });
        if self.samples.len() > MAX_SAMPLES {
            let mut k = 0;
            self.samples.retain(|_| {
                k += 1;
                k % 2 == 1
            });
            self.every_s *= 2.0;
        }
    }

    pub fn event(&mut self, what: impl Into<String>) {
        let t = self.now();
        let event = RunEvent {
            t,
            what: what.into(),
        };
        if push_bounded(&mut self.events, event) {
            self.events_left_out += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_its_whole_course_in_bounded_samples() {
        let mut tl = Timeline::new(vec!["a#0".into()], 0.0);
        let m = StageMetrics::default();
        for _ in 0..3 * MAX_SAMPLES {
            tl.sample(std::iter::once(&m), true);
        }
        assert!(tl.samples.len() <= MAX_SAMPLES, "{}", tl.samples.len());
        assert!(tl.samples.len() > MAX_SAMPLES / 2, "{}", tl.samples.len());
        // Evenly thinned: the first sample stays, the times keep their order.
        assert!(tl.samples.windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn events_keep_the_first_and_the_latest_and_count_what_is_left_out() {
        let mut tl = Timeline::new(Vec::new(), 1.0);
        let n = 3 * MAX_EVENTS;
        for k in 0..n {
            tl.event(format!("restart {k}"));
        }
        assert_eq!(tl.events.len(), MAX_EVENTS);
        assert_eq!(tl.events_left_out, (n - MAX_EVENTS) as u64);
        assert_eq!(tl.events[0].what, "restart 0");
        assert_eq!(
            tl.events[MAX_EVENTS / 2 - 1].what,
            format!("restart {}", MAX_EVENTS / 2 - 1)
        );
        assert_eq!(
            tl.events[MAX_EVENTS / 2].what,
            format!("restart {}", n - MAX_EVENTS / 2)
        );
        assert_eq!(tl.events[MAX_EVENTS - 1].what, format!("restart {}", n - 1));
    }
}
