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
//! - GPU stages all run on one device (the GPU agent serialises batches): their queueing
//!   uses the device's total utilisation and its load-weighted mean batch time.
//! - An overloaded app (some stage's capacity below its offered rate) is throttled to its
//!   bottleneck: request-guarantee sources slow down, best-effort sheds the excess; the
//!   bottleneck's queue is then full, so its items wait `queue_bound` items' worth.
//!   Best-effort also loses items when a stable queue overflows (M/M/1/K blocking).
//! - Path latency: stage sojourns are independent; the sum is a shifted gamma matched to
//!   its mean and variance (quantiles by Wilson–Hilferty), but never below the tail of its
//!   single worst queue. Jitter is the path's standard deviation. Head service is before
//!   the head's timestamp and not counted; tails are.
//! - Cores: a CPU stage reserves replicas × threads cores. GPU stages cost no core of their
//!   own; the agent costs its intra-op threads on `cpu:0` (no CUDA: the device time is CPU
//!   time) and one core with CUDA. Heads and tails (not planned) cost their busy fraction.
//!   Memory: the distinct models of the GPU stages (resident in the agent).

use super::dag::Dag;
use super::profile::{Fit, ProfileError, Profiles};
use super::qos::Qos;
use super::queueing::{eval_stage, path_prediction, Sojourn, StageEval};
use protocol::spec::{AppSpec, TaskKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
}

impl Resources {
    /// From the app's constraints; absent cores = the machine's.
    pub fn from_app(app: &AppSpec, machine_cores: u32, cuda: bool) -> Self {
        Resources {
            cpu_cores: app
                .constraints
                .cpu_cores
                .unwrap_or(f64::from(machine_cores.max(1))),
            gpu: cuda,
            device_memory_bytes: app.constraints.gpus.first().map(|g| g.memory_mb << 20),
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
    pub cv: f64,
    pub parallel_fraction: f64,
    pub batch_limit: u32,
    pub model: Option<(String, u64)>,
}

impl StageProfile {
    /// Seconds for a batch of `b` items with `threads` intra-op threads.
    pub fn t(&self, b: f64, threads: u32) -> f64 {
        self.fit.at(b) * self.thread_factor(threads)
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
    pub cores: f64,
    pub memory_bytes: u64,
    pub device_utilisation: Option<f64>,
}

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
                cv: p.cv(),
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

    fn is_device(&self, i: usize) -> bool {
        self.dag.stages[i].kind == TaskKind::Gpu
    }

    /// Cores and device memory of a configuration (independent of the load, except the
    /// busy fraction of heads and tails).
    fn resources_used(&self, cfg: &[StageConfig], util: &[f64]) -> (f64, u64) {
        let mut cores = 0.0;
        let mut agent_threads = 0u32;
        let mut models: BTreeSet<(String, u64)> = BTreeSet::new();
        for (i, s) in self.dag.stages.iter().enumerate() {
            match s.kind {
                TaskKind::Cpu => cores += f64::from(cfg[i].replicas * cfg[i].threads.max(1)),
                TaskKind::Gpu => {
                    agent_threads = agent_threads.max(cfg[i].threads.max(1));
                    if let Some(Some(p)) = self.profiles.get(i) {
                        if let Some(m) = &p.model {
                            models.insert(m.clone());
                        }
                    }
                }
                TaskKind::Head | TaskKind::Tail => {
                    cores += util[i].min(1.0) * f64::from(cfg[i].replicas.max(1))
                }
            }
        }
        if agent_threads > 0 {
            cores += if self.resources.gpu {
                1.0
            } else {
                f64::from(agent_threads)
            };
        }
        (cores, models.iter().map(|m| m.1).sum())
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

    /// Predicts the QoS and resources of `cfg` (one config per stage, in task order).
    pub fn predict(&self, cfg: &[StageConfig]) -> Result<Prediction, ModelError> {
        let n = self.dag.stages.len();
        if cfg.len() != n {
            return Err(ModelError::ConfigCount {
                expected: n,
                got: cfg.len(),
            });
        }
        let total = self.workload.rate;
        // Capacity of each stage, as the largest total offered rate it carries.
        let mut capacity = vec![f64::INFINITY; n];
        let mut dev_load_full = 0.0; // device seconds per offered item, full batches
        for i in 0..n {
            let Some(p) = &self.profiles[i] else { continue };
            let c = &cfg[i];
            let b = f64::from(c.batch.max(1));
            let share = self.stage_rate(i) / total;
            let per_item = p.t(b, c.threads) / b;
            if self.is_device(i) {
                dev_load_full += share * per_item;
                capacity[i] = b / p.t(b, c.threads);
            } else {
                let reps = if self.dag.stages[i].kind == TaskKind::Head {
                    1.0
                } else {
                    f64::from(c.replicas.max(1))
                };
                capacity[i] = reps * b / p.t(b, c.threads);
            }
        }
        let mut app_cap = f64::INFINITY;
        for (i, cap) in capacity.iter().enumerate() {
            if cap.is_finite() && !self.is_device(i) {
                app_cap = app_cap.min(cap * total / self.stage_rate(i));
            }
        }
        if dev_load_full > 0.0 {
            app_cap = app_cap.min(1.0 / dev_load_full);
        }
        let scale = if app_cap < total {
            app_cap / total
        } else {
            1.0
        };
        let overloaded = scale < 1.0;

        // Light-load batch and utilisation per stage, then the device's totals.
        let ca_head = match self.workload.arrivals {
            Arrivals::Poisson => 1.0,
            Arrivals::Periodic => 0.0,
        };
        let mut light = vec![(1.0f64, 0.0f64); n]; // (b', ρ per replica)
        let mut dev_rho = 0.0;
        let mut dev_t_weighted = 0.0;
        for i in 0..n {
            let Some(p) = &self.profiles[i] else { continue };
            let c = &cfg[i];
            let lam_r = self.stage_rate(i) * scale / f64::from(c.replicas.max(1));
            let b = f64::from(c.batch.max(1));
            let w = c.max_wait_ms.max(0.0) / 1000.0;
            let bl = b.min(1.0 + lam_r * w).max(1.0);
            let t = p.t(bl, c.threads);
            let rho = lam_r * t / bl;
            light[i] = (bl, rho);
            if self.is_device(i) {
                let lam_b = lam_r * f64::from(c.replicas.max(1)) / bl;
                dev_rho += lam_b * t;
                dev_t_weighted += lam_b * t * t;
            }
        }
        let dev_t_mean = if dev_rho > 0.0 {
            dev_t_weighted / dev_rho
        } else {
            0.0
        };

        // Saturated device: it cycles through the GPU stages, each taking what arrived in
        // one cycle C = Σ t_g(λ_g·C) (fixed point, batches clamped to their limits).
        let mut cycle = 0.0;
        let dev: Vec<usize> = (0..n)
            .filter(|&i| self.is_device(i) && self.profiles[i].is_some())
            .collect();
        for g in &dev {
            if let Some(p) = &self.profiles[*g] {
                cycle += p.t(light[*g].0, cfg[*g].threads);
            }
        }
        for _ in 0..200 {
            let next: f64 = dev
                .iter()
                .filter_map(|&g| {
                    let p = self.profiles[g].as_ref()?;
                    let c = &cfg[g];
                    let lam_r = self.stage_rate(g) * scale / f64::from(c.replicas.max(1));
                    let x = (lam_r * cycle).clamp(light[g].0, f64::from(c.batch.max(1)));
                    Some(p.t(x, c.threads))
                })
                .sum();
            let done = (next - cycle).abs() <= 1e-12;
            cycle = next;
            if done {
                break;
            }
        }

        let bound = f64::from(self.workload.queue_bound.max(1));
        let mut ca_out = vec![ca_head; n];
        let mut soj = vec![Sojourn::default(); n];
        let mut preds = Vec::with_capacity(n);
        let mut util = vec![0.0; n];
        let mut dev_busy = 0.0; // device utilisation at the effective batches
        let mut keep = 1.0; // best-effort: fraction not lost to full queues
        for &i in &self.dag.order {
            let s = &self.dag.stages[i];
            let ca_in = if s.inputs.is_empty() {
                ca_head
            } else {
                s.inputs.iter().map(|&j| ca_out[j]).sum::<f64>() / s.inputs.len() as f64
            };
            let offered = self.stage_rate(i) * scale;
            let mut pred = StagePrediction {
                task: s.name.clone(),
                capacity: capacity[i],
                offered,
                utilisation: 0.0,
                batch_effective: 1.0,
                fill_ms: 0.0,
                queue_ms: 0.0,
                service_ms: 0.0,
                mean_ms: 0.0,
                std_ms: 0.0,
            };
            let Some(p) = &self.profiles[i] else {
                ca_out[i] = ca_in;
                preds.push((i, pred));
                continue;
            };
            let c = &cfg[i];
            let shared = self.is_device(i).then_some((dev_rho, dev_t_mean, cycle));
            let full_rho = offered / f64::from(c.replicas.max(1))
                * p.t(f64::from(c.batch.max(1)), c.threads)
                / f64::from(c.batch.max(1));
            let at_bottleneck = overloaded
                && (full_rho >= 0.999 || (self.is_device(i) && dev_load_full * app_cap >= 0.999));
            let ev = eval_stage(p, c, offered, ca_in, shared, at_bottleneck, bound);
            let mut sj = ev.sojourn;
            let (eff_b, bl, fill) = (ev.batch, ev.light_batch, ev.fill);
            if self.workload.shed {
                keep *= 1.0 - ev.block;
            }
            util[i] = ev.utilisation;
            ca_out[i] = ev.ca_out;
            if self.is_device(i) {
                dev_busy += offered * p.t(eff_b, c.threads) / eff_b;
            }
            if s.kind == TaskKind::Head {
                // Items are stamped as the head emits them.
                ca_out[i] = ca_in;
                sj = Sojourn::default();
            }
            soj[i] = sj;
            pred.utilisation = util[i];
            pred.batch_effective = eff_b;
            pred.service_ms = p.t(eff_b, c.threads) * 1000.0;
            pred.fill_ms = if eff_b > bl { 0.0 } else { fill * 1000.0 };
            pred.mean_ms = sj.mean * 1000.0;
            pred.queue_ms =
                (sj.mean - pred.fill_ms / 2000.0 - p.t(eff_b, c.threads)).max(0.0) * 1000.0;
            pred.std_ms = sj.var.max(0.0).sqrt() * 1000.0;
            preds.push((i, pred));
        }
        preds.sort_by_key(|(i, _)| *i);
        let stages: Vec<StagePrediction> = preds.into_iter().map(|(_, p)| p).collect();

        let paths: Vec<PathPrediction> = self
            .dag
            .paths
            .iter()
            .map(|path| path_prediction(&self.dag, path, &soj))
            .collect();
        let worst = |f: fn(&PathPrediction) -> f64| paths.iter().map(f).fold(0.0, f64::max);
        let (cores, memory_bytes) = self.resources_used(cfg, &util);
        let delivered = total * scale * if self.workload.shed { keep } else { 1.0 };
        let loss_pct = if self.workload.shed {
            (1.0 - delivered / total).max(0.0) * 100.0
        } else {
            0.0
        };
        Ok(Prediction {
            stages,
            qos: Qos {
                throughput_per_s: delivered,
                p50_ms: worst(|p| p.p50_ms),
                p99_ms: worst(|p| p.p99_ms),
                jitter_ms: worst(|p| p.jitter_ms),
                loss_pct,
            },
            paths,
            capacity: app_cap,
            cores,
            memory_bytes,
            device_utilisation: (dev_load_full > 0.0).then_some(dev_busy.min(1.0)),
        })
    }
}
