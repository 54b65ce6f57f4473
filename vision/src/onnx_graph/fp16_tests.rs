//! Tests of `fp16`: half-precision decoding, what the widening changes and what it leaves alone
//! (ORT runs a widened graph against the original in `vision/tests/fp16.rs`).

use super::*;
use crate::onnx_graph::tensor::f16_to_f32;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cast(input: &str, output: &str, to: i64) -> Node<'static> {
    let mut n = Node::new("Cast", s(&[input]), s(&[output]));
    n.attributes = vec![Attribute::new_int("to", to)];
    n
}

/// 1.0, −2.0, 0.5 and 65504 (the largest half) as halves.
const HALVES: [u16; 4] = [0x3C00, 0xC000, 0x3800, 0x7BFF];

/// x (f32) → Cast f16 → Conv(w16, b16) → Add(Constant f16) → Cast f32 → y, with a second weight
/// path w16b → Cast f32 → Mul on the output.
fn half_model() -> OnnxModel<'static> {
    let conv = Node::new("Conv", s(&["xh", "w16", "b16"]), s(&["c"]));
    let mut constant = Node::new("Constant", vec![], s(&["k"]));
    constant.attributes = vec![Attribute::new_tensor(
        "value",
        &Tensor::new_f16("k".into(), vec![1], &[0x3800]),
    )];
    let add = Node::new("Add", s(&["c", "k"]), s(&["ch"]));
    let mul = Node::new("Mul", s(&["cf", "scale"]), s(&["y"]));
    let nodes = vec![
        cast("x", "xh", FLOAT16),
        conv,
        constant,
        add,
        cast("ch", "cf", FLOAT),
        cast("w16b", "scale", FLOAT),
        mul,
    ];
    let inits = vec![
        Tensor::new_f16("w16".into(), vec![1, 1, 2, 2], &HALVES),
        Tensor::new_f16("b16".into(), vec![1], &[0x3C00]),
        Tensor::new_f16("w16b".into(), vec![1], &[0xC000]),
    ];
    OnnxModel::build(13, &[("x", &[1, 1, 3, 3])], &["y"], nodes, inits)
}

#[test]
fn halves_decode_to_the_same_values_in_f32() {
    assert_eq!(f16_to_f32(0x3C00), 1.0);
    assert_eq!(f16_to_f32(0xC000), -2.0);
    assert_eq!(f16_to_f32(0x7BFF), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
    assert!(f16_to_f32(0x7E00).is_nan());
}

#[test]
fn every_half_constant_and_cast_becomes_f32_and_casts_of_constants_go() {
    let mut m = half_model();
    // three initializers, the Constant's value, the Cast to f16
    assert_eq!(fp16_to_fp32(&mut m), 5);
    let bytes = m.encode();
    let m = OnnxModel::parse(&bytes).expect("the widened model parses");
    let g = &m.graph;
    assert!(g.initializers.iter().all(|t| t.data_type == FLOAT));
    let w = g
        .initializers
        .iter()
        .find(|t| t.name == "w16")
        .expect("w16");
    assert_eq!(w.f32_values(), Some(vec![1.0, -2.0, 0.5, 65504.0]));
    let k = g
        .nodes
        .iter()
        .find(|n| n.is("Constant"))
        .expect("the Constant");
    let k = k
        .attr("value")
        .and_then(Attribute::tensor)
        .expect("its value");
    assert_eq!(k.f32_values(), Some(vec![0.5]));
    // the cast of x now widens to f32 (ORT drops it), the cast of the activations stays, the
    // cast of the constant w16b is gone and Mul reads the constant itself
    let casts: Vec<_> = g.nodes.iter().filter(|n| n.is("Cast")).collect();
    assert_eq!(casts.len(), 2);
    assert!(casts.iter().all(|n| is_cast_to(n, FLOAT)));
    let mul = g.nodes.iter().find(|n| n.is("Mul")).expect("Mul");
    assert_eq!(mul.inputs, s(&["cf", "w16b"]));
}

#[test]
fn a_model_without_halves_is_left_as_it_was() {
    let nodes = vec![Node::new("Relu", s(&["x"]), s(&["y"]))];
    let mut m = OnnxModel::build(13, &[("x", &[1, 4])], &["y"], nodes, vec![]);
    let before = m.encode();
    assert_eq!(fp16_to_fp32(&mut m), 0);
    assert_eq!(m.encode(), before);
}

#[test]
fn a_node_that_makes_halves_of_its_own_leaves_the_model_alone() {
    for (op, attr) in [
        ("RandomNormalLike", "dtype"),
        ("EyeLike", "dtype"),
        ("DequantizeLinear", "output_dtype"),
    ] {
        let mut m = half_model();
        let mut n = Node::new(op, s(&["x"]), s(&["r"]));
        n.attributes = vec![Attribute::new_int(attr, FLOAT16)];
        m.graph.nodes.push(n);
        let before = m.encode();
        assert_eq!(fp16_to_fp32(&mut m), 0, "{op}");
        assert_eq!(m.encode(), before, "{op}");
    }
}

#[test]
fn other_domains_subgraphs_and_unreadable_halves_leave_the_model_alone() {
    let mut other_domain = half_model();
    let mut n = Node::new("FusedConv", s(&["x"]), s(&["r"]));
    n.domain = "com.microsoft".into();
    other_domain.graph.nodes.push(n);

    let mut subgraph = half_model();
    let mut n = Node::new("If", s(&["x"]), s(&["r"]));
    n.attributes = vec![Attribute::new_graph("then_branch", &[])];
    subgraph.graph.nodes.push(n);

    // dims say 4 values, the data holds 3
    let mut short = half_model();
    short.graph.initializers[0] = Tensor::new_f16("w16".into(), vec![1, 1, 2, 2], &HALVES[..3]);

    for (what, mut m) in [
        ("domain", other_domain),
        ("subgraph", subgraph),
        ("short", short),
    ] {
        let before = m.encode();
        assert_eq!(fp16_to_fp32(&mut m), 0, "{what}");
        assert_eq!(m.encode(), before, "{what}");
    }
}
