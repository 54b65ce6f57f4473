//! Tests of moving transposes above element-wise operations by constants.

use super::*;
use crate::onnx_graph::model::{Attribute, OnnxModel};
use crate::onnx_graph::rewrite::rewrite;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node<'static> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Node::new(op, s(inputs), s(outputs))
}

fn transpose(input: &str, perm: &[i64], output: &str) -> Node<'static> {
    let mut t = node("Transpose", &[input], &[output]);
    t.attributes = vec![Attribute::new_ints("perm", perm)];
    t
}

fn constant(name: &str, dims: Vec<i64>, values: &[f32]) -> Tensor<'static> {
    Tensor::new_f32(name.into(), dims, values)
}

/// How many operations the rewrite moved a transpose above, and the rewritten node types.
fn moved(
    inputs: &[(&str, &[i64])],
    outputs: &[&str],
    nodes: Vec<Node<'static>>,
    inits: Vec<Tensor<'static>>,
) -> (usize, Vec<String>) {
    let bytes = OnnxModel::build(13, inputs, outputs, nodes, inits).encode();
    match rewrite(&bytes).expect("a model") {
        None => (0, Vec::new()),
        Some((out, report)) => {
            let model = OnnxModel::parse(&out).expect("parses");
            let ops = model.graph.nodes.iter().map(|n| n.op_type.clone());
            (report.transposes_moved, ops.collect())
        }
    }
}

const NHWC: (&str, &[i64]) = ("x", &[1, 8, 8, 3]);

#[test]
fn an_nhwc_normalisation_is_moved_under_the_transpose_with_its_constants_transposed() {
    let nodes = vec![
        node("Sub", &["x", "mean"], &["a"]),
        node("Mul", &["scale", "a"], &["b"]),
        transpose("b", &[0, 3, 1, 2], "y"),
    ];
    let inits = vec![
        constant("mean", vec![3], &[1.0, 2.0, 3.0]),
        constant("scale", vec![1, 1, 1, 3], &[0.5, 0.25, 0.125]),
    ];
    let bytes = OnnxModel::build(13, &[NHWC], &["y"], nodes, inits).encode();
    let (out, report) = rewrite(&bytes).unwrap().expect("moved");
    assert_eq!(report.transposes_moved, 2);
    let model = OnnxModel::parse(&out).unwrap();
    let g = &model.graph;
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Transpose", "Sub", "Mul"]);
    assert_eq!(g.nodes[0].inputs, ["x"]);
    assert_eq!(
        g.nodes[2].outputs,
        ["y"],
        "the graph's output keeps its name"
    );
    let find = |name: &str| g.initializers.iter().find(|t| t.name == name).unwrap();
    let mean = find(&g.nodes[1].inputs[1]);
    assert_eq!(mean.dims, [1, 3, 1, 1]);
    assert_eq!(mean.f32_values().unwrap(), [1.0, 2.0, 3.0]);
    let scale = find(&g.nodes[2].inputs[0]);
    assert_eq!(
        scale.dims,
        [1, 3, 1, 1],
        "a constant first operand stays first"
    );
    assert_eq!(g.initializers.len(), 2, "the old constants are dropped");
}

#[test]
fn a_constant_is_transposed_element_by_element() {
    // [2, 3] padded to [1, 2, 3], permuted (2, 0, 1): [3, 1, 2]
    let c = Const {
        dims: vec![2, 3],
        values: vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0],
    };
    let (dims, values) = transposed_constant(&c, &[2, 0, 1]);
    assert_eq!(dims, [3, 1, 2]);
    assert_eq!(values, [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
}

#[test]
fn nothing_moves_where_the_rank_is_unknown_or_the_result_is_read_elsewhere() {
    let inits = || vec![constant("mean", vec![1, 1, 1, 3], &[1.0, 2.0, 3.0])];
    // x's rank comes out of a Conv, which the rank reader does not follow
    let nodes = vec![
        node("Conv", &["x", "w"], &["c"]),
        node("Sub", &["c", "mean"], &["a"]),
        transpose("a", &[0, 3, 1, 2], "y"),
    ];
    let mut with_w = inits();
    with_w.push(constant("w", vec![3, 3, 1, 1], &[1.0; 9]));
    assert_eq!(moved(&[NHWC], &["y"], nodes, with_w), (0, Vec::new()));
    // the operation's output is a graph output too
    let nodes = vec![
        node("Sub", &["x", "mean"], &["a"]),
        transpose("a", &[0, 3, 1, 2], "y"),
    ];
    assert_eq!(moved(&[NHWC], &["y", "a"], nodes, inits()), (0, Vec::new()));
    // an input without a declared shape
    let nodes = vec![
        node("Sub", &["x", "mean"], &["a"]),
        transpose("a", &[0, 3, 1, 2], "y"),
    ];
    let bytes = OnnxModel::build(13, &[], &["y"], nodes, inits());
    let mut model = bytes;
    model.graph.inputs.push("x".into());
    assert_eq!(model.graph.input_rank("x"), None);
    let mut names = Names::of(&model.graph);
    assert_eq!(
        transposes_above_constant_ops(&mut model.graph, &mut names),
        0
    );
}

#[test]
fn a_constant_of_a_higher_rank_than_the_permutation_is_left() {
    // x is rank 2 here: the rank-4 constant makes the Sub's output rank 4, and a
    // transpose of x by the 4-axis permutation would be wrong
    let nodes = vec![
        node("Sub", &["x", "mean"], &["a"]),
        transpose("a", &[0, 3, 1, 2], "y"),
    ];
    let inits = vec![constant("mean", vec![1, 1, 1, 3], &[1.0, 2.0, 3.0])];
    assert_eq!(
        moved(&[("x", &[8, 3])], &["y"], nodes, inits),
        (0, Vec::new())
    );
}
