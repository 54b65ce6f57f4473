//! Between a GPU stage and the agent: requests, their replies and the agent's typed errors.

use crate::shm::ShmRef;
use serde::{Deserialize, Serialize};

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
    /// From a request-guarantee app: while an agent serves such requests, a best-effort
    /// run never takes its last free executor, so a guaranteed request does not wait
    /// for one to finish.
    pub guaranteed: bool,
}

/// Agent → GPU stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReply {
    pub id: u64,
    /// The outputs as sub-ranges of the request's output slot, or why the run failed.
    pub result: Result<Vec<TensorRef>, AgentError>,
}
