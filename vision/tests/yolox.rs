//! YOLOX (ddddocr common_det.onnx) on text.png against ddddocr 1.6.1's own detection.

mod common;

use vision::pipelines::{detect_yolox, YoloModel};
use vision::SessionOptions;

#[test]
fn text_matches_ddddocr() {
    let Some(rt) = common::runtime(&["yolox-ddddocr"], &["text.png"]) else {
        return;
    };
    let opts = SessionOptions {
        intra_threads: 2,
        warm_up: true,
        ..SessionOptions::default()
    };
    let mut m = YoloModel::load(
        &rt,
        &common::manifest(),
        &common::models_dir(),
        "yolox-ddddocr",
        &opts,
    )
    .unwrap();
    let img = common::load_media("text.png");
    let dets = detect_yolox(&mut m, img.view()).unwrap();
    let reference = common::reference("text_yolox.json");
    let want = reference["boxes"].as_array().unwrap();
    assert_eq!(dets.len(), want.len(), "{dets:?}");
    for (d, w) in dets.iter().zip(want) {
        let w: Vec<i64> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        // ddddocr truncates to int after clamping
        let got = [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map(|v| v as i64);
        eprintln!("got {got:?} (score {:.3}) want {w:?}", d.score);
        for k in 0..4 {
            assert!((got[k] - w[k]).abs() <= 1, "box {got:?} vs ddddocr {w:?}");
        }
        assert_eq!(d.class, "text");
    }
}
