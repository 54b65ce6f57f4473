//! Every function in the registry runs. The apps below between them name every
//! registered built-in (a source in front, a tail behind); each runs to the end with
//! nothing lost, and every task handles items. A function registered without a task
//! here fails the test (add it to an app), as does one that validates and then cannot
//! run.

use protocol::functions::FUNCTIONS;
use protocol::spec::TaskKind;
use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::Path;

/// Frames through every image function, a pass-through and the fault injector (in its
/// harmless `stall` mode), into both frame sinks.
fn frames_app(_: &Path) -> Vec<Value> {
    vec![
        json!({"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": 4}}),
        json!({"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}}),
        json!({"name": "corner", "kind": "cpu", "function": "image.crop", "inputs": ["small"], "params": {"x": 4, "y": 4, "width": 16, "height": 12}}),
        json!({"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["corner"]}),
        json!({"name": "slow", "kind": "cpu", "function": "test.fault", "inputs": ["fwd"], "params": {"mode": "stall", "after": 2, "stall_ms": 1}}),
        json!({"name": "pngs", "kind": "tail", "function": "image.show", "inputs": ["slow"], "params": {"dir": "pngs"}}),
        json!({"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}),
    ]
}

/// Both file sources (a folder of images, a video) and the transport benchmark's pair.
fn sources_app(dir: &Path) -> Vec<Value> {
    write_frames(&dir.join("in"), 3, 40, 30);
    let video = repo_root().join(".smartpipe/media/small.mp4");
    assert!(
        video.is_file(),
        "{} is missing: run scripts/provision.sh",
        video.display()
    );
    vec![
        json!({"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in"}}),
        json!({"name": "clip", "kind": "head", "function": "source.video", "params": {"path": video, "limit": 3}}),
        json!({"name": "blobs", "kind": "head", "function": "bench.blob", "params": {"bytes": 4096, "count": 3}}),
        json!({"name": "files", "kind": "tail", "function": "table.print", "inputs": ["pics", "clip"], "params": {"format": "jsonl", "path": "files.jsonl"}}),
        json!({"name": "check", "kind": "tail", "function": "bench.sink", "inputs": ["blobs"]}),
    ]
}

/// A detector's table through every table function and the tracker (whose embeddings
/// come from the embedder model).
fn tables_app(_: &Path) -> Vec<Value> {
    let text = repo_root().join(".smartpipe/media/text.png");
    assert!(
        text.is_file(),
        "{} is missing: run scripts/provision.sh",
        text.display()
    );
    let model = |name: &str, input: &str, model: &str| {
        [
            json!({"name": format!("{name}-pre"), "kind": "cpu", "function": "model.preprocess", "inputs": [input], "params": {"model": model}}),
            json!({"name": name, "kind": "gpu", "function": "model.inference", "inputs": [format!("{name}-pre")], "params": {"model": model}}),
            json!({"name": format!("{name}-post"), "kind": "cpu", "function": "model.postprocess", "inputs": [name], "params": {"model": model}}),
        ]
    };
    let mut tasks = vec![
        json!({"name": "page", "kind": "head", "function": "source.images", "params": {"path": text}}),
    ];
    tasks.extend(model("det", "page", "yolox-ddddocr"));
    tasks.extend([
        json!({"name": "sure", "kind": "cpu", "function": "table.filter", "inputs": ["det-post"], "params": {"where": "score > 0.1"}}),
        json!({"name": "cols", "kind": "cpu", "function": "table.select", "inputs": ["sure"], "params": {"columns": ["source", "seq", "score"]}}),
        json!({"name": "both", "kind": "cpu", "function": "table.merge", "inputs": ["det-post", "sure"], "params": {"how": "concat"}}),
    ]);
    tasks.extend(model("emb", "sure", "deepsort-mobilenetv2"));
    tasks.extend([
        json!({"name": "ids", "kind": "cpu", "function": "track.deepsort", "inputs": ["emb-post"]}),
        json!({"name": "scores", "kind": "tail", "function": "table.print", "inputs": ["cols"], "params": {"format": "csv", "path": "scores.csv"}}),
        json!({"name": "all", "kind": "tail", "function": "table.print", "inputs": ["both"], "params": {"format": "csv", "path": "all.csv"}}),
        json!({"name": "tracks", "kind": "tail", "function": "table.print", "inputs": ["ids"], "params": {"format": "csv", "path": "tracks.csv"}}),
    ]);
    tasks
}

/// The tasks of one app, given its folder (for inputs it writes there).
type AppTasks = fn(&Path) -> Vec<Value>;

/// Items a task handled, over its replicas: what a head sent, what any other received.
fn handled(summary: &Value, task: &str, kind: TaskKind) -> u64 {
    let key = if kind == TaskKind::Head {
        "items_out"
    } else {
        "items_in"
    };
    summary["stages"]
        .as_object()
        .map(|stages| {
            stages
                .iter()
                .filter(|(label, _)| label.split('#').next() == Some(task))
                .filter_map(|(_, s)| s[key].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn every_registered_function_runs() {
    let apps: [(&str, AppTasks); 3] = [
        ("frames", frames_app),
        ("sources", sources_app),
        ("tables", tables_app),
    ];
    let mut ran: Vec<(String, String, u64)> = Vec::new(); // (function, task, items)
    for (name, tasks_of) in apps {
        let dir = scratch(&format!("registry-{name}"));
        let tasks = tasks_of(&dir);
        let app = write_app(
            &dir,
            &json!({"name": name, "service_type": "request-guarantee", "tasks": tasks}),
        );
        let mut cmd = supervisor();
        with_models(&mut cmd)
            .env(
                "ORT_DYLIB_PATH",
                repo_root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
            )
            .env(protocol::messages::ENV_TEST_FAULTS, "1");
        let (_, summary) = run_ok_with(&mut cmd, &app, &dir.join("run"));
        assert_eq!(summary["lost_total"], 0, "{name}: {summary:#}");
        for t in &tasks {
            let (task, function) = (t["name"].as_str(), t["function"].as_str());
            let (Some(task), Some(function)) = (task, function) else {
                panic!("{name}: task without a name or function: {t}");
            };
            let kind = match t["kind"].as_str() {
                Some("head") => TaskKind::Head,
                _ => TaskKind::Cpu,
            };
            ran.push((
                function.into(),
                format!("{name}/{task}"),
                handled(&summary, task, kind),
            ));
        }
    }
    for f in FUNCTIONS {
        let runs: Vec<&(String, String, u64)> = ran.iter().filter(|r| r.0 == f.name).collect();
        assert!(
            !runs.is_empty(),
            "'{}' is registered but no app of this test runs it: add a task to one",
            f.name
        );
        for (_, task, items) in runs {
            assert!(*items > 0, "'{}' ({task}) handled no item", f.name);
        }
    }
}
