//! The checks of [`crate::validate`] that bound numbers rather than shapes: frame sizes
//! against the pixel limit, values wider than the type a stage reads them into, rates
//! a clock can pace, batch sizes, processes per app and name lengths. Everything here
//! is something `start` would otherwise refuse late (or crash on).

use crate::functions::SlotSize;
use crate::limits::{self, Limits, MAX_BATCH, MAX_NAME_LEN, MAX_WAIT_MS};
use crate::shm::MAX_HOLDER_ID;
use crate::spec::{AppSpec, TaskKind, TaskSpec};

const MIB: u64 = 1 << 20;

/// Report every limit the app exceeds through `err(path, message)`.
pub fn check_limits(app: &AppSpec, limits: &Limits, err: &mut impl FnMut(String, String)) {
    if app.name.len() > MAX_NAME_LEN {
        err("name".into(), too_long(&app.name));
    }
    // Negative and not-a-number rates are named once, by `validate`'s own check.
    if let Some(rate) = app.request_frequency.filter(|r| *r >= 0.0) {
        if let Some(problem) = limits::rate_problem(rate) {
            err("request_frequency".into(), problem);
        }
    }
    let mut processes: u64 = 0;
    for (i, task) in app.tasks.iter().enumerate() {
        let at = format!("tasks[{i}] ({})", task.name);
        if task.name.len() > MAX_NAME_LEN {
            err(format!("{at}.name"), too_long(&task.name));
        }
        check_task_params(task, limits, &at, err);
        if let Some(batch) = &task.batch {
            if batch.size > MAX_BATCH {
                err(
                    format!("{at}.batch.size"),
                    format!("must be at most {MAX_BATCH}, got {}", batch.size),
                );
            }
            if batch.max_wait_ms > MAX_WAIT_MS {
                err(
                    format!("{at}.batch.max_wait_ms"),
                    format!(
                        "must be at most {MAX_WAIT_MS} (an hour), got {}",
                        batch.max_wait_ms
                    ),
                );
            }
        }
        processes += u64::from(task.replicas.unwrap_or(1).max(1));
    }
    if app.tasks.iter().any(|t| t.kind == TaskKind::Gpu) {
        processes += 1; // the GPU agent
    }
    let max = limits.max_processes.min(u64::from(MAX_HOLDER_ID));
    if processes > max {
        err(
            "tasks".into(),
            format!(
                "the app needs {processes} processes (one per replica, plus the GPU agent); at most {max} are allowed ({})",
                limits::ENV_MAX_PROCESSES
            ),
        );
    }
}

fn too_long(name: &str) -> String {
    format!(
        "is {} bytes long; at most {MAX_NAME_LEN} (it becomes part of file names)",
        name.len()
    )
}

fn check_task_params(
    task: &TaskSpec,
    limits: &Limits,
    at: &str,
    err: &mut impl FnMut(String, String),
) {
    let int = |name: &str| task.params.get(name).and_then(|v| v.as_u64());
    if let Some(fps) = task
        .params
        .get("fps")
        .and_then(|v| v.as_f64())
        .filter(|f| *f >= 0.0)
    {
        if let Some(problem) = limits::rate_problem(fps) {
            err(format!("{at}.params.fps"), problem);
        }
    }
    match crate::functions::hints(&task.function).map(|h| h.slot) {
        Some(SlotSize::ParamFrames) => {
            let mut fits = true;
            for name in ["x", "y", "width", "height"] {
                if let Some(v) = int(name).filter(|v| *v > u64::from(u32::MAX)) {
                    err(
                        format!("{at}.params.{name}"),
                        format!("must be at most {} (32 bits), got {v}", u32::MAX),
                    );
                    fits = false;
                }
            }
            if let (true, Some(w), Some(h)) = (fits, int("width"), int("height")) {
                if let Err(e) = limits.check_frame("the frame", w, h) {
                    err(format!("{at}.params"), e.to_string());
                }
            }
        }
        Some(SlotSize::ParamBytes) => {
            if let Some(b) = int("bytes") {
                if let Err(e) = limits.check_slot("a payload", u128::from(b)) {
                    err(format!("{at}.params.bytes"), e.to_string());
                }
            }
        }
        Some(SlotSize::ModelOutput) => {
            if let Some(mb) = int("output_slot_mb") {
                let size = u128::from(mb) * u128::from(MIB);
                if let Err(e) = limits.check_slot("the output slot", size) {
                    err(format!("{at}.params.output_slot_mb"), e.to_string());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_app;

    #[test]
    fn an_app_of_more_processes_than_the_limit_is_refused_naming_the_setting() {
        let app = parse_app(
            r#"{"name": "wide", "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "count": 1}},
                {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"], "replicas": 20},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fwd"]}
            ]}"#,
        )
        .expect("parses");
        let mut problems = Vec::new();
        let few = Limits {
            max_processes: 16,
            ..Limits::default()
        };
        check_limits(&app, &few, &mut |at, what| {
            problems.push(format!("{at}: {what}"))
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("needs 22 processes")
                && problems[0].contains("SMARTPIPE_MAX_PROCESSES"),
            "{problems:?}"
        );
        problems.clear();
        check_limits(&app, &Limits::default(), &mut |at, what| {
            problems.push(format!("{at}: {what}"))
        });
        assert!(problems.is_empty(), "{problems:?}");
    }
}
