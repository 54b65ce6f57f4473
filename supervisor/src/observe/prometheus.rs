//! Prometheus text exposition of the apps a supervisor hosts: one `# HELP`/`# TYPE`
//! header per family, then a sample per app and stage replica, labelled
//! `app`, `task`, `stage` (and `reason` for losses).

use crate::observe::live::{LiveApp, LiveStage};
use protocol::messages::{LossReason, StageMetrics, HISTOGRAM_BOUNDS_S};

fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], sum_s: f64) {
    if buckets.len() != HISTOGRAM_BOUNDS_S.len() + 1 {
        return;
    }
    let mut cumulative = 0;
    for (bound, n) in HISTOGRAM_BOUNDS_S.iter().zip(buckets) {
        cumulative += n;
        out.push_str(&format!(
            "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}\n"
        ));
    }
    cumulative += buckets[HISTOGRAM_BOUNDS_S.len()];
    out.push_str(&format!(
        "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n"
    ));
    out.push_str(&format!(
        "{name}_sum{{{labels}}} {sum_s}\n{name}_count{{{labels}}} {cumulative}\n"
    ));
}

type Getter = fn(&LiveStage) -> f64;
type AgentGetter = fn(&StageMetrics) -> f64;

/// One value per stage replica: (name, type, help, value).
fn stage_series() -> [(&'static str, &'static str, &'static str, Getter); 9] {
    [
        (
            "smartpipe_stage_items_in_total",
            "counter",
            "Items a stage replica received.",
            |s| s.metrics.items_in as f64,
        ),
        (
            "smartpipe_stage_items_out_total",
            "counter",
            "Items a stage replica sent on (tails: delivered).",
            |s| s.metrics.items_out as f64,
        ),
        (
            "smartpipe_stage_busy_seconds_total",
            "counter",
            "Time a stage replica spent working.",
            |s| s.metrics.busy_ns as f64 / 1e9,
        ),
        (
            "smartpipe_stage_backpressure_seconds_total",
            "counter",
            "Time spent waiting for a free output slot.",
            |s| s.metrics.waiting_for_slot_ns as f64 / 1e9,
        ),
        (
            "smartpipe_stage_queue_depth",
            "gauge",
            "Items inside a stage replica (received, not yet sent or lost).",
            |s| {
                s.metrics
                    .items_in
                    .saturating_sub(s.metrics.items_out + s.metrics.lost.iter().sum::<u64>())
                    as f64
            },
        ),
        (
            "smartpipe_stage_batch_size",
            "gauge",
            "Batch size of the stage.",
            |s| f64::from(s.batch),
        ),
        (
            "smartpipe_stage_replicas",
            "gauge",
            "Replicas of the stage's task.",
            |s| f64::from(s.replicas),
        ),
        (
            "smartpipe_stage_restarts_total",
            "counter",
            "Restarts of a stage replica.",
            |s| f64::from(s.restarts),
        ),
        (
            "smartpipe_stage_items_per_second",
            "gauge",
            "Items a stage replica sent per second, recently.",
            |s| s.items_per_s,
        ),
    ]
}

/// One value per GPU agent: (name, type, help, value).
fn agent_series() -> [(&'static str, &'static str, &'static str, AgentGetter); 4] {
    [
        (
            "smartpipe_agent_model_loads_total",
            "counter",
            "Model loads by a GPU agent.",
            |m| m.model_loads as f64,
        ),
        (
            "smartpipe_agent_model_evictions_total",
            "counter",
            "Model evictions by a GPU agent.",
            |m| m.model_evictions as f64,
        ),
        (
            "smartpipe_agent_model_load_seconds_total",
            "counter",
            "Time a GPU agent spent loading models.",
            |m| m.model_load_ns as f64 / 1e9,
        ),
        (
            "smartpipe_agent_resident_model_bytes",
            "gauge",
            "Bytes of the models resident on the device.",
            |m| m.resident_model_bytes as f64,
        ),
    ]
}

/// Prometheus text exposition of the metrics of every app given.
pub fn render_metrics(apps: &[LiveApp]) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    // Every stage replica of every app, with its labels.
    let stages = || {
        apps.iter().flat_map(|a| {
            a.stages.iter().map(move |s| {
                (
                    format!(
                        "app=\"{}\",task=\"{}\",stage=\"{}\"",
                        a.name, s.task, s.label
                    ),
                    s,
                )
            })
        })
    };
    for (name, kind, help, get) in stage_series() {
        family(&mut out, name, kind, help);
        for (labels, s) in stages() {
            out.push_str(&format!("{name}{{{labels}}} {}\n", get(s)));
        }
    }
    family(
        &mut out,
        "smartpipe_stage_lost_total",
        "counter",
        "Items lost at a stage replica, by reason.",
    );
    for (labels, s) in stages() {
        for reason in LossReason::ALL {
            out.push_str(&format!(
                "smartpipe_stage_lost_total{{{labels},reason=\"{}\"}} {}\n",
                reason.as_str(),
                s.metrics.lost[reason as usize]
            ));
        }
    }
    family(
        &mut out,
        "smartpipe_stage_service_seconds",
        "histogram",
        "Service time per item.",
    );
    for (labels, s) in stages() {
        histogram(
            &mut out,
            "smartpipe_stage_service_seconds",
            &labels,
            &s.metrics.service_buckets,
            s.metrics.busy_ns as f64 / 1e9,
        );
    }
    family(
        &mut out,
        "smartpipe_e2e_latency_seconds",
        "histogram",
        "End-to-end latency of the items a tail received.",
    );
    for (labels, s) in stages().filter(|(_, s)| !s.metrics.latency_buckets.is_empty()) {
        histogram(
            &mut out,
            "smartpipe_e2e_latency_seconds",
            &labels,
            &s.metrics.latency_buckets,
            s.metrics.latency_sum_ns as f64 / 1e9,
        );
    }
    for (name, kind, help, get) in agent_series() {
        family(&mut out, name, kind, help);
        for (labels, s) in stages().filter(|(_, s)| s.task.starts_with("gpu-agent")) {
            out.push_str(&format!("{name}{{{labels}}} {}\n", get(&s.metrics)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_families_labels_and_cumulative_buckets() {
        let mut m = StageMetrics {
            items_in: 5,
            items_out: 4,
            ..StageMetrics::default()
        };
        m.lose(LossReason::Shed, 1);
        protocol::messages::observe(&mut m.latency_buckets, 0.003);
        protocol::messages::observe(&mut m.latency_buckets, 0.3);
        let app = LiveApp {
            name: "a".into(),
            stages: vec![LiveStage {
                label: "t#0".into(),
                task: "t".into(),
                metrics: m,
                ..LiveStage::default()
            }],
            ..LiveApp::default()
        };
        let text = render_metrics(&[app]);
        assert!(text.contains("# TYPE smartpipe_stage_items_in_total counter"));
        assert!(
            text.contains("smartpipe_stage_items_in_total{app=\"a\",task=\"t\",stage=\"t#0\"} 5")
        );
        assert!(text.contains(
            "smartpipe_stage_lost_total{app=\"a\",task=\"t\",stage=\"t#0\",reason=\"shed\"} 1"
        ));
        assert!(text.contains("smartpipe_e2e_latency_seconds_bucket{app=\"a\",task=\"t\",stage=\"t#0\",le=\"0.005\"} 1"));
        assert!(text.contains("smartpipe_e2e_latency_seconds_bucket{app=\"a\",task=\"t\",stage=\"t#0\",le=\"+Inf\"} 2"));
        assert!(text.contains("smartpipe_stage_queue_depth{app=\"a\",task=\"t\",stage=\"t#0\"} 0"));
    }

    #[test]
    fn several_apps_share_one_header_per_family() {
        let app = |name: &str, items_in: u64| LiveApp {
            name: name.into(),
            stages: vec![LiveStage {
                label: "t#0".into(),
                task: "t".into(),
                metrics: StageMetrics {
                    items_in,
                    ..StageMetrics::default()
                },
                ..LiveStage::default()
            }],
            ..LiveApp::default()
        };
        let text = render_metrics(&[app("a", 5), app("b", 7)]);
        assert_eq!(
            text.matches("# TYPE smartpipe_stage_items_in_total counter")
                .count(),
            1
        );
        assert!(
            text.contains("smartpipe_stage_items_in_total{app=\"a\",task=\"t\",stage=\"t#0\"} 5")
        );
        assert!(
            text.contains("smartpipe_stage_items_in_total{app=\"b\",task=\"t\",stage=\"t#0\"} 7")
        );
    }
}
