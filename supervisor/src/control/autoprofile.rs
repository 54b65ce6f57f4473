//! Admission without a profile (issue 13, item 4). A `request-guarantee` app with a
//! quota is only admitted on measurements of this machine: a quota impossible on its
//! face (a throughput the request frequency cannot offer) is refused before anything
//! runs or is measured; an app with no profile of its current tasks is profiled first
//! (`start`), or refused (`start --no-profile`, and the daemon's `POST /apps`, which
//! must not block on measuring); a latency quota below the slowest DAG path of the
//! tasks' minimum measured service times is refused before the planner is asked.

use crate::control::daemon::AdmitError;
use crate::control::profiling::{self, Stored};
use crate::plan::app::LoadedApp;
use crate::plan::smart::Profiles;
use protocol::spec::{AppSpec, ServiceType};

/// Batch sizes and items per run of an automatic profile: `supervisor profile`'s defaults.
const AUTO_BATCHES: [u32; 4] = [1, 2, 4, 8];
const AUTO_ITEMS: u64 = 40;

/// Whether admission needs a profile: a guaranteed app with something to guarantee.
pub fn needs_profile(app: &AppSpec) -> bool {
    let q = &app.quota;
    app.service_type == ServiceType::RequestGuarantee
        && (q.throughput_per_min.is_some()
            || q.max_latency_ms.is_some()
            || q.max_jitter_ms.is_some())
}

fn refused(app: &AppSpec, refusal: String) -> AdmitError {
    AdmitError::Refused {
        app: app.name.clone(),
        service: app.service_type,
        refusal,
    }
}

pub use crate::plan::profiled_plan::impossible_on_its_face;

/// The latency quota, when it is below the slowest path of the DAG at the tasks'
/// minimum measured service times (a task without a profile counts 0).
pub fn latency_below_service(app: &AppSpec, profiles: &Profiles) -> Option<String> {
    let max_ms = app.quota.max_latency_ms?;
    let min_s: Vec<f64> = app
        .tasks
        .iter()
        .map(|t| {
            profiles.tasks.get(&t.name).map_or(0.0, |p| {
                p.points
                    .iter()
                    .map(|pt| pt.seconds)
                    .fold(f64::INFINITY, f64::min)
            })
        })
        .map(|s| if s.is_finite() { s } else { 0.0 })
        .collect();
    let n = app.tasks.len();
    // Longest path by relaxation: the DAG has no cycle (validated), so n passes settle it.
    let mut dist = min_s.clone();
    let mut via: Vec<Option<usize>> = vec![None; n];
    for _ in 0..n {
        for (i, t) in app.tasks.iter().enumerate() {
            let best = t
                .inputs
                .iter()
                .filter_map(|x| app.task_index(x))
                .max_by(|&a, &b| dist[a].total_cmp(&dist[b]));
            if let Some(j) = best {
                dist[i] = min_s[i] + dist[j];
                via[i] = Some(j);
            }
        }
    }
    let end = (0..n).max_by(|&a, &b| dist[a].total_cmp(&dist[b]))?;
    let total_ms = dist[end] * 1e3;
    if total_ms <= max_ms {
        return None;
    }
    let mut path = vec![app.tasks[end].name.clone()];
    let mut at = end;
    while let Some(j) = via[at] {
        path.push(app.tasks[j].name.clone());
        at = j;
        if path.len() > n {
            break;
        }
    }
    path.reverse();
    Some(format!(
        "latency quota {max_ms} ms is below the {total_ms:.2} ms its slowest path ({}) takes at the tasks' minimum measured service times, by {:.2} ms",
        path.join(" → "),
        total_ms - max_ms
    ))
}

/// Why an app has no usable profile, for messages.
fn missing_why(stored: &Stored, loaded: &LoadedApp) -> Option<String> {
    let path = profiling::profile_path(loaded);
    match stored {
        Stored::Current(_) => None,
        Stored::Missing => Some(format!(
            "no profile of its tasks on this machine ({} does not exist)",
            path.display()
        )),
        Stored::Stale => Some(format!(
            "its tasks changed since {} was measured",
            path.display()
        )),
    }
}

/// The checks of `start` before the planner: refuse a quota impossible on its face,
/// then profile an app without a current profile (unless `no_profile`, which refuses).
pub fn before_start(loaded: &LoadedApp, no_profile: bool) -> anyhow::Result<()> {
    let app = &loaded.spec;
    if !needs_profile(app) {
        return Ok(());
    }
    if let Some(why) = impossible_on_its_face(app) {
        return Err(refused(app, why).into());
    }
    let stored = profiling::stored_profiles(loaded)?;
    let Some(why) = missing_why(&stored, loaded) else {
        return Ok(());
    };
    if no_profile {
        return Err(refused(
            app,
            format!(
                "{why}; a guarantee needs one, and --no-profile forbids measuring now: run `supervisor profile {}` first",
                loaded.file.display()
            ),
        )
        .into());
    }
    eprintln!(
        "app '{}': {why}; profiling it on this machine before admission",
        app.name
    );
    let runtime_dir = crate::env::runtime::prepare()?;
    let result = profiling::profile(loaded, &AUTO_BATCHES, AUTO_ITEMS);
    crate::env::runtime::cleanup(&runtime_dir);
    result?;
    Ok(())
}

/// The checks of admission itself (foreground and daemon): the face check, a current
/// profile (the daemon does not measure: it refuses, saying how to profile), and the
/// latency quota against the measured service times. Returns the profiles to plan with.
pub fn admission_checks(loaded: &LoadedApp) -> Result<Option<Profiles>, AdmitError> {
    let app = &loaded.spec;
    let stored = profiling::stored_profiles(loaded).map_err(|e| AdmitError::Profiles {
        app: app.name.clone(),
        detail: format!("{e:#}"),
    })?;
    if !needs_profile(app) {
        return Ok(match stored {
            Stored::Current(p) => Some(p),
            _ => None,
        });
    }
    if let Some(why) = impossible_on_its_face(app) {
        return Err(refused(app, why));
    }
    if let Some(why) = missing_why(&stored, loaded) {
        return Err(refused(
            app,
            format!(
                "{why}; a guarantee needs one: run `supervisor profile {}` (or start it in the foreground, which profiles it first)",
                loaded.file.display()
            ),
        ));
    }
    let Stored::Current(profiles) = stored else {
        return Ok(None);
    };
    if let Some(why) = latency_below_service(app, &profiles) {
        return Err(refused(app, why));
    }
    Ok(Some(profiles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::smart::TaskProfile;

    fn app(json: serde_json::Value) -> AppSpec {
        serde_json::from_value(json).expect("app")
    }

    fn chain(quota: serde_json::Value) -> AppSpec {
        app(serde_json::json!({
            "name": "q", "service_type": "request-guarantee", "request_frequency": 10,
            "quota": quota,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "count": 1}},
                {"name": "a", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "b", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["a"], "params": {"format": "csv"}}
            ]
        }))
    }

    #[test]
    fn a_throughput_above_the_request_frequency_is_refused_on_its_face() {
        let why =
            impossible_on_its_face(&chain(serde_json::json!({"throughput_per_min": 60000000})))
                .expect("refused");
        assert!(why.contains("600 per min"), "{why}");
        assert!(
            impossible_on_its_face(&chain(serde_json::json!({"throughput_per_min": 600})))
                .is_none()
        );
        assert!(!needs_profile(&AppSpec {
            service_type: ServiceType::BestEffort,
            ..chain(serde_json::json!({"throughput_per_min": 600}))
        }));
    }

    #[test]
    fn a_latency_quota_below_the_slowest_path_is_named_with_that_path() {
        let profiles = Profiles::new("m")
            .with(TaskProfile::linear("gen", 0.001, 0.0))
            .with(TaskProfile::linear("a", 0.004, 0.0))
            .with(TaskProfile::linear("b", 0.020, 0.0))
            .with(TaskProfile::linear("rows", 0.001, 0.0));
        // gen → a → rows: 6 ms; gen → b: 21 ms, the slowest.
        let why =
            latency_below_service(&chain(serde_json::json!({"max_latency_ms": 1})), &profiles)
                .expect("refused");
        assert!(why.contains("gen → b") && why.contains("21.00 ms"), "{why}");
        assert!(latency_below_service(
            &chain(serde_json::json!({"max_latency_ms": 25})),
            &profiles
        )
        .is_none());
    }

    #[test]
    fn the_digest_follows_what_tasks_compute_not_how_they_are_sized() {
        let a = chain(serde_json::json!({}));
        let mut sized = a.clone();
        sized.tasks[1].replicas = Some(3);
        assert_eq!(profiling::tasks_digest(&a), profiling::tasks_digest(&sized));
        let mut paced = a.clone();
        paced.tasks[0].params.insert("fps".into(), 25.into());
        assert_eq!(
            profiling::tasks_digest(&a),
            profiling::tasks_digest(&paced),
            "profiling sets a source's pace itself"
        );
        let mut edited = a.clone();
        edited.tasks[0].params.insert("width".into(), 16.into());
        assert_ne!(
            profiling::tasks_digest(&a),
            profiling::tasks_digest(&edited)
        );
    }
}
