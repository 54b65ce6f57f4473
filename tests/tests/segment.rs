//! The segmentation family end to end through `supervisor start`: ISNet (from the npm
//! package) against a transcription of the package's own JS pre/post-processing run by
//! onnxruntime in `.smartpipe/venv`; a DeepLab/FCN-layout model built here (a 1×1
//! convolution with constant weights, so its logits and mask are known) decoded into the
//! expected class mask and table; and the bad inputs of the family named with task and model.

use serde_json::{json, Value};
use smartpipe_tests::zoo::{model_command as command, reference_python, require_model};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use vision::onnx_graph::{Node, OnnxModel, Tensor};

/// The app: images → pre → inference → post → cut-outs, blended PNGs and a CSV table.
fn seg_app(name: &str, model: &str, images: &str, service: &str, slot_mb: u32) -> Value {
    json!({
        "name": name, "service_type": service,
        "tasks": [
            {"name": "images", "kind": "head", "function": "source.images", "params": {"path": images}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["images"], "params": {"model": model}},
            {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"],
             "params": {"model": model, "output_slot_mb": slot_mb}, "batch": {"size": 1, "max_wait_ms": 0}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": model}},
            {"name": "cutouts", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "cutouts", "mask": "cutout"}},
            {"name": "blended", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "blended"}},
            {"name": "masks", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": "masks.csv"}}
        ]
    })
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn alpha_of(png: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        img.color().has_alpha(),
        "{} has no alpha channel",
        png.display()
    );
    let rgba = img.to_rgba8();
    let alpha = rgba.pixels().map(|p| p.0[3]).collect();
    (rgba.width(), rgba.height(), alpha)
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x >= 128, y >= 128);
        inter += (x && y) as u64;
        union += (x || y) as u64;
    }
    inter as f64 / union.max(1) as f64
}

#[test]
fn isnet_app_masks_match_the_packages_reference() {
    require_model("isnet");
    let root = repo_root();
    let Some(python) = reference_python() else {
        return;
    };
    // Test media: the astronaut cropped off-centre and shrunk to a non-square 320×240.
    let dir = scratch("seg-isnet");
    let astronaut =
        image::open(root.join(".smartpipe/media/astronaut.png")).expect("astronaut.png");
    let small = astronaut
        .crop_imm(40, 20, 440, 330)
        .resize_exact(320, 240, image::imageops::FilterType::Triangle)
        .to_rgb8();
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    small.save(dir.join("in/astro.png")).expect("write png");
    std::fs::write(dir.join("astro.rgb"), small.as_raw()).expect("write rgb");

    let app = write_app(
        &dir,
        // 8 MiB holds the alpha (4 MiB), not ISNet's 12 maps (124 MB): the agent returns
        // only the outputs the manifest declares.
        &seg_app("seg-isnet", "isnet", "in", "request-guarantee", 8),
    );
    let (_, summary) = run_ok_with(&mut command(None), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");

    let reference = dir.join("reference.alpha");
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/fixtures/reference/isnet_reference.py"))
        .arg(root.join(".smartpipe/models/isnet.onnx"))
        .args([
            dir.join("astro.rgb").as_os_str(),
            "320".as_ref(),
            "240".as_ref(),
            reference.as_os_str(),
        ])
        .output()
        .expect("run the Python reference");
    assert!(out.status.success(), "reference failed: {}", printed(&out));
    let want = std::fs::read(&reference).expect("reference alpha");

    let (w, h, got) = alpha_of(&dir.join("cutouts/images-0.png"));
    assert_eq!((w, h), (320, 240));
    assert_eq!(got.len(), want.len());
    let score = iou(&got, &want);
    let mean_diff = got
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / got.len() as f64;
    println!("ISNet mask IoU against the reference: {score:.5}, mean |alpha diff| {mean_diff:.3}");
    assert!(score >= 0.98, "IoU {score} < 0.98");
    let foreground = want.iter().filter(|&&a| a >= 128).count();
    assert!(
        foreground > 320 * 240 / 5,
        "the reference found almost no foreground ({foreground} px)"
    );

    // The table: one row, the foreground, its area that of the mask.
    let rows = csv_rows(&dir.join("masks.csv"));
    assert_eq!(
        rows[0],
        ["source", "seq", "class", "score", "x1", "y1", "x2", "y2", "area"]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][2], "foreground");
    let area: f64 = rows[1][8].parse().expect("area");
    let mine = got.iter().filter(|&&a| a >= 128).count() as f64;
    assert_eq!(area, mine);
    // The blended frame is the frame's size and differs from the input where the mask is.
    let blended = image::open(dir.join("blended/images-0.png"))
        .expect("blended")
        .to_rgb8();
    assert_eq!(blended.dimensions(), (320, 240));
    assert_ne!(blended.as_raw(), small.as_raw());
}

/// A DeepLab/FCN-layout model: x [1,3,H,W] → logits [1,3,H,W] by a 1×1 convolution with
/// constant weights: background = 0.5, class 1 = the red channel, class 2 = the blue one
/// (inputs scaled to 0..1 by the manifest's std 255).
fn toy_deeplab(dir: &Path) -> PathBuf {
    let weights = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let conv = Node::new(
        "Conv",
        vec!["x".into(), "w".into(), "b".into()],
        vec!["logits".into()],
    );
    let inits = vec![
        Tensor::new_f32("w".into(), vec![3, 3, 1, 1], &weights),
        Tensor::new_f32("b".into(), vec![3], &[0.5, 0.0, 0.0]),
    ];
    let bytes = OnnxModel::build(
        13,
        &[("x", &[1, 3, -1, -1])],
        &["logits"],
        vec![conv],
        inits,
    )
    .encode();
    let path = dir.join("toy-deeplab.onnx");
    std::fs::write(&path, bytes).expect("write model");
    path
}

/// A manifest: the repo's runtime entry plus `entries`.
fn manifest_with(dir: &Path, entries: Vec<Value>) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("apps/models.json")).expect("models.json");
    let mut m: Value = serde_json::from_str(&text).expect("manifest json");
    m["models"] = Value::Array(entries);
    let path = dir.join("models.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write manifest");
    path
}

fn toy_entry(name: &str, model: &Path, size: u32) -> Value {
    json!({"name": name, "family": "segmentation", "path": model,
           "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 3, -1, -1]}],
           "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 3, -1, -1]}],
           "params": {"output": "logits", "input_size": [size, size], "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0],
                      "classes": ["background", "red", "blue"], "min_side": 8}})
}

/// 64×48: left half red, bottom-right quadrant blue, top-right black. Region borders fall
/// on the 16×16 network grid (4 px × 3 px cells), so the mask is known exactly.
fn toy_frame(path: &Path) {
    let img = image::RgbImage::from_fn(64, 48, |x, y| match (x < 32, y < 24) {
        (true, _) => image::Rgb([255, 0, 0]),
        (false, false) => image::Rgb([0, 0, 255]),
        (false, true) => image::Rgb([0, 0, 0]),
    });
    img.save(path).expect("write frame");
}

/// A scratch folder `name` with the toy frame, the toy DeepLab model, its manifest and the
/// app running it: (folder, manifest, app file).
fn toy_deeplab_app(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    toy_frame(&dir.join("in/toy.png"));
    let model = toy_deeplab(&dir);
    let manifest = manifest_with(&dir, vec![toy_entry("toy-deeplab", &model, 16)]);
    let app = seg_app(name, "toy-deeplab", "in", "request-guarantee", 4);
    let app = write_app(&dir, &app);
    (dir, manifest, app)
}

#[test]
fn deeplab_layout_logits_are_decoded_into_the_expected_mask() {
    require_model("mtcnn-pnet");
    let (dir, manifest, app) = toy_deeplab_app("seg-deeplab");
    let (_, summary) = run_ok_with(&mut command(Some(&manifest)), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");

    let rows = csv_rows(&dir.join("masks.csv"));
    let got: Vec<(String, String, String, String, String, String)> = rows[1..]
        .iter()
        .map(|r| {
            (
                r[2].clone(),
                r[4].clone(),
                r[5].clone(),
                r[6].clone(),
                r[7].clone(),
                r[8].clone(),
            )
        })
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("background"),
                s("32.0"),
                s("0.0"),
                s("64.0"),
                s("24.0"),
                s("768")
            ),
            (
                s("red"),
                s("0.0"),
                s("0.0"),
                s("32.0"),
                s("48.0"),
                s("1536")
            ),
            (
                s("blue"),
                s("32.0"),
                s("24.0"),
                s("64.0"),
                s("48.0"),
                s("768")
            ),
        ]
    );
    // Score: the mean soft-max probability of the winning class (red pixels: logits 0.5, 1, 0).
    let e = std::f64::consts::E;
    let red: f64 = rows[2][3].parse().expect("score");
    assert!((red - e / (e.sqrt() + e + 1.0)).abs() < 1e-5, "{red}");
    // Cut-out: opaque exactly where a class other than the background is.
    let (w, h, alpha) = alpha_of(&dir.join("cutouts/images-0.png"));
    assert_eq!((w, h), (64, 48));
    for (i, &a) in alpha.iter().enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        let want = if x < 32 || y >= 24 { 255 } else { 0 };
        assert_eq!(a, want, "alpha at ({x}, {y})");
    }
    // Blended: red pixels tinted with class 1's palette colour (128, 0, 0) at one half.
    let blended = image::open(dir.join("blended/images-0.png"))
        .expect("blended")
        .to_rgb8();
    assert_eq!(blended.get_pixel(10, 40).0, [192, 0, 0]);
    assert_eq!(blended.get_pixel(60, 2).0, [0, 0, 0]);
}

/// The device agent on `cpu:0` (worker-gpu/src/sessions.rs): its sessions neither plan
/// memory, warm up nor spin, and the supervisor starts it with freed blocks kept for reuse
/// and no huge pages for malloc (supervisor/src/env/malloc.rs) unless the user's
/// `GLIBC_TUNABLES` says otherwise.
#[test]
fn the_cpu_agent_runs_without_memory_pattern_warm_up_or_huge_pages_unless_asked() {
    require_model("mtcnn-pnet");
    let (dir, manifest, app) = toy_deeplab_app("seg-agent-settings");
    let ready = |run: &str| {
        let said = logs(&dir.join(run));
        said.lines()
            .find(|l| l.contains("agent ready"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no `agent ready` line in the logs of {run}:\n{said}"))
    };
    run_ok_with(&mut command(Some(&manifest)), &app, &dir.join("run"));
    let line = ready("run");
    assert!(
        !line.contains("hugetlb"),
        "no huge pages by default: {line}"
    );
    for want in [
        "glibc_tunables=",
        // freed blocks kept for reuse, as in every worker
        "glibc.malloc.mmap_threshold=33554432",
        "glibc.malloc.trim_threshold=67108864",
        "memory_pattern=false",
        "warm_up=false",
        "spinning=false",
    ] {
        assert!(line.contains(want), "{want} missing: {line}");
    }
    let mut cmd = command(Some(&manifest));
    cmd.env(
        "GLIBC_TUNABLES",
        "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=0",
    );
    run_ok_with(&mut cmd, &app, &dir.join("run-asked"));
    let line = ready("run-asked");
    assert!(
        line.contains("glibc_tunables=glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=0:")
            && !line.contains("trim_threshold=67108864"),
        "the user's tunables are kept as they are: {line}"
    );
}

/// gen (w×h, `count` frames) → the segmentation cascade of `model` → csv, best effort.
fn gen_app(name: &str, model: &str, w: u32, h: u32, slot_mb: u32) -> Value {
    let mut app = seg_app(name, model, "unused", "best-effort", slot_mb);
    app["tasks"][0] = json!({"name": "images", "kind": "head", "function": "image.gen",
                             "params": {"width": w, "height": h, "count": 2, "fps": 0}});
    app
}

/// [`write_app`] into `dir`, made first.
fn app_in(dir: &Path, app: &Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("app dir");
    write_app(dir, app)
}

fn logs(run: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(run.join("logs")).expect("logs").flatten() {
        all += &std::fs::read_to_string(e.path()).unwrap_or_default();
    }
    all
}

#[test]
fn bad_inputs_of_the_family_are_named_with_task_and_model() {
    require_model("mtcnn-pnet");
    let dir = scratch("seg-bad");
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    toy_frame(&dir.join("in/toy.png"));
    let toy = toy_deeplab(&dir);
    let pnet = repo_root().join(".smartpipe/models/mtcnn-pnet.onnx");
    let manifest = manifest_with(
        &dir,
        vec![
            toy_entry("toy-deeplab", &toy, 16),
            toy_entry("toy-deeplab-big", &toy, 512),
            json!({"name": "pnet-as-seg", "family": "segmentation", "path": pnet,
                   "inputs": [{"name": "input_1", "dtype": "float32", "shape": [-1, -1, -1, 3]}],
                   "outputs": [{"name": "conv2d_4", "dtype": "float32", "shape": [-1, -1, -1, 4]}]}),
        ],
    );

    // A face detector declared as a segmentation model: refused when its stage starts.
    let app = app_in(
        &dir.join("wrong"),
        &seg_app("seg-wrong", "pnet-as-seg", "../in", "best-effort", 4),
    );
    let run = dir.join("wrong/run");
    let out = command(Some(&manifest))
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .expect("start");
    assert!(
        !out.status.success(),
        "an MTCNN model ran as segmentation: {}",
        printed(&out)
    );
    let said = printed(&out) + &logs(&run);
    assert!(
        said.contains("task 'pre', model `pnet-as-seg`")
            && said.contains("[-1, -1, -1, 3]")
            && said.contains("another family"),
        "{said}"
    );

    // Frames smaller than the model's minimum: each counted as bad input, named.
    let app = app_in(
        &dir.join("small"),
        &gen_app("seg-small", "toy-deeplab", 4, 4, 4),
    );
    let (_, summary) = run_ok_with(&mut command(Some(&manifest)), &app, &dir.join("small/run"));
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    let said = logs(&dir.join("small/run"));
    assert!(
        said.contains("task 'pre', model `toy-deeplab`") && said.contains("frame 4x4 is too small"),
        "{said}"
    );

    // Logits of a frame larger than the inference stage's output slot (3 × 512² floats in
    // 1 MiB): skipped and counted, naming the model and the stage.
    let app = app_in(
        &dir.join("slot"),
        &gen_app("seg-slot", "toy-deeplab-big", 64, 48, 1),
    );
    let (_, summary) = run_ok_with(&mut command(Some(&manifest)), &app, &dir.join("slot/run"));
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    let said = logs(&dir.join("slot/run"));
    assert!(
        said.contains("model toy-deeplab-big: item skipped")
            && said.contains("the outputs of toy-deeplab-big need 3145728 bytes, the output slot of net#0 has 1048576"),
        "{said}"
    );
}
