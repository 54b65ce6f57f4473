//! Winograd's convolutions (vision::onnx_graph::winograd_convs) give ORT's outputs: a built
//! graph of two wide 3×3 layers (one padded, one not, odd sizes, a batch of two) and waifu2x
//! UpConv7 on a frame, each loaded with the rewrite on and off on the CPU.

mod common;

use vision::engine::Model;
use vision::onnx_graph::{Attribute, Node, OnnxModel, Tensor};
use vision::{SessionOptions, TensorF32};

/// Deterministic values in about [-1, 1] times `scale`.
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    common::values(n, seed)
        .into_iter()
        .map(|v| v * scale)
        .collect()
}

/// x[N, 128, H, W] → Conv 3×3 128→128 (pad 1) → LeakyRelu → Conv 3×3 128→96 (no pad) → y.
fn two_wide_layers(opset: u64) -> Vec<u8> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut c1 = Node::new("Conv", s(&["x", "w1", "b1"]), s(&["c1"]));
    c1.attributes = vec![
        Attribute::new_ints("pads", &[1, 1, 1, 1]),
        Attribute::new_ints("kernel_shape", &[3, 3]),
    ];
    let mut relu = Node::new("LeakyRelu", s(&["c1"]), s(&["r1"]));
    relu.attributes = vec![Attribute::new_float("alpha", 0.1)];
    let c2 = Node::new("Conv", s(&["r1", "w2", "b2"]), s(&["y"]));
    let inits = vec![
        Tensor::new_f32(
            "w1".into(),
            vec![128, 128, 3, 3],
            &values(128 * 128 * 9, 1, 0.05),
        ),
        Tensor::new_f32("b1".into(), vec![128], &values(128, 2, 0.1)),
        Tensor::new_f32(
            "w2".into(),
            vec![96, 128, 3, 3],
            &values(96 * 128 * 9, 3, 0.05),
        ),
        Tensor::new_f32("b2".into(), vec![96], &values(96, 4, 0.1)),
    ];
    let x = ("x", &[-1, 128, -1, -1][..]);
    OnnxModel::build(opset, &[x], &["y"], vec![c1, relu, c2], inits).encode()
}

/// The largest difference between two runs' outputs relative to the larger of 1 and |want|.
fn worst(want: &[TensorF32], got: &[TensorF32]) -> f32 {
    assert_eq!(want.len(), got.len());
    want.iter()
        .zip(got)
        .flat_map(|(w, g)| {
            assert_eq!(w.shape, g.shape);
            w.data
                .iter()
                .zip(&g.data)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
        })
        .fold(0.0f32, f32::max)
}

/// The model run with Winograd's convolutions off and on: the outputs' largest difference
/// ([`worst`]) and how many convolutions the second load rewrote.
fn run_both(
    rt: &vision::engine::Runtime,
    name: &str,
    path: &std::path::Path,
    x: &TensorF32,
) -> vision::Result<(f32, usize)> {
    let run = |winograd: bool| -> vision::Result<_> {
        let opts = SessionOptions {
            winograd,
            ..SessionOptions::default()
        };
        let mut m = Model::load(rt, name, path, &opts)?;
        Ok((m.run(std::slice::from_ref(x))?, m.rewrites().winograd))
    };
    let (want, off) = run(false)?;
    let (got, on) = run(true)?;
    assert_eq!(off, 0);
    Ok((worst(&want, &got), on))
}

#[test]
fn two_wide_layers_give_the_same_outputs_by_winograd() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    // opset 8 is raised to 10 for the crop's Slice; 13 is used as it is
    for opset in [8, 13] {
        let file = common::scratch_file(
            "winograd",
            &format!("two-layers-{opset}.onnx"),
            &two_wide_layers(opset),
        );
        for shape in [[2, 128, 13, 17], [1, 128, 8, 8], [1, 128, 3, 4]] {
            let n = shape.iter().product();
            let x = TensorF32::new(shape.to_vec(), values(n, 9, 1.0)).unwrap();
            let (worst, rewritten) = run_both(&rt, "two-layers", &file.path, &x).unwrap();
            assert_eq!(rewritten, 2, "opset {opset}");
            assert!(
                worst < 1e-4,
                "opset {opset}, {shape:?}: outputs differ by {worst}"
            );
        }
    }
}

#[test]
fn waifu2x_upconv7_gives_the_same_frame_by_winograd() {
    let Some(rt) = common::runtime(&["waifu2x-upconv7-x2"], &[]) else {
        return;
    };
    let path = common::models_dir().join("waifu2x-upconv7-x2.onnx");
    // a 37×29 frame padded by 7 on each side, as the superres pre-processing feeds it
    let x = TensorF32::new(
        vec![1, 3, 43, 51],
        values(3 * 43 * 51, 5, 0.5)
            .iter()
            .map(|v| v + 0.5)
            .collect(),
    )
    .unwrap();
    let (worst, rewritten) = run_both(&rt, "waifu2x-upconv7-x2", &path, &x).unwrap();
    // the 128→128 and 128→256 layers; the narrower four stay direct
    assert_eq!(rewritten, 2);
    assert!(worst < 1e-4, "outputs differ by {worst}");
}
