//! `worker-cpu`: the CPU stages of a SmartPipe app — heads (sources), CPU bodies
//! (image and table operations, model pre/post-processing) and tails (sinks). The
//! binary runs one stage replica; the library also lends the supervisor what it needs
//! to plan (listing images, probing videos).

//!
//! The source is laid out by family: `sources/` (the heads: files, video, synthetic
//! frames and blobs), `image/` (image bodies and the frame sinks), `table/` (table
//! operations, the tracker and `table.print`), `model/` (model pre/post-processing per
//! family); `registry.rs` binds every built-in function to its run function.

pub mod faults;
pub mod image;
pub mod model;
pub mod out_files;
pub mod registry;
pub mod sources;
pub mod table;

// The paths other crates use (the supervisor's planning helpers, the fuzz test).
pub use image::sinks;
pub use sources::media;
pub use table as tables;

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
    /// An error of the stage SDK's loops and sends.
    #[error(transparent)]
    Sdk(stage::StageError),
}

impl From<stage::StageError> for StageError {
    /// The runtime's errors keep their own variants (`Stopped` ends a stage cleanly).
    fn from(e: stage::StageError) -> StageError {
        match e {
            stage::StageError::Node(e) => StageError::Node(e),
            stage::StageError::Shm(e) => StageError::Shm(e),
            other => StageError::Sdk(other),
        }
    }
}

/// Media errors keep their texts and land in the variants they had when the helpers
/// lived here.
impl From<::media::MediaError> for StageError {
    fn from(e: ::media::MediaError) -> StageError {
        match e {
            ::media::MediaError::Io { path, detail } => StageError::Io { path, detail },
            ::media::MediaError::Ffmpeg(detail) => StageError::Ffmpeg(detail),
            ::media::MediaError::NotVideo(detail) => StageError::Input(detail),
        }
    }
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
