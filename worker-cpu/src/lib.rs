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

/// Read an optional parameter of the node's task.
pub fn param<T: DeserializeOwned>(node: &Node, name: &str) -> Result<Option<T>, StageError> {
    match node.task.params.get(name) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| StageError::Param {
                task: node.task.name.clone(),
                param: name.to_string(),
                detail: e.to_string(),
            }),
    }
}

/// Read a required parameter (validation has already checked it is there).
pub fn required<T: DeserializeOwned>(node: &Node, name: &str) -> Result<T, StageError> {
    param(node, name)?.ok_or_else(|| StageError::Param {
        task: node.task.name.clone(),
        param: name.to_string(),
        detail: "missing".into(),
    })
}

/// Run the node's function to the end of its input.
pub fn run_stage(node: &mut Node) -> Result<(), StageError> {
    match node.task.function.as_str() {
        "image.gen" | "source.images" | "source.video" | "bench.blob" => heads::run(node),
        "image.resize" | "image.crop" | "core.forward" => bodies::run(node),
        "image.show" => sinks::run_show(node),
        "table.print" => table_print::run(node),
        "table.filter" | "table.select" | "table.merge" => tables::run(node),
        "track.deepsort" => tables::track::run(node),
        "bench.sink" => sinks::run_bench_sink(node),
        "model.preprocess" | "model.postprocess" => models::run(node),
        "test.fault" => faults::run(node),
        other => Err(StageError::Unsupported(format!(
            "function '{other}' is not available in worker-cpu yet"
        ))),
    }
}
