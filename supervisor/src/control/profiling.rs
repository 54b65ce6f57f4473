//! `supervisor profile` and the use of its results: run the app on this machine with
//! each batch size for its GPU tasks, paced so that its stages seldom compete for a
//! core, turn the measured busy time per batch into profiles (t = α + β·b), store them,
//! and let `plan` and `start` ask the planner.

use crate::observe::live::LiveApp;
use crate::plan::app::LoadedApp;
use crate::plan::smart::{self, Profiles, TaskProfile};
use crate::run::{run_app, RunOptions};
use anyhow::Context;
use protocol::functions::{self, Builtin};
use protocol::messages::StageMetrics;
use protocol::spec::{AppSpec, BatchSpec, ServiceType, TaskKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::profile_store::{
    load_profiles, machine, profile_path, stored_profiles, tasks_digest, Stored,
};

/// Share of one core the paced profiling runs aim to keep the app busy: low enough that
/// its stages seldom run at the same time, so that busy time is service time, not time
/// spent waiting for a core.
pub const PROFILE_LOAD: f64 = 0.5;

/// Items of a CPU task (heads, tails) left out of its profile as warm-up; GPU tasks
/// leave out their first batch.
pub const WARMUP_ITEMS: u64 = 2;

/// How a profiling run drives the app.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Drive {
    /// GPU tasks' batch size.
    batch: u32,
    /// Items the sources emit.
    items: u64,
    /// Items per second (0: as fast as the app goes).
    fps: f64,
}

/// A copy of the app for one profiling run: GPU tasks batch `d.batch` with a wait that
/// lets the batch fill at the paced rate, sources capped to `d.items` and paced at
/// `d.fps`, guaranteed delivery (nothing shed while measuring). `source.images` gets a
/// scratch folder linking the first images of its folder.
fn profiling_variant(app: &AppSpec, d: Drive, scratch: &Path) -> anyhow::Result<AppSpec> {
    let mut v = app.clone();
    v.name = format!("{}-profile-b{}", app.name, d.batch);
    v.service_type = ServiceType::RequestGuarantee;
    let fill_ms = if d.fps > 0.0 {
        f64::from(d.batch) / d.fps * 1000.0 + 500.0
    } else {
        50.0
    };
    for t in &mut v.tasks {
        if t.kind == TaskKind::Gpu {
            t.batch = Some(BatchSpec {
                size: d.batch,
                max_wait_ms: fill_ms,
            });
        }
        match functions::builtin(&t.function) {
            Some(Builtin::ImageGen) => {
                let count = t
                    .params
                    .get("count")
                    .and_then(|c| c.as_u64())
                    .unwrap_or(100);
                t.params
                    .insert("count".into(), serde_json::json!(count.min(d.items)));
            }
            Some(Builtin::SourceVideo) => {
                t.params.insert("limit".into(), serde_json::json!(d.items));
            }
            Some(Builtin::SourceImages) => {
                let path = t
                    .params
                    .get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .to_string();
                let files = media::list_images(&path)
                    .map_err(|e| anyhow::anyhow!("task '{}': {e}", t.name))?;
                let dir = scratch.join(format!("images-{}", t.name));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                // Cycle through the folder's images until `items` are linked.
                for k in 0..d.items as usize {
                    let f = &files[k % files.len()];
                    let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("png");
                    let link = dir.join(format!("{k:06}.{ext}"));
                    let target = f.canonicalize().unwrap_or_else(|_| f.clone());
                    std::os::unix::fs::symlink(&target, &link)
                        .with_context(|| format!("cannot link {}", link.display()))?;
                }
                t.params
                    .insert("path".into(), serde_json::json!(dir.display().to_string()));
            }
            _ => {}
        }
        if t.kind == TaskKind::Head {
            t.params.insert("fps".into(), serde_json::json!(d.fps));
        }
        redirect_outputs(t, &scratch.join("outputs"));
    }
    Ok(v)
}

/// A profiling run writes its tails' outputs into `into` (its run's folder), never where
/// the app writes them: the app may be running and its files are its results.
fn redirect_outputs(t: &mut protocol::spec::TaskSpec, into: &Path) {
    if t.kind != TaskKind::Tail {
        return;
    }
    // table.print's standard output too: the rows of a profile are nobody's.
    for &param in protocol::validate_flow::output_params(&t.function) {
        let given = t
            .params
            .get(param)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if given.is_none() && t.function != "table.print" {
            continue;
        }
        let leaf = given
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map_or_else(
                || "stdout".to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
        let target = into.join(format!("{}-{param}-{leaf}", t.name));
        t.params.insert(
            param.into(),
            serde_json::json!(target.display().to_string()),
        );
    }
}

/// What one measuring run saw of every task (see [`TaskTimes`]).
type Measured = BTreeMap<String, TaskTimes>;

/// What one profiling run measured: every task's times, and per task its stays against
/// the rest of the items' paths (all tails together).
struct RunMeasures {
    times: Measured,
    stays: BTreeMap<String, protocol::messages::StayStats>,
}

/// What one measuring run saw of a task (its replicas summed, warm-up left out).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TaskTimes {
    busy_s: f64,
    items: u64,
    /// Services (items, or batches) and the sum of their squared durations (ms²).
    services: u64,
    busy_sq_ms2: f64,
}

/// Fewest services a coefficient of variation is estimated from.
const CV_MIN_SERVICES: u64 = 8;

impl TaskTimes {
    fn of(m: &StageMetrics) -> TaskTimes {
        TaskTimes {
            busy_s: m.busy_ns as f64 / 1e9,
            items: m.items_in.max(m.items_out),
            services: m.services,
            busy_sq_ms2: m.busy_sq_ms2,
        }
    }

    fn minus(self, o: TaskTimes) -> TaskTimes {
        TaskTimes {
            busy_s: self.busy_s - o.busy_s,
            items: self.items.saturating_sub(o.items),
            services: self.services.saturating_sub(o.services),
            busy_sq_ms2: (self.busy_sq_ms2 - o.busy_sq_ms2).max(0.0),
        }
    }

    fn plus(self, o: TaskTimes) -> TaskTimes {
        TaskTimes {
            busy_s: self.busy_s + o.busy_s,
            items: self.items + o.items,
            services: self.services + o.services,
            busy_sq_ms2: self.busy_sq_ms2 + o.busy_sq_ms2,
        }
    }

    /// Standard deviation / mean of one service's duration (None: too few services).
    fn cv(&self) -> Option<f64> {
        if self.services < CV_MIN_SERVICES || self.busy_s <= 0.0 {
            return None;
        }
        let n = self.services as f64;
        let mean = self.busy_s * 1e3 / n;
        let var = (self.busy_sq_ms2 / n - mean * mean).max(0.0);
        Some(var.sqrt() / mean)
    }
}
/// Profile points (batch, input-size bucket, seconds per batch) by task.
type Points = BTreeMap<String, Vec<(u32, u64, f64)>>;

fn run_variant(loaded: &LoadedApp, d: Drive, base: &Path) -> anyhow::Result<RunMeasures> {
    let app = &loaded.spec;
    let label = if d.fps > 0.0 {
        format!("batch {} at {:.2} items/s", d.batch, d.fps)
    } else {
        format!("batch {}, free-running", d.batch)
    };
    eprintln!("profiling '{}': {} items, {label}", app.name, d.items);
    let dir = base.join(format!(
        "b{}-{}",
        d.batch,
        if d.fps > 0.0 { "paced" } else { "free" }
    ));
    let variant = LoadedApp {
        spec: profiling_variant(app, d, base)?,
        file: loaded.file.clone(),
    };
    let opts = RunOptions {
        run_dir: dir,
        startup_timeout: Duration::from_secs(30),
        heartbeat_ms: 100,
        stop_grace: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        hang_after: Duration::from_secs(10),
        show_progress: true,
        agents: None,
        promise: None,
    };
    // Watch the live metrics: each stage's counters once it has served its warm-up items
    // (one batch of GPU tasks, WARMUP_ITEMS of the others) and is idle, so that the
    // first runs (model first-run costs, cold caches) stay out of the profile.
    let live = Arc::new(Mutex::new(LiveApp::default()));
    let finished = Arc::new(AtomicBool::new(false));
    let warmup: BTreeMap<String, u64> = app
        .tasks
        .iter()
        .map(|t| {
            let w = if t.kind == TaskKind::Gpu {
                u64::from(d.batch)
            } else {
                WARMUP_ITEMS
            };
            (t.name.clone(), w)
        })
        .collect();
    let watcher = {
        let (live, finished, warmup) = (live.clone(), finished.clone(), warmup.clone());
        std::thread::spawn(move || {
            let mut snaps: BTreeMap<String, TaskTimes> = BTreeMap::new();
            while !finished.load(Ordering::Relaxed) {
                if let Ok(app) = live.lock() {
                    for st in &app.stages {
                        let m = &st.metrics;
                        let idle = m.queue_depth == 0 && m.items_in == m.items_out;
                        let warm = warmup.get(&st.task).copied().unwrap_or(WARMUP_ITEMS);
                        if idle && m.items_out >= warm && !snaps.contains_key(&st.label) {
                            snaps.insert(st.label.clone(), TaskTimes::of(m));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            snaps
        })
    };
    let outcome = run_app(
        &variant,
        &opts,
        Arc::new(AtomicBool::new(false)),
        Some(live),
    );
    finished.store(true, Ordering::Relaxed);
    let snaps = watcher.join().unwrap_or_default();
    let outcome = outcome?;
    if let Some(e) = outcome.error {
        anyhow::bail!("profiling run ({label}) failed: {e}");
    }
    let mut out = Measured::new();
    for t in &app.tasks {
        let prefix = format!("{}#", t.name);
        let times = outcome
            .summary
            .stages
            .iter()
            .filter(|(l, _)| l.starts_with(&prefix))
            .fold(TaskTimes::default(), |sum, (l, m)| {
                let all = TaskTimes::of(m);
                // After the warm-up when it left items to measure, else everything.
                match snaps.get(l) {
                    Some(&w) if all.items > w.items && all.busy_s >= w.busy_s => {
                        sum.plus(all.minus(w))
                    }
                    _ => sum.plus(all),
                }
            });
        out.insert(t.name.clone(), times);
    }
    let mut stays: BTreeMap<String, protocol::messages::StayStats> = BTreeMap::new();
    for st in outcome.summary.tails.iter().flat_map(|t| &t.stays) {
        if let Some(task) = app.tasks.get(st.stage.index()) {
            stays
                .entry(task.name.clone())
                .or_insert_with(|| protocol::messages::StayStats::new(st.stage))
                .merge(st);
        }
    }
    Ok(RunMeasures { times: out, stays })
}

/// Path loadings (`smart::path_loadings`) of the tasks whose stays were measured.
fn loadings(stays: &BTreeMap<String, protocol::messages::StayStats>) -> BTreeMap<String, f64> {
    let mut names = Vec::new();
    let mut moments = Vec::new();
    for (task, st) in stays {
        let Some(corr_rest) = st.correlation() else {
            continue;
        };
        let (sd, rest_sd) = st.std_devs();
        names.push(task.clone());
        moments.push(smart::StayMoments {
            sd,
            corr_rest,
            rest_sd,
        });
    }
    names
        .into_iter()
        .zip(smart::path_loadings(&moments))
        .collect()
}

/// Measure every task at each batch size and store the profiles.
///
/// A first free-running run (batch 1) gives the app's busy seconds per item S; every
/// measuring run then paces the sources at [`PROFILE_LOAD`] ÷ S items/s, so that the busy
/// time of a stage is its own service time and not time spent waiting for a core (the
/// planner models that contention itself). GPU tasks are measured at each batch size
/// (busy time per batch: the agent's time for it); CPU tasks, heads and tails in the
/// batch-1 run.
pub fn profile(loaded: &LoadedApp, batches: &[u32], items: u64) -> anyhow::Result<Profiles> {
    let app = &loaded.spec;
    let has_gpu = app.tasks.iter().any(|t| t.kind == TaskKind::Gpu);
    let mut batches: Vec<u32> = if has_gpu { batches.to_vec() } else { vec![1] };
    if !batches.contains(&1) {
        batches.insert(0, 1);
    }
    let items = items.max(1);
    // The runs go beside the profiles (not into the supervisor's runtime folder, which
    // goes when it exits), so that a failed profile keeps what its error points to.
    let base = profile_path(loaded)
        .parent()
        .map_or_else(|| PathBuf::from("profiles"), |d| d.to_path_buf())
        .join(format!("runs-{}-{}", app.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let measured = measure(loaded, &batches, items, &base);
    let Measures {
        points,
        cvs,
        loadings,
    } = match measured {
        Ok(m) => {
            let _ = std::fs::remove_dir_all(&base);
            m
        }
        Err(e) if base.exists() => {
            return Err(e.context(format!(
                "profiling app '{}' failed; its runs (logs, summaries) are kept in {}",
                app.name,
                base.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let mut profiles = Profiles::new(&machine());
    profiles.tasks_digest = Some(tasks_digest(app));
    let store = crate::plan::models::locate(app, &loaded.file)?;
    for (task, pts) in points {
        let mut p = TaskProfile::new(&task, &pts);
        p.cv = cvs.get(&task).copied();
        p.path_loading = loadings.get(&task).copied();
        match app
            .tasks
            .iter()
            .find(|t| t.name == task && t.kind == TaskKind::Gpu)
        {
            // The model it keeps in the agent, at its file's size (the planner's device
            // memory; `plan::device_memory` counts the same on the node's ledger).
            Some(t) => {
                let name = t.params.get("model").and_then(|v| v.as_str());
                if let (Some(name), Some(store)) = (name, &store) {
                    p.model_bytes = store.model_file(name)?.1;
                    p.model = Some(name.to_string());
                }
            }
            None => p.max_batch = Some(1),
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

/// The profile points (batch, bucket, seconds per batch) of every task, the coefficient
/// of variation of its service time where enough services were seen, and how much of
/// that it shares with the rest of the items' paths (from the batch-1 run's tails).
fn measure(
    loaded: &LoadedApp,
    batches: &[u32],
    items: u64,
    base: &Path,
) -> anyhow::Result<Measures> {
    let app = &loaded.spec;
    let free = run_variant(
        loaded,
        Drive {
            batch: 1,
            items,
            fps: 0.0,
        },
        base,
    )?;
    let per_item: f64 = free
        .times
        .values()
        .filter(|t| t.items > 0)
        .map(|t| t.busy_s / t.items as f64)
        .sum();
    let fps = if per_item > 0.0 {
        PROFILE_LOAD / per_item
    } else {
        0.0
    };
    let mut points = Points::new();
    let mut cvs = BTreeMap::new();
    let mut loads = BTreeMap::new();
    for &b in batches {
        // Whole batches, at least three of them besides the warm-up batch.
        let n = items.max(4 * u64::from(b)).div_ceil(u64::from(b)) * u64::from(b);
        let measured = run_variant(
            loaded,
            Drive {
                batch: b,
                items: n,
                fps,
            },
            base,
        )?;
        if b == 1 {
            loads = loadings(&measured.stays);
        }
        for t in &app.tasks {
            let Some(&times) = measured.times.get(&t.name) else {
                continue;
            };
            let (busy, n_items) = (times.busy_s, times.items);
            if n_items == 0 {
                continue;
            }
            // The spread of service times, from the batch-1 run (paced, so mostly the
            // task's own: frames that differ, such as the number of face candidates).
            if b == 1 {
                if let Some(cv) = times.cv() {
                    cvs.insert(t.name.clone(), cv);
                }
            }
            let point = if t.kind == TaskKind::Gpu {
                (b, busy / (n_items as f64 / f64::from(b)).max(1.0))
            } else if b == 1 {
                (1, busy / n_items as f64)
            } else {
                continue;
            };
            points
                .entry(t.name.clone())
                .or_default()
                .push((point.0, 0, point.1));
        }
    }
    Ok(Measures {
        points,
        cvs,
        loadings: loads,
    })
}

/// What `measure` found: profile points, and per task its cv and path loading.
struct Measures {
    points: Points,
    cvs: BTreeMap<String, f64>,
    loadings: BTreeMap<String, f64>,
}

/// Print the fitted t = α + β·b of every task.
pub fn print_fits(app: &AppSpec, profiles: &Profiles) {
    println!(
        "{:<16} {:>10} {:>10} {:>6} {:>5} {:>6}  points (batch: s/batch)",
        "task", "α (ms)", "β (ms)", "r²", "cv", "shared"
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
        let cv = p.cv.map_or("-".to_string(), |c| format!("{c:.2}"));
        let shared = p
            .path_loading
            .map_or("-".to_string(), |l| format!("{l:.2}"));
        match p.fits().ok().and_then(|f| f.into_values().next()) {
            Some(f) => println!(
                "{:<16} {:>10.3} {:>10.3} {:>6.3} {:>5} {:>6}  {}",
                t.name,
                f.alpha * 1e3,
                f.beta * 1e3,
                f.r2,
                cv,
                shared,
                pts.join(", ")
            ),
            None => println!(
                "{:<16} {:>10} {:>10} {:>6} {:>5} {:>6}  {}",
                t.name,
                "-",
                "-",
                "-",
                cv,
                shared,
                pts.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(durations_ms: &[f64]) -> TaskTimes {
        TaskTimes {
            busy_s: durations_ms.iter().sum::<f64>() / 1e3,
            items: durations_ms.len() as u64,
            services: durations_ms.len() as u64,
            busy_sq_ms2: durations_ms.iter().map(|d| d * d).sum(),
        }
    }

    #[test]
    fn the_spread_of_service_times_is_their_std_dev_over_their_mean() {
        // 10 and 30 ms alternately: mean 20, std dev 10.
        let t = times(&[10.0, 30.0, 10.0, 30.0, 10.0, 30.0, 10.0, 30.0]);
        assert!((t.cv().expect("cv") - 0.5).abs() < 1e-9);
        // All alike: no spread.
        assert!(times(&[7.0; 12]).cv().expect("cv") < 1e-6);
        // Too few services to tell.
        assert_eq!(times(&[10.0, 30.0]).cv(), None);
        // The warm-up's services are left out.
        let all = times(&[500.0, 10.0, 30.0, 10.0, 30.0, 10.0, 30.0, 10.0, 30.0]);
        let warm = times(&[500.0]);
        assert!((all.minus(warm).cv().expect("cv") - 0.5).abs() < 1e-9);
    }
}
