//! The per-stage queueing formulas and the path quantiles of the analytic model (see
//! `model.rs` for the choices they implement).

use super::dag::Dag;
use super::model::{PathPrediction, StageConfig, StageProfile};

/// One stage's sojourn, in seconds, decomposed for the path quantiles.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sojourn {
    pub(crate) mean: f64,
    pub(crate) var: f64,
    /// Deterministic part (shift of the gamma).
    shift: f64,
    /// Waiting: probability of waiting and conditional mean (exponential tail).
    p_wait: f64,
    m_wait: f64,
    /// Standard deviation of the service time's part shared with the item's other stages
    /// (its path loading): such parts add up along a path rather than in quadrature.
    shared_sd: f64,
}

/// Linear-scale standard deviation of the shared part of a batch's service time `t`
/// (the batch's `b` items' factors average out).
fn shared_sd(p: &StageProfile, t: f64, b: f64) -> f64 {
    t * ((p.shared_sigma * p.shared_sigma / b.max(1.0)).exp() - 1.0)
        .max(0.0)
        .sqrt()
}

const Z99: f64 = 2.326_347_874;

/// Quantile of a gamma with mean `mean` and variance `var` (Wilson–Hilferty).
fn gamma_quantile(mean: f64, var: f64, z: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if var <= 1e-18 {
        return mean;
    }
    let k = mean * mean / var;
    let c = 1.0 / (9.0 * k);
    let base = (1.0 - c + z * c.sqrt()).max(0.0);
    mean * base.powi(3)
}

/// One stage's behaviour under an offered rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageEval {
    pub(crate) sojourn: Sojourn,
    /// Mean batch served, and the batch at light load, and the first item's fill wait (s).
    pub(crate) batch: f64,
    pub(crate) light_batch: f64,
    pub(crate) fill: f64,
    pub(crate) utilisation: f64,
    /// Variability (SCV) of the stage's departures, item by item.
    pub(crate) ca_out: f64,
    /// Best-effort: probability an arriving item finds the inbox full.
    pub(crate) block: f64,
}

impl StageEval {
    pub(crate) fn mean_s(&self) -> f64 {
        self.sojourn.mean
    }
    pub(crate) fn var_s(&self) -> f64 {
        self.sojourn.var
    }
}

/// The sojourn of an item in a stage (see the module doc). `shared` is the device's
/// (utilisation, mean batch time, saturated cycle) for GPU stages; `at_bottleneck` marks the stage that
/// throttles an overloaded app.
pub(crate) fn eval_stage(
    p: &StageProfile,
    c: &StageConfig,
    offered: f64,
    ca_in: f64,
    shared: Option<(f64, f64, f64)>,
    at_bottleneck: bool,
    bound: f64,
) -> StageEval {
    let reps = f64::from(c.replicas.max(1));
    let lam_r = offered / reps;
    let b = f64::from(c.batch.max(1));
    let w = c.max_wait_ms.max(0.0) / 1000.0;
    let bl = b.min(1.0 + lam_r * w).max(1.0);
    let t = p.t(bl, c.threads);
    let rho_own = lam_r * t / bl;
    let cs2 = p.cv * p.cv;
    let ca_r = ca_in / reps;
    let fill = if bl > 1.0 { (bl - 1.0) / lam_r } else { 0.0 };
    // Queueing: own server, or the shared device.
    let (rho, t_scale) = match shared {
        Some((r, tm, _)) => (r, tm.max(t)),
        None => (rho_own, t),
    };
    let full_rho = lam_r * p.t(b, c.threads) / b;
    let mut normal = Sojourn {
        mean: f64::INFINITY,
        ..Sojourn::default()
    };
    if rho < 1.0 {
        let wq = rho / (1.0 - rho) * (ca_r / bl + cs2) / 2.0 * t_scale;
        let m = if rho > 0.0 { wq / rho } else { 0.0 };
        normal = Sojourn {
            mean: fill / 2.0 + wq + t,
            var: fill * fill / 12.0 + rho * m * m * (2.0 - rho) + (p.cv * t).powi(2),
            shift: t * (1.0 - 3.0 * p.cv).max(0.0),
            p_wait: rho,
            m_wait: m,
            shared_sd: shared_sd(p, t, bl),
        };
    }
    let mut eff_b = bl;
    let mut sj = normal;
    if b > bl && !at_bottleneck {
        // Saturated: the batch is what arrives during one cycle of the server (its own
        // batch time, or the device's round of every GPU stage).
        let (x, cyc) = match shared {
            Some((_, _, cyc)) => {
                let x = (lam_r * cyc).clamp(bl, b);
                (x, cyc)
            }
            None => {
                // Fixed point x = λ_r·t(x).
                let x = p.saturated_batch(lam_r, c.threads, bl, b);
                (x, p.t(x, c.threads))
            }
        };
        let ts = p.t(x, c.threads);
        let feasible = shared.is_some() || full_rho < 1.0;
        let sat = Sojourn {
            mean: cyc / 2.0 + ts,
            var: cyc * cyc / 12.0 + (p.cv * ts).powi(2),
            shift: ts * (1.0 - 3.0 * p.cv).max(0.0),
            p_wait: 0.0,
            m_wait: 0.0,
            shared_sd: shared_sd(p, ts, x),
        };
        if feasible && sat.mean < sj.mean {
            sj = sat;
            eff_b = x;
        }
    }
    if at_bottleneck {
        // Full queue: `bound` items ahead, served at full batches.
        let tb = p.t(b, c.threads);
        let wait = bound * tb / b;
        sj = Sojourn {
            mean: wait + tb,
            var: (p.cv * tb).powi(2) + (tb * tb) / 12.0,
            shift: wait + tb * (1.0 - 3.0 * p.cv).max(0.0),
            p_wait: 0.0,
            m_wait: 0.0,
            shared_sd: shared_sd(p, tb, b),
        };
        eff_b = b;
    }
    let block = if !at_bottleneck && rho < 1.0 && rho > 0.0 {
        ((1.0 - rho) * rho.powf(bound) / (1.0 - rho.powf(bound + 1.0))).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let utilisation = if at_bottleneck { 1.0 } else { rho_own.min(1.0) };
    // Departures: batches leave in bursts of eff_b items.
    let cd_batch = rho.min(1.0).powi(2) * cs2 + (1.0 - rho.min(1.0).powi(2)) * (ca_r / eff_b);
    let ca_out = if eff_b > 1.0 {
        eff_b * (cd_batch + 1.0) - 1.0
    } else {
        cd_batch
    };
    StageEval {
        sojourn: sj,
        batch: eff_b,
        light_batch: bl,
        fill,
        utilisation,
        ca_out,
        block,
    }
}

pub(crate) fn path_prediction(dag: &Dag, path: &[usize], soj: &[Sojourn]) -> PathPrediction {
    let mean: f64 = path.iter().map(|&i| soj[i].mean).sum();
    // Independent parts add in quadrature; the shared parts are perfectly correlated along
    // the path, which adds (Σ sd)² − Σ sd² of covariance.
    let shared: f64 = path.iter().map(|&i| soj[i].shared_sd).sum();
    let shared_sq: f64 = path.iter().map(|&i| soj[i].shared_sd.powi(2)).sum();
    let var: f64 = path.iter().map(|&i| soj[i].var).sum::<f64>() + shared * shared - shared_sq;
    let shift: f64 = path.iter().map(|&i| soj[i].shift).sum::<f64>().min(mean);
    let rand_mean = mean - shift;
    let mut p99 = shift + gamma_quantile(rand_mean, var, Z99);
    let p50 = shift + gamma_quantile(rand_mean, var, 0.0);
    // Never below the tail of the worst single queue plus the mean of everything else.
    for &i in path {
        let s = soj[i];
        if s.p_wait > 0.01 && s.m_wait > 0.0 {
            let tail = s.m_wait * (s.p_wait / 0.01).ln();
            p99 = p99.max(mean - s.p_wait * s.m_wait + tail);
        }
    }
    PathPrediction {
        stages: path.iter().map(|&i| dag.stages[i].name.clone()).collect(),
        mean_ms: mean * 1000.0,
        p50_ms: p50 * 1000.0,
        p99_ms: p99 * 1000.0,
        jitter_ms: var.max(0.0).sqrt() * 1000.0,
    }
}
