//! Tests of PReLU written as Relu, Mul and Add.

use super::*;
use crate::onnx_graph::model::{Attribute, OnnxModel};
use crate::onnx_graph::rewrite::rewrite_for_cpu;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node<'static> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Node::new(op, s(inputs), s(outputs))
}

const X: (&str, &[i64]) = ("x", &[1, 3, 4, 4]);

#[test]
fn a_prelu_with_a_constant_slope_becomes_relu_mul_and_add_with_negated_constants() {
    let nodes = vec![node("PRelu", &["x", "s"], &["y"])];
    let slope = Tensor::new_f32("s".into(), vec![3, 1, 1], &[0.25, -1.5, 2.0]);
    let mut model = OnnxModel::build(13, &[X], &["y"], nodes, vec![slope]);
    let report = rewrite_for_cpu(&mut model, None);
    assert_eq!((report.prelu_as_relu, report.total()), (1, 1));
    let g = &model.graph;
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Relu", "Mul", "Relu", "Mul", "Add"]);
    assert_eq!(g.nodes[0].inputs, ["x"]);
    assert_eq!(g.nodes[1].inputs[0], "x");
    assert_eq!(g.nodes[4].outputs, ["y"], "the output keeps its name");
    let value = |name: &str| {
        let t = g.initializers.iter().find(|t| t.name == name).unwrap();
        (t.dims.clone(), t.f32_values().unwrap())
    };
    assert_eq!(value(&g.nodes[1].inputs[1]), (vec![3, 1, 1], vec![-1.0; 3]));
    assert_eq!(
        value(&g.nodes[3].inputs[1]),
        (vec![3, 1, 1], vec![-0.25, 1.5, -2.0])
    );
    assert_eq!(g.initializers.len(), 2, "the slope itself is dropped");
}

#[test]
fn a_slope_from_a_constant_node_is_read_and_a_fed_slope_is_left() {
    let value = Tensor::new_f32("v".into(), vec![1], &[0.5]);
    let mut c = node("Constant", &[], &["s"]);
    c.attributes = vec![Attribute::new_tensor("value", &value)];
    let nodes = vec![c, node("PRelu", &["x", "s"], &["y"])];
    let mut model = OnnxModel::build(13, &[X], &["y"], nodes, vec![]);
    assert_eq!(rewrite_for_cpu(&mut model, None).prelu_as_relu, 1);
    assert!(
        !model.graph.nodes.iter().any(|n| n.is("Constant")),
        "the slope's Constant is dropped"
    );
    // a slope that is a graph input can be fed anything at run time
    let nodes = vec![node("PRelu", &["x", "s"], &["y"])];
    let mut model = OnnxModel::build(13, &[X, ("s", &[1])], &["y"], nodes, vec![]);
    assert_eq!(rewrite_for_cpu(&mut model, None).total(), 0);
}

#[test]
fn a_model_older_than_opset_7_is_left() {
    let nodes = vec![node("PRelu", &["x", "s"], &["y"])];
    let slope = Tensor::new_f32("s".into(), vec![1], &[0.5]);
    let mut model = OnnxModel::build(6, &[X], &["y"], nodes, vec![slope]);
    assert_eq!(rewrite_for_cpu(&mut model, None).total(), 0);
}
