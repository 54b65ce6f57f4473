//! The static plan of a run: replicas, batching and the shared-memory pool of every
//! stage. Slot sizes come from the largest payload each producing stage can emit,
//! found by following frame sizes down the DAG.

// The room's modules (docs/architecture.md: the rooms and their order).
pub mod app;
pub mod device_memory;
pub mod frame_scale;
#[cfg(test)]
mod fuzz_app_tests;
pub mod ledger;
pub mod memory_check;
pub mod models;
pub mod output_rate;
pub mod preflight;
pub mod profiled_plan;
pub mod readmit;
pub mod smart;
pub mod source_probe;
pub mod tuning;
pub mod user_stage;

use protocol::functions::{self, SlotSize};
use protocol::limits::{LimitError, Limits};
use protocol::spec::{AppSpec, TaskKind};
use protocol::validate::topological_order;
use serde::Serialize;

/// Slots per pool when nothing else says: enough for a few items in flight per hop.
pub const DEFAULT_SLOTS: u32 = 8;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolPlan {
    pub slots: u32,
    pub slot_size: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StagePlan {
    pub task: String,
    pub kind: TaskKind,
    pub function: String,
    /// Replica processes started (live scaling keeps spares up, idle).
    pub replicas: u32,
    /// Replicas that get items at the start (≤ `replicas`).
    pub active: u32,
    pub batch_size: u32,
    pub batch_max_wait_ms: f64,
    pub threads: u32,
    /// The pool each replica writes to (one per replica), if the stage makes payloads.
    pub pool: Option<PoolPlan>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// Indexed like the app's tasks.
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("task '{task}': {detail}")]
    Source { task: String, detail: String },
    #[error("task '{task}': {source}")]
    Limit {
        task: String,
        #[source]
        source: LimitError,
    },
    #[error(transparent)]
    Setting(#[from] LimitError),
    #[error("the app needs {processes} processes (one per replica, plus the GPU agent); at most {max} are allowed (SMARTPIPE_MAX_PROCESSES)")]
    Processes { processes: u64, max: u64 },
}

fn num(task: &protocol::spec::TaskSpec, name: &str) -> u64 {
    task.params.get(name).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The largest payload (bytes) a task emits, given its inputs' largest frames.
fn output_bound(
    app: &AppSpec,
    i: usize,
    frame_bounds: &[Option<(u64, u64)>],
    limits: &Limits,
) -> Result<Option<(u64, u64)>, PlanError> {
    let task = &app.tasks[i];
    let input_max = task
        .inputs
        .iter()
        .filter_map(|n| app.task_index(n).and_then(|j| frame_bounds[j]))
        .max_by_key(|(w, h)| u128::from(*w) * u128::from(*h));
    let source_err = |detail: String| PlanError::Source {
        task: task.name.clone(),
        detail,
    };
    let slot = functions::hints(&task.function).map(|h| h.slot);
    let bound = match slot {
        Some(SlotSize::ParamFrames) => Some((num(task, "width"), num(task, "height"))),
        Some(SlotSize::ParamBytes) => Some((num(task, "bytes"), 1)),
        Some(SlotSize::SourceFrames) => {
            let path = task
                .params
                .get("path")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            Some(
                crate::plan::source_probe::largest_frame(&task.function, path, limits)
                    .map_err(source_err)?,
            )
        }
        _ => match (input_max, crate::plan::frame_scale::of(task)) {
            (Some((w, h)), Some(s)) => Some((w.saturating_mul(s), h.saturating_mul(s))),
            (bound, _) => bound,
        },
    };
    if let (Some((w, h)), true) = (bound, slot != Some(SlotSize::ParamBytes)) {
        limits
            .check_frame("its frames", w, h)
            .map_err(|source| PlanError::Limit {
                task: task.name.clone(),
                source,
            })?;
    }
    Ok(bound)
}

/// Whether a function writes payloads of its own (and so needs a pool).
pub fn makes_payloads(function: &str) -> bool {
    function == protocol::user_stage::PROGRAM_FUNCTION
        || functions::hints(function).is_some_and(|h| h.writes_payloads)
}

/// The smallest side a text detector scales its input up to (PP-OCR det's
/// `limit_type: min`), if the task pre-processes for one.
fn upscale_to(task: &protocol::spec::TaskSpec) -> Option<u64> {
    let model = task.params.get("model").and_then(|v| v.as_str())?;
    model.starts_with("ppocr-det").then_some(736)
}

/// Bytes for one item's payload at a stage whose frames are at most `w`×`h` (without
/// overflow: the caller checks the result against the slot limit).
fn slot_bytes(task: &protocol::spec::TaskSpec, w: u64, h: u64) -> u128 {
    const MIB: u128 = 1 << 20;
    let (w, h) = (u128::from(w), u128::from(h));
    match functions::hints(&task.function).map(|h| h.slot) {
        Some(SlotSize::ParamBytes) => w,
        // f32 tensors of the frame or its pyramid (≤ 2× the frame), never below 16 MiB;
        // a text detector scales small images up first (short side to 736 px).
        Some(SlotSize::ModelInput) => {
            let (mut tw, mut th) = (w, h);
            if let Some(min_side) = upscale_to(task).map(u128::from) {
                let short = w.min(h).max(1);
                if short < min_side {
                    tw = (w * min_side).div_ceil(short);
                    th = (h * min_side).div_ceil(short);
                }
            }
            (24 * (tw + 64) * (th + 64)).max(16 * MIB)
        }
        // Model outputs can outgrow their input (a recogniser's per-step class scores).
        Some(SlotSize::ModelOutput) => {
            task.params
                .get("output_slot_mb")
                .and_then(|v| v.as_u64())
                .map_or(64, u128::from)
                .max(1)
                * MIB
        }
        _ => w * h * 3,
    }
}

/// Slots per pool: model stages hold fewer, larger slots; a stage batching `batch` items
/// needs room for two batches; a consumer collecting batches of `consumer_batch` items
/// holds that many of this pool's slots while it waits, and the producer needs two more
/// to keep going (fewer would stall both until the consumer's max wait runs out).
fn slot_count(function: &str, batch: u32, consumer_batch: u32, slot_size: u64) -> u32 {
    let model_sized =
        |h: functions::Hints| matches!(h.slot, SlotSize::ModelInput | SlotSize::ModelOutput);
    let base = if functions::hints(function).is_some_and(model_sized) {
        4
    } else {
        DEFAULT_SLOTS
    };
    let room = |b: u32, n: u32| b.saturating_mul(n).saturating_add(2);
    // A consumer serving one batch while the next fills holds two batches' slots; give
    // it that where the memory allows (the planning benchmark's P-Net pre-processing
    // waited for slots 60 % of a run with one batch's room), one batch at least.
    let by_memory = u32::try_from(MAX_CONSUMER_POOL_BYTES / slot_size.max(1)).unwrap_or(u32::MAX);
    let both_batches = room(consumer_batch, 2).min(by_memory);
    base.max(room(batch, 2))
        .max(room(consumer_batch, 1))
        .max(both_batches)
}

/// Memory up to which a producer's pool gets room for two of its consumer's batches.
const MAX_CONSUMER_POOL_BYTES: u64 = 256 << 20;

/// The most slots a source's pool gets from [`source_in_flight`], and the most memory.
const MAX_SOURCE_SLOTS: u32 = 64;
const MAX_SOURCE_POOL_BYTES: u64 = 1 << 30;

/// The rate a source is paced at (its `fps` param), if it is paced.
pub fn source_fps(task: &protocol::spec::TaskSpec) -> Option<f64> {
    task.params
        .get("fps")
        .and_then(|v| v.as_f64())
        .filter(|f| *f > 0.0)
}

/// Pace a head at `rate` items per second, as `SetRate` does (its `fps` param).
pub fn pace_head(task: &mut protocol::spec::TaskSpec, rate: f64) {
    task.params.insert("fps".into(), serde_json::json!(rate));
}

/// Items per second per source the app offers: its `request_frequency`, or a head's own
/// `fps` where that is higher (a source paced faster than the declared rate emits at its
/// pace, so the plan, and a request-guarantee app's reservation, must carry that pace).
/// `None` when neither is given: unpaced sources offer what the pipeline takes.
pub fn offered_rate(app: &AppSpec) -> Option<f64> {
    app.tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Head)
        .filter_map(source_fps)
        .chain(app.request_frequency.filter(|r| *r > 0.0))
        .reduce(f64::max)
}

/// Share of the latency quota an overloaded best-effort source's backlog may fill.
pub const OVERLOAD_QUOTA_SHARE: f64 = 0.5;

/// Slots a source needs to keep every item of its rate in flight for as long as the app's
/// latency quota allows (Little's law: a frame stays held until every stage reading it is
/// done), plus the batches its consumers collect: with fewer, a paced source falls behind
/// (request-guarantee) or sheds items that would have met the quota (best-effort). An
/// overloaded best-effort app drains items at the rate its plan carries, not the offered
/// one (`AppSpec::planned_capacity`), half the quota's worth: more in flight would only wait.
/// `None` when the app gives no rate (the head's `fps`, else `request_frequency`) or no
/// latency quota. Capped at [`MAX_SOURCE_SLOTS`] and [`MAX_SOURCE_POOL_BYTES`].
fn source_in_flight(
    app: &AppSpec,
    t: &protocol::spec::TaskSpec,
    consumer_batch: u32,
    slot_size: u64,
) -> Option<u32> {
    let fps = source_fps(t).or(app.request_frequency.filter(|f| *f > 0.0))?;
    let latency_s = app.quota.max_latency_ms? / 1000.0;
    let max = f64::from(MAX_SOURCE_SLOTS);
    let want = match app.planned_capacity.filter(|c| *c < fps) {
        // Overloaded: every slot holds an item that waits its turn at the bottleneck. Half
        // the quota's worth keeps the bottleneck as busy as more would (it needs only its
        // path's latency's worth) and leaves the other half for the plan's capacity being
        // off (measured −11 % on OCR: at 90 % the backlog alone reached the quota, and the
        // stages dropped what was past it; BENCHMARKS.md, Planning, session 5).
        Some(carried) => ((OVERLOAD_QUOTA_SHARE * carried * latency_s)
            .floor()
            .min(max) as u32)
            .max(consumer_batch.saturating_add(2)),
        None => ((fps * latency_s).ceil().min(max) as u32)
            .saturating_add(consumer_batch.saturating_add(2)),
    };
    let by_memory = (MAX_SOURCE_POOL_BYTES / slot_size.max(1)).max(1) as u32;
    Some(want.min(MAX_SOURCE_SLOTS).min(by_memory))
}

/// Plan an app with the user's fixed settings and defaults elsewhere, within the limits
/// of the environment.
pub fn plan(app: &AppSpec) -> Result<Plan, PlanError> {
    plan_with(app, &Limits::from_env()?)
}

/// The pool of a stage that makes payloads of at most `w`×`h`, within `limits`.
fn pool_plan(
    app: &AppSpec,
    t: &protocol::spec::TaskSpec,
    (w, h): (u64, u64),
    batch_size: u32,
    consumer_batch: u32,
    limits: &Limits,
) -> Result<PoolPlan, PlanError> {
    let limit = |source| PlanError::Limit {
        task: t.name.clone(),
        source,
    };
    let wanted = slot_bytes(t, w, h);
    limits.check_slot("one slot", wanted).map_err(limit)?;
    let slot_size = u64::try_from(wanted).unwrap_or(u64::MAX);
    let mut slots = slot_count(&t.function, batch_size, consumer_batch, slot_size);
    if t.kind == TaskKind::Head {
        let in_flight = source_in_flight(app, t, consumer_batch, slot_size);
        slots = slots.max(in_flight.unwrap_or(0));
    }
    let what = format!(
        "its pool ({slots} slots of {})",
        protocol::limits::bytes(wanted)
    );
    limits
        .check_pool(&what, protocol::shm::region_bytes(slots, slot_size, 1))
        .map_err(limit)?;
    Ok(PoolPlan { slots, slot_size })
}

/// Plan an app with the user's fixed settings and defaults elsewhere, within `limits`:
/// every frame, slot and pool is checked before anything is sized from it.
pub fn plan_with(app: &AppSpec, limits: &Limits) -> Result<Plan, PlanError> {
    let mut bounds: Vec<Option<(u64, u64)>> = vec![None; app.tasks.len()];
    for i in topological_order(app) {
        bounds[i] = output_bound(app, i, &bounds, limits)?;
    }
    let stages = app
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let batch_size = t.batch.as_ref().map(|b| b.size).unwrap_or(1);
            // The largest batch any consumer collects from this stage.
            let consumer_batch = app
                .tasks
                .iter()
                .filter(|c| c.inputs.iter().any(|n| n == &t.name))
                .filter_map(|c| c.batch.as_ref().map(|b| b.size))
                .max()
                .unwrap_or(1);
            let makes = makes_payloads(&t.function) || crate::plan::frame_scale::of(t).is_some();
            let pool = match (makes, bounds[i]) {
                (true, Some(frame)) => Some(pool_plan(
                    app,
                    t,
                    frame,
                    batch_size,
                    consumer_batch,
                    limits,
                )?),
                _ => None,
            };
            Ok(StagePlan {
                task: t.name.clone(),
                kind: t.kind,
                function: t.function.clone(),
                replicas: if crate::plan::tuning::scalable(app, i) {
                    crate::plan::tuning::live_replicas(t.replicas.unwrap_or(1))
                } else {
                    t.replicas.unwrap_or(1)
                },
                active: t.replicas.unwrap_or(1),
                batch_size,
                batch_max_wait_ms: t.batch.as_ref().map(|b| b.max_wait_ms).unwrap_or(0.0),
                threads: if t.kind == TaskKind::Gpu {
                    agent_threads(&device())
                } else {
                    1
                },
                pool,
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    let agent = u64::from(app.tasks.iter().any(|t| t.kind == TaskKind::Gpu));
    let processes = stages.iter().map(|s| u64::from(s.replicas)).sum::<u64>() + agent;
    let max = limits
        .max_processes
        .min(u64::from(protocol::shm::MAX_HOLDER_ID));
    if processes > max {
        return Err(PlanError::Processes { processes, max });
    }
    Ok(Plan { stages })
}

/// The device the GPU agent runs on: `$SMARTPIPE_DEVICE` when set, else the first CUDA
/// device when built with `--features cuda` and the driver reports one, else `cpu:0`.
pub fn device() -> String {
    crate::env::appenv::var("SMARTPIPE_DEVICE").unwrap_or_else(|| detected_device().device.clone())
}

/// The device memory the apps of this node may fill with models in its GPU agent, MiB:
/// `$SMARTPIPE_DEVICE_MEMORY_MB` when set (a part of the card, or a limit on `cpu:0`), else
/// the memory of the CUDA device the agent runs on; `None` (not limited) on `cpu:0`.
/// Admission keeps request-guarantee apps' models within it ([`device_memory`]).
pub fn node_device_memory_mb() -> Option<u64> {
    if let Some(v) = crate::env::appenv::var("SMARTPIPE_DEVICE_MEMORY_MB") {
        match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => return Some(n),
            _ => tracing::warn!(
                "SMARTPIPE_DEVICE_MEMORY_MB={v:?} is not a positive whole number of MiB: ignored"
            ),
        }
    }
    let detected = detected_device();
    if device() == detected.device {
        detected.memory_mb
    } else {
        None
    }
}

/// What [`vision::device::detect`] found, asked once per process.
pub fn detected_device() -> &'static vision::device::Detected {
    static DETECTED: std::sync::OnceLock<vision::device::Detected> = std::sync::OnceLock::new();
    DETECTED.get_or_init(vision::device::detect)
}

/// Intra-op threads of each of the agent's sessions on `device`: one. On `cpu:0` the
/// agent uses the cores through its executors instead ([`agent_executors`]): a session
/// at one thread runs MTCNN's small convolutions much faster per core than at two
/// (BENCHMARKS.md, Models: the in-process loop at 1 and 2 threads), and its ORT threads
/// sleep rather than spin when idle, so the CPU stages get a core whenever a run does
/// not use it. On CUDA the kernels run on the device and the thread only serves
/// operators the CUDA provider leaves on the CPU. `SMARTPIPE_AGENT_THREADS` overrides.
pub fn agent_threads(_device: &str) -> u32 {
    env_count("SMARTPIPE_AGENT_THREADS").unwrap_or(1)
}

/// Requests the agent on `device` runs at once, each on its own executor thread with
/// its own sessions: on `cpu:0` one per core of the machine (several models, or one
/// stage's pyramid levels, side by side); on CUDA one (the device runs one batch at a
/// time). `SMARTPIPE_AGENT_EXECUTORS` overrides.
pub fn agent_executors(device: &str) -> u32 {
    if let Some(n) = env_count("SMARTPIPE_AGENT_EXECUTORS") {
        return n;
    }
    if on_cpu_cores(device) {
        available_cores()
    } else {
        1
    }
}

/// Whether the agent on `device` runs its models on the machine's CPU cores (`cpu:0`),
/// not on a CUDA device.
pub fn on_cpu_cores(device: &str) -> bool {
    !device.starts_with("cuda")
}

/// A positive count from the environment variable `name`; none when unset, and none
/// with a warning naming the variable when it is not a positive whole number.
fn env_count(name: &str) -> Option<u32> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            tracing::warn!("{name}={v:?} is not a positive whole number: ignored");
            None
        }
    }
}

/// Cores of this machine.
pub fn available_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Tasks that (transitively) feed `task`.
pub fn ancestors(app: &protocol::spec::AppSpec, task: usize) -> std::collections::BTreeSet<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![task];
    while let Some(t) = todo.pop() {
        for input in &app.tasks[t].inputs {
            if let Some(j) = app.task_index(input) {
                if seen.insert(j) {
                    todo.push(j);
                }
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_has_room_for_its_consumers_batch() {
        // A model stage alone: 4 slots; batching 3 itself: 2·3 + 2; feeding a consumer
        // that batches 8: 8 + 2.
        const MIB: u64 = 1 << 20;
        assert_eq!(slot_count("model.preprocess", 1, 1, 16 * MIB), 4);
        assert_eq!(slot_count("model.inference", 3, 1, 64 * MIB), 8);
        // Two batches of 2 (one served, one filling) and two more: 6.
        assert_eq!(slot_count("model.preprocess", 1, 2, 24 * MIB), 6);
        // Two batches of 8 would take 18 × 24 MiB: as many as 256 MiB hold, 10.
        assert_eq!(slot_count("model.preprocess", 1, 8, 24 * MIB), 10);
        assert_eq!(slot_count("image.resize", 1, 1, MIB), DEFAULT_SLOTS);
        assert_eq!(slot_count("image.resize", 1, 16, MIB), 34);
        // Never fewer than one batch and two, whatever the memory.
        assert_eq!(slot_count("image.resize", 1, 16, 512 * MIB), 18);
    }

    fn paced_source(fps: f64, latency_ms: Option<f64>, width: u32) -> AppSpec {
        let mut app: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "a",
            "tasks": [
                {"name": "src", "kind": "head", "function": "image.gen",
                 "params": {"width": width, "height": 720, "count": 10, "fps": fps}},
                {"name": "out", "kind": "tail", "function": "bench.sink", "inputs": ["src"]}
            ]
        }))
        .expect("app");
        app.quota.max_latency_ms = latency_ms;
        app
    }

    #[test]
    fn a_source_has_slots_for_its_rate_over_the_latency_quota() {
        // 13 frames/s held up to 2 s: 26 in flight, + 2.
        let p = plan(&paced_source(13.0, Some(2000.0), 1280)).expect("plan");
        assert_eq!(p.stages[0].pool.as_ref().map(|x| x.slots), Some(29));
        // Admitted carrying 10 of its 13 frames/s: half of 10 × 2.
        let mut app = paced_source(13.0, Some(2000.0), 1280);
        app.planned_capacity = Some(10.0);
        let p = plan(&app).expect("plan");
        assert_eq!(p.stages[0].pool.as_ref().map(|x| x.slots), Some(10));
        // No latency quota: the default.
        let p = plan(&paced_source(13.0, None, 1280)).expect("plan");
        assert_eq!(
            p.stages[0].pool.as_ref().map(|x| x.slots),
            Some(DEFAULT_SLOTS)
        );
        // Never fewer than the default, never more than 64 slots or 1 GiB.
        let p = plan(&paced_source(1.0, Some(100.0), 1280)).expect("plan");
        assert_eq!(
            p.stages[0].pool.as_ref().map(|x| x.slots),
            Some(DEFAULT_SLOTS)
        );
        let p = plan(&paced_source(500.0, Some(3000.0), 1280)).expect("plan");
        assert_eq!(p.stages[0].pool.as_ref().map(|x| x.slots), Some(64));
        let p = plan(&paced_source(500.0, Some(3000.0), 15360)).expect("plan");
        let pool = p.stages[0].pool.clone().expect("pool");
        assert_eq!(pool.slot_size, 15360 * 720 * 3);
        assert_eq!(pool.slots, 32, "{pool:?}");
    }
}
