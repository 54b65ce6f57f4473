//! The worker side of the function registry (`protocol::functions`): the run function
//! of every built-in. The `match` is exhaustive over `Builtin`, so a function cannot be
//! registered (and so validate) without saying where it runs.

use crate::image::{bodies, sinks};
use crate::{faults, model, sources, table, StageError};
use protocol::functions::{self, Builtin};
use protocol::node::Node;

/// A stage's entry point: runs the task to the end of its input (or its source).
pub type RunFn = fn(&mut Node) -> Result<(), StageError>;

/// Where a built-in runs.
#[derive(Debug, Clone, Copy)]
pub enum Runs {
    /// In this worker, through this function.
    Here(RunFn),
    /// In worker-gpu (a GPU stage sending batches to its device's agent).
    Gpu,
}

/// The run function of a built-in.
pub fn runs(f: Builtin) -> Runs {
    Runs::Here(match f {
        Builtin::SourceImages => sources::images,
        Builtin::SourceVideo => sources::video,
        Builtin::ImageGen => sources::generate,
        Builtin::BenchBlob => sources::blobs,
        Builtin::ImageResize => bodies::run_resize,
        Builtin::ImageCrop => bodies::run_crop,
        Builtin::CoreForward => bodies::run_forward,
        Builtin::ImageShow => sinks::run_show,
        Builtin::BenchSink => sinks::run_bench_sink,
        Builtin::TablePrint => table::print::run,
        Builtin::TableFilter => table::run_filter,
        Builtin::TableSelect => table::run_select,
        Builtin::TableMerge => table::run_merge,
        Builtin::TrackDeepsort => table::track::run,
        Builtin::ModelPreprocess => model::run_preprocess,
        Builtin::ModelPostprocess => model::run_postprocess,
        Builtin::TestFault => faults::run,
        Builtin::ModelInference => return Runs::Gpu,
    })
}

/// Run the node's function to the end of its input.
pub fn run_stage(node: &mut Node) -> Result<(), StageError> {
    let task = || format!("task '{}'", node.task.name);
    let Some(f) = functions::builtin(&node.task.function) else {
        return Err(StageError::Unsupported(format!(
            "{}: '{}' is not a built-in function; known: {}",
            task(),
            node.task.function,
            functions::names().join(", ")
        )));
    };
    match runs(f) {
        Runs::Here(run) => run(node),
        Runs::Gpu => Err(StageError::Unsupported(format!(
            "{}: {} runs in worker-gpu (a `gpu` task), not in worker-cpu",
            task(),
            node.task.function
        ))),
    }
}
