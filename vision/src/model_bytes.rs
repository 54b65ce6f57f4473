//! A model's bytes as ONNX Runtime loads them ([`edited`]): the file's, or a copy the session
//! options change — cut at the heads a native decoder reads ([`crate::native_tail`]), the
//! graph rewrites of [`crate::onnx_graph`], the top-1 head.

use std::path::Path;

use crate::native_tail::TailCut;
use crate::onnx_graph::{self, RewriteReport};
use crate::provider::Provider;
use crate::session_options::SessionOptions;

/// The model's bytes as ORT should load them, where the options change the file: the graph
/// cut at a native tail's heads (first, so the rewrites leave the decoded tail alone; a graph
/// without those heads is an error naming what is missing), the graph
/// rewrites (bytes that are not ONNX, or a graph they leave alone, load as the file is: ORT's
/// error says what is wrong), Winograd's convolutions on the CPU at one intra-op thread (the
/// agent's sessions on `cpu:0`: at more threads its transposes scale worse than ORT's direct
/// convolutions, and it gained little or lost; BENCHMARKS.md), and the top-1 head (a model
/// it cannot be added to is an error: the stage that reads the outputs expects it). `None`:
/// load the file itself.
pub(crate) fn edited(
    path: &Path,
    opts: &SessionOptions,
    provider: Provider,
) -> std::result::Result<Option<Edited>, String> {
    if !opts.graph_rewrites && !opts.top1_outputs && opts.native_tail.is_none() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut model = match onnx_graph::OnnxModel::parse(&bytes) {
        Ok(model) => model,
        Err(e) if opts.top1_outputs => return Err(format!("top-1 head: {e}")),
        Err(e) if opts.native_tail.is_some() => return Err(format!("native tail: {e}")),
        Err(_) => return Ok(None),
    };
    // The cut comes first: the rewrites then leave the decoded tail alone.
    let tail = match opts.native_tail {
        Some(tail) => Some(
            tail.cut(&mut model)
                .map_err(|e| format!("native tail `{}`: {e}", tail.name()))?,
        ),
        None => None,
    };
    let report = match provider {
        _ if !opts.graph_rewrites => RewriteReport::default(),
        Provider::Cpu => {
            let winograd = (opts.winograd && opts.intra_threads == 1)
                .then_some(onnx_graph::MIN_CHANNEL_BALANCE);
            onnx_graph::rewrite_for_cpu(&mut model, winograd)
        }
        Provider::Cuda { .. } => onnx_graph::rewrite_model(&mut model).unwrap_or_default(),
    };
    if opts.top1_outputs {
        onnx_graph::add_top1_head(&mut model).map_err(|e| format!("top-1 head: {e}"))?;
    } else if report.total() == 0 && tail.is_none() {
        return Ok(None);
    }
    Ok(Some(Edited {
        bytes: model.encode(),
        report,
        tail,
    }))
}

/// A model's bytes as [`edited`] changed them.
pub(crate) struct Edited {
    pub bytes: Vec<u8>,
    pub report: RewriteReport,
    pub tail: Option<TailCut>,
}
