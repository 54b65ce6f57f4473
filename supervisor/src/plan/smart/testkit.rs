//! Helpers for the smart module's tests: synthetic apps and profiles.

use super::model::{Model, Resources, Workload};
use super::profile::{Profiles, TaskProfile};
use protocol::spec::AppSpec;

/// A chain `src → (name, kind)… → sink` as an app, with the given header fields.
pub fn chain(stages: &[(&str, &str)], header: serde_json::Value) -> AppSpec {
    let mut tasks =
        vec![serde_json::json!({"name": "src", "kind": "head", "function": "image.gen"})];
    let mut prev = "src".to_string();
    for (name, kind) in stages {
        tasks.push(serde_json::json!({"name": name, "kind": kind, "function": "core.forward", "inputs": [prev]}));
        prev = name.to_string();
    }
    tasks.push(serde_json::json!({"name": "sink", "kind": "tail", "function": "table.print", "inputs": [prev]}));
    let mut v = header;
    if !v.is_object() {
        v = serde_json::json!({});
    }
    v["name"] = serde_json::json!("t");
    v["tasks"] = serde_json::Value::Array(tasks);
    serde_json::from_value(v).expect("test app")
}

/// Profiles with t = α + β·b (seconds) per named task.
pub fn linear(tasks: &[(&str, f64, f64)]) -> Profiles {
    let mut p = Profiles::new("test");
    for (t, a, b) in tasks {
        p.insert(TaskProfile::linear(t, *a, *b));
    }
    p
}

pub fn cpu(cores: f64) -> Resources {
    Resources {
        cpu_cores: cores,
        gpu: false,
        device_memory_bytes: None,
        agent_threads: 0,
        agent_executors: 1,
    }
}

pub fn model(app: &AppSpec, prof: &Profiles, rate: f64, shed: bool) -> Model {
    let mut w = Workload::new(rate);
    w.shed = shed;
    Model::new(app, prof, cpu(8.0), w).expect("model")
}
