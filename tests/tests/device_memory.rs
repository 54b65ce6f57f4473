//! The node's device memory: a request-guarantee app is admitted only where its models fit
//! beside those the node's other guaranteed apps keep in the GPU agent
//! (`SMARTPIPE_DEVICE_MEMORY_MB`, else the card's memory; `cpu:0` is not limited without it),
//! refused before anything starts naming its models and who holds the rest; an app that
//! shares a resident model needs nothing more for it, and the reservation goes with the app.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Frames at `fps` through `model`'s pre-processing, the agent and its post-processing, into
/// a CSV.
fn model_app(name: &str, model: &str, count: u64, fps: u32) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": fps}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": model}},
            {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": model}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": model}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": format!("{name}.csv")}}
        ]
    })
}

/// A device of 6 MiB for models: waifu2x's UpConv7 (2.1 MiB) and PP-OCRv4's detector
/// (4.5 MiB) each fit alone, not together.
fn supervisor(rt: &PrivateRuntime) -> Command {
    let mut cmd = rt.supervisor();
    with_models(&mut cmd).env("SMARTPIPE_DEVICE_MEMORY_MB", "6");
    cmd
}

/// The app at 25 frames/s, written in its own folder under `dir` (its CSV goes beside it).
fn written(dir: &Path, name: &str, model: &str, count: u64) -> std::path::PathBuf {
    written_at(dir, name, model, count, 25)
}

fn written_at(dir: &Path, name: &str, model: &str, count: u64, fps: u32) -> std::path::PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("app folder");
    write_app(&folder, &model_app(name, model, count, fps))
}

fn start(rt: &PrivateRuntime, app: &Path, run: &Path) -> std::process::Output {
    supervisor(rt)
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run)
        .output()
        .expect("start")
}

#[test]
fn a_guaranteed_app_whose_models_do_not_fit_beside_the_running_ones_is_refused() {
    let rt = PrivateRuntime::new("device-memory");
    let dir = scratch("device-memory");
    let a = written(&dir, "dma", "waifu2x-upconv7-x2", 150);
    let sup_a = start_in_background(&mut supervisor(&rt), &a, &dir.join("run-a"));
    wait_for("'dma' running", Duration::from_secs(60), || {
        rt.apps()
            .iter()
            .any(|x| x["name"] == "dma" && x["state"] == "running")
    });
    let status = supervisor(&rt).arg("status").output().expect("status");
    let text = printed(&status);
    assert!(
        text.contains("device: 6 MiB for models; 3.9 MiB left") && text.contains("models 2.1 MiB"),
        "status shows the device and what 'dma' holds:\n{text}"
    );

    let b = written(&dir, "dmb", "ppocr-det", 5);
    let refused = start(&rt, &b, &dir.join("run-b"));
    let text = printed(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains("app 'dmb' refused")
            && text.contains("its models need 4.5 MiB of device memory (ppocr-det 4.5 MiB), 3.9 MiB of the device's 6 MiB left after 'dma' (2.1 MiB of models)"),
        "the refusal names the models, what is left and who holds it:\n{text}"
    );
    assert!(!dir.join("run-b").exists(), "nothing of 'dmb' started");

    // The same model as 'dma': already resident, nothing more needed.
    let c = written(&dir, "dmc", "waifu2x-upconv7-x2", 5);
    let shared = start(&rt, &c, &dir.join("run-c"));
    assert!(shared.status.success(), "{}", printed(&shared));
    assert_eq!(read_summary(&dir.join("run-c"))["items_out"], 5);

    let (exit, err) = finish(sup_a);
    assert!(exit.success(), "{err}");
    assert_eq!(read_summary(&dir.join("run-a"))["items_out"], 150);
    // 'dma' gone, 'dmb' fits the device alone.
    let alone = start(&rt, &b, &dir.join("run-b"));
    assert!(alone.status.success(), "{}", printed(&alone));
    assert_eq!(read_summary(&dir.join("run-b"))["items_out"], 5);
}

/// The profile records the model each GPU task keeps in the agent and its file's size, and
/// the plan shows the device memory they take.
#[test]
fn the_profile_records_each_gpu_tasks_model_and_the_plan_its_device_memory() {
    let rt = PrivateRuntime::new("device-memory-profile");
    let dir = scratch("device-memory-profile");
    // Two frames a second: a plan meets that on any machine, so the plan is printed.
    let app = written_at(&dir, "dmp", "waifu2x-upconv7-x2", 8, 2);
    let out = supervisor(&rt)
        .arg("profile")
        .arg(&app)
        .args(["--items", "4", "--batches", "1,2"])
        .output()
        .expect("profile");
    assert!(out.status.success(), "{}", printed(&out));
    let profiles = dir.join("dmp").join("profiles");
    let file = std::fs::read_dir(&profiles)
        .expect("profiles")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-dmp.json"))
        .expect("the app's profile");
    let profile: Value =
        serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
    let bytes = std::fs::metadata(repo_root().join(".smartpipe/models/waifu2x-upconv7-x2.onnx"))
        .expect("the model file")
        .len();
    let net = &profile["tasks"]["net"];
    assert_eq!(net["model"], "waifu2x-upconv7-x2", "{net}");
    assert_eq!(net["model_bytes"], bytes, "{net}");
    assert!(profile["tasks"]["pre"].get("model").is_none());
    let plan = supervisor(&rt)
        .arg("plan")
        .arg(&app)
        .output()
        .expect("plan");
    let text = printed(&plan);
    let mb = format!("{:.1} MB device memory", bytes as f64 / 1048576.0);
    assert!(text.contains(&mb), "the plan shows {mb}:\n{text}");
}
