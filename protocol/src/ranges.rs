//! Upper bounds on an app's numbers: a finite number can still be absurd
//! (`"max_latency_ms": 1.7976931348623157e308` made the report's chart axes spin for
//! ever, issue 17 item 5), so every quota, rate and wait is held to a range that a
//! real app can use. Lower bounds (≥ 0, finite) are checked in [`crate::validate`].

use crate::spec::AppSpec;

/// Longest latency, jitter or batch wait an app may ask for: one day, in ms.
pub const MAX_MS: f64 = 86_400_000.0;
/// Highest request frequency (items per second per source).
pub const MAX_REQUEST_FREQUENCY: f64 = 1_000_000.0;
/// Highest throughput quota (replies per minute): [`MAX_REQUEST_FREQUENCY`] a second.
pub const MAX_THROUGHPUT_PER_MIN: f64 = 60_000_000.0;
/// Most cores an app may be granted.
pub const MAX_CPU_CORES: f64 = 65_536.0;

/// Report every number of `app` above its bound (NaN and negatives are left to
/// [`crate::validate`], which names them).
pub fn check_ranges(app: &AppSpec, err: &mut impl FnMut(String, String)) {
    let mut at_most = |path: String, v: Option<f64>, max: f64, unit: &str| {
        if let Some(v) = v.filter(|v| *v > max) {
            err(path, format!("{v} is out of range: at most {max} {unit}"));
        }
    };
    at_most(
        "request_frequency".into(),
        app.request_frequency,
        MAX_REQUEST_FREQUENCY,
        "items/s",
    );
    let q = &app.quota;
    at_most(
        "quota.throughput_per_min".into(),
        q.throughput_per_min,
        MAX_THROUGHPUT_PER_MIN,
        "replies/min",
    );
    at_most(
        "quota.max_latency_ms".into(),
        q.max_latency_ms,
        MAX_MS,
        "ms (one day)",
    );
    at_most(
        "quota.max_jitter_ms".into(),
        q.max_jitter_ms,
        MAX_MS,
        "ms (one day)",
    );
    at_most(
        "constraints.cpu_cores".into(),
        app.constraints.cpu_cores,
        MAX_CPU_CORES,
        "cores",
    );
    for (i, task) in app.tasks.iter().enumerate() {
        if let Some(batch) = &task.batch {
            at_most(
                format!(
                    "tasks[{i}] ({}).batch.max_wait_ms",
                    crate::text::shown(&task.name)
                ),
                Some(batch.max_wait_ms),
                MAX_MS,
                "ms (one day)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::SpecErrors;
    use crate::validate::load_app;

    fn app(extra: &str) -> String {
        format!(
            r#"{{"name": "t", {extra} "tasks": [
                {{"name": "src", "kind": "head", "function": "image.gen", "params": {{"width": 4, "height": 4}}}},
                {{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["src"], "batch": {{"size": 1, "max_wait_ms": 1e300}}}}]}}"#
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match load_app(text) {
            Ok(_) => panic!("expected errors for {text}"),
            Err(SpecErrors(errs)) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn huge_quota_rate_and_wait_numbers_are_refused_with_their_place() {
        let errs = errors(&app(
            r#""request_frequency": 1e9, "quota": {"max_latency_ms": 1.7976931348623157e308,
            "max_jitter_ms": 1e12, "throughput_per_min": 1e300}, "constraints": {"cpu_cores": 1e20},"#,
        ));
        for place in [
            "request_frequency",
            "quota.max_latency_ms",
            "quota.max_jitter_ms",
            "quota.throughput_per_min",
            "constraints.cpu_cores",
            "tasks[1] (out).batch.max_wait_ms",
        ] {
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(place) && e.contains("out of range")),
                "{place} not refused: {errs:#?}"
            );
        }
    }

    #[test]
    fn numbers_within_range_pass() {
        let ok = app(r#""quota": {"max_latency_ms": 86400000, "throughput_per_min": 600},"#)
            .replace("1e300", "5");
        assert!(load_app(&ok).is_ok());
    }
}
