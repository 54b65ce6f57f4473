//! The model apps end to end through `supervisor start` (one GPU agent on cpu:0 with
//! ONNX Runtime's CPU provider): their output tables are checked against the stored
//! outputs of the reference Python packages (tests/fixtures/reference).

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};

fn provisioned() -> PathBuf {
    let root = repo_root();
    let lib = root.join(".smartpipe/lib/libonnxruntime.so.1.32.0");
    assert!(
        lib.is_file(),
        "{} is missing: run scripts/provision.sh (make test does)",
        lib.display()
    );
    root
}

fn run_app(dir: &std::path::Path, app: &Value) -> Value {
    run_app_with(supervisor(), dir, app)
}

/// [`run_app`] with the app's own agent, whose log is in the run dir, even when the
/// suites run through the node's daemon.
fn run_app_own_agent(dir: &std::path::Path, app: &Value) -> Value {
    let mut cmd = supervisor();
    cmd.env("SMARTPIPE_NO_DAEMON", "1");
    run_app_with(cmd, dir, app)
}

fn run_app_with(mut cmd: std::process::Command, dir: &std::path::Path, app: &Value) -> Value {
    let path = write_app(dir, app);
    with_models(&mut cmd).env(
        "ORT_DYLIB_PATH",
        repo_root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
    );
    run_ok_with(&mut cmd, &path, &dir.join("run")).1
}

fn cascade(nets: &[(&str, &str)], source: &str, batch: u32) -> (Vec<Value>, String) {
    let mut tasks = Vec::new();
    let mut prev = source.to_string();
    for (short, model) in nets {
        tasks.push(json!({"name": format!("{short}-pre"), "kind": "cpu", "function": "model.preprocess", "inputs": [prev], "params": {"model": model}}));
        tasks.push(json!({"name": short, "kind": "gpu", "function": "model.inference", "inputs": [format!("{short}-pre")], "params": {"model": model}, "batch": {"size": batch, "max_wait_ms": 2}}));
        tasks.push(json!({"name": format!("{short}-post"), "kind": "cpu", "function": "model.postprocess", "inputs": [short], "params": {"model": model}}));
        prev = format!("{short}-post");
    }
    (tasks, prev)
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

#[test]
fn faces_app_matches_the_mtcnn_reference_on_astronaut() {
    let root = provisioned();
    let dir = scratch("faces-app");
    let (mut tasks, last) = cascade(
        &[
            ("pnet", "mtcnn-pnet"),
            ("rnet", "mtcnn-rnet"),
            ("onet", "mtcnn-onet"),
        ],
        "img",
        2,
    );
    tasks.insert(0, json!({"name": "img", "kind": "head", "function": "source.images", "params": {"path": root.join(".smartpipe/media/astronaut.png")}}));
    tasks.push(json!({"name": "faces", "kind": "cpu", "function": "table.filter", "inputs": [last], "params": {"where": "class == 'face' and score > 0.5"}}));
    tasks.push(json!({"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["faces"], "params": {"format": "jsonl", "path": "faces.jsonl"}}));
    tasks.push(json!({"name": "show", "kind": "tail", "function": "image.show", "inputs": ["faces"], "params": {"dir": "annotated"}}));
    let summary = run_app(
        &dir,
        &json!({"name": "faces-test", "service_type": "request-guarantee", "tasks": tasks}),
    );
    assert_eq!(summary["items_out"], 1);
    let got = jsonl(&dir.join("faces.jsonl"));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/reference/astronaut_mtcnn.json"))
            .expect("fixture"),
    )
    .expect("json");
    let want = reference["faces"].as_array().expect("faces");
    assert_eq!(
        got.len(),
        want.len(),
        "same number of faces as the reference: {got:?}"
    );
    for (g, w) in got.iter().zip(want) {
        let wb: Vec<f64> = w["box"].as_array().expect("box").iter().map(f).collect();
        let gb = [f(&g["x1"]), f(&g["y1"]), f(&g["x2"]), f(&g["y2"])];
        let overlap = iou(gb, [wb[0], wb[1], wb[2], wb[3]]);
        assert!(overlap >= 0.9, "box IoU {overlap} < 0.9: {g} vs {w}");
        let gl: Vec<f64> = g["landmarks"]
            .as_array()
            .expect("landmarks")
            .iter()
            .map(f)
            .collect();
        let wl: Vec<f64> = w["landmarks"]
            .as_array()
            .expect("landmarks")
            .iter()
            .map(f)
            .collect();
        for (a, b) in gl.iter().zip(&wl) {
            assert!(
                (a - b).abs() <= 3.0,
                "landmark off by more than 3 px: {gl:?} vs {wl:?}"
            );
        }
    }
    // The annotated frame has the box drawn: it differs from the input image.
    let shown = image::open(dir.join("annotated/img-0.png"))
        .expect("annotated frame")
        .into_rgb8();
    let input = image::open(root.join(".smartpipe/media/astronaut.png"))
        .expect("input")
        .into_rgb8();
    assert_eq!(shown.dimensions(), input.dimensions());
    assert_ne!(shown.as_raw(), input.as_raw(), "boxes were drawn");
}

#[test]
fn ocr_app_reads_page_like_rapidocr() {
    let root = provisioned();
    let dir = scratch("ocr-app");
    let (mut tasks, last) = cascade(
        &[
            ("det", "ppocr-det"),
            ("cls", "ppocr-cls"),
            ("rec", "ppocr-rec"),
        ],
        "page",
        1,
    );
    // page.png, and text.png: small and wide, which the detector scales up to a 736 px
    // short side (its tensors are larger than the image).
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).expect("pages dir");
    for name in ["page.png", "text.png"] {
        std::fs::copy(root.join(".smartpipe/media").join(name), pages.join(name)).expect("copy");
    }
    tasks.insert(0, json!({"name": "page", "kind": "head", "function": "source.images", "params": {"path": pages}}));

    tasks.push(json!({"name": "lines", "kind": "tail", "function": "table.print", "inputs": [last], "params": {"format": "jsonl", "path": "lines.jsonl"}}));
    let summary = run_app(
        &dir,
        &json!({"name": "ocr-test", "service_type": "request-guarantee", "tasks": tasks}),
    );
    assert_eq!(summary["items_out"], 2);
    let all = jsonl(&dir.join("lines.jsonl"));
    let got: Vec<Value> = all.iter().filter(|l| l["seq"] == 0).cloned().collect();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/reference/page_ocr.json"))
            .expect("fixture"),
    )
    .expect("json");
    let want = reference["lines"].as_array().expect("lines");
    let mut identical = 0;
    for w in want {
        let wp: Vec<f64> = w["polygon"]
            .as_array()
            .expect("polygon")
            .iter()
            .map(f)
            .collect();
        let wbox = [
            wp[0].min(wp[6]),
            wp[1].min(wp[3]),
            wp[2].max(wp[4]),
            wp[5].max(wp[7]),
        ];
        let best = got
            .iter()
            .map(|g| {
                (
                    iou([f(&g["x1"]), f(&g["y1"]), f(&g["x2"]), f(&g["y2"])], wbox),
                    g,
                )
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((overlap, g)) = best {
            if g["text"] == w["text"] {
                assert!(
                    overlap >= 0.8,
                    "matched line box IoU {overlap} < 0.8: {g} vs {w}"
                );
                identical += 1;
            }
        }
    }
    let share = identical as f64 / want.len() as f64;
    assert!(
        share >= 0.9,
        "only {identical} of {} reference lines read identically: {got:?}",
        want.len()
    );
}

/// A video of `frames` copies of `image` at 10 frames/s, letterboxed to 640×360.
fn still_video(image: &Path, out: &Path, frames: u32) -> PathBuf {
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "10",
            "-i",
        ])
        .arg(image)
        .args([
            "-frames:v",
            &frames.to_string(),
            "-vf",
            "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:0",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(out)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "test video");
    out.to_path_buf()
}

/// `apps/multi.json` with its inputs pointed at provisioned media (`video` for the faces) and
/// its outputs moved into `dir`; 3 frames to upscale.
fn multi_app_in(root: &Path, dir: &Path, video: &Path) -> Value {
    let mut app: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("apps/multi.json")).expect("multi.json"),
    )
    .expect("json");
    for task in app["tasks"].as_array_mut().expect("tasks") {
        let name = task["name"].as_str().unwrap_or("").to_string();
        let params = &mut task["params"];
        match name.as_str() {
            "f-frames" => params["path"] = json!(video),
            "o-pages" => params["path"] = json!(root.join(".smartpipe/media/page.png")),
            "f-annotated" => params["path"] = json!(dir.join("annotated.mp4")),
            "f-faces-csv" => params["path"] = json!(dir.join("faces.csv")),
            "o-text-out" => params["path"] = json!(dir.join("lines.jsonl")),
            "t-tracks-csv" => params["path"] = json!(dir.join("tracks.csv")),
            "s-images" | "y-images" => {
                params["path"] = json!(root.join(".smartpipe/media/astronaut.png"))
            }
            "s-cutouts" => params["dir"] = json!(dir.join("cutouts")),
            "s-masks" => params["path"] = json!(dir.join("masks.csv")),
            "u-frames" => {
                params["path"] = json!(root.join(".smartpipe/media/small.mp4"));
                params["limit"] = json!(3);
            }
            "u-upscaled" => params["path"] = json!(dir.join("upscaled.mp4")),
            "y-detections" => params["path"] = json!(dir.join("falls.jsonl")),
            "p-keypoints" => params["path"] = json!(dir.join("keypoints.csv")),
            "c-objects" => params["path"] = json!(dir.join("objects.jsonl")),
            _ => {}
        }
    }
    app
}

/// One entry of the first video stream of `file`, as ffprobe prints it (frames counted).
fn ffprobe(file: &Path, entries: &str) -> String {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            &format!("stream={entries}"),
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn multi_app_under_a_budget_below_its_models_keeps_every_reply_and_swaps_models() {
    require_ffmpeg();
    let root = provisioned();
    let dir = scratch("multi-app");
    let video = still_video(
        &root.join(".smartpipe/media/astronaut.png"),
        &dir.join("faces.mp4"),
        6,
    );
    // The shipped app (every model family under one agent), with its inputs and outputs
    // moved into the scratch folder, 3 frames to upscale, and a device budget of 100 MB:
    // less than its twelve models need together (≈ 190 MB), more than the largest (ISNet).
    let mut app = multi_app_in(&root, &dir, &video);
    app["constraints"] = json!({"gpus": [{"type": "cpu", "memory_mb": 100}]});
    let summary = run_app_own_agent(&dir, &app);
    assert_eq!(
        summary["items_in"], 12,
        "6 frames + 1 page + 1 image to segment + 3 frames to upscale + 1 for YOLOv8: {summary}"
    );
    assert_eq!(summary["lost_total"], 0, "{summary}");
    for tail in summary["tails"].as_array().expect("tails") {
        assert_eq!(tail["missing"], 0, "every reply kept: {tail}");
    }
    let faces = std::fs::read_to_string(dir.join("faces.csv")).expect("faces.csv");
    let face_frames: std::collections::BTreeSet<&str> = faces
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert_eq!(face_frames.len(), 6, "a face in every frame:\n{faces}");
    let lines = jsonl(&dir.join("lines.jsonl"));
    assert!(
        lines
            .iter()
            .any(|l| l["text"] == "Region-basedsegmentation"),
        "{lines:?}"
    );
    assert_eq!(
        ffprobe(&dir.join("annotated.mp4"), "nb_read_frames"),
        "6",
        "annotated video has every frame"
    );
    // Every family delivered: track ids on the faces, a cut-out, frames twice the size,
    // detections of the YOLOv8 layout.
    let tracks = std::fs::read_to_string(dir.join("tracks.csv")).expect("tracks.csv");
    assert!(
        tracks
            .lines()
            .skip(1)
            .any(|l| l.rsplit(',').next().is_some_and(|id| !id.is_empty())),
        "a confirmed track id:\n{tracks}"
    );
    assert!(dir
        .join("cutouts")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    let width: u32 = ffprobe(&root.join(".smartpipe/media/small.mp4"), "width")
        .parse()
        .expect("width");
    assert_eq!(
        ffprobe(&dir.join("upscaled.mp4"), "width,nb_read_frames"),
        format!("{},3", 2 * width),
        "3 frames upscaled ×2"
    );
    assert!(!jsonl(&dir.join("falls.jsonl")).is_empty(), "YOLOv8 rows");
    let people = std::fs::read_to_string(dir.join("keypoints.csv")).expect("keypoints.csv");
    assert!(people.lines().count() > 1, "pose rows:\n{people}");
    let objects = jsonl(&dir.join("objects.jsonl"));
    assert!(
        objects.iter().any(|o| o["class"] == "person"),
        "CenterNet finds the astronaut: {objects:?}"
    );
    let log =
        std::fs::read_to_string(dir.join("run/logs/gpu-agent-cpu0#0.log")).expect("agent log");
    assert!(
        log.contains("evicted"),
        "the budget forced evictions:\n{log}"
    );
    for model in [
        "mtcnn-pnet",
        "ppocr-rec",
        "deepsort-mobilenetv2",
        "isnet",
        "waifu2x-upconv7-x2",
        "yolov8-fall",
        "movenet-multipose",
        "centernet-coco",
    ] {
        assert!(
            log.contains(&format!("loaded model={model} ")),
            "{model} ran on the one agent:\n{log}"
        );
    }
}

#[test]
fn yolox_pipeline_finds_the_boxes_ddddocr_finds() {
    let root = provisioned();
    let dir = scratch("yolox-app");
    let (mut tasks, last) = cascade(&[("det", "yolox-ddddocr")], "img", 1);
    tasks.insert(0, json!({"name": "img", "kind": "head", "function": "source.images", "params": {"path": root.join(".smartpipe/media/text.png")}}));
    tasks.push(json!({"name": "rows", "kind": "tail", "function": "table.print", "inputs": [last], "params": {"format": "jsonl", "path": "boxes.jsonl"}}));
    let summary = run_app(
        &dir,
        &json!({"name": "yolox-test", "service_type": "request-guarantee", "tasks": tasks}),
    );
    assert_eq!(summary["items_out"], 1);
    let got = jsonl(&dir.join("boxes.jsonl"));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/reference/text_yolox.json"))
            .expect("fixture"),
    )
    .expect("json");
    let want = reference["boxes"].as_array().expect("boxes");
    assert_eq!(got.len(), want.len(), "{got:?}");
    for w in want {
        let wb: Vec<f64> = w.as_array().expect("box").iter().map(f).collect();
        let close = got.iter().any(|g| {
            let gb = [f(&g["x1"]), f(&g["y1"]), f(&g["x2"]), f(&g["y2"])];
            gb.iter().zip(&wb).all(|(a, b)| (a - b).abs() <= 2.0)
        });
        assert!(close, "no box within 2 px of {wb:?}: {got:?}");
    }
}

/// gen (w×h) → P-Net pre → P-Net (batches of 8, a 1 MiB output slot) → post → csv.
fn small_output_slot(name: &str, w: u32, h: u32, count: u32) -> Value {
    json!({
        "name": name, "service_type": "request-guarantee", "strategy": "lazy",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": w, "height": h, "count": count, "fps": 0}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
            {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"],
             "params": {"model": "mtcnn-pnet", "output_slot_mb": 1}, "batch": {"size": 8, "max_wait_ms": 2000}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn a_batch_too_big_for_its_output_slot_is_split_and_an_item_too_big_alone_is_skipped() {
    provisioned();
    // 8 frames of 320×240 need ≈ 1.1 MiB of P-Net outputs: the batch is halved until
    // it fits, and every frame gets through.
    let dir = scratch("slot-split");
    let summary = run_app(&dir, &small_output_slot("slotsplit", 320, 240, 16));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["items"], 16, "{summary}");
    let log = std::fs::read_to_string(dir.join("run/logs/net#0.log")).expect("net log");
    assert!(
        log.contains("batches capped") && log.contains("output slot too small"),
        "{log}"
    );
    // One 1280×960 frame alone needs ≈ 2.5 MiB: skipped and counted, the app goes on (as
    // best effort: a guaranteed app whose every item was bad input fails).
    let dir = scratch("slot-skip");
    let mut app = small_output_slot("slotskip", 1280, 960, 2);
    app["service_type"] = json!("best-effort");
    let summary = run_app(&dir, &app);
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 2, "{summary}");
    let log = std::fs::read_to_string(dir.join("run/logs/net#0.log")).expect("net log");
    assert!(log.contains("item skipped"), "{log}");
}
