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
pub mod finish_left;
pub mod image;
pub mod model;
pub mod out_files;
pub mod pipes;
pub mod registry;
pub mod sources;
pub mod table;

// The paths other crates use (the supervisor's planning helpers, the fuzz test).
pub use image::sinks;
pub use sources::media;
pub use table as tables;

use protocol::node::Node;
use serde::de::DeserializeOwned;

/// Why a stage stopped: the one error of every stage program, the `stage` SDK's.
pub use stage::StageError;

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
