//! Every message between SmartPipe processes.
//!
//! Two layers: ipc-channel carries the *wire* structs ([`UpWire`], [`SetupWire`]) whose
//! handles (channel ends, shared memory) only ipc-channel can move; everything else is
//! our own bincode bytes ([`crate::codec`]) inside them or sent as `Vec<u8>`.

use crate::shm::ShmRef;
use crate::spec::ServiceType;
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a child of another version is refused.
pub const PROTOCOL_VERSION: u32 = 7;

/// Environment variables the supervisor hands to every child.
pub const ENV_BOOTSTRAP: &str = "SMARTPIPE_BOOTSTRAP";
pub const ENV_NONCE: &str = "SMARTPIPE_NONCE";
/// Whether test-only fault functions may run (set by the test suite only).
/// `Setup::slot_wait_ms` of a best-effort app with no latency quota: wait for a free
/// output slot as long as it takes (the producers slow down), shed nothing.
pub const SLOT_WAIT_FOREVER: u32 = u32::MAX;
pub const ENV_TEST_FAULTS: &str = "SMARTPIPE_TEST_FAULTS";

/// The sender half every child writes its up-messages into.
pub type UpSender = IpcSender<UpWire>;
/// A data or command channel (bincode [`Inbox`] bytes).
pub type InboxSender = IpcSender<Vec<u8>>;
pub type InboxReceiver = IpcReceiver<Vec<u8>>;

/// Child → supervisor, on the connection opened with the bootstrap server name.
#[derive(Serialize, Deserialize)]
pub struct UpWire {
    /// bincode of [`Up`].
    pub bytes: Vec<u8>,
    /// Only with the first message (`Hello`): where the supervisor sends `Setup`.
    pub reply: Option<IpcSender<SetupWire>>,
}

/// Supervisor → child, once, after a good `Hello`.
#[derive(Serialize, Deserialize)]
pub struct SetupWire {
    /// bincode of [`Setup`], or of a refusal message when `refused` is set.
    pub setup: Vec<u8>,
    pub refused: Option<String>,
    /// This replica's inbox: data from upstream and commands from the supervisor.
    pub inbox: Option<InboxReceiver>,
    /// Inbox senders of every replica of every consumer task, in [`Setup::outputs`] order.
    pub outputs: Vec<InboxSender>,
    /// Shared-memory pools this process may read or write, in [`Setup::pools`] order
    /// (where to open each: the supervisor's fd).
    pub pools: Vec<crate::shm::PoolHandle>,
    /// Where the supervisor sends the new inbox sender of a restarted consumer, just
    /// before the matching [`Command::Rewire`] (ipc-channel handles cannot travel in
    /// our bincode bytes).
    pub rewire: Option<IpcReceiver<InboxSender>>,
    /// A node's shared GPU agent: where the supervisor sends each app's [`AttachWire`],
    /// just before the matching [`Command::Attach`].
    pub attach: Option<IpcReceiver<AttachWire>>,
}

/// An app joining a node's shared GPU agent (DESIGN: one agent per device for all apps):
/// its pools, the inboxes of its GPU stages and the models they ask for.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttachWire {
    pub app: String,
    /// The agent's holder id in this app's pools.
    pub holder: u16,
    pub pools: Vec<PoolInfo>,
    /// Where to open the pools' memory, in `pools` order.
    pub handles: Vec<crate::shm::PoolHandle>,
    /// The agent's output index of `outputs[0]`; a GPU stage's `reply_to` is
    /// `first_output` + its position. Indices are node-wide: no two apps share one.
    pub first_output: u32,
    pub outputs: Vec<InboxSender>,
    /// JSON of the models the app's GPU stages use (the agent task's `models` param).
    pub models_json: String,
    /// The app's share of the device memory for resident models (none = unlimited).
    pub budget_mb: Option<u64>,
}

/// First message of every child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub nonce: u64,
    pub version: u32,
    /// `task#replica`.
    pub stage: String,
    pub pid: u32,
}

/// One consumer task of this stage: its replicas' senders are
/// `SetupWire::outputs[first..first + replicas]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRoute {
    pub task: String,
    pub first: u32,
    pub replicas: u32,
    /// How many of the replicas items go to (the first `active`; live scaling moves
    /// it between 1 and `replicas`, the others stay up, idle).
    pub active: u32,
    /// The shared-memory holder id of each replica (holds move to it before a send).
    pub holders: Vec<u16>,
}

/// A pool this process has mapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub id: u32,
    /// `task#replica` that writes it.
    pub owner: String,
}

/// What a child needs to run its stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub app: String,
    pub service_type: ServiceType,
    /// Index of this task in the app.
    pub task_index: u16,
    /// The task spec as JSON (params are free-form JSON, which bincode cannot carry).
    pub task_json: String,
    pub replica: u32,
    pub replicas: u32,
    pub outputs: Vec<OutputRoute>,
    /// How many end-of-stream markers to wait for (one per upstream replica).
    pub expected_eos: u32,
    pub pools: Vec<PoolInfo>,
    /// The pool this stage writes its outputs to, if it produces payloads.
    pub own_pool: Option<u32>,
    pub run_dir: String,
    pub heartbeat_ms: u32,
    /// Batch size and max wait chosen by the user or the planner.
    pub batch_size: u32,
    pub batch_max_wait_ms: f64,
    /// The largest batch live tuning may move this stage to (≥ `batch_size`).
    pub batch_capacity: u32,
    /// Intra-op threads for compute-heavy functions.
    pub threads: u32,
    /// Best-effort stages other than heads: how long to wait for a free output slot
    /// before shedding the item (heads shed at once: their pool is sized for the rate).
    /// [`SLOT_WAIT_FOREVER`] (an app with no latency quota: no latency to protect):
    /// every stage, heads included, waits as long as it takes and sheds nothing.
    pub slot_wait_ms: u32,
    /// Best-effort apps with a latency quota: an item older than this (from its arrival)
    /// when a stage or tail receives it is dropped and counted as lost (`Deadline`) rather
    /// than served late; the oldest items go first. 0 = never.
    pub deadline_ms: u32,
    /// GPU stages: how long after its creation an item should be answered by the agent
    /// (the app's latency quota, or a default by service type); the agent serves the
    /// earliest deadline first across every app it hosts.
    pub agent_deadline_ms: u32,
    /// GPU stages: index in `SetupWire::outputs` of the device agent's inbox.
    pub agent_output: Option<u32>,
    /// GPU stages: index of this replica's inbox among the agent's outputs.
    pub agent_reply_to: Option<u32>,
    /// The model manifest (`apps/models.json`) and the folder holding the model files.
    pub models_manifest: Option<String>,
    pub models_dir: Option<String>,
    /// This replica's shared-memory holder id (see [`crate::shm`]).
    pub holder: u16,
    /// How many times this replica was restarted before (0 for the first start).
    pub incarnation: u32,
    /// Heads: the first sequence number to emit per source (a restarted head resumes
    /// after what the tails acknowledged). Tails: what was already delivered per source.
    pub resume: Vec<SourceTotal>,
    /// Tails writing a file: its length at the last acknowledgement; a restarted tail
    /// cuts the file back to it (what came after is replayed).
    pub resume_output_len: Option<u64>,
}

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
    },
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
    pub stage: u16,
    pub n: u64,
    pub s: f64,
    pub s2: f64,
    pub r: f64,
    pub r2: f64,
    pub sr: f64,
}

impl StayStats {
    /// No items yet, for stage `stage`.
    pub fn new(stage: u16) -> Self {
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

/// Pixel layout of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelFormat {
    /// 8-bit RGB, interleaved, rows packed (stride = 3 × width).
    Rgb8,
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    U8,
    F32,
    I64,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    Frame {
        shm: ShmRef,
        width: u32,
        height: u32,
        format: PixelFormat,
    },
    Tensor {
        shm: ShmRef,
        dtype: DType,
        shape: Vec<u32>,
    },
    /// An Arrow IPC stream holding one record batch.
    Table(Vec<u8>),
    /// Several payloads of one item (e.g. a frame and its detections).
    Batch(Vec<Payload>),
    /// Model-family state between the steps of a cascade (JSON), e.g. MTCNN's
    /// candidate boxes between P-Net and R-Net.
    State(Vec<u8>),
}

impl Payload {
    /// Every shared-memory reference inside, in order.
    pub fn shm_refs(&self) -> Vec<ShmRef> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }
    fn collect_refs(&self, out: &mut Vec<ShmRef>) {
        match self {
            Payload::Frame { shm, .. } | Payload::Tensor { shm, .. } => out.push(*shm),
            Payload::Table(_) | Payload::State(_) => {}
            Payload::Batch(items) => items.iter().for_each(|p| p.collect_refs(out)),
        }
    }
}

/// One hop of an item through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Task index of the stage.
    pub stage: u16,
    /// When the stage got the item (for heads: when it was created).
    pub recv_ns: u64,
    /// When the stage sent it on.
    pub sent_ns: u64,
}

/// One item on its way from a head to the tails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub app: String,
    pub source: String,
    pub seq: u64,
    pub created_ns: u64,
    pub hops: Vec<Hop>,
    pub payload: Payload,
}

/// End of stream from one upstream replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eos {
    pub stage: u16,
    pub replica: u32,
    /// What the sources upstream of it emitted.
    pub totals: Vec<SourceTotal>,
}

/// Supervisor → child commands, delivered through the child's inbox so they are
/// ordered with its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Heads: stop producing, send end-of-stream, finish. Others: ignored (they drain
    /// when their inputs end).
    Drain,
    /// Exit now.
    Stop,
    /// Output `output` has a new inbox sender (a restarted consumer or agent): it is
    /// waiting in the rewire channel.
    Rewire { output: u32 },
    /// Heads: the tails have everything below these totals; drop what is kept for replay.
    Ack(Vec<SourceTotal>),
    /// Heads: send again every item not yet acknowledged (a stage was restarted).
    Replay,
    /// Request-guarantee apps: the tails have every item; end now (stages stay up
    /// after their end of stream until then, to pass replays on).
    Finish,
    /// New batching for this stage from now on (live tuning; no restart).
    Retune {
        batch_size: u32,
        batch_max_wait_ms: f64,
    },
    /// Heads: offer items at this rate from the next item on (0 = as fast as the
    /// pipeline takes them); the request frequency changed while the app runs.
    SetRate { items_per_s: f64 },
    /// Producers: send task `task`'s items to its first `active` replicas from now on.
    Scale { task: String, active: u32 },
    /// GPU agents: run every model with this many intra-op threads from now on (the
    /// sessions are created again, one at a time, while requests keep being served).
    SetThreads { threads: u32 },
    /// Shared GPU agents: app `app` joins; its [`AttachWire`] is waiting in the attach
    /// channel.
    Attach { app: String },
    /// Shared GPU agents: app `app` has ended; its pools are unmapped, its models
    /// unloaded unless another app uses them.
    Detach { app: String },
}

/// Why the agent could not answer a request: a typed reason where the stage acts on it,
/// the agent's message otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum AgentError {
    /// The outputs need more bytes than the request's output slot has: the stage halves
    /// its batch and asks again.
    #[error("output slot too small: the outputs of {model} need {need} bytes, the output slot of {stage} has {have}")]
    OutputSlotTooSmall {
        model: String,
        stage: String,
        need: u64,
        have: u64,
    },
    /// The model failed to load or run, is not hosted, or the request was bad.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for AgentError {
    fn from(msg: String) -> AgentError {
        AgentError::Failed(msg)
    }
}

impl From<&str> for AgentError {
    fn from(msg: &str) -> AgentError {
        AgentError::Failed(msg.into())
    }
}

/// A tensor in shared memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRef {
    pub shm: ShmRef,
    pub shape: Vec<u32>,
}

/// GPU stage → agent: run `model` once on the inputs concatenated along dim 0 and
/// write every output (f32, in model order) into `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub id: u64,
    /// `task#replica` of the asking stage, for logs.
    pub stage: String,
    /// Index of the stage's inbox among the agent's outputs.
    pub reply_to: u32,
    pub model: String,
    pub inputs: Vec<TensorRef>,
    /// A whole free slot of the stage's pool, for the outputs.
    pub output: ShmRef,
    /// When the item must be answered by (ns on the node's clock): its creation plus
    /// the app's latency quota. The agent serves the earliest deadline first.
    pub deadline_ns: u64,
}

/// Agent → GPU stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReply {
    pub id: u64,
    /// The outputs as sub-ranges of the request's output slot, or why the run failed.
    pub result: Result<Vec<TensorRef>, AgentError>,
}

/// Everything that arrives in a child's inbox (bincode bytes on an [`InboxSender`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Inbox {
    Data(Envelope),
    /// Item `seq` of `source` will never arrive (lost with `reason` in a
    /// request-guarantee app): tails move past it instead of waiting.
    Skip {
        source: String,
        seq: u64,
        reason: LossReason,
    },
    Eos(Eos),
    Command(Command),
    AgentRequest(AgentRequest),
    AgentReply(AgentReply),
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
