//! Float16 models widened to float32 on the CPU (vision::onnx_graph::fp16_to_fp32) give ORT's
//! outputs of the file as it is: a built half-precision graph, and ISNet (the segment app's
//! model, shipped with f16 weights) on the astronaut, each loaded with the rewrites off and on.

mod common;

use vision::engine::Model;
use vision::onnx_graph::{Attribute, Node, OnnxModel, Tensor};
use vision::segment::{preprocess, SegmentParams};
use vision::{SessionOptions, TensorF32};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cast(input: &str, output: &str, to: i64) -> Node<'static> {
    let mut n = Node::new("Cast", s(&[input]), s(&[output]));
    n.attributes = vec![Attribute::new_int("to", to)];
    n
}

/// The half-precision bit pattern of `v` (round to nearest; |v| well inside half's range).
fn half(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = v.abs();
    if a < 6.1e-5 {
        return sign; // flushed: the test's values stay away from half's subnormals
    }
    let exponent = (a.log2().floor() as i32).clamp(-14, 15);
    let fraction = (a / 2f32.powi(exponent) - 1.0) * 1024.0;
    let fraction = fraction.round() as u16;
    let (exponent, fraction) = if fraction == 1024 {
        (exponent + 1, 0)
    } else {
        (exponent, fraction)
    };
    sign | (((exponent + 15) as u16) << 10) | fraction
}

/// x[1, 8, H, W] → Cast f16 → Conv 3×3 8→16 (pad 1, f16 weights) → Relu → Cast f32 → y.
fn half_conv() -> Vec<u8> {
    let mut conv = Node::new("Conv", s(&["xh", "w", "b"]), s(&["c"]));
    conv.attributes = vec![Attribute::new_ints("pads", &[1, 1, 1, 1])];
    let nodes = vec![
        cast("x", "xh", 10),
        conv,
        Node::new("Relu", s(&["c"]), s(&["r"])),
        cast("r", "y", 1),
    ];
    let halves = |n, seed| -> Vec<u16> { common::values(n, seed).into_iter().map(half).collect() };
    let inits = vec![
        Tensor::new_f16("w".into(), vec![16, 8, 3, 3], &halves(16 * 8 * 9, 1)),
        Tensor::new_f16("b".into(), vec![16], &halves(16, 2)),
    ];
    OnnxModel::build(13, &[("x", &[1, 8, -1, -1])], &["y"], nodes, inits).encode()
}

/// The model's first output loaded as its file is, and widened: the largest absolute
/// difference and what the second load widened.
fn run_both(
    rt: &vision::engine::Runtime,
    name: &str,
    path: &std::path::Path,
    x: &TensorF32,
) -> vision::Result<(f32, usize, usize)> {
    let run = |graph_rewrites: bool| -> vision::Result<_> {
        let opts = SessionOptions {
            graph_rewrites,
            ..SessionOptions::default()
        };
        let mut m = Model::load(rt, name, path, &opts)?;
        let mut out = m.run(std::slice::from_ref(x))?;
        Ok((out.swap_remove(0), m.rewrites()))
    };
    let (want, _) = run(false)?;
    let (got, report) = run(true)?;
    let worst = common::max_abs_diff(&want, &got);
    Ok((worst, report.fp16_widened, report.winograd))
}

#[test]
fn a_half_precision_conv_gives_the_same_outputs_widened() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("fp16", "half-conv.onnx", &half_conv());
    let x = TensorF32::new(vec![1, 8, 11, 7], common::values(8 * 11 * 7, 3)).unwrap();
    let (worst, widened, _) = run_both(&rt, "half-conv", &file.path, &x).unwrap();
    // the weights, the bias and the cast of x
    assert_eq!(widened, 3);
    // the file rounds x and the conv's output to f16 (|y| < 20: steps of ≤ 2⁻⁶), the widened
    // graph does not
    assert!(worst < 0.05, "outputs differ by {worst}");
}

#[test]
fn isnet_gives_the_same_mask_widened_and_by_winograd() {
    let Some(rt) = common::runtime(&["isnet"], &["astronaut.png"]) else {
        return;
    };
    let path = common::models_dir().join("isnet.onnx");
    let img = common::load_media("astronaut.png");
    let x = preprocess(img.view(), &SegmentParams::default()).unwrap();
    let (worst, widened, winograd) = run_both(&rt, "isnet", &path, &x).unwrap();
    // its 238 f16 initializers and 40 casts to f16
    assert_eq!(widened, 278);
    // the widest 3×3 layers, whose f32 weights only the widening makes readable
    assert!(winograd > 0, "winograd {winograd}");
    // alpha in 0..1: the file's f16 activations against f32 ones
    assert!(worst < 2e-3, "masks differ by {worst}");
}
