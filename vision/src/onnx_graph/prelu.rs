//! PReLU rewritten for ONNX Runtime's CPU provider. ORT runs `PRelu` through its generic
//! broadcasting kernel, one element at a time (3.8 ns an element at one thread: on MTCNN's
//! P-Net at 768×432 its three PReLUs took 42 % of the model), and outside the blocked (NCHWc)
//! layout its convolutions use, so each costs two reorders more. The same function written as
//!
//! `PRelu(x, s) = Relu(x) + Relu(x · −1) · −s`
//!
//! is made of operations ORT keeps in the blocked layout (it runs a per-channel `Mul` as a
//! depthwise 1×1 convolution) and vectorises: P-Net 1.38×, R-Net 2.2×, O-Net 1.8× faster
//! (BENCHMARKS.md, "PReLU"). It is exact, not merely close: where x > 0 the sum is x + 0, where
//! x < 0 it is 0 + (−x)·(−s), the same product as s·x; infinities give what `PRelu` gives.
//! Only on the CPU (`rewrite_for_cpu`): CUDA's `PRelu` is one fused kernel.

use super::model::{Graph, Names, Node, Tensor};
use super::rewrite::{constant, Index};

/// The first opset with multidirectional broadcasting for `Mul` and `Add` (and the one whose
/// `PRelu` slope broadcasts to the input as now).
pub(super) const BROADCAST_OPSET: u64 = 7;

/// Every `PRelu` with a constant slope, written as Relu, Mul and Add; how many.
pub(super) fn prelu_as_relus(g: &mut Graph<'_>, names: &mut Names) -> usize {
    let idx = Index::of(g);
    // the slopes first: a `Constant` node's value is read through the node list
    let slopes: Vec<_> = g
        .nodes
        .iter()
        .map(
            |n| match (n.is("PRelu") && n.domain.is_empty(), n.inputs.as_slice()) {
                (true, [_, s]) if n.outputs.len() == 1 => constant(g, &idx, s),
                _ => None,
            },
        )
        .collect();
    let mut nodes = Vec::with_capacity(g.nodes.len());
    let mut added = Vec::new();
    let mut count = 0;
    for (n, slope) in std::mem::take(&mut g.nodes).into_iter().zip(slopes) {
        let Some(slope) = slope else {
            nodes.push(n);
            continue;
        };
        let (x, y) = (n.inputs[0].clone(), n.outputs[0].clone());
        let fresh = |names: &mut Names, what: &str| names.fresh(&y, what);
        let minus_one = fresh(names, "minus_one");
        let minus_slope = fresh(names, "minus_slope");
        let negative: Vec<f32> = slope.values.iter().map(|v| -v).collect();
        added.push(Tensor::new_f32(
            minus_one.clone(),
            slope.dims.clone(),
            &vec![-1.0; slope.values.len()],
        ));
        added.push(Tensor::new_f32(
            minus_slope.clone(),
            slope.dims.clone(),
            &negative,
        ));
        let (positive, flipped, below, scaled) = (
            fresh(names, "positive"),
            fresh(names, "flipped"),
            fresh(names, "below"),
            fresh(names, "scaled"),
        );
        nodes.extend([
            Node::new("Relu", vec![x.clone()], vec![positive.clone()]),
            Node::new("Mul", vec![x, minus_one], vec![flipped.clone()]),
            Node::new("Relu", vec![flipped], vec![below.clone()]),
            Node::new("Mul", vec![below, minus_slope], vec![scaled.clone()]),
            Node::new("Add", vec![positive, scaled], vec![y]),
        ]);
        count += 1;
    }
    g.nodes = nodes;
    g.initializers.extend(added);
    count
}

#[cfg(test)]
#[path = "prelu_tests.rs"]
mod tests;
