//! Tests of affine chains written as depthwise 1×1 convolutions.

use super::*;
use crate::onnx_graph::model::OnnxModel;
use crate::onnx_graph::rewrite::rewrite_for_cpu;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node<'static> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Node::new(op, s(inputs), s(outputs))
}

const X: (&str, &[i64]) = ("x", &[1, 3, 8, 8]);

/// x → Conv(3 → `channels`) → HardSigmoid·itself → `after` → Conv 3×3 padded (so the
/// device-independent folds leave the affine) → y.
fn model(
    channels: i64,
    after: Vec<Node<'static>>,
    constants: Vec<Tensor<'static>>,
) -> OnnxModel<'static> {
    let mut conv = node("Conv", &["x", "w"], &["c"]);
    conv.attributes = vec![Attribute::new_ints("kernel_shape", &[1, 1])];
    let mut padded = node("Conv", &["a", "w3"], &["y"]);
    padded.attributes = vec![
        Attribute::new_ints("kernel_shape", &[3, 3]),
        Attribute::new_ints("pads", &[1, 1, 1, 1]),
    ];
    let mut nodes = vec![
        conv,
        node("HardSigmoid", &["c"], &["h"]),
        node("Mul", &["c", "h"], &["hs"]),
    ];
    nodes.extend(after);
    nodes.push(padded);
    let n = channels as usize;
    let mut inits = vec![
        Tensor::new_f32("w".into(), vec![channels, 3, 1, 1], &vec![0.5; n * 3]),
        Tensor::new_f32("w3".into(), vec![2, channels, 3, 3], &vec![0.25; 2 * n * 9]),
    ];
    inits.extend(constants);
    OnnxModel::build(13, &[X], &["y"], nodes, inits)
}

fn scalar(name: &str, v: f32) -> Tensor<'static> {
    Tensor::new_f32(name.into(), vec![1], &[v])
}

fn initializer(model: &OnnxModel<'_>, name: &str) -> (Vec<i64>, Vec<f32>) {
    let t = model
        .graph
        .initializers
        .iter()
        .find(|t| t.name == name)
        .unwrap();
    (t.dims.clone(), t.f32_values().unwrap())
}

#[test]
fn a_scale_and_shift_after_an_activation_become_one_depthwise_convolution() {
    let after = vec![
        node("Mul", &["hs", "s"], &["m"]),
        node("Add", &["t", "m"], &["a"]),
    ];
    let mut m = model(16, after, vec![scalar("s", 2.0), scalar("t", -0.5)]);
    let report = rewrite_for_cpu(&mut m, None);
    assert_eq!(
        (report.affine_as_depthwise, report.total()),
        (1, 1),
        "{report}"
    );
    let g = &m.graph;
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Conv", "HardSigmoid", "Mul", "Conv", "Conv"]);
    let dw = &g.nodes[3];
    assert_eq!((dw.inputs[0].as_str(), dw.outputs[0].as_str()), ("hs", "a"));
    assert_eq!(dw.attr("group").and_then(Attribute::int), Some(16));
    assert_eq!(
        dw.attr("kernel_shape").and_then(Attribute::ints),
        Some(vec![1, 1])
    );
    assert_eq!(
        initializer(&m, &dw.inputs[1]),
        (vec![16, 1, 1, 1], vec![2.0; 16])
    );
    assert_eq!(initializer(&m, &dw.inputs[2]), (vec![16], vec![-0.5; 16]));
    assert!(
        !g.initializers
            .iter()
            .any(|t| t.name == "s" || t.name == "t"),
        "the old constants are dropped"
    );
}

#[test]
fn per_channel_constants_a_subtraction_and_an_add_first_combine_in_order() {
    let per = |name: &str, v: f32| {
        let values: Vec<f32> = (0..32).map(|c| v + c as f32).collect();
        Tensor::new_f32(name.into(), vec![32, 1, 1], &values)
    };
    let after = vec![
        node("Add", &["hs", "t"], &["m1"]),
        node("Mul", &["m1", "s"], &["m2"]),
        node("Sub", &["m2", "u"], &["a"]),
    ];
    let mut m = model(
        32,
        after,
        vec![per("t", 1.0), per("s", 0.0), scalar("u", 3.0)],
    );
    assert_eq!(rewrite_for_cpu(&mut m, None).affine_as_depthwise, 1);
    let dw = &m.graph.nodes[3];
    // ((x + t) · s) − u = x·s + (t·s − u)
    let scale: Vec<f32> = (0..32).map(|c| c as f32).collect();
    let shift: Vec<f32> = (0..32).map(|c| (1.0 + c as f32) * c as f32 - 3.0).collect();
    assert_eq!(initializer(&m, &dw.inputs[1]).1, scale);
    assert_eq!(initializer(&m, &dw.inputs[2]).1, shift);
}

#[test]
fn channel_counts_ort_would_pad_broadcasts_and_unknown_layouts_are_left() {
    let after = || vec![node("Mul", &["hs", "s"], &["a"])];
    // 24 channels: not a multiple of the block
    let mut m = model(24, after(), vec![scalar("s", 2.0)]);
    assert_eq!(rewrite_for_cpu(&mut m, None).total(), 0);
    // a constant along the width is not per channel
    let along_width = Tensor::new_f32("s".into(), vec![8], &[2.0; 8]);
    let mut m = model(16, after(), vec![along_width]);
    assert_eq!(rewrite_for_cpu(&mut m, None).total(), 0);
    // (t − x) is not x·s + t with the constants as they are
    let mut m = model(
        16,
        vec![node("Sub", &["s", "hs"], &["a"])],
        vec![scalar("s", 2.0)],
    );
    assert_eq!(rewrite_for_cpu(&mut m, None).total(), 0);
    // a graph input's channels are not known
    let nodes = vec![node("Mul", &["x", "s"], &["y"])];
    let mut m = OnnxModel::build(
        13,
        &[("x", &[1, 16, 4, 4])],
        &["y"],
        nodes,
        vec![scalar("s", 2.0)],
    );
    assert_eq!(rewrite_for_cpu(&mut m, None).total(), 0);
}

#[test]
fn a_chain_stops_where_its_value_is_also_read_elsewhere_or_is_an_output() {
    let after = vec![
        node("Mul", &["hs", "s"], &["a"]),
        node("Add", &["a", "t"], &["z"]),
    ];
    let mut m = model(16, after, vec![scalar("s", 2.0), scalar("t", 1.0)]);
    m.graph.outputs.push("z".into());
    // `a` is read by the padded convolution and the Add: two convolutions, not one chain
    assert_eq!(rewrite_for_cpu(&mut m, None).affine_as_depthwise, 2);
    let outs: Vec<&str> = m
        .graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    assert!(outs.contains(&"a") && outs.contains(&"z"), "{outs:?}");
}
