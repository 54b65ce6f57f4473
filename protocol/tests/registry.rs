//! The function registry as `validate` applies it: every example app validates, an edge
//! whose kinds do not fit is refused naming both tasks and both kinds, and a parameter
//! no function takes is refused naming the task, the function and the field.

use protocol::spec::SpecErrors;
use protocol::validate::load_app;
use std::path::PathBuf;

fn errors(tasks: serde_json::Value) -> Vec<String> {
    let text = serde_json::json!({"name": "t", "tasks": tasks}).to_string();
    match load_app(&text) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(SpecErrors(errs)) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_app_and_corpus_seed_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for dir in ["apps", "tests/corpus/apps"] {
        for file in json_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).expect("readable");
            // models.json and media.json are manifests, not apps.
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            if value.get("tasks").is_none() {
                continue;
            }
            if let Err(e) = load_app(&text) {
                panic!("{}: {e}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} apps found");
}

#[test]
fn a_detection_table_into_image_resize_is_refused_naming_both_tasks_and_kinds() {
    let errs = errors(serde_json::json!([
        {"name": "frames", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8}},
        {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["frames"], "params": {"model": "m"}},
        {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "m"}},
        {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "m"}},
        {"name": "sure", "kind": "cpu", "function": "table.filter", "inputs": ["post"], "params": {"where": "score > 0.9"}},
        {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["sure"]},
        {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["fwd"], "params": {"width": 4, "height": 4}},
        {"name": "out", "kind": "tail", "function": "image.show", "inputs": ["small"], "params": {"dir": "o"}}
    ]));
    assert_eq!(
        errs,
        vec![
            "tasks[6] (small).inputs[0]: 'small' (image.resize) takes frame but its input 'fwd' (core.forward) makes table"
                .to_string()
        ],
        "a pass-through makes what it takes"
    );
    let errs = errors(serde_json::json!([
        {"name": "blobs", "kind": "head", "function": "bench.blob", "params": {"bytes": 8, "count": 1}},
        {"name": "rows", "kind": "cpu", "function": "table.select", "inputs": ["blobs"], "params": {"columns": ["a"]}},
        {"name": "out", "kind": "tail", "function": "table.print", "inputs": ["rows"]}
    ]));
    assert_eq!(
        errs,
        vec![
            "tasks[1] (rows).inputs[0]: 'rows' (table.select) takes table but its input 'blobs' (bench.blob) makes tensor"
                .to_string()
        ]
    );
}

#[test]
fn an_unknown_param_is_refused_naming_task_function_and_field() {
    for (function, field, params) in [
        (
            "image.resize",
            "widht",
            serde_json::json!({"width": 4, "height": 4, "widht": 5}),
        ),
        // Model steps once let any field through (and ignored the misspelt ones).
        (
            "model.preprocess",
            "treshold",
            serde_json::json!({"model": "m", "treshold": 0.5}),
        ),
    ] {
        let errs = errors(serde_json::json!([
            {"name": "frames", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8}},
            {"name": "step", "kind": "cpu", "function": function, "inputs": ["frames"], "params": params},
            {"name": "out", "kind": "tail", "function": "table.print", "inputs": ["step"]}
        ]));
        assert!(
            errs.iter().any(
                |e| e.starts_with(&format!("tasks[1] (step).params.{field}: "))
                    && e.contains(&format!("unknown parameter for '{function}'"))
            ),
            "{function}: {errs:#?}"
        );
    }
}
