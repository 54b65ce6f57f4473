//! The analytic queueing model: for a DAG, its profiles and one candidate configuration
//! per stage, predict each stage's capacity, utilisation, batch fill, queueing and
//! service time, and along every head-to-tail path the latency distribution (mean, p50,
//! p99, jitter), plus cores and device memory used.
//!
//! Choices (checked against `sim.rs`, see its tests):
//! - Arrivals: each head offers `rate / heads` items/s, Poisson or periodic. A stage with
//!   several inputs joins them by (source, seq), so it sees the summed rate of the heads
//!   that reach it. Replicas each have their own inbox, fed round robin, so one replica
//!   sees λ/c with the arrival variability divided by c (Poisson → Erlang-c).
//! - Batching is the stages' greedy batcher: take the first item, then wait at most
//!   `max_wait` for the rest. At light load a batch holds b' = min(b, 1 + λ_r·w) items and
//!   its first item waits F = (b' − 1)/λ_r (uniform over the batch). Queueing of batches is
//!   Kingman's GI/G/1 approximation W = ρ/(1−ρ)·(c_a² + c_s²)/2·T (c_a² of batches =
//!   c_a²/b'), which is exact for M/M/1 and good for the M/D/1-like stages we see. When
//!   larger batches are allowed the batcher absorbs load: if λ_r·t(b)/b < 1 the server may
//!   run "saturated", batch x = λ_r·α/(1 − λ_r·β) items, and an item waits the residual of
//!   the batch in service then its own: U[0, T] + T. We take whichever regime is faster.
//! - GPU stages all run on one device: their queueing uses the device's total
//!   utilisation and its load-weighted mean batch time. A CUDA device runs one batch at
//!   a time; on `cpu:0` the agent runs `agent_executors` batches at once (one session
//!   per executor thread), modelled as that many servers: the device carries that many
//!   times the load, its utilisation and saturated cycle are divided among them, and its
//!   CPU work is that many processes of the sessions' threads.
//! - An overloaded app (some stage's capacity below its offered rate) is throttled to its
//!   bottleneck: request-guarantee sources slow down, best-effort sheds the excess; the
//!   bottleneck's queue is then full, so its items wait `queue_bound` items' worth.
//!   Best-effort also loses items when a stable queue overflows (M/M/1/K blocking).
//! - Path latency: stage sojourns are independent; the sum is a shifted gamma matched to
//!   its mean and variance (quantiles by Wilson–Hilferty), but never below the tail of its
//!   single worst queue, nor of the wait for the shared cores (all the app's CPU work as
//!   one GI/G/c queue on the granted cores, when processes outnumber them). Jitter is the path's standard deviation. Head service is before
//!   the head's timestamp and not counted; tails are.
//! - Cores: every process costs its busy fraction (offered rate × service time per item at
//!   its effective batch), times its threads, at most one per thread: a CPU stage per
//!   replica, heads and tails likewise; GPU stages' processes only wait, their batches are
//!   the agent's work (on `cpu:0` the device time is CPU time on the agent's intra-op
//!   threads; with CUDA its one host thread waits on the device). A plan fits when the sum
//!   is within [`CPU_HEADROOM`] of the granted cores.
//! - Contention: the processes share the granted cores, so each one's service times are
//!   stretched by the slowdown `contention.rs` derives from everyone's busy fractions;
//!   the queueing above runs on the stretched times, and the app's capacity is also
//!   bounded by cores ÷ CPU seconds per item. The slowdowns depend on the effective
//!   batches, so the model is evaluated again with them until they settle.
//!   Memory: the distinct models of the GPU stages (resident in the agent).

use super::contention::Slowdown;
use super::dag::Dag;
use super::profile::{Fit, ProfileError, Profiles};
use super::qos::Qos;
use super::queueing::{eval_stage, StageEval};
use protocol::spec::{AppSpec, TaskKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    pub batch: u32,
    pub max_wait_ms: f64,
    pub replicas: u32,
    pub threads: u32,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            batch: 1,
            max_wait_ms: 0.0,
            replicas: 1,
            threads: 1,
        }
    }
}

/// What the app may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resources {
    pub cpu_cores: f64,
    /// A CUDA device runs the GPU stages (else the agent is `cpu:0`).
    pub gpu: bool,
    pub device_memory_bytes: Option<u64>,
    /// Intra-op threads of the agent's sessions on `cpu:0`, runnable at once while it
    /// runs a batch, so that much competition for the cores (0: the GPU stages' own
    /// `threads`).
    pub agent_threads: u32,
    /// Batches the agent runs at once on `cpu:0` (its executor threads, each with its
    /// own sessions; 0 or 1: one at a time). A CUDA device runs one at a time.
    pub agent_executors: u32,
}

impl Resources {
    /// From the app's constraints; absent cores = the machine's.
    pub fn from_app(
        app: &AppSpec,
        machine_cores: u32,
        cuda: bool,
        agent_threads: u32,
        agent_executors: u32,
    ) -> Self {
        Resources {
            cpu_cores: app
                .constraints
                .cpu_cores
                .unwrap_or(f64::from(machine_cores.max(1))),
            gpu: cuda,
            device_memory_bytes: app.constraints.gpus.first().map(|g| g.memory_mb << 20),
            agent_threads,
            agent_executors,
        }
    }

    /// Batches the device runs at once: the agent's executors on `cpu:0`, one on CUDA.
    pub(crate) fn device_executors(&self) -> u32 {
        if self.gpu {
            1
        } else {
            self.agent_executors.max(1)
        }
    }

    /// Threads the agent's work keeps runnable for a batch of a GPU stage set to
    /// `stage_threads` (one host thread on a CUDA device).
    pub(crate) fn device_threads(&self, stage_threads: u32) -> u32 {
        if self.gpu {
            1
        } else if self.agent_threads > 0 {
            self.agent_threads
        } else {
            stage_threads.max(1)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrivals {
    Poisson,
    Periodic,
}

/// The offered load.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Items per second offered by all heads together.
    pub rate: f64,
    pub arrivals: Arrivals,
    /// Items an inbox holds before best-effort sheds (or guarantee blocks).
    pub queue_bound: u32,
    /// Best-effort: shed on a full queue (and count the loss).
    pub shed: bool,
    /// Input-size bucket per task (absent: the largest profiled).
    pub buckets: BTreeMap<String, u64>,
}

impl Workload {
    pub fn new(rate: f64) -> Self {
        Workload {
            rate,
            arrivals: Arrivals::Poisson,
            queue_bound: 8,
            shed: false,
            buckets: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Dag(#[from] super::dag::DagError),
    #[error("{expected} stage configs expected, {got} given")]
    ConfigCount { expected: usize, got: usize },
    #[error("the offered rate must be positive and finite, not {0}")]
    Rate(f64),
}

/// A stage's profile as the model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageProfile {
    pub fit: Fit,
    /// Measured (batch, seconds) points, by batch: with two or more, service times are
    /// interpolated between them (and extended along the end segments) rather than
    /// read off the straight-line fit, which misses curved profiles.
    pub curve: Vec<(f64, f64)>,
    pub cv: f64,
    /// Log-scale standard deviation of the part of the service time's variability that an
    /// item shares with its other stages (path loading × the profile's log-scale spread);
    /// contention (`slowed`) adds independent variability only.
    pub shared_sigma: f64,
    pub parallel_fraction: f64,
    pub batch_limit: u32,
    pub model: Option<(String, u64)>,
}

impl StageProfile {
    /// The same profile with service times stretched by contention: by `s.mean` on
    /// average, and more variable by the factor's own variability.
    pub(crate) fn slowed(&self, s: &Slowdown) -> StageProfile {
        let f = s.mean;
        let mut p = self.clone();
        p.cv = ((1.0 + self.cv * self.cv) * (1.0 + s.scv) - 1.0)
            .max(0.0)
            .sqrt();
        p.fit.alpha *= f;
        p.fit.beta *= f;
        for pt in &mut p.curve {
            pt.1 *= f;
        }
        p
    }

    /// Seconds for a batch of `b` items with one thread.
    fn base(&self, b: f64) -> f64 {
        let c = &self.curve;
        if c.len() < 2 {
            return self.fit.at(b);
        }
        let k = c
            .windows(2)
            .position(|w| b <= w[1].0)
            .unwrap_or(c.len() - 2);
        let ((b0, t0), (b1, t1)) = (c[k], c[k + 1]);
        let slope = if b1 > b0 { (t1 - t0) / (b1 - b0) } else { 0.0 };
        (t0 + slope * (b - b0)).max(1e-6)
    }

    /// The batch a greedy batcher settles at when it serves whatever arrived during the
    /// previous batch: the smallest x in [lo, hi] with x = λ·t(x) (hi when the server
    /// cannot keep up even with full batches).
    pub fn saturated_batch(&self, lam: f64, threads: u32, lo: f64, hi: f64) -> f64 {
        let g = |x: f64| x - lam * self.t(x, threads);
        if g(lo) >= 0.0 {
            return lo;
        }
        if g(hi) < 0.0 {
            return hi;
        }
        let (mut a, mut b) = (lo, hi);
        for _ in 0..40 {
            let m = 0.5 * (a + b);
            if g(m) >= 0.0 {
                b = m;
            } else {
                a = m;
            }
        }
        b
    }

    /// Seconds for a batch of `b` items with `threads` intra-op threads.
    pub fn t(&self, b: f64, threads: u32) -> f64 {
        self.base(b) * self.thread_factor(threads)
    }

    /// Amdahl factor of `threads` intra-op threads.
    pub fn thread_factor(&self, threads: u32) -> f64 {
        let p = self.parallel_fraction.clamp(0.0, 1.0);
        (1.0 - p) + p / f64::from(threads.max(1))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePrediction {
    pub task: String,
    /// Items/s the stage can carry with full batches.
    pub capacity: f64,
    /// Items/s offered to it (after throttling an overloaded app).
    pub offered: f64,
    pub utilisation: f64,
    pub batch_effective: f64,
    pub fill_ms: f64,
    pub queue_ms: f64,
    pub service_ms: f64,
    pub mean_ms: f64,
    pub std_ms: f64,
    /// Factor by which CPU contention stretches its service times (1: none).
    pub slowdown: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathPrediction {
    pub stages: Vec<String>,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub jitter_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub stages: Vec<StagePrediction>,
    pub paths: Vec<PathPrediction>,
    pub qos: Qos,
    /// Most items/s the app carries in this configuration.
    pub capacity: f64,
    /// Cores used: the processes' busy fractions (each at most one per thread) summed.
    pub cores: f64,
    pub memory_bytes: u64,
    pub device_utilisation: Option<f64>,
}

/// Share of the granted cores a plan may fill with its processes' busy fractions: the
/// rest is for what the model does not see (the supervisor, video decoding in ffmpeg,
/// the kernel) and for its own error.
pub const CPU_HEADROOM: f64 = 0.9;
/// Most re-evaluations with the slowdowns of the previous one.
const CONTENTION_PASSES: usize = 4;

/// The model of one app on one machine under one workload.
#[derive(Debug, Clone)]
pub struct Model {
    pub dag: Dag,
    pub profiles: Vec<Option<StageProfile>>,
    pub resources: Resources,
    pub workload: Workload,
}

impl Model {
    pub fn new(
        app: &AppSpec,
        profiles: &Profiles,
        resources: Resources,
        workload: Workload,
    ) -> Result<Model, ModelError> {
        if !(workload.rate.is_finite() && workload.rate > 0.0) {
            return Err(ModelError::Rate(workload.rate));
        }
        let dag = Dag::from_app(app)?;
        let mut profs = Vec::with_capacity(dag.stages.len());
        for s in &dag.stages {
            let p = match profiles.get(&s.name) {
                Some(p) => p,
                None if s.planned() => {
                    return Err(ProfileError::MissingTask(s.name.clone()).into());
                }
                None => {
                    profs.push(None);
                    continue;
                }
            };
            let bucket = workload.buckets.get(&s.name).copied();
            profs.push(Some(StageProfile {
                fit: p.fit_for(bucket)?,
                curve: p.curve_for(bucket)?,
                cv: p.cv(),
                shared_sigma: p.path_loading.unwrap_or(0.0).clamp(0.0, 1.0)
                    * (1.0 + p.cv() * p.cv()).ln().sqrt(),
                parallel_fraction: p.parallel_fraction,
                batch_limit: p.batch_limit(),
                model: (p.model_bytes > 0 || p.model.is_some()).then(|| {
                    (
                        p.model.clone().unwrap_or_else(|| s.name.clone()),
                        p.model_bytes,
                    )
                }),
            }));
        }
        Ok(Model {
            dag,
            profiles: profs,
            resources,
            workload,
        })
    }

    /// The configuration the user fixed, else batch 1 and one replica.
    pub fn default_configs(&self) -> Vec<StageConfig> {
        self.dag
            .stages
            .iter()
            .map(|s| {
                let (batch, max_wait_ms) = s.fixed_batch.unwrap_or((1, 0.0));
                StageConfig {
                    batch,
                    max_wait_ms,
                    replicas: s.fixed_replicas.unwrap_or(1),
                    threads: 1,
                }
            })
            .collect()
    }

    fn per_head_rate(&self) -> f64 {
        self.workload.rate / self.dag.heads().len().max(1) as f64
    }

    /// Items/s offered to stage `i` at full rate.
    pub fn stage_rate(&self, i: usize) -> f64 {
        self.per_head_rate() * self.dag.heads_of[i].len() as f64
    }

    pub(crate) fn is_device(&self, i: usize) -> bool {
        self.dag.stages[i].kind == TaskKind::Gpu
    }

    /// Stage `i` alone under its full offered rate (Poisson input, own server): for the
    /// planner's per-stage pruning. `None` for unprofiled stages.
    pub(crate) fn stage_alone(&self, i: usize, c: &StageConfig) -> Option<StageEval> {
        let p = self.profiles.get(i)?.as_ref()?;
        let bound = f64::from(self.workload.queue_bound.max(1));
        Some(eval_stage(
            p,
            c,
            self.stage_rate(i),
            1.0,
            None,
            false,
            bound,
        ))
    }

    /// Predicts the QoS and resources of `cfg` (one config per stage, in task order):
    /// the queueing model, with every process's service times stretched by the CPU
    /// contention its busy fraction and the others' cause on the granted cores
    /// (`contention.rs`), evaluated again until the slowdowns settle.
    pub fn predict(&self, cfg: &[StageConfig]) -> Result<Prediction, ModelError> {
        let n = self.dag.stages.len();
        if cfg.len() != n {
            return Err(ModelError::ConfigCount {
                expected: n,
                got: cfg.len(),
            });
        }
        let mut slow = vec![Slowdown::NONE; n];
        let mut pred = self.evaluate(cfg, &self.profiles, &slow);
        for _ in 0..CONTENTION_PASSES {
            let next = self.slowdowns(cfg, &pred.stages);
            if next
                .iter()
                .zip(&slow)
                .all(|(a, b)| (a.mean - b.mean).abs() <= 1e-6)
            {
                break;
            }
            slow = next;
            let profs: Vec<Option<StageProfile>> = self
                .profiles
                .iter()
                .zip(&slow)
                .map(|(p, f)| p.as_ref().map(|p| p.slowed(f)))
                .collect();
            pred = self.evaluate(cfg, &profs, &slow);
        }
        Ok(pred)
    }

    /// Whether a prediction's busy fractions fit the grant (with [`CPU_HEADROOM`]) and its
    /// models the device memory.
    pub fn fits(&self, pred: &Prediction) -> bool {
        pred.cores <= self.resources.cpu_cores * CPU_HEADROOM + 1e-9
            && self
                .resources
                .device_memory_bytes
                .is_none_or(|m| pred.memory_bytes <= m)
    }
}
