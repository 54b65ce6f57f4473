//! Finding the model manifest and files for an app's model tasks, and checking them
//! before anything starts: an unknown model or a missing file is an error that names
//! the task.

use anyhow::{anyhow, Context};
use protocol::spec::{AppSpec, TaskKind};
use std::path::{Path, PathBuf};

/// Where the manifest and the model files are.
#[derive(Debug, Clone)]
pub struct ModelStore {
    pub manifest_path: PathBuf,
    pub models_dir: PathBuf,
    pub manifest: vision::manifest::Manifest,
}

/// A model the GPU agent hosts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostedModel {
    pub name: String,
    pub path: String,
    pub bytes: u64,
    /// Most batch rows per run (a super-resolution model's `tiles_per_run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
    /// Most input values per run (the manifest's `max_run_values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_run_values: Option<usize>,
    /// The decoder that replaces the graph's tail (the manifest's `native_tail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_tail: Option<vision::native_tail::NativeTail>,
    /// The outputs the manifest declares (the agent asks ONNX Runtime for these only).
    pub outputs: Vec<String>,
    /// Sessions with arenas of their own on `cpu:0` (the manifest's `own_arena`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub own_arena: bool,
    /// Large inputs run in strips (the manifest's `strips`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strips: Option<vision::strips::Strips>,
    /// The session answers through the top-1 head (the manifest's `output_head`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub top1_outputs: bool,
    /// Wide 3×3 convolutions by Winograd on `cpu:0` (the manifest's `winograd`).
    pub winograd: bool,
}

impl ModelStore {
    /// Model `name`'s file and its size in bytes.
    pub fn model_file(&self, name: &str) -> anyhow::Result<(PathBuf, u64)> {
        let path = self.manifest.model_path(name, &self.models_dir)?;
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        Ok((path, bytes))
    }
}

fn uses_models(app: &AppSpec) -> bool {
    app.tasks
        .iter()
        .any(|t| protocol::functions::uses_model(&t.function))
}

/// `$SMARTPIPE_MANIFEST` when set and not empty.
fn named_manifest() -> Option<std::ffi::OsString> {
    crate::env::appenv::var_os("SMARTPIPE_MANIFEST").filter(|v| !v.is_empty())
}

/// Where the manifest may be, in order (see [`locate`]): only `$SMARTPIPE_MANIFEST` when
/// it is set (a path the user named is never silently passed over for another).
pub fn manifest_candidates(app_file: &Path) -> Vec<PathBuf> {
    if let Some(named) = named_manifest() {
        return vec![crate::env::appenv::in_cwd(named)];
    }
    let app_dir = app_file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    vec![
        app_dir.join("models.json"),
        crate::env::appenv::in_cwd("apps/models.json"),
    ]
}

/// Locate the manifest: `$SMARTPIPE_MANIFEST`, else `models.json` beside the app file,
/// else `apps/models.json` under the current folder. Models: `$SMARTPIPE_MODELS_DIR`,
/// else `.smartpipe/models` beside the manifest's folder.
pub fn locate(app: &AppSpec, app_file: &Path) -> anyhow::Result<Option<ModelStore>> {
    if !uses_models(app) {
        return Ok(None);
    }
    let candidates = manifest_candidates(app_file);
    let manifest_path = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| match named_manifest() {
            Some(_) => anyhow!(
                "SMARTPIPE_MANIFEST names {}, which is not a file; fix or unset it (unset, the manifest is models.json beside the app, else apps/models.json)",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            None => anyhow!(
                "the app uses models but no model manifest was found (looked at {}); set SMARTPIPE_MANIFEST",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        })?;
    let manifest = vision::manifest::Manifest::load(&manifest_path)
        .with_context(|| format!("model manifest {}", manifest_path.display()))?;
    let models_dir = crate::env::appenv::var_os("SMARTPIPE_MODELS_DIR")
        .map(crate::env::appenv::in_cwd)
        .unwrap_or_else(|| {
            manifest_path
                .canonicalize()
                .unwrap_or_else(|_| manifest_path.clone())
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .join(".smartpipe/models")
        });
    let store = ModelStore {
        manifest_path,
        models_dir,
        manifest,
    };
    for (i, t) in app.tasks.iter().enumerate() {
        if !protocol::functions::uses_model(&t.function) {
            continue;
        }
        let name = t.params.get("model").and_then(|v| v.as_str()).unwrap_or("");
        let path = store
            .manifest
            .model_path(name, &store.models_dir)
            .map_err(|e| anyhow!("tasks[{i}] ({}).params.model: {e}", t.name))?;
        if !path.is_file() {
            let packaged = store.manifest.model(name).is_ok_and(|e| e.path.is_none());
            return Err(anyhow!(
                "tasks[{i}] ({}).params.model: the file of model '{name}' {} ({}){}",
                t.name,
                not_a_model_file(&path),
                path.display(),
                if packaged {
                    "; run scripts/provision.sh"
                } else {
                    "; fix the entry's `path` in the manifest"
                }
            ));
        }
    }
    check_model_steps(app, &store.manifest)?;
    check_device_budget(app, &store)?;
    Ok(Some(store))
}

/// Every model the agent runs for the app must fit the device memory the app grants
/// (`constraints.gpus[0].memory_mb`) on its own. The agent swaps models through a budget
/// smaller than their sum, but it holds at least one session of a model whole, so a file
/// larger than the budget could only run by breaking the user's word on memory (the
/// agent did, without a word): refused before anything starts, naming the task, the model
/// and the least budget that holds it. The file's size is a floor: on the CPU a session is
/// counted at least that, on CUDA the weights take at least that on the card.
fn check_device_budget(app: &AppSpec, store: &ModelStore) -> anyhow::Result<()> {
    let Some(budget_mb) = app.constraints.gpus.first().map(|g| g.memory_mb) else {
        return Ok(());
    };
    const MIB: u64 = 1 << 20;
    for (i, t) in app.tasks.iter().enumerate() {
        if t.kind != TaskKind::Gpu {
            continue;
        }
        let Some(name) = t.params.get("model").and_then(|v| v.as_str()) else {
            continue;
        };
        let (path, bytes) = store.model_file(name)?;
        if bytes > budget_mb.saturating_mul(MIB) {
            return Err(anyhow!(
                "tasks[{i}] ({}).params.model: model '{name}' is {:.1} MiB ({}), more than the device memory the app grants (constraints.gpus[0].memory_mb = {budget_mb} MiB); the agent holds a model whole, so the budget must be at least {} MiB",
                t.name,
                bytes as f64 / MIB as f64,
                path.display(),
                bytes.div_ceil(MIB)
            ));
        }
    }
    Ok(())
}

/// Why `path` (not a regular file) cannot be a model file.
fn not_a_model_file(path: &std::path::Path) -> String {
    match std::fs::symlink_metadata(path) {
        Err(_) => "is missing".into(),
        Ok(_) => match std::fs::metadata(path) {
            Err(e) => format!("cannot be read: {e}"),
            Ok(m) if m.is_dir() => "is a folder, not a file".into(),
            Ok(_) => match media::special_file(path) {
                Some(kind) => format!("is a {kind}, not a file"),
                None => "is not a regular file".into(),
            },
        },
    }
}

/// A family as the manifest spells it (`ppocr-det`).
fn family_name(family: vision::manifest::Family) -> String {
    serde_json::to_value(family)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{family:?}"))
}

/// A model's inference must run on tensors its own pre-processing made, and its
/// post-processing must read its own outputs: an edge pre(A) → inference(B) or
/// inference(A) → post(B) between models of different families fails at run time with
/// a shape or layout error far from its cause, so it is refused here, naming both.
fn check_model_steps(app: &AppSpec, manifest: &vision::manifest::Manifest) -> anyhow::Result<()> {
    use protocol::functions::{builtin, Builtin};
    let model_of = |t: &protocol::spec::TaskSpec| {
        t.params
            .get("model")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    for (i, t) in app.tasks.iter().enumerate() {
        let feeds_on = match builtin(&t.function) {
            Some(Builtin::ModelInference) => Builtin::ModelPreprocess,
            Some(Builtin::ModelPostprocess) => Builtin::ModelInference,
            _ => continue,
        };
        for input in app.tasks.iter().filter(|u| t.inputs.contains(&u.name)) {
            if builtin(&input.function) != Some(feeds_on) {
                continue;
            }
            let (mine, theirs) = (model_of(t), model_of(input));
            let (Ok(a), Ok(b)) = (manifest.model(&mine), manifest.model(&theirs)) else {
                continue;
            };
            if a.family != b.family {
                return Err(anyhow!(
                    "tasks[{i}] ({}).params.model: '{mine}' (family {}) takes the tensors of '{}' ({}), made for '{theirs}' (family {}); a model's {} and {} must name the same model",
                    t.name,
                    family_name(a.family),
                    input.name,
                    input.function,
                    family_name(b.family),
                    input.function,
                    t.function
                ));
            }
        }
    }
    Ok(())
}

/// The distinct models of the app's GPU tasks, with their files and sizes.
pub fn hosted(app: &AppSpec, store: &ModelStore) -> anyhow::Result<Vec<HostedModel>> {
    let mut out: Vec<HostedModel> = Vec::new();
    for t in app.tasks.iter().filter(|t| t.kind == TaskKind::Gpu) {
        let name = t
            .params
            .get("model")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if out.iter().any(|m| m.name == name) {
            continue;
        }
        let (path, bytes) = store.model_file(&name)?;
        let entry = store.manifest.model(&name)?;
        let max_rows = entry.max_rows_per_run();
        let outputs = entry.outputs.iter().map(|o| o.name.clone()).collect();
        out.push(HostedModel {
            name,
            path: path.display().to_string(),
            bytes,
            max_rows,
            max_run_values: entry.max_run_values,
            native_tail: entry.native_tail,
            outputs,
            own_arena: entry.own_arena,
            strips: entry.strips,
            top1_outputs: entry.output_head() == vision::manifest::OutputHead::Top1,
            winograd: entry.winograd,
        });
    }
    Ok(out)
}

/// The synthetic task of the GPU agent: the device, the models it hosts, its budget.
pub fn agent_task(
    app: &protocol::spec::AppSpec,
    store: &crate::plan::models::ModelStore,
) -> anyhow::Result<protocol::spec::TaskSpec> {
    let models = hosted(app, store)?;
    let budget = app.constraints.gpus.first().map(|g| g.memory_mb);
    device_agent_task(
        &crate::plan::device(),
        serde_json::to_value(&models)?,
        budget,
    )
}

/// The task of `device`'s agent hosting `models`: its budget is `budget_mb`, else (on
/// CUDA) the card's memory; `cpu:0` without one: unlimited. Also the node's shared agent
/// (no models until apps attach, no budget of an app's).
pub fn device_agent_task(
    device: &str,
    models: serde_json::Value,
    budget_mb: Option<u64>,
) -> anyhow::Result<protocol::spec::TaskSpec> {
    let mut params = serde_json::Map::new();
    params.insert("device".into(), serde_json::json!(device));
    params.insert("models".into(), models);
    let detected = crate::plan::detected_device();
    let device_memory = if device == detected.device {
        detected.memory_mb
    } else {
        None
    };
    if let Some(budget) = budget_mb.or(device_memory) {
        params.insert("budget_mb".into(), serde_json::json!(budget));
    }
    params.insert(
        "threads".into(),
        serde_json::json!(crate::plan::agent_threads(device)),
    );
    params.insert(
        "executors".into(),
        serde_json::json!(crate::plan::agent_executors(device)),
    );
    Ok(protocol::spec::TaskSpec {
        planned: false,
        name: format!("gpu-agent-{}", device.replace(':', "")),
        kind: TaskKind::Gpu,
        function: protocol::functions::AGENT_FUNCTION.into(),
        program: None,
        params,
        inputs: vec![],
        batch: None,
        replicas: None,
        restart: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's manifest over folder `dir` holding a stand-in file for each model
    /// (the agent's params need only their paths and sizes).
    fn store_with(dir: &Path, files: &[&str]) -> ModelStore {
        std::fs::create_dir_all(dir).expect("folder");
        for f in files {
            std::fs::write(dir.join(format!("{f}.onnx")), b"onnx").expect("write");
        }
        let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/models.json");
        let manifest = vision::manifest::Manifest::load(&manifest_path).expect("manifest");
        ModelStore {
            manifest_path,
            models_dir: dir.to_path_buf(),
            manifest,
        }
    }

    /// The agent's model list, as JSON, for an app whose two inference tasks run `models`
    /// (stand-in files in a scratch folder named after `tag`).
    fn hosted_params(tag: &str, models: [&str; 2]) -> serde_json::Value {
        let dir = std::env::temp_dir().join(format!("hosted-{tag}-{}", std::process::id()));
        let store = store_with(&dir, &models);
        let app: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "a",
            "tasks": [
                {"name": "src", "kind": "head", "function": "image.gen",
                 "params": {"width": 64, "height": 64, "count": 1}},
                {"name": "m0", "kind": "gpu", "function": "model.inference",
                 "inputs": ["src"], "params": {"model": models[0]}},
                {"name": "m1", "kind": "gpu", "function": "model.inference",
                 "inputs": ["src"], "params": {"model": models[1]}}
            ]
        }))
        .expect("app");
        let params = serde_json::to_value(hosted(&app, &store).expect("hosted")).expect("json");
        std::fs::remove_dir_all(&dir).expect("clean up");
        params
    }

    #[test]
    fn the_agent_is_told_each_models_value_cap_from_the_manifest() {
        let params = hosted_params("caps", ["mtcnn-rnet", "ppocr-det"]);
        assert_eq!(params[0]["name"], "mtcnn-rnet");
        assert_eq!(params[0]["max_run_values"], 32_000);
        assert_eq!(params[1]["name"], "ppocr-det");
        assert!(
            params[1].get("max_run_values").is_none(),
            "no cap: the field is left out, {params}"
        );
    }

    #[test]
    fn the_agent_is_told_which_models_have_arenas_of_their_own() {
        let params = hosted_params("arenas", ["mtcnn-pnet", "ppocr-det"]);
        assert_eq!(params[0]["name"], "mtcnn-pnet");
        assert_eq!(params[0]["own_arena"], true);
        assert!(params[1].get("own_arena").is_none(), "{params}");
    }

    #[test]
    fn the_agent_is_told_which_models_decode_their_tail_natively() {
        let params = hosted_params("tails", ["movenet-multipose", "mtcnn-pnet"]);
        assert_eq!(params[0]["name"], "movenet-multipose");
        assert_eq!(params[0]["native_tail"], "movenet-multipose");
        assert!(params[1].get("native_tail").is_none(), "{params}");
    }
}
