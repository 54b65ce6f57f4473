//! The yardstick of the planner: the cheapest static configuration meeting the quota,
//! by brute force over batch ∈ {1, 2, 4, 8, 16} (up to each profile's limit) × max wait
//! ∈ {0, the batch's fill time} × replicas ∈ {1, 2} for every planned stage (one thread;
//! user-fixed settings kept), each predicted by the same analytic model as the planner's
//! candidates; those meeting the quota are then simulated in order of cores, like the
//! planner's picks, and the first whose simulation meets it is the answer.

use super::model::{ModelError, Resources, StageConfig};
use super::planner::{PlanOptions, Search, BATCHES};
use super::profile::Profiles;
use super::strategies::simulated;
use protocol::spec::AppSpec;

/// Most analytic candidates simulated before giving up.
pub const MAX_CHECKED: usize = 400;

/// The cheapest configuration found and its cores.
#[derive(Debug, Clone, PartialEq)]
pub struct Cheapest {
    pub cores: f64,
    /// One per task, in the app's order.
    pub stages: Vec<(String, StageConfig)>,
    /// Configurations predicted.
    pub tried: usize,
}

/// What the brute force may choose from: [`Space::FULL`], or a smaller space to tell
/// whether a quota needs batching (`max_batch: 1` finds nothing) or replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub max_batch: u32,
    pub max_replicas: u32,
}

impl Space {
    pub const FULL: Space = Space {
        max_batch: 16,
        max_replicas: 2,
    };
    pub const NO_BATCHING: Space = Space {
        max_batch: 1,
        max_replicas: 2,
    };
    pub const NO_REPLICAS: Space = Space {
        max_batch: 16,
        max_replicas: 1,
    };
}

/// Stage configurations of the brute force for stage `i`.
fn options(search: &Search, i: usize, space: Space) -> Vec<StageConfig> {
    let m = &search.model;
    let st = &m.dag.stages[i];
    let limit = m.profiles[i]
        .as_ref()
        .map_or(1, |p| p.batch_limit)
        .min(space.max_batch);
    let mut v = Vec::new();
    for b in BATCHES.into_iter().filter(|&b| b <= limit) {
        for r in (1..=space.max_replicas.max(1)).filter(|r| *r <= 2) {
            let fill = f64::from(b - 1) / (m.stage_rate(i) / f64::from(r)) * 1000.0;
            let waits = if b == 1 { vec![0.0] } else { vec![0.0, fill] };
            for w in waits {
                let (batch, max_wait_ms) = st.fixed_batch.unwrap_or((b, w));
                v.push(StageConfig {
                    batch,
                    max_wait_ms,
                    replicas: st.fixed_replicas.unwrap_or(r),
                    threads: 1,
                });
            }
        }
    }
    v.dedup();
    v
}

/// The cheapest static configuration in `space` that meets `app`'s quota within
/// `resources` (`None`: none does), by exhaustive prediction. (User-fixed settings stay
/// as the user set them, even outside `space`.)
pub fn cheapest_static(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
    space: Space,
) -> Result<Option<Cheapest>, ModelError> {
    let search = Search::new(app, profiles, resources, opts)?;
    let m = &search.model;
    let bodies: Vec<usize> = (0..m.dag.stages.len())
        .filter(|&i| m.dag.stages[i].planned() && m.profiles[i].is_some())
        .collect();
    let per_stage: Vec<Vec<StageConfig>> =
        bodies.iter().map(|&i| options(&search, i, space)).collect();
    let total: usize = per_stage.iter().map(|v| v.len().max(1)).product();
    let mut meeting: Vec<(f64, Vec<StageConfig>)> = Vec::new();
    for k0 in 0..total {
        let mut k = k0;
        let mut cfg = m.default_configs();
        for (s, &i) in bodies.iter().enumerate() {
            let n = per_stage[s].len().max(1);
            if let Some(c) = per_stage[s].get(k % n) {
                cfg[i] = *c;
            }
            k /= n;
        }
        let p = m.predict(&cfg)?;
        if m.fits(&p) && p.qos.shortfalls(&app.quota, search.required).is_empty() {
            meeting.push((p.cores, cfg));
        }
    }
    meeting.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (cores, cfg) in meeting.into_iter().take(MAX_CHECKED) {
        let q = simulated(&search, &cfg)?;
        if q.shortfalls(&app.quota, search.required).is_empty() {
            return Ok(Some(Cheapest {
                cores,
                stages: m
                    .dag
                    .stages
                    .iter()
                    .zip(&cfg)
                    .map(|(st, c)| (st.name.clone(), *c))
                    .collect(),
                tried: total,
            }));
        }
    }
    Ok(None)
}
