//! Tests of `rewrite`.

use super::*;
use crate::onnx_graph::wire;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node<'static> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Node::new(op, s(inputs), s(outputs))
}

fn init(name: &str, dims: Vec<i64>) -> Tensor<'static> {
    let n = dims.iter().product::<i64>() as usize;
    Tensor::new_f32(name.into(), dims, &vec![0.5; n])
}

fn run(
    inputs: &[(&str, &[i64])],
    outputs: &[&str],
    nodes: Vec<Node<'static>>,
    inits: Vec<Tensor<'static>>,
) -> Option<RewriteReport> {
    let bytes = OnnxModel::build(13, inputs, outputs, nodes, inits).encode();
    rewrite(&bytes).unwrap().map(|(_, r)| r)
}

const X: (&str, &[i64]) = ("x", &[1, 2, 4, 4]);

#[test]
fn a_conv_output_the_graph_also_returns_is_not_folded() {
    let nodes = vec![
        node("Conv", &["x", "w"], &["c"]),
        node("Mul", &["c", "s"], &["y"]),
    ];
    let inits = || vec![init("w", vec![2, 2, 1, 1]), init("s", vec![1])];
    assert_eq!(run(&[X], &["y", "c"], nodes.clone(), inits()), None);
    let folded = run(&[X], &["y"], nodes, inits()).unwrap();
    assert_eq!(folded.affine_into_conv, 1);
}

#[test]
fn an_initializer_fed_as_a_graph_input_is_not_a_constant() {
    let nodes = vec![
        node("Conv", &["x", "w"], &["c"]),
        node("Mul", &["c", "s"], &["y"]),
    ];
    let inits = vec![init("w", vec![2, 2, 1, 1]), init("s", vec![1])];
    assert_eq!(run(&[X, ("s", &[1])], &["y"], nodes, inits), None);
}

#[test]
fn an_affine_read_by_a_padded_conv_stays() {
    let mut padded = node("Conv", &["a", "w"], &["y"]);
    padded.attributes = vec![Attribute::new_ints("pads", &[1, 1, 1, 1])];
    let nodes = vec![
        node("Mul", &["x", "s"], &["m"]),
        node("Add", &["m", "t"], &["a"]),
        padded,
    ];
    let inits = vec![
        init("w", vec![2, 2, 1, 1]),
        init("s", vec![1]),
        init("t", vec![1]),
    ];
    assert_eq!(run(&[X], &["y"], nodes, inits), None);
}

#[test]
fn two_affines_before_a_pointwise_conv_both_fold() {
    let nodes = vec![
        node("Mul", &["x", "s"], &["m1"]),
        node("Add", &["m1", "t"], &["a1"]),
        node("Mul", &["a1", "s"], &["m2"]),
        node("Add", &["m2", "t"], &["a2"]),
        node("Conv", &["a2", "w"], &["y"]),
    ];
    let inits = vec![
        init("w", vec![2, 2, 1, 1]),
        init("s", vec![1]),
        init("t", vec![1]),
    ];
    let report = run(&[X], &["y"], nodes, inits).unwrap();
    assert_eq!(
        report.affine_into_pointwise, 2,
        "the second needs a second scan"
    );
}

#[test]
fn a_clip_to_other_bounds_is_no_hard_swish() {
    let nodes = vec![
        node("Add", &["x", "three"], &["h1"]),
        node("Clip", &["h1", "zero", "five"], &["h2"]),
        node("Mul", &["x", "h2"], &["h3"]),
        node("Div", &["h3", "six"], &["y"]),
    ];
    let c = |name: &str, v: f32| Tensor::new_f32(name.into(), vec![], &[v]);
    let inits = |five: f32| {
        vec![
            c("three", 3.0),
            c("zero", 0.0),
            c("five", five),
            c("six", 6.0),
        ]
    };
    assert_eq!(run(&[X], &["y"], nodes.clone(), inits(5.0)), None);
    assert_eq!(run(&[X], &["y"], nodes, inits(6.0)).unwrap().hard_swish, 1);
}

#[test]
fn graphs_with_subgraphs_are_left_alone_and_garbage_is_an_error() {
    let mut with_body = node("If", &["cond"], &["y"]);
    let body = [wire::Field::string(2, "then")];
    with_body.attributes = vec![Attribute::new_graph("then_branch", &body)];
    let nodes = vec![
        node("Conv", &["x", "w"], &["c"]),
        node("Mul", &["c", "s"], &["m"]),
        with_body,
    ];
    let inits = vec![init("w", vec![2, 2, 1, 1]), init("s", vec![1])];
    assert_eq!(run(&[X, ("cond", &[1])], &["y", "m"], nodes, inits), None);
    assert!(rewrite(b"not an onnx file at all").is_err());
    assert!(matches!(rewrite(&[]), Err(GraphError::NoGraph)));
}
