//! Tests of `winograd`: the transforms against a direct 3×3 correlation, and which
//! convolutions the rewrite takes (ORT runs the rewritten graphs in `vision/tests/winograd.rs`).

use super::*;

/// Deterministic values in [-1, 1].
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 11.0 - 1.0)
        .collect()
}

#[test]
fn one_tile_through_the_three_transforms_is_the_direct_correlation() {
    let d = values(A * A, 1);
    let g = values(9, 2);
    let params = ConvParams {
        dims: vec![1, 1, 3, 3],
        weights: g.clone(),
        bias: vec![0.0],
    };
    let (bt, gw, at) = (
        input_transform(1),
        weight_transform(&params, 1, 1),
        output_transform(),
    );
    // the grouped conv's 36 outputs of one 6×6 tile, times the weights' 36 points
    let products: Vec<f64> = (0..A * A)
        .map(|k| {
            let v: f64 = (0..A * A)
                .map(|rs| f64::from(bt[k * A * A + rs]) * f64::from(d[rs]))
                .sum();
            v * f64::from(gw[k])
        })
        .collect();
    for p in 0..M {
        for q in 0..M {
            let got: f64 = (0..A * A)
                .map(|k| f64::from(at[(p * M + q) * A * A + k]) * products[k])
                .sum();
            let want: f64 = (0..3)
                .flat_map(|r| (0..3).map(move |s| (r, s)))
                .map(|(r, s)| f64::from(g[r * 3 + s]) * f64::from(d[(p + r) * A + q + s]))
                .sum();
            assert!((got - want).abs() < 1e-5, "({p}, {q}): {got} vs {want}");
        }
    }
}

fn conv(co: usize, ci: usize, attributes: Vec<Attribute<'static>>) -> OnnxModel<'static> {
    conv_at(13, co, ci, attributes, None)
}

/// x → Conv 3×3 (co × ci, constant weights and bias) → y, then `extra` (an op reading y).
fn conv_at(
    opset: u64,
    co: usize,
    ci: usize,
    attributes: Vec<Attribute<'static>>,
    extra: Option<&str>,
) -> OnnxModel<'static> {
    let mut c = Node::new(
        "Conv",
        vec!["x".into(), "w".into(), "b".into()],
        vec!["y".into()],
    );
    c.attributes = attributes;
    let mut nodes = vec![c];
    let mut out = "y";
    if let Some(op) = extra {
        nodes.push(Node::new(op, vec!["y".into()], vec!["z".into()]));
        out = "z";
    }
    let inits = vec![
        Tensor::new_f32(
            "w".into(),
            vec![co as i64, ci as i64, 3, 3],
            &values(co * ci * 9, 3),
        ),
        Tensor::new_f32("b".into(), vec![co as i64], &values(co, 4)),
    ];
    OnnxModel::build(
        opset,
        &[("x", &[1, ci as i64, -1, -1])],
        &[out],
        nodes,
        inits,
    )
}

fn ops(m: &OnnxModel<'_>) -> Vec<String> {
    m.graph.nodes.iter().map(|n| n.op_type.clone()).collect()
}

#[test]
fn a_wide_conv_becomes_the_winograd_graph_writing_the_same_output() {
    let mut m = conv(128, 128, vec![Attribute::new_ints("pads", &[1, 1, 1, 1])]);
    assert_eq!(winograd_convs(&mut m, MIN_CHANNEL_BALANCE), 1);
    let ops = ops(&m);
    assert_eq!(
        ops.iter().filter(|o| *o == "Conv").count(),
        1,
        "only the input transform: {ops:?}"
    );
    for op in ["MatMul", "DepthToSpace", "Slice", "Transpose"] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    let last = m.graph.nodes.last().unwrap();
    assert_eq!(
        (last.op_type.as_str(), last.outputs.as_slice()),
        ("Slice", &["y".to_string()][..])
    );
    let first = &m.graph.nodes[0];
    assert_eq!(first.attr("group").and_then(Attribute::int), Some(128));
    assert_eq!(
        first.attr("pads").and_then(Attribute::ints),
        Some(vec![1, 1, 4, 4])
    );
    let names: Vec<&str> = m
        .graph
        .initializers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(
        !names.contains(&"w") && !names.contains(&"b"),
        "the old weights are dropped: {names:?}"
    );
    assert_eq!(m.opset(""), Some(13));
}

#[test]
fn narrow_strided_dilated_grouped_and_non_3x3_convs_stay() {
    let cases: Vec<(usize, usize, Vec<Attribute<'static>>)> = vec![
        // 128·64 / 192 ≈ 42.7 < 48: the transforms would cost about what they save
        (128, 64, vec![]),
        (512, 32, vec![]),
        (128, 128, vec![Attribute::new_ints("strides", &[2, 2])]),
        (128, 128, vec![Attribute::new_ints("dilations", &[2, 2])]),
        (128, 128, vec![Attribute::new_int("group", 2)]),
        (128, 128, vec![Attribute::new_ints("kernel_shape", &[5, 5])]),
    ];
    for (co, ci, attrs) in cases {
        let what = format!(
            "{co}x{ci} {:?}",
            attrs.iter().map(|a| &a.name).collect::<Vec<_>>()
        );
        let mut m = conv(co, ci, attrs);
        assert_eq!(winograd_convs(&mut m, MIN_CHANNEL_BALANCE), 0, "{what}");
        assert_eq!(ops(&m), ["Conv"], "{what}");
    }
}

#[test]
fn an_old_opset_is_raised_to_10_only_when_every_op_means_the_same_there() {
    let mut m = conv_at(8, 128, 128, vec![], Some("LeakyRelu"));
    assert_eq!(winograd_convs(&mut m, MIN_CHANNEL_BALANCE), 1);
    assert_eq!(m.opset(""), Some(10));
    // Upsample takes its scales as an input from opset 9 on: the model stays as it was
    let mut m = conv_at(8, 128, 128, vec![], Some("Upsample"));
    assert_eq!(winograd_convs(&mut m, MIN_CHANNEL_BALANCE), 0);
    assert_eq!(
        (ops(&m), m.opset("")),
        (vec!["Conv".into(), "Upsample".into()], Some(8))
    );
    let mut m = conv_at(6, 128, 128, vec![], None);
    assert_eq!(winograd_convs(&mut m, MIN_CHANNEL_BALANCE), 0);
}
