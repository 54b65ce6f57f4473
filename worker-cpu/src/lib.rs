//! `worker-cpu`: the CPU stages of a SmartPipe app — heads (sources), CPU bodies
//! (image and table operations, model pre/post-processing) and tails (sinks). The
//! binary runs one stage replica; the library also lends the supervisor what it needs
//! to plan (listing images, probing videos).

pub mod bodies;
pub mod faults;
pub mod head_cost;
pub mod heads;
pub mod jpeg_end;
pub mod mask_show;
pub mod media;
pub mod models;
pub mod out_files;
pub mod registry;
pub mod sinks;
pub mod table_print;
pub mod tables;

use protocol::node::{Node, NodeError};
use serde::de::DeserializeOwned;

/// Why a stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Shm(#[from] protocol::shm::ShmError),
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("task '{task}', params.{param}: {detail}")]
    Param {
        task: String,
        param: String,
        detail: String,
    },
    #[error("task '{task}' ({function}): params: {detail}")]
    Params {
        task: String,
        function: String,
        detail: String,
    },
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Input(String),
}

impl StageError {
    pub fn io(path: impl std::fmt::Display, err: impl std::fmt::Display) -> StageError {
        StageError::Io {
            path: path.to_string(),
            detail: err.to_string(),
        }
    }
}

/// The task's params as its function's typed struct (`protocol::functions::params`),
/// which `validate` has already parsed them into.
pub fn params<T: DeserializeOwned>(node: &Node) -> Result<T, StageError> {
    protocol::functions::params::parse(&node.task.params).map_err(|e| StageError::Params {
        task: node.task.name.clone(),
        function: node.task.function.clone(),
        detail: e.to_string(),
    })
}

pub use registry::run_stage;
