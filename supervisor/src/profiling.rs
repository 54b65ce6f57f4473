//! `supervisor profile` and the use of its results: run the app on this machine with
//! each batch size for its GPU tasks, turn the measured busy time per batch into
//! profiles (t = α + β·b), store them, and let `plan` and `start` ask the planner.

use crate::app::LoadedApp;
use crate::run::{run_app, RunOptions};
use crate::smart::{self, PlanOptions, Profiles, Resources, TaskProfile};
use anyhow::Context;
use protocol::spec::{AppSpec, BatchSpec, ServiceType, TaskKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// This machine's name in profile files: host name and core count.
pub fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}c", crate::plan::available_cores())
}

/// Where an app's profiles on this machine live: `profiles/<machine>-<app>.json`
/// beside the app file's folder's parent when it is `apps/`, else beside the app file.
pub fn profile_path(loaded: &LoadedApp) -> PathBuf {
    let dir = loaded
        .file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("profiles")
        .join(format!("{}-{}.json", machine(), loaded.spec.name))
}

/// Load the app's profiles on this machine, if it was profiled.
pub fn load_profiles(loaded: &LoadedApp) -> anyhow::Result<Option<Profiles>> {
    let path = profile_path(loaded);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(Profiles::from_json(&text).with_context(|| {
        format!("bad profile file {}", path.display())
    })?))
}

/// A copy of the app for one profiling run: GPU tasks batch `b`, sources capped to
/// `items`, guaranteed delivery (nothing shed while measuring).
fn profiling_variant(app: &AppSpec, b: u32, items: u64) -> AppSpec {
    let mut v = app.clone();
    v.name = format!("{}-profile-b{b}", app.name);
    v.service_type = ServiceType::RequestGuarantee;
    for t in &mut v.tasks {
        if t.kind == TaskKind::Gpu {
            t.batch = Some(BatchSpec {
                size: b,
                max_wait_ms: 50.0,
            });
        }
        match t.function.as_str() {
            "image.gen" => {
                let count = t
                    .params
                    .get("count")
                    .and_then(|c| c.as_u64())
                    .unwrap_or(100);
                t.params
                    .insert("count".into(), serde_json::json!(count.min(items)));
                t.params.insert("fps".into(), serde_json::json!(0));
            }
            "source.video" => {
                t.params.insert("limit".into(), serde_json::json!(items));
            }
            _ => {}
        }
    }
    v
}

/// Measure every task at each batch size and store the profiles.
pub fn profile(loaded: &LoadedApp, batches: &[u32], items: u64) -> anyhow::Result<Profiles> {
    let app = &loaded.spec;
    let has_gpu = app.tasks.iter().any(|t| t.kind == TaskKind::Gpu);
    let batches: Vec<u32> = if has_gpu { batches.to_vec() } else { vec![1] };
    let mut points: BTreeMap<String, Vec<(u32, u64, f64)>> = BTreeMap::new();
    let base = std::env::temp_dir().join(format!("profile-{}", app.name));
    for (k, &b) in batches.iter().enumerate() {
        eprintln!(
            "profiling '{}' with GPU batch {b} ({}/{})",
            app.name,
            k + 1,
            batches.len()
        );
        let variant = LoadedApp {
            spec: profiling_variant(app, b, items),
            file: loaded.file.clone(),
        };
        let opts = RunOptions {
            run_dir: base.join(format!("b{b}")),
            startup_timeout: Duration::from_secs(30),
            heartbeat_ms: 100,
            stop_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            hang_after: Duration::from_secs(10),
            show_progress: true,
        };
        let outcome = run_app(&variant, &opts, Arc::new(AtomicBool::new(false)), None)?;
        if let Some(e) = outcome.error {
            anyhow::bail!("profiling run with batch {b} failed: {e}");
        }
        for t in &app.tasks {
            let prefix = format!("{}#", t.name);
            let (busy, items_in) = outcome
                .summary
                .stages
                .iter()
                .filter(|(label, _)| label.starts_with(&prefix))
                .fold((0u64, 0u64), |(b0, i0), (_, m)| {
                    (b0 + m.busy_ns, i0 + m.items_in.max(m.items_out))
                });
            if items_in == 0 {
                continue;
            }
            let (batch, per_batch) = if t.kind == TaskKind::Gpu {
                (
                    b,
                    busy as f64 / 1e9 / (items_in as f64 / f64::from(b)).max(1.0),
                )
            } else if k == 0 {
                (1, busy as f64 / 1e9 / items_in as f64)
            } else {
                continue;
            };
            points
                .entry(t.name.clone())
                .or_default()
                .push((batch, 0, per_batch));
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    let mut profiles = Profiles::new(&machine());
    for (task, pts) in points {
        let mut p = TaskProfile::new(&task, &pts);
        let gpu = app
            .tasks
            .iter()
            .any(|t| t.name == task && t.kind == TaskKind::Gpu);
        if !gpu {
            p.max_batch = Some(1);
        }
        profiles.insert(p);
    }
    let path = profile_path(loaded);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, profiles.to_json())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("profiles written to {}", path.display());
    Ok(profiles)
}

/// Print the fitted t = α + β·b of every task.
pub fn print_fits(app: &AppSpec, profiles: &Profiles) {
    println!(
        "{:<16} {:>10} {:>10} {:>6}  points (batch: s/batch)",
        "task", "α (ms)", "β (ms)", "r²"
    );
    for t in &app.tasks {
        let Some(p) = profiles.get(&t.name) else {
            continue;
        };
        let pts: Vec<String> = p
            .points
            .iter()
            .map(|q| format!("{}: {:.4}", q.batch, q.seconds))
            .collect();
        match p.fits().ok().and_then(|f| f.into_values().next()) {
            Some(f) => println!(
                "{:<16} {:>10.3} {:>10.3} {:>6.3}  {}",
                t.name,
                f.alpha * 1e3,
                f.beta * 1e3,
                f.r2,
                pts.join(", ")
            ),
            None => println!(
                "{:<16} {:>10} {:>10} {:>6}  {}",
                t.name,
                "-",
                "-",
                "-",
                pts.join(", ")
            ),
        }
    }
}

/// What the app is granted on this machine (its constraints, else the machine).
fn resources(app: &AppSpec) -> Resources {
    let cuda = crate::plan::device().starts_with("cuda");
    Resources::from_app(app, crate::plan::available_cores(), cuda)
}

/// The planner's answer for an app on this machine.
pub fn admit(app: &AppSpec, profiles: &Profiles) -> Result<smart::Plan, smart::Refusal> {
    let resources = resources(app);
    smart::admit(app, profiles, resources, &PlanOptions::default())
}

/// The plans of all three strategies, for `supervisor plan`.
pub fn all_plans(app: &AppSpec, profiles: &Profiles) -> anyhow::Result<smart::Plans> {
    let resources = resources(app);
    Ok(smart::plans(
        app,
        profiles,
        resources,
        &PlanOptions::default(),
    )?)
}

/// Apply an admitted plan to the app: batch and replicas of every task it planned.
pub fn apply(app: &mut AppSpec, plan: &smart::Plan) {
    for (task, cfg) in &plan.stages {
        if let Some(t) = app.tasks.iter_mut().find(|t| &t.name == task) {
            if t.kind == TaskKind::Head {
                continue;
            }
            if t.batch.is_none() && t.kind == TaskKind::Gpu {
                t.batch = Some(BatchSpec {
                    size: cfg.batch,
                    max_wait_ms: cfg.max_wait_ms,
                });
            }
            if t.replicas.is_none() {
                t.replicas = Some(cfg.replicas);
            }
        }
    }
}
