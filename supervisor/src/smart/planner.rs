//! The planner: batch size, max wait, replicas and threads per stage for an app's quota
//! within its granted resources, by strategy; and admission control.
//!
//! Search. Each planned stage (cpu, gpu) gets candidates: batch ∈ {1, 2, 4, 8, 16} up to
//! its profile's limit, max wait 0 or the time to fill the batch at the offered rate,
//! replicas 1..=cores (GPU stages: 1, the device serialises them), threads in powers of
//! two when the profile says threads help (GPU stages on `cpu:0`: the agent's threads,
//! one value for all of them). User-fixed batch or replicas are kept. Candidates that
//! cannot carry the stage's rate are dropped (unless none can), then those dominated on
//! (cores, mean sojourn, variance, capacity) by another of the same stage. The product of
//! the remaining sets is enumerated exactly (branch and bound on cores) when it is at most
//! [`EXACT_LIMIT`]; larger apps keep each stage's cheapest candidates until it fits.
//!
//! Strategies over the plans that meet the quota within the grant:
//! - `lazy`: fewest cores, ties broken by lower p99;
//! - `balance`: the lowest p99 among plans with at most one core more than `lazy` (the
//!   headroom a live controller then works in);
//! - `strong`: the highest capacity (items/s it could carry) within all granted cores,
//!   ties by lower p99, then fewer cores.
//!
//! The model is evaluated at the required rate max(quota throughput / 60, request
//! frequency); with neither given, at 1 item/s (lazy = cheapest, strong = most capacity).

use super::admission::Refusal;
use super::model::{Arrivals, Model, ModelError, Prediction, Resources, StageConfig, Workload};
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
    pub predicted: Qos,
    pub cores: f64,
    pub memory_bytes: u64,
    /// How the prediction misses the quota (empty when met; best-effort only).
    pub shortfall: Vec<Shortfall>,
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
        for (t, c) in &self.stages {
            writeln!(
                f,
                "{t}: batch {} (wait {:.1} ms), replicas {}, threads {}",
                c.batch, c.max_wait_ms, c.replicas, c.threads
            )?;
        }
        let q = &self.predicted;
        write!(
            f,
            "predicted: {:.0}/min, p50 {:.1} ms, p99 {:.1} ms, jitter {:.1} ms, loss {:.2}%; {:.1} cores, {:.1} MB device memory",
            q.throughput_per_s * 60.0,
            q.p50_ms,
            q.p99_ms,
            q.jitter_ms,
            q.loss_pct,
            self.cores,
            self.memory_bytes as f64 / 1048576.0
        )
    }
}

/// One evaluated whole configuration.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    pub(crate) cfg: Vec<StageConfig>,
    pub(crate) pred: Prediction,
    pub(crate) misses: Vec<Shortfall>,
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

impl<'a> Search<'a> {
    pub(crate) fn new(
        app: &'a AppSpec,
        profiles: &Profiles,
        resources: Resources,
        opts: &PlanOptions,
    ) -> Result<Self, ModelError> {
        let required = required_rate(&app.quota, app.request_frequency);
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

    /// Candidate configs per stage under `cores` cores and agent threads `agent`.
    fn candidates(&self, cores: f64, agent: u32, opts: &PlanOptions) -> Vec<Vec<StageConfig>> {
        let m = &self.model;
        let max_units = cores.floor().max(1.0) as u32;
        let defaults = m.default_configs();
        (0..m.dag.stages.len())
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
                let max_r = opts.max_replicas.unwrap_or(max_units).max(1);
                let replicas: Vec<u32> = match st.fixed_replicas {
                    Some(r) => vec![r],
                    None if gpu => vec![1],
                    None => (1..=max_r.min(max_units)).collect(),
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
                self.prune(i, out)
            })
            .collect()
    }

    /// Drops candidates that cannot carry the stage's rate (unless none can) and those
    /// dominated by another candidate of the same stage.
    fn prune(&self, i: usize, cands: Vec<StageConfig>) -> Vec<StageConfig> {
        let m = &self.model;
        let gpu = m.dag.stages[i].kind == TaskKind::Gpu;
        let cost = |c: &StageConfig| {
            if gpu {
                0
            } else {
                c.replicas * c.threads
            }
        };
        let scored: Vec<(StageConfig, u32, f64, f64, f64)> = cands
            .into_iter()
            .filter_map(|c| {
                let ev = m.stage_alone(i, &c)?;
                let p = m.profiles[i].as_ref()?;
                let b = f64::from(c.batch);
                let cap = f64::from(c.replicas) * b / p.t(b, c.threads);
                Some((c, cost(&c), ev.mean_s(), ev.var_s(), cap))
            })
            .collect();
        let rate = m.stage_rate(i);
        let stable: Vec<_> = scored
            .iter()
            .filter(|s| s.4 > rate && s.2.is_finite())
            .cloned()
            .collect();
        let pool = if stable.is_empty() {
            // Nothing carries the rate: keep the most capable (best-effort will shed).
            let best = scored.iter().map(|s| s.4).fold(0.0, f64::max);
            scored.into_iter().filter(|s| s.4 >= best).collect()
        } else {
            stable
        };
        let dominated = |a: &(StageConfig, u32, f64, f64, f64)| {
            pool.iter().any(|b| {
                b.1 <= a.1
                    && b.2 <= a.2
                    && b.3 <= a.3
                    && b.4 >= a.4
                    && (b.1 < a.1 || b.2 < a.2 || b.3 < a.3 || b.4 > a.4)
            })
        };
        let mut keep: Vec<_> = pool.iter().filter(|a| !dominated(a)).cloned().collect();
        keep.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
        keep.into_iter().map(|s| s.0).collect()
    }

    /// Every whole configuration (exact or truncated), scored, within `cores`.
    pub(crate) fn enumerate(
        &self,
        cores: f64,
        opts: &PlanOptions,
    ) -> Result<Vec<Scored>, ModelError> {
        let m = &self.model;
        let has_gpu = m.dag.stages.iter().any(|s| s.kind == TaskKind::Gpu);
        let gpu_threads_help = m.dag.stages.iter().zip(&m.profiles).any(|(s, p)| {
            s.kind == TaskKind::Gpu && p.as_ref().is_some_and(|p| p.parallel_fraction > 0.0)
        });
        let agents = if has_gpu && !m.resources.gpu && gpu_threads_help {
            pow2_upto(cores.floor().max(1.0) as u32)
        } else {
            vec![1]
        };
        let mut out = Vec::new();
        for agent in agents {
            let mut cands = self.candidates(cores, agent, opts);
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
            let fixed_cost: f64 = 0.0;
            let min_cost: Vec<u32> = cands
                .iter()
                .enumerate()
                .map(|(i, cs)| {
                    if m.dag.stages[i].kind == TaskKind::Cpu {
                        cs.iter().map(|c| c.replicas * c.threads).min().unwrap_or(0)
                    } else {
                        0
                    }
                })
                .collect();
            let mut cur = Vec::with_capacity(cands.len());
            self.walk(&cands, &min_cost, 0, fixed_cost, cores, &mut cur, &mut out)?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        cands: &[Vec<StageConfig>],
        min_cost: &[u32],
        i: usize,
        spent: f64,
        cores: f64,
        cur: &mut Vec<StageConfig>,
        out: &mut Vec<Scored>,
    ) -> Result<(), ModelError> {
        if i == cands.len() {
            let pred = self.model.predict(cur)?;
            if pred.cores <= cores + 1e-9 {
                let misses = pred.qos.shortfalls(&self.app.quota, self.required);
                out.push(Scored {
                    cfg: cur.clone(),
                    pred,
                    misses,
                });
            }
            return Ok(());
        }
        let rest: u32 = min_cost[i + 1..].iter().sum();
        for c in &cands[i] {
            let cost = if self.model.dag.stages[i].kind == TaskKind::Cpu {
                f64::from(c.replicas * c.threads)
            } else {
                0.0
            };
            if spent + cost + f64::from(rest) > cores + 1e-9 {
                continue;
            }
            cur.push(*c);
            self.walk(cands, min_cost, i + 1, spent + cost, cores, cur, out)?;
            cur.pop();
        }
        Ok(())
    }

    fn plan_of(&self, s: &Scored, strategy: Strategy) -> Plan {
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
            predicted: s.pred.qos,
            cores: s.pred.cores,
            memory_bytes: s.pred.memory_bytes,
            shortfall: s.misses.clone(),
            prediction: s.pred.clone(),
        }
    }
}

pub(crate) fn lazy_key(s: &Scored) -> (f64, f64) {
    (s.pred.cores, s.pred.qos.p99_ms)
}

pub(crate) fn pick(all: &[Scored], better: impl Fn(&Scored, &Scored) -> bool) -> Option<&Scored> {
    let mut best: Option<&Scored> = None;
    for s in all {
        if best.is_none_or(|b| better(s, b)) {
            best = Some(s);
        }
    }
    best
}

pub(crate) fn lt(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 < b.0 - 1e-9 || ((a.0 - b.0).abs() <= 1e-9 && a.1 < b.1)
}

/// The plans of every strategy for `app` under `resources`.
pub fn plans(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
) -> Result<Plans, ModelError> {
    let search = Search::new(app, profiles, resources, opts)?;
    let all = search.enumerate(resources.cpu_cores, opts)?;
    let budget = resources.device_memory_bytes.unwrap_or(u64::MAX);
    let ok: Vec<Scored> = all
        .iter()
        .filter(|s| s.misses.is_empty() && s.pred.memory_bytes <= budget)
        .cloned()
        .collect();
    let lazy = pick(&ok, |a, b| lt(lazy_key(a), lazy_key(b))).cloned();
    let balance = lazy.as_ref().and_then(|l| {
        let within: Vec<Scored> = ok
            .iter()
            .filter(|s| s.pred.cores <= l.pred.cores + 1.0 + 1e-9)
            .cloned()
            .collect();
        pick(&within, |a, b| {
            lt(
                (a.pred.qos.p99_ms, a.pred.cores),
                (b.pred.qos.p99_ms, b.pred.cores),
            )
        })
        .cloned()
    });
    let strong = pick(&ok, |a, b| {
        let (ca, cb) = (a.pred.capacity, b.pred.capacity);
        ca > cb * (1.0 + 1e-9)
            || ((ca - cb).abs() <= cb * 1e-9
                && lt(
                    (a.pred.qos.p99_ms, a.pred.cores),
                    (b.pred.qos.p99_ms, b.pred.cores),
                ))
    });
    let best = pick(&all, |a, b| {
        lt(
            (-a.pred.qos.throughput_per_s, a.pred.qos.p99_ms),
            (-b.pred.qos.throughput_per_s, b.pred.qos.p99_ms),
        )
    });
    Ok(Plans {
        lazy: lazy.as_ref().map(|s| search.plan_of(s, Strategy::Lazy)),
        balance: balance
            .as_ref()
            .map(|s| search.plan_of(s, Strategy::Balance)),
        strong: strong.map(|s| search.plan_of(s, Strategy::Strong)),
        best: best.map(|s| search.plan_of(s, app.strategy)),
    })
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
