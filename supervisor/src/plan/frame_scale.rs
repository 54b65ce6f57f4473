//! Frames that change size inside a model cascade: the post-processing of a super-resolution
//! model emits frames `scale`× its input. When an app is loaded, each such task gets its
//! model's scale as `params.scale` (from the manifest; a different one given by the user is an
//! error), so that the planner, which sees only the app, bounds the task's frames and sizes its
//! pool for the bigger frame.

use anyhow::bail;
use protocol::functions::{self, Builtin};
use protocol::spec::{AppSpec, TaskSpec};
use std::path::Path;

/// The manifest's scale of every super-resolution `model.postprocess`, put in its params.
/// Nothing changes where the manifest cannot be read (starting the app reports that).
pub fn fill(spec: &mut AppSpec, app_file: &Path) -> anyhow::Result<()> {
    let Some(path) = crate::plan::models::manifest_candidates(app_file)
        .into_iter()
        .find(|p| p.is_file())
    else {
        return Ok(());
    };
    let Ok(manifest) = vision::manifest::Manifest::load(&path) else {
        return Ok(());
    };
    for (i, t) in spec.tasks.iter_mut().enumerate() {
        if functions::builtin(&t.function) != Some(Builtin::ModelPostprocess) {
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
    (functions::builtin(&task.function) == Some(Builtin::ModelPostprocess))
        .then(|| task.params.get("scale").and_then(|v| v.as_u64()))
        .flatten()
        .filter(|&s| s > 1)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn app(scale: Option<u64>) -> protocol::spec::AppSpec {
        let mut post = serde_json::json!({"model": "waifu2x-upconv7-x2"});
        if let Some(s) = scale {
            post["scale"] = serde_json::json!(s);
        }
        let text = serde_json::json!({"name": "up", "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 180, "count": 1}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "waifu2x-upconv7-x2"}},
            {"name": "sr", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "waifu2x-upconv7-x2"}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["sr"], "params": post},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["post"], "params": {"width": 64, "height": 36}},
            {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "out"}},
            {"name": "thumbs", "kind": "tail", "function": "image.show", "inputs": ["small"], "params": {"dir": "thumbs"}}
        ]});
        protocol::validate::load_app(&text.to_string()).expect("valid app")
    }

    #[test]
    fn the_manifest_scale_is_filled_in_and_the_pool_holds_the_bigger_frame() {
        // `models.json` beside the app file is one of the places the manifest is found.
        let app_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/upscale.json");
        let mut spec = app(None);
        super::fill(&mut spec, &app_file).expect("fill");
        assert_eq!(
            spec.tasks[3].params.get("scale"),
            Some(&serde_json::json!(2))
        );
        let plan = crate::plan::plan(&spec).expect("plan");
        let post = plan.stages[3]
            .pool
            .clone()
            .expect("post-processing gets a pool");
        assert_eq!(post.slot_size, 640 * 360 * 3);
        // the resize after it is sized by its own params
        assert_eq!(
            plan.stages[4].pool.clone().expect("pool").slot_size,
            64 * 36 * 3
        );
        let e = super::fill(&mut app(Some(4)), &app_file)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tasks[3] (post).params.scale") && e.contains("upscales 2×"),
            "{e}"
        );
    }
}
