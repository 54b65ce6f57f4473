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

/// Tails: the items delivered since the previous `Delivered` of this process, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDeliveries {
    /// End-to-end latency of each, in ms (as the report's `latencies_ms`).
    pub latencies_ms: Vec<f32>,
    /// Arrival time of each (monotonic ns).
    pub arrivals_ns: Vec<u64>,
    /// The earliest creation time of the items this process delivered so far (monotonic
    /// ns; 0 before the first).
    pub first_created_ns: u64,
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
    pub fn lose(&mut self, reason: LossReason, n: u64) {
        self.lost[reason as usize] += n;
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
    /// Tails: end-to-end latency of every item received, in ms.
    pub latencies_ms: Vec<f32>,
    /// Tails: transport latency per hop (`hop_us[k]` = hop k → k+1), in µs.
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
