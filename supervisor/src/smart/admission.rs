//! Admission control: a request-guarantee app with no plan meeting its quota is refused
//! with the binding quota or resource and the gap; a best-effort app is admitted with the
//! best plan within its grant and that plan's predicted shortfall.

use super::model::{ModelError, Resources};
use super::planner::{lazy_key, lt, pick, plans, Plan, PlanOptions, Scored, Search, CORES_PROBE};
use super::profile::Profiles;
use super::qos::Shortfall;
use protocol::spec::{AppSpec, ServiceType};

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

/// The binding quota or resource of an app with no feasible plan, and the gap.
pub fn refusal(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
) -> Result<Refusal, ModelError> {
    let search = Search::new(app, profiles, resources, opts)?;
    let probe = resources.cpu_cores.max(CORES_PROBE);
    let all = search.enumerate(probe, opts)?;
    if let (Some(budget), Some(s)) = (resources.device_memory_bytes, all.first()) {
        if s.pred.memory_bytes > budget {
            return Ok(Refusal::Memory {
                needed_mb: s.pred.memory_bytes as f64 / 1048576.0,
                budget_mb: budget as f64 / 1048576.0,
            });
        }
    }
    if let Some(s) = pick(
        &all.iter()
            .filter(|s| s.misses.is_empty())
            .cloned()
            .collect::<Vec<_>>(),
        |a, b| lt(lazy_key(a), lazy_key(b)),
    ) {
        return Ok(Refusal::Cores {
            needed: s.pred.cores,
            granted: resources.cpu_cores,
        });
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
