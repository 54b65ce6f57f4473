//! Frames that change size inside a model cascade: the post-processing of a super-resolution
//! model emits frames `scale`× its input. When an app is loaded, each such task gets its
//! model's scale as `params.scale` (from the manifest; a different one given by the user is an
//! error), so that the planner, which sees only the app, bounds the task's frames and sizes its
//! pool for the bigger frame.

use anyhow::bail;
use protocol::spec::{AppSpec, TaskSpec};
use std::path::Path;

/// The manifest's scale of every super-resolution `model.postprocess`, put in its params.
/// Nothing changes where the manifest cannot be read (starting the app reports that).
pub fn fill(spec: &mut AppSpec, app_file: &Path) -> anyhow::Result<()> {
    let Some(path) = crate::models::manifest_candidates(app_file)
        .into_iter()
        .find(|p| p.is_file())
    else {
        return Ok(());
    };
    let Ok(manifest) = vision::manifest::Manifest::load(&path) else {
        return Ok(());
    };
    for (i, t) in spec.tasks.iter_mut().enumerate() {
        if t.function != "model.postprocess" {
            continue;
        }
        let model = t.params.get("model").and_then(|v| v.as_str()).unwrap_or("");
        let Ok(entry) = manifest.model(model) else {
            continue;
        };
        if entry.family != vision::manifest::Family::Superres {
            continue;
        }
        let Ok(p) = entry.superres_params() else {
            continue;
        };
        match t.params.get("scale") {
            Some(v) if v.as_u64() != Some(p.scale as u64) => bail!(
                "{}: tasks[{i}] ({}).params.scale: {v} but model '{model}' upscales {}× (leave `scale` out: it is taken from the model)",
                app_file.display(),
                t.name,
                p.scale
            ),
            _ => {
                t.params.insert("scale".into(), serde_json::json!(p.scale));
            }
        }
    }
    Ok(())
}

/// The factor a task scales its input frames by (a super-resolution post-processing).
pub fn of(task: &TaskSpec) -> Option<u64> {
    (task.function == "model.postprocess")
        .then(|| task.params.get("scale").and_then(|v| v.as_u64()))
        .flatten()
        .filter(|&s| s > 1)
}
