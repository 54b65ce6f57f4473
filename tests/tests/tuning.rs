//! Live tuning of a `balance` app: a GPU stage that is the bottleneck gets a bigger
//! batch while the app runs (a `Retune` command, no restart), and nothing is lost.

use serde_json::json;
use smartpipe_tests::*;

#[test]
fn balance_raises_the_batch_of_a_busy_gpu_stage_while_it_runs() {
    let dir = scratch("tuning");
    let count = 600;
    let app = write_app(
        &dir,
        &json!({
            "name": "tuning", "service_type": "request-guarantee", "strategy": "balance",
            "tasks": [
                // Inference is the bottleneck on a CPU-only machine: as fast as it goes.
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 240, "count": count, "fps": 0}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let root = repo_root();
    let run = dir.join("run");
    let out = supervisor()
        .env("SMARTPIPE_MANIFEST", root.join("apps/models.json"))
        .env("SMARTPIPE_MODELS_DIR", root.join(".smartpipe/models"))
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .expect("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_summary(&run);
    let retunes = summary["retunes"].as_array().expect("retunes");
    let first = retunes
        .first()
        .unwrap_or_else(|| panic!("no retune: {summary}"));
    assert_eq!(first[1], "net", "{summary}");
    assert_eq!(first[2], 1, "{summary}");
    assert_eq!(first[3], 2, "{summary}");
    assert_eq!(summary["items_out"], count, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert!(
        summary["restarts"]
            .as_object()
            .is_some_and(|r| r.is_empty()),
        "no restart: {summary}"
    );
    let log = std::fs::read_to_string(run.join("logs/net#0.log")).expect("log");
    assert!(log.contains("batching retuned"), "the stage took it live");
}

#[test]
fn an_overloaded_best_effort_model_app_sheds_and_counts_instead_of_failing() {
    let dir = scratch("overload");
    let count = 300;
    let app = write_app(
        &dir,
        &json!({
            "name": "overload", "service_type": "best-effort", "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 240, "count": count, "fps": 0}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let root = repo_root();
    let run = dir.join("run");
    let out = supervisor()
        .env("SMARTPIPE_MANIFEST", root.join("apps/models.json"))
        .env("SMARTPIPE_MODELS_DIR", root.join(".smartpipe/models"))
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .expect("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_summary(&run);
    let shed = summary["lost"]["shed"].as_u64().expect("shed");
    assert!(shed > 0, "the source outruns the model: {summary}");
    assert_eq!(
        summary["items_out"].as_u64().expect("out") + summary["lost_total"].as_u64().expect("lost"),
        count,
        "every item is delivered or counted lost: {summary}"
    );
}
