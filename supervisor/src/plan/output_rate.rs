//! The frame rate of a video an `image.show` tail writes, when the app does not give one:
//! its source's. A fixed 25 fps made a 30 fps phone clip play 20 % slow and a 60 fps one
//! at less than half speed. When an app is loaded, each `image.show {path}` without `fps`
//! gets the rate of the one source it is fed from: the source's own `fps` when it paces
//! itself, else a video's frame rate (ffprobe's average); with several sources of different
//! rates, or none known, the default stays.

use protocol::functions::{self, params, Builtin};
use protocol::limits::Limits;
use protocol::spec::{AppSpec, TaskKind, TaskSpec};

/// Put the rate of its source into every video tail's params that lacks one; returns what
/// was chosen, a line per tail, for the log.
pub fn fill(spec: &mut AppSpec) -> Vec<String> {
    let limits = Limits::from_env().unwrap_or_default();
    let mut chosen = Vec::new();
    for i in 0..spec.tasks.len() {
        let t = &spec.tasks[i];
        let writes_video = functions::builtin(&t.function) == Some(Builtin::ImageShow)
            && t.params.contains_key("path")
            && !t.params.contains_key("fps");
        if !writes_video {
            continue;
        }
        let heads: Vec<&TaskSpec> = crate::plan::ancestors(spec, i)
            .into_iter()
            .map(|j| &spec.tasks[j])
            .filter(|h| h.kind == TaskKind::Head)
            .collect();
        let Some(rate) = one_rate(&heads, &limits) else {
            continue;
        };
        chosen.push(format!(
            "task '{}' writes its video at {rate:.3} fps, the rate of its source (give `fps` to choose another)",
            t.name
        ));
        spec.tasks[i]
            .params
            .insert("fps".into(), serde_json::json!(rate));
    }
    chosen
}

/// The rate all `heads` emit at, when they agree on one.
fn one_rate(heads: &[&TaskSpec], limits: &Limits) -> Option<f64> {
    let mut rates = heads.iter().map(|h| rate_of(h, limits));
    let first = rates.next()??;
    rates
        .all(|r| r.is_some_and(|r| (r - first).abs() < 1e-6))
        .then_some(first)
}

/// The frames per second a head emits: its `fps` when it paces itself, else a video's
/// own rate; `None` when not known (an unpaced generator or folder of images).
fn rate_of(head: &TaskSpec, limits: &Limits) -> Option<f64> {
    let paced = crate::plan::source_fps(head);
    if paced.is_some() {
        return paced;
    }
    if functions::builtin(&head.function) != Some(Builtin::SourceVideo) {
        return None;
    }
    let source = params::parse::<params::SourceVideo>(&head.params).ok()?;
    crate::plan::source_probe::video_frame_rate(&source.path, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(tasks: serde_json::Value) -> AppSpec {
        serde_json::from_value(serde_json::json!({"name": "r", "tasks": tasks})).expect("app")
    }

    #[test]
    fn a_video_tail_gets_its_paced_sources_rate_unless_it_gives_one() {
        let mut spec = app(serde_json::json!([
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "fps": 30}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 4, "height": 4}},
            {"name": "video", "kind": "tail", "function": "image.show", "inputs": ["small"], "params": {"path": "v.mp4"}},
            {"name": "slow", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"path": "s.mp4", "fps": 5}},
            {"name": "pngs", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"dir": "frames"}}
        ]));
        let said = fill(&mut spec);
        assert_eq!(spec.tasks[2].params["fps"], 30.0);
        assert_eq!(spec.tasks[3].params["fps"], 5, "the user's rate stays");
        assert!(!spec.tasks[4].params.contains_key("fps"), "no video");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("task 'video' writes its video at 30.000 fps"));
    }

    #[test]
    fn sources_of_different_or_unknown_rates_leave_the_default() {
        let mut spec = app(serde_json::json!([
            {"name": "a", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "fps": 30}},
            {"name": "b", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "fps": 25}},
            {"name": "c", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8}},
            {"name": "ab", "kind": "tail", "function": "image.show", "inputs": ["a", "b"], "params": {"path": "ab.mp4"}},
            {"name": "cv", "kind": "tail", "function": "image.show", "inputs": ["c"], "params": {"path": "c.mp4"}}
        ]));
        assert!(fill(&mut spec).is_empty());
        assert!(!spec.tasks[3].params.contains_key("fps"));
        assert!(!spec.tasks[4].params.contains_key("fps"));
    }
}
