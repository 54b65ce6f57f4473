//! Model tails computed natively. Some graphs end in long chains of small operators that decode
//! the network's heads (MoveNet MultiPose: 266 nodes after its six head convolutions, a tenth of
//! the model's time on one core). With a native tail, the graph is cut at the heads before ONNX
//! Runtime loads it ([`crate::onnx_graph::cut_at`]), and [`NativeTail::decode`] turns the heads
//! into the outputs the whole graph would have given, under the same names and shapes. The
//! manifest opts a model in (`"native_tail": "movenet-multipose"`); a graph whose heads cannot
//! be found fails to load with the reason.

use crate::error::{Result, VisionError};
use crate::onnx_graph::{cut_at, GraphError, OnnxModel};
use crate::pose::ROW;
use crate::pose_decode::{decode_multipose, MultiposeHeads, PEOPLE};
use crate::tensor::TensorF32;

/// A decoder that replaces a graph's tail, by the manifest's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NativeTail {
    /// MoveNet MultiPose (TF.js graph converted by tf2onnx): heads → `[N, 6, 56]`.
    MovenetMultipose,
}

/// The heads of MoveNet MultiPose by their TensorFlow scope, in the order
/// [`MultiposeHeads`] takes them; `true`: the head's sigmoid is its output.
const MULTIPOSE_HEADS: [(&str, bool); 6] = [
    ("center_0", true),
    ("kpt_heatmap_0", true),
    ("kpt_regress_0", false),
    ("kpt_offset_0", false),
    ("box_scale_0", false),
    ("box_offset_0", false),
];

/// What a cut left: the outputs the decoder gives, as the whole graph named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub tail: NativeTail,
    pub outputs: Vec<String>,
    /// Nodes of the tail that ONNX Runtime no longer runs.
    pub nodes_removed: usize,
}

impl NativeTail {
    /// Every tail by the name the manifest gives it.
    pub const ALL: [NativeTail; 1] = [NativeTail::MovenetMultipose];

    pub fn name(self) -> &'static str {
        match self {
            NativeTail::MovenetMultipose => "movenet-multipose",
        }
    }

    /// The tail the manifest's name means; `None` for a name no tail has.
    pub fn from_name(name: &str) -> Option<NativeTail> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Cuts `model`'s graph at the heads this tail decodes.
    pub fn cut(self, model: &mut OnnxModel<'_>) -> std::result::Result<TailCut, GraphError> {
        let outputs = model.graph.outputs.clone();
        let heads = match self {
            NativeTail::MovenetMultipose => {
                if outputs.len() != 1 {
                    return Err(GraphError::Unsupported(format!(
                        "MoveNet MultiPose has one output; this graph has {}",
                        outputs.len()
                    )));
                }
                multipose_heads(model)?
            }
        };
        let nodes_removed = cut_at(model, &heads)?;
        Ok(TailCut {
            tail: self,
            outputs,
            nodes_removed,
        })
    }

    /// The shape of each output the decoder gives (-1: the batch).
    pub fn output_shapes(self) -> Vec<Vec<i64>> {
        match self {
            NativeTail::MovenetMultipose => vec![vec![-1, PEOPLE as i64, ROW as i64]],
        }
    }

    /// The whole graph's outputs from the heads the cut graph gave, in its order.
    pub fn decode(self, model: &str, heads: &[TensorF32]) -> Result<Vec<TensorF32>> {
        match self {
            NativeTail::MovenetMultipose => decode_movenet(model, heads).map(|t| vec![t]),
        }
    }
}

/// Each head's tensor: the last convolution of its scope (nodes are in topological order),
/// or the sigmoid that reads it.
fn multipose_heads(model: &OnnxModel<'_>) -> std::result::Result<Vec<String>, GraphError> {
    let nodes = &model.graph.nodes;
    let read_by = |tensor: &str, op: &str| {
        nodes
            .iter()
            .find(|n| n.is(op) && n.inputs.iter().any(|i| i == tensor))
    };
    MULTIPOSE_HEADS
        .iter()
        .map(|&(scope, sigmoid)| {
            let scoped = format!("/{scope}/");
            let conv = nodes
                .iter()
                .filter(|n| n.is("Conv"))
                .filter_map(|n| n.outputs.first())
                .rfind(|out| out.contains(&scoped))
                .ok_or_else(|| {
                    GraphError::Unsupported(format!(
                        "no head convolution under `{scope}/` (not a MoveNet MultiPose graph \
                         converted by tf2onnx?)"
                    ))
                })?;
            if !sigmoid {
                return Ok(conv.clone());
            }
            read_by(conv, "Sigmoid")
                .and_then(|n| n.outputs.first().cloned())
                .ok_or_else(|| GraphError::Unsupported(format!("no Sigmoid reads head `{conv}`")))
        })
        .collect()
}

/// `[N, 6, 56]` from the six heads, each `[N, C, H, W]`.
fn decode_movenet(model: &str, heads: &[TensorF32]) -> Result<TensorF32> {
    let [center, heatmap, regress, offset, box_scale, box_offset] = heads else {
        return Err(VisionError::Output {
            model: model.to_string(),
            output: "heads".into(),
            msg: format!(
                "MoveNet MultiPose's decoder takes 6 heads, got {}",
                heads.len()
            ),
        });
    };
    let (n, h, w) = match center.shape.as_slice() {
        &[n, 1, h, w] => (n, h, w),
        other => {
            return Err(VisionError::Output {
                model: model.to_string(),
                output: "centre head".into(),
                msg: format!("expected [N, 1, H, W], got {other:?}"),
            })
        }
    };
    fn row(t: &TensorF32, n: usize, i: usize) -> &[f32] {
        let per = t.data.len() / n.max(1);
        t.data.get(i * per..(i + 1) * per).unwrap_or(&[])
    }
    let mut data = Vec::with_capacity(n * PEOPLE * ROW);
    for i in 0..n {
        let one = MultiposeHeads {
            height: h,
            width: w,
            center: row(center, n, i),
            heatmap: row(heatmap, n, i),
            regress: row(regress, n, i),
            offset: row(offset, n, i),
            box_scale: row(box_scale, n, i),
            box_offset: row(box_offset, n, i),
        };
        data.extend(decode_multipose(&one).map_err(|e| VisionError::Output {
            model: model.to_string(),
            output: "heads".into(),
            msg: e.to_string(),
        })?);
    }
    TensorF32::new(vec![n, PEOPLE, ROW], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_found_by_the_manifest_name_and_only_by_it() {
        assert_eq!(
            NativeTail::from_name("movenet-multipose"),
            Some(NativeTail::MovenetMultipose)
        );
        assert_eq!(NativeTail::from_name("movenet"), None);
    }

    #[test]
    fn a_graph_without_the_heads_is_refused_with_the_missing_scope() {
        use crate::onnx_graph::Node;
        let mut model = OnnxModel::build(
            13,
            &[("x", &[-1])],
            &["y"],
            vec![Node::new("Relu", vec!["x".into()], vec!["y".into()])],
            vec![],
        );
        let err = NativeTail::MovenetMultipose
            .cut(&mut model)
            .expect_err("no heads");
        assert!(err.to_string().contains("center_0/"), "{err}");
    }

    #[test]
    fn the_decoder_wants_six_heads() {
        let err = NativeTail::MovenetMultipose
            .decode("pose", &[])
            .expect_err("no heads");
        assert!(err.to_string().contains("6 heads"), "{err}");
    }
}
