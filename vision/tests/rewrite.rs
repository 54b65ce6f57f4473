//! The graph rewrites (vision::onnx_graph) change no result: a constructed graph with every
//! pattern gives ORT's original outputs, and PP-OCRv4 reads page.png the same with and without.

mod common;

use vision::engine::Model;
use vision::onnx_graph::{rewrite, Attribute, Node, OnnxModel, RewriteReport, Tensor};
use vision::pipelines::{read_text, OcrModels};
use vision::{SessionOptions, TensorF32};

use common::values;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node<'static> {
    Node::new(op, names(inputs), names(outputs))
}

/// A `Constant` node, as PaddlePaddle's exporter writes every constant.
fn constant(out: &str, dims: Vec<i64>, values: &[f32]) -> Vec<Node<'static>> {
    let value = Tensor::new_f32(format!("{out}_value"), dims, values);
    let mut n = node("Constant", &[], &[out]);
    n.attributes = vec![Attribute::new_tensor("value", &value)];
    vec![n]
}

/// `x` through the model at `path` loaded by the engine with its graph rewrites on or off:
/// the outputs and what was rewritten (a test helper: a failure fails the test).
#[allow(clippy::expect_used)]
fn loaded_run(
    rt: &vision::Runtime,
    name: &str,
    path: &std::path::Path,
    x: &TensorF32,
    graph_rewrites: bool,
) -> (Vec<TensorF32>, RewriteReport) {
    let opts = SessionOptions {
        graph_rewrites,
        ..SessionOptions::default()
    };
    let mut m = Model::load(rt, name, path, &opts).expect("the model loads");
    let outputs = m.run(std::slice::from_ref(x)).expect("the model runs");
    (outputs, m.rewrites())
}

/// The largest difference between two outputs, relative to the first's values of at least 1.
fn worst_relative_difference(want: &TensorF32, got: &TensorF32) -> f32 {
    want.data
        .iter()
        .zip(&got.data)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
        .fold(0.0f32, f32::max)
}

/// x → Conv 3×3 (pad 1) → ·s → +t[c] → hard swish → ·s2 → +t2 → Conv 1×1 → y, a second
/// branch Conv 1×1 → ·k[w] (broadcast along the width: not per channel, must stay), and a
/// third as TensorFlow models normalise their input: x to NHWC, − mean[3], · scale[1,1,1,3],
/// bias[1,1,1,3] +, − 1, back to NCHW → v (the last transpose moved above the four).
fn every_pattern() -> Vec<u8> {
    let mut nodes = vec![];
    nodes.extend(constant("s", vec![1], &[0.7]));
    nodes.extend(constant("t", vec![4, 1, 1], &[0.1, -0.2, 0.3, 0.05]));
    nodes.extend(constant("three", vec![], &[3.0]));
    nodes.extend(constant("zero", vec![], &[0.0]));
    nodes.extend(constant("six", vec![], &[6.0]));
    nodes.extend(constant("six2", vec![], &[6.0]));
    nodes.extend(constant("s2", vec![1], &[1.3]));
    nodes.extend(constant("t2", vec![1], &[-0.4]));
    nodes.extend(constant("k", vec![6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    nodes.extend(constant("mean", vec![3], &[0.5, -1.0, 2.0]));
    nodes.extend(constant("scale", vec![1, 1, 1, 3], &[0.25, 2.0, -1.5]));
    nodes.extend(constant("bias", vec![1, 1, 1, 3], &[3.0, 0.0, -0.75]));
    nodes.extend(constant("one", vec![], &[1.0]));
    let transpose = |input: &str, perm: &[i64], output: &str| {
        let mut t = node("Transpose", &[input], &[output]);
        t.attributes = vec![Attribute::new_ints("perm", perm)];
        t
    };
    let mut conv1 = node("Conv", &["x", "w1", "b1"], &["c1"]);
    conv1.attributes = vec![
        Attribute::new_ints("pads", &[1, 1, 1, 1]),
        Attribute::new_ints("kernel_shape", &[3, 3]),
    ];
    nodes.extend([
        conv1,
        node("Mul", &["s", "c1"], &["m1"]),
        node("Add", &["m1", "t"], &["a1"]),
        node("Add", &["a1", "three"], &["h1"]),
        node("Clip", &["h1", "zero", "six"], &["h2"]),
        node("Mul", &["a1", "h2"], &["h3"]),
        node("Div", &["h3", "six2"], &["h4"]),
        node("Mul", &["h4", "s2"], &["m2"]),
        node("Add", &["t2", "m2"], &["a2"]),
        node("Conv", &["a2", "w2", "b2"], &["y"]),
        node("Conv", &["x", "w3"], &["c3"]),
        node("Mul", &["c3", "k"], &["z"]),
        transpose("x", &[0, 2, 3, 1], "nhwc"),
        node("Sub", &["nhwc", "mean"], &["n1"]),
        node("Mul", &["n1", "scale"], &["n2"]),
        node("Add", &["bias", "n2"], &["n3"]),
        node("Sub", &["n3", "one"], &["n4"]),
        transpose("n4", &[0, 3, 1, 2], "v"),
    ]);
    let inits = vec![
        Tensor::new_f32("w1".into(), vec![4, 3, 3, 3], &values(108, 1)),
        Tensor::new_f32("b1".into(), vec![4], &values(4, 2)),
        Tensor::new_f32("w2".into(), vec![5, 4, 1, 1], &values(20, 3)),
        Tensor::new_f32("b2".into(), vec![5], &values(5, 4)),
        Tensor::new_f32("w3".into(), vec![2, 3, 1, 1], &values(6, 5)),
    ];
    OnnxModel::build(13, &[("x", &[1, 3, 6, 6])], &["y", "z", "v"], nodes, inits).encode()
}

#[test]
fn a_graph_with_every_pattern_gives_the_same_outputs_rewritten() {
    let original = every_pattern();
    let (rewritten, report) = rewrite(&original).unwrap().expect("patterns to rewrite");
    assert_eq!(
        report,
        RewriteReport {
            affine_into_conv: 2,
            hard_swish: 1,
            affine_into_pointwise: 1,
            transposes_moved: 4,
            affine_as_depthwise: 0,
            prelu_as_relu: 0,
            winograd: 0,
            fp16_widened: 0,
        }
    );
    let model = OnnxModel::parse(&rewritten).unwrap();
    let ops: Vec<&str> = model
        .graph
        .nodes
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(
        ops,
        [
            "Constant",
            "Conv",
            "HardSigmoid",
            "Mul",
            "Conv",
            "Conv",
            "Mul",
            "Transpose",
            "Transpose",
            "Sub",
            "Mul",
            "Add",
            "Sub"
        ],
        "only the broadcast-along-width constant `k` stays a Constant; the last transpose reads the first"
    );

    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("rewrite", "every-pattern.onnx", &original);
    let x = TensorF32::new(
        vec![1, 3, 6, 6],
        values(108, 9).iter().map(|v| v * 4.0).collect(),
    )
    .unwrap();
    let run =
        |graph_rewrites: bool| loaded_run(&rt, "every-pattern", &file.path, &x, graph_rewrites);
    let (want, off) = run(false);
    let (got, on) = run(true);
    assert_eq!((off.total(), on), (0, report));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.shape, g.shape);
        let worst = worst_relative_difference(w, g);
        assert!(worst < 1e-5, "outputs differ by {worst}");
    }
    assert_eq!(want.len(), 3);
    assert_eq!(
        want[2].data, got[2].data,
        "moving the transpose changes no bit"
    );
}

#[test]
fn ppocr_reads_page_png_the_same_rewritten() {
    let Some(rt) = common::runtime(&["ppocr-det", "ppocr-cls", "ppocr-rec"], &["page.png"]) else {
        return;
    };
    let img = common::load_media("page.png");
    let read = |graph_rewrites: bool| {
        let opts = SessionOptions {
            intra_threads: 2,
            graph_rewrites,
            ..SessionOptions::default()
        };
        let mut m =
            OcrModels::load(&rt, &common::manifest(), &common::models_dir(), &opts).unwrap();
        let reports = [m.det.rewrites(), m.cls.rewrites(), m.rec.rewrites()];
        (read_text(&mut m, img.view()).unwrap(), reports)
    };
    let (want, off) = read(false);
    let (got, [det, cls, rec]) = read(true);
    assert!(off.iter().all(|r| r.total() == 0));
    eprintln!("rewrites: det {det}; cls {cls}; rec {rec}");
    // PP-OCRv4's detector and recogniser (PP-LCNetV3): a learnable affine block after every
    // convolution and after every hard swish; the v2 classifier has hard swishes only.
    assert!(det.affine_into_conv > 0 && det.hard_swish > 0 && det.affine_into_pointwise > 0);
    assert!(rec.affine_into_conv > 0 && rec.hard_swish > 0 && rec.affine_into_pointwise > 0);
    assert!(cls.hard_swish > 0, "cls: {cls}");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.text, w.text);
        assert!((g.text_score - w.text_score).abs() < 1e-3, "{g:?} vs {w:?}");
        for (a, b) in g.polygon.iter().zip(&w.polygon) {
            assert!((a - b).abs() <= 1.0, "{g:?} vs {w:?}");
        }
    }
}

/// MTCNN has nothing for the device-independent rewrites; on the CPU its PReLUs (3, 4 and 5,
/// slopes from −1.28 to 1.30) become Relu, Mul and Add, and every output keeps every bit.
#[test]
fn mtcnn_prelus_become_relus_on_the_cpu_with_the_same_bits() {
    let Some(rt) = common::runtime(&["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"], &[]) else {
        return;
    };
    for (name, prelus, shape) in [
        ("mtcnn-pnet", 3, [1, 54, 72, 3]),
        ("mtcnn-rnet", 4, [5, 24, 24, 3]),
        ("mtcnn-onet", 5, [3, 48, 48, 3]),
    ] {
        let path = common::models_dir().join(format!("{name}.onnx"));
        let bytes = std::fs::read(&path).unwrap();
        assert!(rewrite(&bytes).unwrap().is_none(), "{name}");
        let n = shape.iter().product();
        let x = TensorF32::new(shape.to_vec(), values(n, 11)).unwrap();
        let run = |graph_rewrites: bool| loaded_run(&rt, name, &path, &x, graph_rewrites);
        let (want, off) = run(false);
        let (got, on) = run(true);
        assert_eq!(off.total(), 0, "{name}");
        assert_eq!(
            (on.prelu_as_relu, on.total()),
            (prelus, prelus),
            "{name}: {on}"
        );
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.shape, g.shape, "{name}");
            let differ = w
                .data
                .iter()
                .zip(&g.data)
                .filter(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(differ.count(), 0, "{name}: outputs changed bits");
        }
    }
}

/// On the CPU, a scale and shift between an activation and a padded convolution (where the
/// folds above must leave them) run as one depthwise 1×1 convolution, with the same outputs.
#[test]
fn an_affine_between_convolutions_runs_as_a_depthwise_convolution_with_the_same_outputs() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let mut padded = node("Conv", &["a", "w3", "b3"], &["y"]);
    padded.attributes = vec![
        Attribute::new_ints("pads", &[1, 1, 1, 1]),
        Attribute::new_ints("kernel_shape", &[3, 3]),
    ];
    let mut nodes = constant("t", vec![], &[-0.25]);
    nodes.extend([
        node("Conv", &["x", "w1", "b1"], &["c"]),
        node("HardSigmoid", &["c"], &["h"]),
        node("Mul", &["c", "h"], &["hs"]),
        node("Mul", &["s", "hs"], &["m"]),
        node("Add", &["m", "t"], &["a"]),
        padded,
    ]);
    let inits = vec![
        Tensor::new_f32("w1".into(), vec![16, 3, 1, 1], &values(48, 1)),
        Tensor::new_f32("b1".into(), vec![16], &values(16, 2)),
        Tensor::new_f32("s".into(), vec![16, 1, 1], &values(16, 3)),
        Tensor::new_f32("w3".into(), vec![2, 16, 3, 3], &values(288, 4)),
        Tensor::new_f32("b3".into(), vec![2], &values(2, 5)),
    ];
    let original = OnnxModel::build(13, &[("x", &[1, 3, 6, 6])], &["y"], nodes, inits).encode();
    let file = common::scratch_file("rewrite-depthwise", "depthwise.onnx", &original);
    let x = TensorF32::new(vec![1, 3, 6, 6], values(108, 9)).unwrap();
    let run = |graph_rewrites: bool| loaded_run(&rt, "depthwise", &file.path, &x, graph_rewrites);
    let (want, off) = run(false);
    let (got, on) = run(true);
    assert_eq!(
        (off.total(), on.affine_as_depthwise, on.total()),
        (0, 1, 1),
        "{on}"
    );
    assert_eq!(want[0].shape, got[0].shape);
    let worst = worst_relative_difference(&want[0], &got[0]);
    assert!(worst < 1e-5, "outputs differ by {worst}");
}
