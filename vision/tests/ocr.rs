//! PP-OCRv4 on page.png against the rapidocr_onnxruntime reference.

mod common;

use vision::pipelines::{read_text, OcrModels};
use vision::{BBox, SessionOptions};

fn poly_bbox(p: &[f32]) -> BBox {
    let xs = [p[0], p[2], p[4], p[6]];
    let ys = [p[1], p[3], p[5], p[7]];
    BBox::new(
        xs.iter().copied().fold(f32::MAX, f32::min),
        ys.iter().copied().fold(f32::MAX, f32::min),
        xs.iter().copied().fold(f32::MIN, f32::max),
        ys.iter().copied().fold(f32::MIN, f32::max),
    )
}

#[test]
fn page_matches_reference() {
    let Some(rt) = common::runtime(&["ppocr-det", "ppocr-cls", "ppocr-rec"], &["page.png"]) else {
        return;
    };
    let opts = SessionOptions {
        intra_threads: 2,
        warm_up: false,
        ..SessionOptions::default()
    };
    let mut models =
        OcrModels::load(&rt, &common::manifest(), &common::models_dir(), &opts).unwrap();
    assert!(
        models.dictionary.len() > 6000,
        "dictionary from metadata: {}",
        models.dictionary.len()
    );
    let img = common::load_media("page.png");
    let lines = read_text(&mut models, img.view()).unwrap();
    let reference = common::reference("page_ocr.json");
    let want = reference["lines"].as_array().unwrap();
    let mut same = 0;
    for w in want {
        let text = w["text"].as_str().unwrap();
        let p: Vec<f32> = w["polygon"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let wb = poly_bbox(&p);
        let best = lines
            .iter()
            .max_by(|a, b| a.bbox.iou(&wb).total_cmp(&b.bbox.iou(&wb)));
        let Some(got) = best else { continue };
        let iou = got.bbox.iou(&wb);
        eprintln!(
            "ref {text:?} | got {:?} (score {:.3}) IoU {iou:.3} poly {:?}",
            got.text, got.text_score, got.polygon
        );
        assert!(
            iou >= 0.8,
            "line {text:?}: best box {:?} vs {wb:?}, IoU {iou}",
            got.bbox
        );
        if got.text == text {
            same += 1;
        }
    }
    let pct = 100.0 * same as f64 / want.len() as f64;
    eprintln!(
        "identical lines: {same}/{} ({pct:.0}%), got {} lines",
        want.len(),
        lines.len()
    );
    assert!(
        pct >= 90.0,
        "only {pct:.0}% of the reference lines read identically"
    );
    assert_eq!(lines.len(), want.len());
}
