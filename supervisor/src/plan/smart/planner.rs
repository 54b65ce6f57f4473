//! The planner: batch size, max wait, replicas and threads per stage for an app's quota
//! within its granted resources, by strategy; and admission control.
//!
//! Cores are busy fractions (see `model.rs`): a plan uses Σ over its processes of rate ×
//! service time per item (at most one core per thread), and fits when that sum is within
//! [`CPU_HEADROOM`] of the granted cores; the model stretches service times by the
//! contention of those processes on the grant.
//!
//! Search. Each planned stage (cpu, gpu) gets candidates: batch ∈ {1, 2, 4, 8, 16} up to
//! its profile's limit, max wait 0 or the time to fill the batch at the offered rate,
//! replicas from 1 to the granted cores, but no more than bring one replica's batch-1
//! load down to an eighth (GPU stages: 1, the device serialises them), threads in powers
//! of two when the profile says threads help (GPU stages on `cpu:0`: the agent's threads,
//! one value for all of them). User-fixed batch or replicas are kept. Candidates that
//! cannot carry the stage's rate are dropped (unless none can), then those dominated by
//! another of the same stage on (cores, threads, mean sojourn, variance, capacity), the
//! capacity clamped to the most the granted cores could carry for the whole app (extra
//! replicas of a light stage buy nothing). Cores are additive over stages, so the product
//! of the remaining sets is enumerated by branch and bound on each stage's least cores
//! (exactly when it is at most [`EXACT_LIMIT`]; larger apps keep each stage's cheapest
//! candidates until it fits), and every complete configuration is predicted with
//! contention.
//!
//! Strategies over the plans that meet the quota within the grant:
//! - `lazy`: fewest cores, then fewest threads (processes), then lowest p99;
//! - `balance`: the lowest p99 among plans using at most [`BALANCE_SHARE`] of the cores
//!   `lazy` leaves free (the headroom a live controller then works in);
//! - `strong`: the highest capacity (items/s it could carry on the granted cores), ties by
//!   lower p99, then fewer cores;
//!
//! each pick checked by the discrete-event simulation (`strategies.rs`).
//!
//! The model is evaluated at the required rate max(quota throughput / 60, request
//! frequency); with neither given, at 1 item/s (lazy = cheapest, strong = most capacity).

use super::model::{
    Arrivals, Model, ModelError, Prediction, Resources, StageConfig, Workload, CPU_HEADROOM,
};
use super::profile::Profiles;
use super::qos::{required_rate, Qos, Shortfall};
use protocol::spec::{AppSpec, ServiceType, Strategy, TaskKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Largest number of whole plans evaluated exactly.
pub const EXACT_LIMIT: usize = 60_000;
/// Cores tried when asking how many an infeasible app would need.
pub const CORES_PROBE: f64 = 64.0;
/// `balance` may spend this share of the cores `lazy` leaves unused (within the headroom).
pub const BALANCE_SHARE: f64 = 0.5;
pub const BATCHES: [u32; 5] = [1, 2, 4, 8, 16];

#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub arrivals: Arrivals,
    pub queue_bound: u32,
    pub buckets: BTreeMap<String, u64>,
    /// Cap on replicas per stage (None: the granted cores).
    pub max_replicas: Option<u32>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            arrivals: Arrivals::Poisson,
            queue_bound: 8,
            buckets: BTreeMap::new(),
            max_replicas: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub strategy: Strategy,
    /// One entry per task, in the app's order.
    pub stages: Vec<(String, StageConfig)>,
    /// The QoS the discrete-event simulation predicts (the analytic model's when none
    /// ran).
    pub predicted: Qos,
    pub cores: f64,
    pub memory_bytes: u64,
    /// How the prediction misses the quota (empty when met; best-effort only).
    pub shortfall: Vec<Shortfall>,
    /// The analytic model's prediction (per stage, per path, its own QoS).
    #[serde(skip)]
    pub prediction: Prediction,
}

/// The plans of the three strategies for one app (`None`: nothing meets the quota).
#[derive(Debug, Clone, PartialEq)]
pub struct Plans {
    pub lazy: Option<Plan>,
    pub balance: Option<Plan>,
    pub strong: Option<Plan>,
    /// Best-effort fallback: most throughput, then lowest p99, within the grant.
    pub best: Option<Plan>,
}

impl Plans {
    pub fn get(&self, s: Strategy) -> Option<&Plan> {
        match s {
            Strategy::Lazy => self.lazy.as_ref(),
            Strategy::Balance => self.balance.as_ref(),
            Strategy::Strong => self.strong.as_ref(),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, (t, c)) in self.stages.iter().enumerate() {
            write!(
                f,
                "{t}: batch {} (wait {:.1} ms), replicas {}, threads {}",
                c.batch, c.max_wait_ms, c.replicas, c.threads
            )?;
            match self.prediction.stages.get(k) {
                Some(s) if s.service_ms > 0.0 => writeln!(
                    f,
                    "; service {:.1} ms (×{:.2} contention), busy {:.0}%, queue {:.1} ms",
                    s.service_ms,
                    s.slowdown,
                    s.utilisation * 100.0,
                    s.queue_ms
                )?,
                _ => writeln!(f)?,
            }
        }
        let q = &self.predicted;
        write!(
            f,
            "predicted: {:.0}/min, p50 {:.1} ms, p99 {:.1} ms, jitter {:.1} ms, loss {:.2}%; {:.2} cores",
            q.throughput_per_s * 60.0,
            q.p50_ms,
            q.p99_ms,
            q.jitter_ms,
            q.loss_pct,
            self.cores,
        )?;
        // Profiles made before they recorded model sizes know none.
        if self.memory_bytes > 0 {
            write!(
                f,
                ", {:.1} MB device memory",
                self.memory_bytes as f64 / 1048576.0
            )?;
        }
        let m = &self.prediction.qos;
        if (m.p99_ms - q.p99_ms).abs() > 0.05
            || (m.throughput_per_s - q.throughput_per_s).abs() > 1e-9
        {
            write!(
                f,
                " (simulated; analytic model: {:.0}/min, p99 {:.1} ms)",
                m.throughput_per_s * 60.0,
                m.p99_ms
            )?;
        }
        if !self.shortfall.is_empty() {
            let misses: Vec<String> = self.shortfall.iter().map(|m| m.to_string()).collect();
            write!(f, "\npredicted shortfall: {}", misses.join(", "))?;
        }
        Ok(())
    }
}

/// One evaluated whole configuration.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    pub(crate) cfg: Vec<StageConfig>,
    pub(crate) pred: Prediction,
    pub(crate) misses: Vec<Shortfall>,
    /// The simulation's QoS, once it checked this configuration.
    pub(crate) simulated: Option<Qos>,
}

pub(crate) struct Search<'a> {
    pub(crate) app: &'a AppSpec,
    pub(crate) model: Model,
    pub(crate) required: Option<f64>,
}

fn pow2_upto(n: u32) -> Vec<u32> {
    let mut v = vec![1];
    while v.last().is_some_and(|&x| x * 2 <= n) {
        let x = v[v.len() - 1] * 2;
        v.push(x);
    }
    v
}

/// One stage candidate with what pruning compares.
#[derive(Debug, Clone, Copy)]
struct Cand {
    cfg: StageConfig,
    /// Cores it uses at the offered rate alone (its effective batch without contention).
    cores: f64,
    /// A lower bound of them whatever the batching regime (for branch and bound).
    least: f64,
    /// Threads it runs (replicas × threads): processes cost memory and start-up.
    threads: u32,
    mean: f64,
    var: f64,
    /// Items/s it carries, clamped to what the cores could ever carry.
    cap: f64,
}

impl Cand {
    fn dominates(&self, a: &Cand) -> bool {
        let le = self.cores <= a.cores + 1e-12
            && self.threads <= a.threads
            && self.mean <= a.mean
            && self.var <= a.var
            && self.cap >= a.cap;
        let lt = self.cores < a.cores - 1e-12
            || self.threads < a.threads
            || self.mean < a.mean
            || self.var < a.var
            || self.cap > a.cap;
        le && lt
    }
}

impl<'a> Search<'a> {
    pub(crate) fn new(
        app: &'a AppSpec,
        profiles: &Profiles,
        resources: Resources,
        opts: &PlanOptions,
    ) -> Result<Self, ModelError> {
        let required = required_rate(&app.quota, crate::plan::offered_rate(app));
        let mut w = Workload::new(required.unwrap_or(1.0));
        w.arrivals = opts.arrivals;
        w.queue_bound = opts.queue_bound;
        w.shed = app.service_type == ServiceType::BestEffort;
        w.buckets = opts.buckets.clone();
        Ok(Search {
            app,
            model: Model::new(app, profiles, resources, w)?,
            required,
        })
    }

    /// Cores stage `i` uses under `c` at its full offered rate with `threads` threads
    /// per busy process (GPU stages: the agent's, 0 with CUDA), at effective batch `at`,
    /// or (`None`) at the cheaper of its light-load and full batches: a lower bound
    /// whatever the batching regime.
    fn stage_cores(&self, i: usize, c: &StageConfig, at: Option<f64>) -> f64 {
        let m = &self.model;
        let Some(Some(p)) = m.profiles.get(i) else {
            return 0.0;
        };
        let kind = m.dag.stages[i].kind;
        let threads = match kind {
            TaskKind::Gpu if m.resources.gpu => return 0.0,
            TaskKind::Cpu | TaskKind::Gpu => f64::from(c.threads.max(1)),
            _ => 1.0,
        };
        let reps = if kind == TaskKind::Head || kind == TaskKind::Gpu {
            1.0
        } else {
            f64::from(c.replicas.max(1))
        };
        let lam_r = m.stage_rate(i) / reps;
        let b = f64::from(c.batch.max(1));
        let bl = b
            .min(1.0 + lam_r * c.max_wait_ms.max(0.0) / 1000.0)
            .max(1.0);
        let per_item = match at {
            Some(x) => p.t(x.max(1.0), c.threads) / x.max(1.0),
            None => (p.t(bl, c.threads) / bl).min(p.t(b, c.threads) / b),
        };
        reps * threads * (lam_r * per_item).min(1.0)
    }

    /// Candidate configs per stage with agent threads `agent`: batch ∈ [`BATCHES`] up to
    /// the profile's limit, max wait 0 or the batch's fill time, replicas from 1 to the
    /// granted cores (no more than bring a replica's batch-1 load to an eighth), threads
    /// in powers of two when the profile says they help; user-fixed values kept.
    fn candidates(&self, agent: u32, opts: &PlanOptions) -> Vec<Vec<Cand>> {
        let m = &self.model;
        let max_units = m.resources.cpu_cores.ceil().max(1.0) as u32;
        let defaults = m.default_configs();
        let raw: Vec<Vec<StageConfig>> = (0..m.dag.stages.len())
            .map(|i| {
                let st = &m.dag.stages[i];
                let Some(p) = (st.planned()).then(|| m.profiles[i].as_ref()).flatten() else {
                    return vec![defaults[i]];
                };
                let gpu = st.kind == TaskKind::Gpu;
                let batches: Vec<(u32, Option<f64>)> = match st.fixed_batch {
                    Some((b, w)) => vec![(b, Some(w))],
                    None => BATCHES
                        .iter()
                        .filter(|&&b| b <= p.batch_limit)
                        .map(|&b| (b, None))
                        .collect(),
                };
                let useful = (8.0 * m.stage_rate(i) * p.t(1.0, 1)).ceil().max(2.0) as u32;
                let max_r = opts
                    .max_replicas
                    .unwrap_or(max_units)
                    .min(max_units)
                    .min(useful)
                    .max(1);
                let replicas: Vec<u32> = match st.fixed_replicas {
                    Some(r) => vec![r],
                    None if gpu => vec![1],
                    None => (1..=max_r).collect(),
                };
                let threads: Vec<u32> = if gpu {
                    vec![agent]
                } else if p.parallel_fraction > 0.0 {
                    pow2_upto(max_units)
                } else {
                    vec![1]
                };
                let mut out = Vec::new();
                for &(b, fixed_w) in &batches {
                    for &r in &replicas {
                        for &k in &threads {
                            if !gpu && r * k > max_units && st.fixed_replicas.is_none() {
                                continue;
                            }
                            let waits = match fixed_w {
                                Some(w) => vec![w],
                                None if b == 1 => vec![0.0],
                                None => {
                                    let lam_r = m.stage_rate(i) / f64::from(r);
                                    vec![0.0, f64::from(b - 1) / lam_r * 1000.0]
                                }
                            };
                            for w in waits {
                                out.push(StageConfig {
                                    batch: b,
                                    max_wait_ms: w,
                                    replicas: r,
                                    threads: k,
                                });
                            }
                        }
                    }
                }
                out
            })
            .collect();
        // No stage ever carries more than the cores allow the whole app (every stage at
        // its cheapest): capacity beyond that is worth nothing.
        let total = m.workload.rate;
        let cpu_per_item: f64 = raw
            .iter()
            .enumerate()
            .map(|(i, cs)| {
                cs.iter()
                    .map(|c| self.stage_cores(i, c, None) / total)
                    .fold(f64::INFINITY, f64::min)
            })
            .filter(|x| x.is_finite())
            .sum();
        let app_bound = if cpu_per_item > 0.0 {
            m.resources.cpu_cores / cpu_per_item
        } else {
            f64::INFINITY
        };
        raw.into_iter()
            .enumerate()
            .map(|(i, cs)| self.prune(i, cs, app_bound))
            .collect()
    }

    /// Scores the candidates of stage `i`, drops those that cannot carry its rate
    /// (unless none can) and those another candidate of the stage dominates.
    fn prune(&self, i: usize, cands: Vec<StageConfig>, app_bound: f64) -> Vec<Cand> {
        let m = &self.model;
        let rate = m.stage_rate(i);
        let bound = app_bound * rate / m.workload.rate;
        let scored: Vec<Cand> = cands
            .into_iter()
            .map(|c| {
                let threads = if m.dag.stages[i].planned() {
                    c.replicas * c.threads.max(1)
                } else {
                    0
                };
                match (
                    m.stage_alone(i, &c),
                    m.profiles.get(i).and_then(|p| p.as_ref()),
                ) {
                    (Some(ev), Some(p)) => {
                        let b = f64::from(c.batch.max(1));
                        let reps = if m.is_device(i) {
                            1.0
                        } else {
                            f64::from(c.replicas.max(1))
                        };
                        let cap = reps * b / p.t(b, c.threads);
                        let least = self.stage_cores(i, &c, None);
                        Cand {
                            cfg: c,
                            cores: self.stage_cores(i, &c, Some(ev.batch)).max(least),
                            least,
                            threads,
                            mean: ev.mean_s(),
                            var: ev.var_s(),
                            cap: cap.min(bound * (1.0 + 1e-9)),
                        }
                    }
                    _ => Cand {
                        cfg: c,
                        cores: 0.0,
                        least: 0.0,
                        threads,
                        mean: 0.0,
                        var: 0.0,
                        cap: f64::INFINITY,
                    },
                }
            })
            .collect();
        let stable: Vec<Cand> = scored
            .iter()
            .filter(|s| s.cap > rate * (1.0 + 1e-9) && s.mean.is_finite())
            .copied()
            .collect();
        let pool = if stable.is_empty() {
            // Nothing carries the rate: keep the most capable (best-effort will shed).
            let best = scored.iter().map(|s| s.cap).fold(0.0, f64::max);
            scored.into_iter().filter(|s| s.cap >= best).collect()
        } else {
            stable
        };
        let mut keep: Vec<Cand> = pool
            .iter()
            .filter(|a| !pool.iter().any(|b| b.dominates(a)))
            .copied()
            .collect();
        keep.sort_by(|a, b| a.cores.total_cmp(&b.cores).then(a.mean.total_cmp(&b.mean)));
        keep
    }

    /// Every whole configuration (exact, or truncated past [`EXACT_LIMIT`]), scored.
    /// With `within_grant`, only those whose cores fit the grant (branch and bound on
    /// each stage's least cores); without, all (a best-effort app throttled to what the
    /// cores carry).
    pub(crate) fn enumerate(
        &self,
        opts: &PlanOptions,
        within_grant: bool,
    ) -> Result<Vec<Scored>, ModelError> {
        let m = &self.model;
        let has_gpu = m.dag.stages.iter().any(|s| s.kind == TaskKind::Gpu);
        let gpu_threads_help = m.dag.stages.iter().zip(&m.profiles).any(|(s, p)| {
            s.kind == TaskKind::Gpu && p.as_ref().is_some_and(|p| p.parallel_fraction > 0.0)
        });
        let agents = if has_gpu && !m.resources.gpu && gpu_threads_help {
            pow2_upto(m.resources.cpu_cores.ceil().max(1.0) as u32)
        } else {
            vec![1]
        };
        let limit = if within_grant {
            m.resources.cpu_cores * CPU_HEADROOM + 1e-9
        } else {
            f64::INFINITY
        };
        let mut out = Vec::new();
        for agent in agents {
            let mut cands = self.candidates(agent, opts);
            while cands.iter().map(|c| c.len().max(1)).product::<usize>() > EXACT_LIMIT {
                // Trim the largest set by its most expensive candidate.
                let Some(k) = (0..cands.len()).max_by_key(|&k| cands[k].len()) else {
                    break;
                };
                if cands[k].len() <= 1 {
                    break;
                }
                cands[k].pop();
            }
            let min_cost: Vec<f64> = cands
                .iter()
                .map(|cs| cs.iter().map(|c| c.least).fold(f64::INFINITY, f64::min))
                .map(|x| if x.is_finite() { x } else { 0.0 })
                .collect();
            let mut cur = Vec::with_capacity(cands.len());
            self.walk(&cands, &min_cost, 0, 0.0, limit, &mut cur, &mut out)?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        cands: &[Vec<Cand>],
        min_cost: &[f64],
        i: usize,
        spent: f64,
        limit: f64,
        cur: &mut Vec<StageConfig>,
        out: &mut Vec<Scored>,
    ) -> Result<(), ModelError> {
        if i == cands.len() {
            let pred = self.model.predict(cur)?;
            if pred.cores <= limit {
                let misses = pred.qos.shortfalls(&self.app.quota, self.required);
                out.push(Scored {
                    cfg: cur.clone(),
                    pred,
                    misses,
                    simulated: None,
                });
            }
            return Ok(());
        }
        let rest: f64 = min_cost[i + 1..].iter().sum();
        for c in &cands[i] {
            if spent + c.least + rest > limit {
                continue;
            }
            cur.push(c.cfg);
            self.walk(cands, min_cost, i + 1, spent + c.least, limit, cur, out)?;
            cur.pop();
        }
        Ok(())
    }

    pub(crate) fn plan_of(&self, s: &Scored, strategy: Strategy) -> Plan {
        Plan {
            strategy,
            stages: self
                .model
                .dag
                .stages
                .iter()
                .zip(&s.cfg)
                .map(|(st, c)| (st.name.clone(), *c))
                .collect(),
            predicted: s.simulated.unwrap_or(s.pred.qos),
            cores: s.pred.cores,
            memory_bytes: s.pred.memory_bytes,
            shortfall: s.misses.clone(),
            prediction: s.pred.clone(),
        }
    }

    /// Threads of the planned stages (replicas × threads): fewer processes first.
    fn threads(&self, s: &Scored) -> u32 {
        self.model
            .dag
            .stages
            .iter()
            .zip(&s.cfg)
            .filter(|(st, _)| st.kind == TaskKind::Cpu)
            .map(|(_, c)| c.replicas * c.threads.max(1))
            .sum()
    }

    /// The lazy order's key (see [`by_key`]): fewest cores (equal within a millionth),
    /// then fewest threads, then lowest p99.
    pub(crate) fn lazy_key(&self, s: &Scored) -> [f64; 3] {
        [
            grid(s.pred.cores, 1e-6),
            f64::from(self.threads(s)),
            s.pred.qos.p99_ms,
        ]
    }
}

/// Orders keys lexicographically by `f64::total_cmp`. Orders are keys, not "before"
/// predicates with tolerances: a sort needs a total order, and comparisons within an
/// epsilon are not transitive (a planning run panicked on one). Round a key with
/// [`grid`] for ties within a tolerance.
pub(crate) fn by_key<const N: usize>(a: &[f64; N], b: &[f64; N]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// `x` rounded to a multiple of `step`: values that close sort as equal.
pub(crate) fn grid(x: f64, step: f64) -> f64 {
    (x / step).round() * step
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
