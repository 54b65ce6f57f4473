//! The top-1 head (vision::onnx_graph::top1_head) answers each step's first best class and its
//! score exactly as read from the full output, and PP-OCRv4's recogniser decodes page.png's
//! lines to the same texts and scores through it; models it cannot be added to fail to load
//! with the reason. The dictionary read from the file's metadata is the runtime's.

mod common;

use vision::engine::Model;
use vision::manifest::OutputHead;
use vision::onnx_graph::{top1_head, Attribute, Node, OnnxModel};
use vision::ppocr::rec;
use vision::{RgbImage, SessionOptions, TensorF32};

/// x [N, T, 5] → Softmax(axis 2) → y, at `opset`.
fn softmax_model(opset: u64) -> Vec<u8> {
    let mut softmax = Node::new("Softmax", vec!["x".into()], vec!["y".into()]);
    softmax.attributes = vec![Attribute::new_int("axis", 2)];
    OnnxModel::build(opset, &[("x", &[-1, -1, 5])], &["y"], vec![softmax], vec![]).encode()
}

fn options(top1_outputs: bool) -> SessionOptions {
    SessionOptions {
        top1_outputs,
        ..SessionOptions::default()
    }
}

/// The first maximum of each row of the last axis and its value (numpy's argmax).
fn first_best(full: &TensorF32) -> Vec<f32> {
    let c = full.shape.last().copied().unwrap_or(1);
    full.data
        .chunks_exact(c)
        .flat_map(|row| {
            let best = (0..c).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            [best as f32, row[best]]
        })
        .collect()
}

#[test]
fn the_head_gives_the_first_best_class_and_its_score() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("top1", "softmax.onnx", &softmax_model(13));
    let path = file.path.as_path();
    // Two rows of three steps; ties between classes 1 and 2 and between all five.
    let x = TensorF32::new(
        vec![2, 3, 5],
        vec![
            0.1, 0.7, 0.7, 0.2, 0.0, //
            3.0, -1.0, 0.5, 2.9, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, //
            -4.0, -3.0, -2.0, -1.0, 0.0, //
            1.0, 2.0, 3.0, 2.0, 1.0, //
            0.3, 0.3, 0.9, 0.9, 0.9,
        ],
    )
    .unwrap();
    let mut full = Model::load(&rt, "softmax", path, &options(false)).unwrap();
    let mut head = Model::load(&rt, "softmax", path, &options(true)).unwrap();
    let names: Vec<&str> = head.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["y"], "the output keeps its name");
    let scores = full.run(std::slice::from_ref(&x)).unwrap().remove(0);
    let top1 = head.run(std::slice::from_ref(&x)).unwrap().remove(0);
    assert_eq!(top1.shape, vec![2, 3, 2]);
    assert_eq!(top1.data, first_best(&scores));
    assert_eq!(
        &top1.data[..2],
        &[1.0, scores.data[1]],
        "a tie goes to the lower index"
    );
    assert_eq!(top1.data[4], 0.0, "five equal scores: class 0");
}

#[test]
fn models_the_head_cannot_be_added_to_are_refused_with_the_reason() {
    let err = top1_head(&softmax_model(10)).unwrap_err().to_string();
    assert!(
        err.contains("opset 11") && err.contains("opset 10"),
        "{err}"
    );
    // An output that is the graph's input: no node makes it.
    let passthrough = OnnxModel::build(13, &[("x", &[2])], &["x"], vec![], vec![]).encode();
    let err = top1_head(&passthrough).unwrap_err().to_string();
    assert!(
        err.contains("`x`") && err.contains("not made by a node"),
        "{err}"
    );
    assert!(top1_head(b"not an onnx file").is_err());

    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("top1-old", "opset10.onnx", &softmax_model(10));
    let path = file.path.as_path();
    let err = Model::load(&rt, "old-softmax", path, &options(true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("old-softmax") && err.contains("top-1 head"),
        "{err}"
    );
    Model::load(&rt, "old-softmax", path, &options(false)).expect("loads without the head");
}

#[test]
fn ppocr_rec_decodes_page_lines_the_same_through_the_head() {
    let Some(rt) = common::runtime(&["ppocr-rec"], &["page.png"]) else {
        return;
    };
    let manifest = common::manifest();
    let entry = manifest.model("ppocr-rec").unwrap();
    assert_eq!(
        entry.output_head(),
        OutputHead::Top1,
        "the family's default"
    );
    let params = entry.rec_params().unwrap();
    let page = common::load_media("page.png");
    // Bands of the page as "lines": whatever the recogniser reads in them, both ways.
    let band = |y: usize, h: usize| {
        let w = page.width;
        let rows = &page.data[y * w * 3..(y + h) * w * 3];
        RgbImage::new(rows.to_vec(), w, h).unwrap()
    };
    let bands: Vec<RgbImage> = (0..6)
        .map(|k| band(k * page.height / 7, 40.min(page.height / 7)))
        .collect();
    let refs: Vec<&RgbImage> = bands.iter().collect();
    let input = rec::rec_preprocess(&refs, &params).unwrap();
    let path = common::models_dir().join("ppocr-rec.onnx");
    let mut full = Model::load(&rt, "ppocr-rec", &path, &options(false)).unwrap();
    let mut head = Model::load(&rt, "ppocr-rec", &path, &options(true)).unwrap();
    let key = &params.dictionary_metadata_key;
    let chars = full.metadata(key).unwrap().unwrap();
    // The stages read the dictionary from the file without a session: the same text.
    let bytes = std::fs::read(&path).unwrap();
    let file = OnnxModel::parse(&bytes).unwrap();
    assert_eq!(file.metadata(key).unwrap().as_deref(), Some(chars.as_str()));
    assert_eq!(file.metadata("no-such-key").unwrap(), None);
    let dict = rec::dictionary_from_metadata(&chars);
    let scores = full.run(std::slice::from_ref(&input)).unwrap().remove(0);
    let top1 = head.run(std::slice::from_ref(&input)).unwrap().remove(0);
    assert_eq!(top1.shape, vec![scores.shape[0], scores.shape[1], 2]);
    assert_eq!(
        top1.data,
        first_best(&scores),
        "the same classes and scores"
    );
    let want = rec::rec_postprocess(&scores, &dict).unwrap();
    let got = rec::rec_postprocess_top1(&top1, &dict).unwrap();
    assert_eq!(got, want);
    assert!(
        want.iter().filter(|(text, _)| !text.is_empty()).count() >= 3,
        "the bands hold text: {want:?}"
    );
    eprintln!("{want:?}");
}
