//! The live state of a running app, as the control API shows it: what the run loop
//! publishes (its stages, their metrics) and the requests the API sends it (restarts and
//! live changes), each with a channel for the answer.

use protocol::messages::StageMetrics;
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

/// One stage replica as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LiveStage {
    pub label: String,
    pub task: String,
    pub pid: i32,
    pub state: String,
    pub restarts: u32,
    pub batch: u32,
    pub replicas: u32,
    /// Replicas of the task that get items now (live scaling; the others idle).
    #[serde(default)]
    pub active: u32,
    pub items_per_s: f64,
    pub metrics: StageMetrics,
}

/// A request to restart a task's replica (every replica when `replica` is None), sent
/// by the API to the app's run loop, which answers on `reply` with a message for people.
#[derive(Debug)]
pub struct RestartRequest {
    pub task: String,
    pub replica: Option<u32>,
    pub reply: mpsc::Sender<Result<String, String>>,
}

/// A change to a running app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveChange {
    /// A new request frequency for its sources (items per second; 0 = unpaced). A
    /// request-guarantee app is admitted again at it, unless `unpromised` (then it runs
    /// at that rate without a promise).
    Rate { items_per_s: f64, unpromised: bool },
    /// New intra-op threads for its GPU agent's sessions.
    Threads(u32),
}

/// A [`LiveChange`] sent by the API to the app's run loop, which answers on `reply`
/// with a message for people.
#[derive(Debug)]
pub struct ChangeRequest {
    pub change: LiveChange,
    pub reply: mpsc::Sender<Result<String, String>>,
}

/// A running app.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LiveApp {
    pub name: String,
    pub state: String,
    pub run_dir: String,
    pub supervisor_pid: u32,
    pub uptime_s: f64,
    /// "constraints enforced: …" or "constraints not enforced: <why>" (the app's cgroup).
    #[serde(default)]
    pub constraints: String,
    pub stages: Vec<LiveStage>,
    /// Items per second per source set by `supervisor rate` (0: unpaced); none while the
    /// sources pace themselves as the app file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
    /// Where the API sends restarts; None while the run loop takes none.
    #[serde(skip)]
    pub restarts: Option<mpsc::Sender<RestartRequest>>,
    /// Where the API sends live changes; None while the run loop takes none.
    #[serde(skip)]
    pub changes: Option<mpsc::Sender<ChangeRequest>>,
}
