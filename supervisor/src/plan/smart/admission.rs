//! Admission control: a request-guarantee app with no plan meeting its quota is refused
//! with the binding quota or resource and the gap; a best-effort app is admitted with the
//! best plan within its grant and that plan's predicted shortfall.

use super::model::{ModelError, Resources, CPU_HEADROOM};
use super::planner::{by_key, Plan, PlanOptions, Scored, Search, CORES_PROBE};
use super::profile::Profiles;
use super::qos::Shortfall;
use super::strategies::plans;
use protocol::spec::{AppSpec, ServiceType};

/// Precision of the cores a refused app is told it needs.
pub const CORES_STEP: f64 = 0.01;

/// Why a request-guarantee app is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("needs {needed:.2} cores, {granted:.2} granted")]
    Cores { needed: f64, granted: f64 },
    #[error("models need {needed_mb:.1} MB of device memory, {budget_mb:.1} MB granted")]
    Memory { needed_mb: f64, budget_mb: f64 },
    #[error("{0} even in the best configuration")]
    Quota(Shortfall),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Admission: the plan of the app's strategy, or why a request-guarantee app is refused.
/// A best-effort app with no plan meeting its quota gets the best plan within the grant,
/// with its predicted shortfall.
pub fn admit(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
) -> Result<Plan, Refusal> {
    let ps = plans(app, profiles, resources, opts)?;
    if let Some(p) = ps.get(app.strategy) {
        return Ok(p.clone());
    }
    if app.service_type == ServiceType::BestEffort {
        if let Some(p) = ps.best {
            return Ok(p);
        }
    }
    Err(refusal(app, profiles, resources, opts)?)
}

/// The binding quota or resource of an app with no feasible plan, and the gap: the
/// device memory its models need; else, if some plan would meet the quota on more cores,
/// the fewest granted cores with which the planner finds one (to 0.01 core); else the
/// first quota no configuration meets, at the best value any reaches.
pub fn refusal(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
) -> Result<Refusal, ModelError> {
    let probe = Resources {
        cpu_cores: resources.cpu_cores.max(CORES_PROBE),
        ..resources
    };
    let search = Search::new(app, profiles, probe, opts)?;
    let all = search.enumerate(opts, false)?;
    if let (Some(budget), Some(s)) = (resources.device_memory_bytes, all.first()) {
        if s.pred.memory_bytes > budget {
            return Ok(Refusal::Memory {
                needed_mb: s.pred.memory_bytes as f64 / 1048576.0,
                budget_mb: budget as f64 / 1048576.0,
            });
        }
    }
    let meeting: Vec<Scored> = all
        .iter()
        .filter(|s| s.misses.is_empty() && search.model.fits(&s.pred))
        .cloned()
        .collect();
    let cheapest = meeting
        .iter()
        .min_by(|a, b| by_key(&search.lazy_key(a), &search.lazy_key(b)));
    if let Some(cheapest) = cheapest {
        let needed = fewest_cores(app, profiles, resources, opts, cheapest.pred.cores)?;
        if needed.is_finite() {
            return Ok(Refusal::Cores {
                needed,
                granted: resources.cpu_cores,
            });
        }
    }
    // Nothing meets the quota at any core count: report the first quota (throughput,
    // latency, jitter, loss) that no plan meets, at the best value any plan reaches.
    let order = |m: &Shortfall| match m {
        Shortfall::Throughput { .. } => 0,
        Shortfall::Latency { .. } => 1,
        Shortfall::Jitter { .. } => 2,
        Shortfall::Loss { .. } => 3,
    };
    let value = |m: &Shortfall| match m {
        Shortfall::Throughput {
            predicted_per_min, ..
        } => -predicted_per_min,
        Shortfall::Latency { p99_ms, .. } => *p99_ms,
        Shortfall::Jitter { jitter_ms, .. } => *jitter_ms,
        Shortfall::Loss { loss_pct, .. } => *loss_pct,
    };
    for q in 0..4 {
        let meeting_before: Vec<&Scored> = all
            .iter()
            .filter(|s| s.misses.iter().all(|m| order(m) >= q))
            .collect();
        let best = meeting_before
            .iter()
            .filter_map(|s| s.misses.iter().find(|m| order(m) == q))
            .min_by(|a, b| value(a).total_cmp(&value(b)));
        let everyone_misses = !meeting_before.is_empty()
            && meeting_before
                .iter()
                .all(|s| s.misses.iter().any(|m| order(m) == q));
        if everyone_misses {
            if let Some(m) = best {
                return Ok(Refusal::Quota(m.clone()));
            }
        }
    }
    Ok(Refusal::Cores {
        needed: f64::INFINITY,
        granted: resources.cpu_cores,
    })
}

/// The fewest granted cores (to [`CORES_STEP`]) with which `plans` finds a plan, given
/// that the cheapest plan on many cores is busy `busy` cores: from `busy` ÷ the headroom
/// (no fewer can fit) up by 10% steps until one is found, then bisected (contention on
/// fewer cores may still break the latency quota).
fn fewest_cores(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
    busy: f64,
) -> Result<f64, ModelError> {
    let feasible = |cores: f64| -> Result<bool, ModelError> {
        let r = Resources {
            cpu_cores: cores,
            ..resources
        };
        Ok(plans(app, profiles, r, opts)?.get(app.strategy).is_some())
    };
    let round_up = |c: f64| (c / CORES_STEP - 1e-6).ceil() * CORES_STEP;
    let top = resources.cpu_cores.max(CORES_PROBE);
    let mut hi = round_up((busy / CPU_HEADROOM).max(resources.cpu_cores + CORES_STEP));
    if feasible(hi)? {
        return Ok(hi);
    }
    let mut lo;
    loop {
        lo = hi;
        if hi >= top {
            return Ok(f64::INFINITY);
        }
        hi = round_up((hi * 1.1).min(top));
        if feasible(hi)? {
            break;
        }
    }
    while hi - lo > CORES_STEP * 1.5 {
        let mid = round_up((lo + hi) / 2.0);
        if mid >= hi {
            break;
        }
        if feasible(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}
