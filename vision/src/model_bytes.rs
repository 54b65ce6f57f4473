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
/// load the file itself. With the rewrites on, a graph whose wanted outputs are some of its
/// outputs is cut to them.
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
    // The cuts come first: the rewrites then leave the decoded tail, and what no wanted
    // output needs, alone.
    let tail = match opts.native_tail {
        Some(tail) => Some(
            tail.cut(&mut model)
                .map_err(|e| format!("native tail `{}`: {e}", tail.name()))?,
        ),
        None => None,
    };
    let nodes_pruned = match &tail {
        Some(cut) => cut.nodes_removed,
        None if opts.graph_rewrites => keep_only(&mut model, &opts.outputs),
        None => 0,
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
    } else if report.total() == 0 && tail.is_none() && nodes_pruned == 0 {
        return Ok(None);
    }
    Ok(Some(Edited {
        bytes: model.encode(),
        report,
        tail,
        nodes_pruned,
    }))
}

/// Cuts the graph to `wanted` when they are some of its outputs, not all: the nodes only the
/// others need are dropped, so ONNX Runtime never runs them (it computes every node of a graph
/// whatever outputs a run asks for: ISNet's five side outputs, upsampled to the input's size,
/// cost 4 % of its run). Nodes dropped; 0 when there is nothing to cut or `wanted` names
/// something the graph does not output (the session's output check then says what).
fn keep_only(model: &mut onnx_graph::OnnxModel<'_>, wanted: &[String]) -> usize {
    let outputs = &model.graph.outputs;
    if wanted.is_empty()
        || wanted.len() >= outputs.len()
        || !wanted.iter().all(|w| outputs.contains(w))
    {
        return 0;
    }
    let kept: Vec<String> = outputs
        .iter()
        .filter(|o| wanted.contains(o))
        .cloned()
        .collect();
    // An output no node makes (an input passed through, a constant) cannot be cut to:
    // ONNX Runtime's output selection then does what it can.
    onnx_graph::cut_at(model, &kept).unwrap_or(0)
}

/// A model's bytes as [`edited`] changed them.
pub(crate) struct Edited {
    pub bytes: Vec<u8>,
    pub report: RewriteReport,
    pub tail: Option<TailCut>,
    /// Nodes dropped: no wanted output needs them (`SessionOptions::outputs`), or the native
    /// tail decodes them.
    pub nodes_pruned: usize,
}
