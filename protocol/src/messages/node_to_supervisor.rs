//! Sent by a stage or agent process to the supervisor: heartbeats, losses, metrics and the final report.

use super::*;
use serde::{Deserialize, Serialize};

/// Child → supervisor messages (bincode inside [`UpWire`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Up {
    Hello(Hello),
    /// Every `heartbeat_ms`, and whenever the stage has news.
    Heartbeat(StageMetrics),
    /// The stage ran to the end of its input; sent just before exiting with status 0.
    Finished(StageReport),
    /// The stage cannot go on; it exits non-zero after sending this.
    Failed {
        error: String,
    },
    /// Tails: everything below `total` was delivered (or is known lost) per source, and
    /// the output file (if any) had `output_len` bytes then.
    Delivered {
        frontier: Vec<SourceTotal>,
        output_len: Option<u64>,
        /// Items this process delivered so far, per source (its report's `received`).
        received: Vec<SourceTotal>,
        /// The latencies of the items delivered since this process's previous
        /// acknowledgement: a killed tail's deliveries still count in the summary.
        since: NewDeliveries,
    },
}

/// Tails: the items delivered since the previous `Delivered` of this process, in order;
/// in the supervisor, what it gathered of them over a run: every item up to
/// [`crate::samples::SAMPLE_CAP`], then a uniform sample of that many, with the count and
/// the largest latency kept exactly (`seen`, `max_ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDeliveries {
    /// End-to-end latency of each, in ms (as the report's `latencies_ms`).
    pub latencies_ms: Vec<f32>,
    /// Arrival time of each (monotonic ns).
    pub arrivals_ns: Vec<u64>,
    /// The earliest creation time of the items this process delivered so far (monotonic
    /// ns; 0 before the first).
    pub first_created_ns: u64,
    /// The deliveries these stand for (more than the latencies once sampled; never fewer).
    pub seen: u64,
    /// The largest latency of all `seen`, in ms.
    pub max_ms: f32,
}

impl NewDeliveries {
    /// Deliveries of one process, every one of them.
    pub fn every(latencies_ms: Vec<f32>, arrivals_ns: Vec<u64>, first_created_ns: u64) -> Self {
        NewDeliveries {
            seen: latencies_ms.len() as u64,
            max_ms: latencies_ms.iter().copied().fold(0.0, f32::max),
            latencies_ms,
            arrivals_ns,
            first_created_ns,
        }
    }

    /// The deliveries these stand for (at least as many as are here).
    pub fn count(&self) -> u64 {
        self.seen.max(self.latencies_ms.len() as u64)
    }

    /// Add `more` (later deliveries), keeping at most [`crate::samples::SAMPLE_CAP`]:
    /// every item while they fit, then a uniform sample of the whole, each side weighted
    /// by the deliveries it stands for.
    pub fn absorb(&mut self, more: &NewDeliveries) {
        use crate::samples::{place, spread, SAMPLE_CAP};
        let (mine, theirs) = (self.count(), more.count());
        let whole = more.latencies_ms.len() as u64 == theirs;
        if whole {
            // Each delivery of `more` in turn, as if it came now.
            let pairs = more.latencies_ms.iter().zip(&more.arrivals_ns);
            for (k, (&lat, &arrival)) in pairs.enumerate() {
                match place(mine + k as u64, self.latencies_ms.len(), SAMPLE_CAP) {
                    Some(i) if i == self.latencies_ms.len() => {
                        self.latencies_ms.push(lat);
                        self.arrivals_ns.push(arrival);
                    }
                    Some(i) => {
                        self.latencies_ms[i] = lat;
                        self.arrivals_ns[i] = arrival;
                    }
                    None => {}
                }
            }
        } else {
            // Two samples: each keeps its share of the cap, thinned evenly.
            let total = (mine + theirs).max(1);
            let keep_mine =
                ((SAMPLE_CAP as u64 * mine).div_ceil(total) as usize).min(self.latencies_ms.len());
            let keep_theirs = (SAMPLE_CAP - keep_mine).min(more.latencies_ms.len());
            let thin = |v: &[f32], a: &[u64], k: usize| -> (Vec<f32>, Vec<u64>) {
                spread(v.len().min(a.len()), k)
                    .map(|i| (v[i], a[i]))
                    .unzip()
            };
            let (mut l, mut a) = thin(&self.latencies_ms, &self.arrivals_ns, keep_mine);
            let (l2, a2) = thin(&more.latencies_ms, &more.arrivals_ns, keep_theirs);
            l.extend(l2);
            a.extend(a2);
            self.latencies_ms = l;
            self.arrivals_ns = a;
        }
        self.seen = mine + theirs;
        self.max_ms = self.max_ms.max(more.max_ms);
        if self.first_created_ns == 0
            || (more.first_created_ns != 0 && more.first_created_ns < self.first_created_ns)
        {
            self.first_created_ns = more.first_created_ns;
        }
    }
}

/// Why an item was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LossReason {
    /// Dropped under overload (best-effort backpressure).
    Shed,
    /// In flight in a process that died.
    Crash,
    /// Too late to be useful.
    Deadline,
    /// The input could not be decoded or processed.
    BadInput,
}

impl LossReason {
    pub const ALL: [LossReason; 4] = [
        LossReason::Shed,
        LossReason::Crash,
        LossReason::Deadline,
        LossReason::BadInput,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Shed => "shed",
            LossReason::Crash => "crash",
            LossReason::Deadline => "deadline",
            LossReason::BadInput => "bad_input",
        }
    }
}

/// Counters of one stage replica since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageMetrics {
    pub items_in: u64,
    pub items_out: u64,
    /// Indexed like [`LossReason::ALL`].
    pub lost: [u64; 4],
    /// Time spent working (not waiting), in nanoseconds.
    pub busy_ns: u64,
    /// Services (items, or batches for a batching stage) that busy time counts, and the
    /// sum of their squared durations in ms², for the spread of service times.
    pub services: u64,
    pub busy_sq_ms2: f64,
    /// Items received but not yet handled.
    pub queue_depth: u32,
    /// Items waiting for a free output slot (backpressure).
    pub waiting_for_slot_ns: u64,
    /// Service time per item, counts per [`HISTOGRAM_BOUNDS_S`] bucket (+ one for +Inf).
    pub service_buckets: Vec<u64>,
    /// Tails: end-to-end latency, counts per [`HISTOGRAM_BOUNDS_S`] bucket (+ one for +Inf).
    pub latency_buckets: Vec<u64>,
    /// Sum of the end-to-end latencies, in nanoseconds (tails).
    pub latency_sum_ns: u64,
    /// GPU agents: model loads and evictions, time spent loading, resident model bytes.
    pub model_loads: u64,
    pub model_evictions: u64,
    pub model_load_ns: u64,
    pub resident_model_bytes: u64,
    /// The batch size the stage uses now (it changes with live tuning).
    pub batch_size: u32,
    /// Tails: receives that timed out while delivered items were not yet acknowledged
    /// and the wait was longer than the acknowledgement window. Each one held the
    /// request-guarantee sources back for a whole receive timeout; it stays 0.
    pub ack_stalls: u64,
    /// Tails writing a video (`image.show {path}`): frames of another size than the
    /// video's fitted into it (aspect kept, black around them).
    pub frames_fitted: u64,
    /// Heads reading a stream (`source.video`): times it sent nothing for the source's
    /// `read_timeout_s` and was taken for ended (a camera or server that stopped).
    #[serde(default)]
    pub read_stalls: u64,
    /// Heads reading a stream that reconnects: times it was lost (ended or silent) and
    /// opened again.
    #[serde(default)]
    pub reconnects: u64,
    /// Why this stage dropped its first item of bad input: the warning it logged for it
    /// (`source=… seq=…` with it), which the run's summary quotes.
    #[serde(default)]
    pub bad_input_example: Option<String>,
}

/// Upper bounds (seconds) of the histogram buckets the stages report.
pub const HISTOGRAM_BOUNDS_S: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Count one observation (seconds) into a bucket vector of [`HISTOGRAM_BOUNDS_S`].
pub fn observe(buckets: &mut Vec<u64>, seconds: f64) {
    if buckets.len() != HISTOGRAM_BOUNDS_S.len() + 1 {
        *buckets = vec![0; HISTOGRAM_BOUNDS_S.len() + 1];
    }
    let k = HISTOGRAM_BOUNDS_S
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(HISTOGRAM_BOUNDS_S.len());
    buckets[k] += 1;
}

impl StageMetrics {
    /// Items sent on or counted lost: for a head, every item it read.
    pub fn sent_or_lost(&self) -> u64 {
        self.items_out + self.lost.iter().sum::<u64>()
    }

    /// Count `n` items lost for `reason`; the first bad input keeps the warning this thread
    /// logged last (the stage's reason for dropping it) as [`Self::bad_input_example`].
    pub fn lose(&mut self, reason: LossReason, n: u64) {
        self.lost[reason as usize] += n;
        if reason == LossReason::BadInput {
            // Taken at every bad input, so a later one never quotes an older warning.
            let warning = crate::logcap::take_last_warning();
            if self.bad_input_example.is_none() {
                self.bad_input_example = warning;
            }
        }
    }
}

/// Per-source item count, as announced in end-of-stream markers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTotal {
    pub source: String,
    /// Items the source emitted (sequence numbers `0..total`), dropped ones included.
    pub total: u64,
}

/// Final report of a stage replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub metrics: StageMetrics,
    /// Tails: end-to-end latency, in ms, of every item delivered since the process's last
    /// acknowledgement (those before went up with it, `Up::Delivered::since`). In the
    /// supervisor's summary, the whole run's: every item, or a uniform sample of
    /// [`crate::samples::SAMPLE_CAP`] past that many (`latencies_seen` counts them all).
    pub latencies_ms: Vec<f32>,
    /// The deliveries `latencies_ms` stands for (0: as many as it holds).
    pub latencies_seen: u64,
    /// The largest end-to-end latency of them all, in ms.
    pub latency_max_ms: f32,
    /// Tails: transport latency per hop (`hop_us[k]` = hop k → k+1), in µs: every item's,
    /// or a uniform sample of [`crate::samples::SAMPLE_CAP`] per hop past that many.
    pub hop_us: Vec<Vec<f32>>,
    /// Tails: items received per source.
    pub received: Vec<SourceTotal>,
    /// Tails: earliest creation time and latest arrival of the items received
    /// (monotonic ns), for steady-state throughput without start-up time.
    pub first_created_ns: u64,
    pub last_arrival_ns: u64,
    /// Tails: arrival time of every item (monotonic ns), in the order of `latencies_ms`.
    pub arrivals_ns: Vec<u64>,
    /// What the sources announced they emitted.
    pub announced: Vec<SourceTotal>,
    /// Tails: per stage, how an item's stay there went with the rest of its path.
    pub stays: Vec<StayStats>,
}

impl StageReport {
    /// Tails: the deliveries each of `latencies_ms` (and `arrivals_ns`) stands for: 1,
    /// or more once a long run was sampled.
    pub fn sample_weight(&self) -> f64 {
        let held = self.latencies_ms.len().max(1) as f64;
        (self.latencies_seen as f64 / held).max(1.0)
    }
}

/// Sums over the items a tail received of an item's stay at one stage (S: from receiving
/// it to sending it on, ms) and of its stays at the other stages of its path (R, ms): how
/// much of the per-item variability a stage shares with the rest of the path (items that
/// are slow everywhere, such as frames with many face candidates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StayStats {
    /// Task index of the stage.
    pub stage: TaskId,
    pub n: u64,
    pub s: f64,
    pub s2: f64,
    pub r: f64,
    pub r2: f64,
    pub sr: f64,
}

impl StayStats {
    /// No items yet, for stage `stage`.
    pub fn new(stage: TaskId) -> Self {
        StayStats {
            stage,
            ..StayStats::default()
        }
    }

    /// Counts one item: `stay` here, `rest` on the rest of its path (ms).
    pub fn observe(&mut self, stay: f64, rest: f64) {
        self.n += 1;
        self.s += stay;
        self.s2 += stay * stay;
        self.r += rest;
        self.r2 += rest * rest;
        self.sr += stay * rest;
    }

    /// Adds another tail's (or replica's) sums for the same stage.
    pub fn merge(&mut self, o: &StayStats) {
        self.n += o.n;
        self.s += o.s;
        self.s2 += o.s2;
        self.r += o.r;
        self.r2 += o.r2;
        self.sr += o.sr;
    }

    /// Variance of the stay and of the rest of the path (ms²).
    fn variances(&self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        (
            (self.s2 / n - (self.s / n).powi(2)).max(0.0),
            (self.r2 / n - (self.r / n).powi(2)).max(0.0),
        )
    }

    /// Standard deviation of the stay and of the rest of the path (ms).
    pub fn std_devs(&self) -> (f64, f64) {
        let (vs, vr) = self.variances();
        (vs.sqrt(), vr.sqrt())
    }

    /// Pearson correlation of S and R; `None` with fewer than 8 items or no spread.
    pub fn correlation(&self) -> Option<f64> {
        if self.n < 8 {
            return None;
        }
        let n = self.n as f64;
        let cov = self.sr / n - (self.s / n) * (self.r / n);
        let (vs, vr) = self.variances();
        (vs > 1e-12 && vr > 1e-12).then(|| (cov / (vs * vr).sqrt()).clamp(-1.0, 1.0))
    }
}

#[cfg(test)]
mod stay_tests {
    use super::StayStats;

    #[test]
    fn stay_correlation_needs_items_and_spread_and_merges_across_tails() {
        let mut a = StayStats::default();
        for k in 0..4 {
            a.observe(f64::from(k), 10.0 - f64::from(k));
        }
        assert_eq!(a.correlation(), None, "fewer than 8 items");
        let mut b = StayStats::default();
        for k in 4..10 {
            b.observe(f64::from(k), 10.0 - f64::from(k));
        }
        a.merge(&b);
        assert_eq!(a.n, 10);
        let c = a.correlation().unwrap();
        assert!((c + 1.0).abs() < 1e-9, "stay and rest move oppositely: {c}");
        let mut flat = StayStats::default();
        for k in 0..10 {
            flat.observe(5.0, f64::from(k));
        }
        assert_eq!(flat.correlation(), None, "no spread in the stays");
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::NewDeliveries;
    use crate::samples::SAMPLE_CAP;

    /// `n` deliveries from `from` on, latency k % 100 ms except one of 5000 ms.
    fn chunk(from: u64, n: u64) -> NewDeliveries {
        let lat = (from..from + n)
            .map(|k| {
                if k == 123_456 {
                    5000.0
                } else {
                    (k % 100) as f32
                }
            })
            .collect();
        NewDeliveries::every(lat, (from..from + n).collect(), 1)
    }

    #[test]
    fn a_long_run_keeps_a_bounded_uniform_sample_with_its_exact_count_and_max() {
        let mut all = NewDeliveries::default();
        let per_ack = 1000;
        let acks = 3 * SAMPLE_CAP as u64 / per_ack;
        for a in 0..acks {
            all.absorb(&chunk(a * per_ack, per_ack));
        }
        assert_eq!(all.count(), acks * per_ack);
        assert_eq!(all.latencies_ms.len(), SAMPLE_CAP);
        assert_eq!(all.arrivals_ns.len(), SAMPLE_CAP);
        assert_eq!(all.max_ms, 5000.0, "the one slow item is not sampled away");
        // Pairs stay together: arrival k has latency k % 100.
        for (&lat, &arr) in all.latencies_ms.iter().zip(&all.arrivals_ns).take(1000) {
            if arr != 123_456 {
                assert_eq!(lat, (arr % 100) as f32);
            }
        }
        // Uniform over the run: each third of it holds about a third of the sample.
        let third = acks * per_ack / 3;
        for t in 0..3 {
            let n = all.arrivals_ns.iter().filter(|&&a| a / third == t).count();
            let share = n as f64 / SAMPLE_CAP as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.01, "third {t}: {share}");
        }
    }

    #[test]
    fn two_samples_merge_by_what_each_stands_for() {
        // A restarted tail: the earlier process delivered 3 cap's worth, the new one 1.
        let mut before = NewDeliveries::default();
        let mut after = NewDeliveries::default();
        let cap = SAMPLE_CAP as u64;
        for a in 0..3 {
            before.absorb(&chunk(a * cap, cap));
        }
        after.absorb(&chunk(10 * cap, cap));
        before.absorb(&after);
        assert_eq!(before.count(), 4 * cap);
        assert_eq!(before.latencies_ms.len(), SAMPLE_CAP);
        let late = before
            .arrivals_ns
            .iter()
            .filter(|&&a| a >= 10 * cap)
            .count();
        let share = late as f64 / SAMPLE_CAP as f64;
        assert!(
            (share - 0.25).abs() < 0.01,
            "the later process's share: {share}"
        );
        // Small runs are kept whole, in order.
        let mut small = NewDeliveries::default();
        small.absorb(&chunk(0, 10));
        small.absorb(&chunk(10, 5));
        assert_eq!(small.arrivals_ns, (0..15).collect::<Vec<_>>());
    }
}
