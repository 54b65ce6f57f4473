//! A top-1 head appended to a classifier's outputs before ONNX Runtime loads it: each output's
//! last axis of C class scores becomes two values, the index of the best class (as a float; the
//! first one where several are equal, like numpy's `argmax`) and its score. PP-OCR's recogniser
//! answers [N, T, 6625] scores per text line (36 MB for one page) of which the CTC decoder reads
//! only the best class of each step; with the head, the agent copies out [N, T, 2] and the
//! decoder reads that. The scores are computed as before; only what leaves the session shrinks.
//!
//! The head is `TopK(k = 1, axis = -1, largest, sorted)` (ties go to the lower index, ONNX
//! TopK-11), `Cast` of the index to float (exact below 2^24 classes) and `Concat` of the two
//! on the last axis, under the output's own name.

use super::model::{Attribute, GraphError, Names, Node, OnnxModel, Tensor, FLOAT};

/// The first opset whose `TopK` takes `k` as an input and has `largest` and `sorted`.
const TOPK_OPSET: u64 = 11;

/// Appends the top-1 head to every output of the `.onnx` file `bytes`; the file's bytes with
/// it. Models with subgraphs, outputs no node produces, or an opset before 11 are errors.
pub fn top1_head(bytes: &[u8]) -> Result<Vec<u8>, GraphError> {
    let mut model = OnnxModel::parse(bytes)?;
    add_top1_head(&mut model)?;
    Ok(model.encode())
}

/// [`top1_head`] of a parsed model, in place.
pub fn add_top1_head(model: &mut OnnxModel<'_>) -> Result<(), GraphError> {
    match model.opset("") {
        Some(v) if v >= TOPK_OPSET => {}
        v => {
            return Err(GraphError::Unsupported(format!(
                "the top-1 head needs opset {TOPK_OPSET} or later; the model imports {}",
                v.map_or("no default-domain opset".to_string(), |v| format!(
                    "opset {v}"
                ))
            )))
        }
    }
    let g = &mut model.graph;
    if g.has_subgraph() {
        return Err(GraphError::Unsupported(
            "the top-1 head is not added to models with subgraphs (If, Loop, Scan)".into(),
        ));
    }
    let mut names = Names::of(g);
    for output in g.outputs.clone() {
        if !g.nodes.iter().any(|n| n.outputs.contains(&output)) {
            return Err(GraphError::Unsupported(format!(
                "output `{output}` is not made by a node of the graph (an input or a constant)"
            )));
        }
        let scores = names.fresh(&output, "scores");
        for n in &mut g.nodes {
            for name in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
                if *name == output {
                    name.clone_from(&scores);
                }
            }
        }
        let k = names.fresh(&output, "top1_k");
        let values = names.fresh(&output, "top1_score");
        let index = names.fresh(&output, "top1_index");
        let index_f = names.fresh(&output, "top1_index_f32");
        g.initializers
            .push(Tensor::new_i64(k.clone(), vec![1], &[1]));
        let mut topk = Node::new("TopK", vec![scores, k], vec![values.clone(), index.clone()]);
        topk.attributes = vec![
            Attribute::new_int("axis", -1),
            Attribute::new_int("largest", 1),
            Attribute::new_int("sorted", 1),
        ];
        let mut cast = Node::new("Cast", vec![index], vec![index_f.clone()]);
        cast.attributes = vec![Attribute::new_int("to", FLOAT)];
        let mut concat = Node::new("Concat", vec![index_f, values], vec![output.clone()]);
        concat.attributes = vec![Attribute::new_int("axis", -1)];
        g.nodes.extend([topk, cast, concat]);
        g.declare_float_output(&output);
        g.retain_value_infos(|n| n != output);
    }
    Ok(())
}
