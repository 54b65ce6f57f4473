//! Sent by the supervisor to a stage or agent process: its setup (routes, pools, batching) and its commands.

use super::*;
use crate::spec::ServiceType;
use serde::{Deserialize, Serialize};

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
    pub holders: Vec<HolderId>,
    /// Pick the replica from the item's (source, seq) instead of round robin: the
    /// consumer pairs parts of one item coming from several producers
    /// ([`crate::functions::pairs_parts`]), so they must all reach the same replica,
    /// whatever each producer sent before (a restarted producer starts counting anew).
    pub by_item: bool,
}

/// A pool this process has mapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub id: PoolId,
    /// `task#replica` that writes it.
    pub owner: String,
}

/// What a child needs to run its stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub app: String,
    pub service_type: ServiceType,
    /// Index of this task in the app.
    pub task_index: TaskId,
    /// The task spec as JSON (params are free-form JSON, which bincode cannot carry).
    pub task_json: String,
    pub replica: u32,
    pub replicas: u32,
    pub outputs: Vec<OutputRoute>,
    /// How many end-of-stream markers to wait for (one per upstream replica).
    pub expected_eos: u32,
    pub pools: Vec<PoolInfo>,
    /// The pool this stage writes its outputs to, if it produces payloads.
    pub own_pool: Option<PoolId>,
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
    pub holder: HolderId,
    /// How many times this replica was restarted before (0 for the first start).
    pub incarnation: u32,
    /// Heads: the first sequence number to emit per source (a restarted head resumes
    /// after what the tails acknowledged). Tails: what was already delivered per source.
    pub resume: Vec<SourceTotal>,
    /// Tails writing a file: its length at the last acknowledgement; a restarted tail
    /// cuts the file back to it (what came after is replayed).
    pub resume_output_len: Option<u64>,
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
    /// `table.merge` (request-guarantee): drop parts of those items still waiting for a
    /// partner (a replay brought one input's part of an item merged already).
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
