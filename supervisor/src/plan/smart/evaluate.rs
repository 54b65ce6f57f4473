//! One evaluation of the analytic model for given (possibly contention-stretched)
//! profiles, and the processes it puts on the cores: their busy fractions, the cores a
//! configuration uses, and the slowdowns contention causes (see `model.rs` for the
//! choices and `contention.rs` for the sharing model).

use super::contention::{slowdowns, CpuLoad, Slowdown};
use super::model::{
    Arrivals, Model, PathPrediction, Prediction, StageConfig, StagePrediction, StageProfile,
};
use super::qos::Qos;
use super::queueing::{eval_stage, path_prediction, Sojourn};
use protocol::spec::TaskKind;
use std::collections::BTreeSet;

/// How loaded the app is at the offered rate: what bounds it, how much of the offered rate
/// it carries, and the device's share of the work.
struct Load {
    /// Capacity of each stage, as the largest total offered rate it carries.
    capacity: Vec<f64>,
    /// The largest total rate the app carries.
    app_cap: f64,
    /// The fraction of the offered rate carried (1 unless overloaded).
    scale: f64,
    /// Device seconds per offered item, full batches.
    dev_load_full: f64,
    /// The device's executors (batches run side by side).
    executors: f64,
    /// Squared coefficient of variation of the heads' arrivals.
    ca_head: f64,
}

impl Load {
    fn overloaded(&self) -> bool {
        self.scale < 1.0
    }
}

/// The device at light load: its utilisation, its mean batch time (weighted by time) and
/// the cycle through its GPU stages when saturated.
struct DeviceRound {
    rho: f64,
    t_mean: f64,
    cycle: f64,
}

/// What the walk over the stages in order gives: per-stage predictions and sojourns, the
/// device's utilisation at the effective batches, and the fraction not shed.
struct StageWalk {
    stages: Vec<StagePrediction>,
    sojourns: Vec<Sojourn>,
    dev_busy: f64,
    keep: f64,
}

impl Model {
    /// The model with per-stage profiles `profs` (the measured ones stretched by
    /// `slow`): capacities, throttling, per-stage queueing and the paths.
    pub(crate) fn evaluate(
        &self,
        cfg: &[StageConfig],
        profs: &[Option<StageProfile>],
        slow: &[Slowdown],
    ) -> Prediction {
        let total = self.workload.rate;
        let load = self.load(cfg, profs);
        let round = self.device_round(cfg, profs, load.scale);
        let walk = self.walk_stages(cfg, profs, slow, &load, &round);
        let StageWalk {
            stages,
            sojourns,
            dev_busy,
            keep,
        } = walk;
        let paths = self.paths(cfg, &stages, profs, &sojourns, load.ca_head);
        let worst = |f: fn(&PathPrediction) -> f64| paths.iter().map(f).fold(0.0, f64::max);
        let delivered = total * load.scale * if self.workload.shed { keep } else { 1.0 };
        let loss_pct = if self.workload.shed {
            (1.0 - delivered / total).max(0.0) * 100.0
        } else {
            0.0
        };
        let mut pred = Prediction {
            stages,
            qos: Qos {
                throughput_per_s: delivered,
                p50_ms: worst(|p| p.p50_ms),
                p99_ms: worst(|p| p.p99_ms),
                jitter_ms: worst(|p| p.jitter_ms),
                loss_pct,
            },
            paths,
            capacity: load.app_cap,
            cores: 0.0,
            memory_bytes: self.memory(cfg),
            device_utilisation: (load.dev_load_full > 0.0)
                .then_some((dev_busy / load.executors).min(1.0)),
        };
        pred.cores = self
            .cpu_loads(cfg, &pred.stages)
            .iter()
            .map(|(_, l)| f64::from(l.threads) * l.busy.min(1.0))
            .sum();
        pred
    }

    /// Each stage's capacity and the app's: the stages, the device's executors and the
    /// cores bound what the app carries.
    fn load(&self, cfg: &[StageConfig], profs: &[Option<StageProfile>]) -> Load {
        let n = self.dag.stages.len();
        let total = self.workload.rate;
        let mut capacity = vec![f64::INFINITY; n];
        let mut dev_load_full = 0.0;
        for i in 0..n {
            let Some(p) = &profs[i] else { continue };
            let c = &cfg[i];
            let b = f64::from(c.batch.max(1));
            let share = self.stage_rate(i) / total;
            let per_item = p.t(b, c.threads) / b;
            if self.is_device(i) {
                dev_load_full += share * per_item;
                // Each replica has one batch at the agent at a time.
                capacity[i] = f64::from(c.replicas.max(1)) * b / p.t(b, c.threads);
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
            // A GPU stage's own bound matters once the device runs several batches at
            // once (with one executor the device's load bounds it first).
            if cap.is_finite() {
                app_cap = app_cap.min(cap * total / self.stage_rate(i));
            }
        }
        let executors = f64::from(self.resources.device_executors());
        if dev_load_full > 0.0 {
            app_cap = app_cap.min(executors / dev_load_full);
        }
        // The cores bound what all processes together carry: CPU seconds per offered
        // item at full batches, from the measured service times.
        let cpu_per_item = self.cpu_seconds_per_item(cfg);
        if cpu_per_item > 0.0 && self.resources.cpu_cores > 0.0 {
            app_cap = app_cap.min(self.resources.cpu_cores / cpu_per_item);
        }
        Load {
            capacity,
            app_cap,
            scale: if app_cap < total {
                app_cap / total
            } else {
                1.0
            },
            dev_load_full,
            executors,
            ca_head: match self.workload.arrivals {
                Arrivals::Poisson => 1.0,
                Arrivals::Periodic => 0.0,
            },
        }
    }

    /// Light-load batch and utilisation per stage, then the device's totals and its
    /// saturated cycle: it cycles through the GPU stages, each taking what arrived in one
    /// cycle C = Σ t_g(λ_g·C) (fixed point, batches clamped to their limits).
    fn device_round(
        &self,
        cfg: &[StageConfig],
        profs: &[Option<StageProfile>],
        scale: f64,
    ) -> DeviceRound {
        let n = self.dag.stages.len();
        let mut light = vec![(1.0f64, 0.0f64); n]; // (b', ρ per replica)
        let mut dev_rho = 0.0;
        let mut dev_t_weighted = 0.0;
        for i in 0..n {
            let Some(p) = &profs[i] else { continue };
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
        let mut cycle = 0.0;
        let dev: Vec<usize> = (0..n)
            .filter(|&i| self.is_device(i) && profs[i].is_some())
            .collect();
        for g in &dev {
            if let Some(p) = &profs[*g] {
                cycle += p.t(light[*g].0, cfg[*g].threads);
            }
        }
        for _ in 0..200 {
            let next: f64 = dev
                .iter()
                .filter_map(|&g| {
                    let p = profs[g].as_ref()?;
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
        DeviceRound {
            rho: dev_rho,
            t_mean: dev_t_mean,
            cycle,
        }
    }

    /// Every stage in topological order: its queueing, its effective batch and the
    /// variability of what it passes on.
    fn walk_stages(
        &self,
        cfg: &[StageConfig],
        profs: &[Option<StageProfile>],
        slow: &[Slowdown],
        load: &Load,
        round: &DeviceRound,
    ) -> StageWalk {
        let n = self.dag.stages.len();
        let bound = f64::from(self.workload.queue_bound.max(1));
        let executors = load.executors;
        let mut ca_out = vec![load.ca_head; n];
        let mut soj = vec![Sojourn::default(); n];
        let mut preds = Vec::with_capacity(n);
        let mut dev_busy = 0.0; // device utilisation at the effective batches
        let mut keep = 1.0; // best-effort: fraction not lost to full queues
        for &i in &self.dag.order {
            let s = &self.dag.stages[i];
            let ca_in = if s.inputs.is_empty() {
                load.ca_head
            } else {
                s.inputs.iter().map(|&j| ca_out[j]).sum::<f64>() / s.inputs.len() as f64
            };
            let offered = self.stage_rate(i) * load.scale;
            let mut pred = StagePrediction {
                task: s.name.clone(),
                slowdown: slow.get(i).map_or(1.0, |s| s.mean),
                capacity: load.capacity[i],
                offered,
                utilisation: 0.0,
                batch_effective: 1.0,
                fill_ms: 0.0,
                queue_ms: 0.0,
                service_ms: 0.0,
                mean_ms: 0.0,
                std_ms: 0.0,
            };
            let Some(p) = &profs[i] else {
                ca_out[i] = ca_in;
                preds.push((i, pred));
                continue;
            };
            let c = &cfg[i];
            // k executors: the device's load and its round are shared among them.
            let shared = self.is_device(i).then_some((
                round.rho / executors,
                round.t_mean,
                round.cycle / executors,
            ));
            let full_rho = offered / f64::from(c.replicas.max(1))
                * p.t(f64::from(c.batch.max(1)), c.threads)
                / f64::from(c.batch.max(1));
            let at_bottleneck = load.overloaded()
                && (full_rho >= 0.999
                    || (self.is_device(i)
                        && load.dev_load_full * load.app_cap >= 0.999 * executors));
            let ev = eval_stage(p, c, offered, ca_in, shared, at_bottleneck, bound);
            let sj = ev.sojourn;
            let (eff_b, bl, fill) = (ev.batch, ev.light_batch, ev.fill);
            if self.workload.shed {
                keep *= 1.0 - ev.block;
            }
            ca_out[i] = ev.ca_out;
            if self.is_device(i) {
                dev_busy += offered * p.t(eff_b, c.threads) / eff_b;
            }
            if s.kind == TaskKind::Head {
                // Items are stamped when due (paced) or when the head starts on them: the
                // head's own service, and its queue behind a paced schedule, count in the
                // latency. What it emits keeps the arrivals' pattern.
                ca_out[i] = ca_in;
            }
            soj[i] = sj;
            pred.utilisation = ev.utilisation;
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
        StageWalk {
            stages: preds.into_iter().map(|(_, p)| p).collect(),
            sojourns: soj,
            dev_busy,
            keep,
        }
    }

    /// Every path from a head to a tail, never below the tail of the wait for the shared
    /// cores (exponential tail past the probability of waiting, as for single queues).
    fn paths(
        &self,
        cfg: &[StageConfig],
        stages: &[StagePrediction],
        profs: &[Option<StageProfile>],
        sojourns: &[Sojourn],
        ca_head: f64,
    ) -> Vec<PathPrediction> {
        let shared = self.shared_cores_wait(cfg, stages, profs, ca_head);
        self.dag
            .paths
            .iter()
            .map(|path| {
                let mut p = path_prediction(&self.dag, path, sojourns);
                if let Some((p_wait, wq)) = shared {
                    if p_wait > 0.01 && wq > 0.0 {
                        let m = wq / p_wait;
                        let tail = p.mean_ms - wq * 1000.0 + m * 1000.0 * (p_wait / 0.01).ln();
                        p.p99_ms = p.p99_ms.max(tail);
                    }
                }
                p
            })
            .collect()
    }

    /// The processes competing for the cores under `cfg` at the offered rates and
    /// effective batches of `stages`, each with its stage (`None`: the GPU agent), and
    /// its busy fraction from the measured (unstretched) service times. CPU stages and
    /// tails: one process per replica with the stage's threads; heads: one; GPU stages
    /// are the agent's work (its intra-op threads on `cpu:0`; with CUDA its one host
    /// thread waits while the device runs a batch), their own processes only wait.
    pub(crate) fn cpu_loads(
        &self,
        cfg: &[StageConfig],
        stages: &[StagePrediction],
    ) -> Vec<(Option<usize>, CpuLoad)> {
        let mut out = Vec::new();
        let (mut agent_busy, mut agent_threads) = (0.0, 0u32);
        for (i, s) in self.dag.stages.iter().enumerate() {
            let (Some(Some(p)), Some(st)) = (self.profiles.get(i), stages.get(i)) else {
                continue;
            };
            let c = &cfg[i];
            let x = st.batch_effective.max(1.0);
            let busy = st.offered * p.t(x, c.threads) / x;
            match s.kind {
                TaskKind::Gpu => {
                    agent_busy += busy;
                    agent_threads = agent_threads.max(c.threads.max(1));
                }
                TaskKind::Head => out.push((Some(i), CpuLoad { threads: 1, busy })),
                TaskKind::Cpu | TaskKind::Tail => {
                    let reps = c.replicas.max(1);
                    let threads = if s.kind == TaskKind::Cpu {
                        c.threads.max(1)
                    } else {
                        1
                    };
                    for _ in 0..reps {
                        let busy = busy / f64::from(reps);
                        out.push((Some(i), CpuLoad { threads, busy }));
                    }
                }
            }
        }
        if agent_threads > 0 {
            // Its executors run batches side by side: that many sessions' threads
            // runnable while each is busy (CUDA: one host thread, one batch at a time).
            let executors = self.resources.device_executors();
            let threads = self.resources.device_threads(agent_threads) * executors;
            out.push((
                None,
                CpuLoad {
                    threads,
                    busy: agent_busy / f64::from(executors),
                },
            ));
        }
        out
    }

    /// The slowdown of every stage's service times on the granted cores (none for GPU
    /// stages on a CUDA device, whose batches do not run on the cores).
    pub(crate) fn slowdowns(
        &self,
        cfg: &[StageConfig],
        stages: &[StagePrediction],
    ) -> Vec<Slowdown> {
        let loads = self.cpu_loads(cfg, stages);
        let plain: Vec<CpuLoad> = loads.iter().map(|(_, l)| *l).collect();
        let f = slowdowns(&plain, self.resources.cpu_cores);
        let of = |stage: Option<usize>| {
            loads
                .iter()
                .zip(&f)
                .find(|((s, _), _)| *s == stage)
                .map_or(Slowdown::NONE, |(_, f)| *f)
        };
        (0..self.dag.stages.len())
            .map(|i| match self.dag.stages[i].kind {
                TaskKind::Gpu if self.resources.gpu => Slowdown::NONE,
                TaskKind::Gpu => of(None),
                _ => of(Some(i)),
            })
            .collect()
    }

    /// The app's processes contending for the cores seen as one multi-server queue (the
    /// granted cores serving every item's CPU work, the stages' own queues aside): the
    /// probability an item waits for a core and the mean wait (s), by the
    /// Sakasegawa/Kingman approximation of GI/G/c; `None` without contention or when
    /// the cores are overloaded (the stages' queues then say so).
    fn shared_cores_wait(
        &self,
        cfg: &[StageConfig],
        stages: &[StagePrediction],
        profs: &[Option<StageProfile>],
        ca2: f64,
    ) -> Option<(f64, f64)> {
        let loads = self.cpu_loads(cfg, stages);
        let threads: u32 = loads
            .iter()
            .filter(|(_, l)| l.busy > 0.0)
            .map(|(_, l)| l.threads)
            .sum();
        let c = self.resources.cpu_cores;
        let lam: f64 = stages
            .iter()
            .zip(&self.dag.stages)
            .filter(|(_, s)| s.inputs.is_empty())
            .map(|(p, _)| p.offered)
            .sum();
        if f64::from(threads) <= c || c <= 0.0 || lam <= 0.0 {
            return None;
        }
        let work: f64 = loads
            .iter()
            .map(|(_, l)| f64::from(l.threads) * l.busy)
            .sum();
        let rho = work / c;
        if rho >= 1.0 || work <= 0.0 {
            return None;
        }
        // Service variability: the work-weighted SCV of the stages' (stretched) times.
        let cs2 = loads
            .iter()
            .map(|(i, l)| {
                let cv = i
                    .and_then(|i| profs.get(i).and_then(|p| p.as_ref()))
                    .map_or(0.0, |p| p.cv);
                f64::from(l.threads) * l.busy * cv * cv
            })
            .sum::<f64>()
            / work;
        let per_item = work / lam;
        let p_wait = rho.powf((2.0 * (c + 1.0)).sqrt() - 1.0).min(1.0);
        let wq = (ca2 + cs2) / 2.0 * p_wait / (c * (1.0 - rho)) * per_item;
        Some((p_wait, wq))
    }

    /// CPU seconds (thread-seconds) the processes spend per offered item at full batches,
    /// from the measured service times.
    fn cpu_seconds_per_item(&self, cfg: &[StageConfig]) -> f64 {
        let total = self.workload.rate;
        let mut sum = 0.0;
        for (i, s) in self.dag.stages.iter().enumerate() {
            let Some(Some(p)) = self.profiles.get(i) else {
                continue;
            };
            let c = &cfg[i];
            let b = f64::from(c.batch.max(1));
            let threads = match s.kind {
                TaskKind::Cpu => c.threads.max(1),
                TaskKind::Gpu if !self.resources.gpu => c.threads.max(1),
                _ => 1,
            };
            sum += self.stage_rate(i) / total * p.t(b, c.threads) / b * f64::from(threads);
        }
        sum
    }

    /// Device memory: the distinct models of the GPU stages (resident in the agent). Under
    /// a budget smaller than their sum the agent swaps them through the budget (the profile's
    /// service times were measured so), so the app holds the budget — but never less than
    /// its largest model, which the agent holds whole.
    fn memory(&self, cfg: &[StageConfig]) -> u64 {
        let mut models: BTreeSet<(String, u64)> = BTreeSet::new();
        for (i, s) in self.dag.stages.iter().enumerate().take(cfg.len()) {
            if s.kind == TaskKind::Gpu {
                if let Some(Some(p)) = self.profiles.get(i) {
                    if let Some(m) = &p.model {
                        models.insert(m.clone());
                    }
                }
            }
        }
        let sum: u64 = models.iter().map(|m| m.1).sum();
        let largest = models.iter().map(|m| m.1).max().unwrap_or(0);
        match self.resources.device_memory_bytes {
            Some(budget) => sum.min(budget).max(largest),
            None => sum,
        }
    }
}
