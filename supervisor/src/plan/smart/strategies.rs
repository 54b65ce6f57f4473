//! The strategies' choices among the configurations the search found (see
//! `planner.rs`), each checked by the discrete-event simulation before it is taken: the
//! analytic model ranks thousands of configurations; the simulation, which shares the
//! cores exactly (processor sharing) where the model approximates, predicts the QoS of
//! the few a strategy would pick, and a pick whose simulated QoS misses the quota gives
//! way to the next in the strategy's order (at most [`MAX_SIMULATED`] per strategy).

use super::model::{ModelError, Resources, StageConfig, CPU_HEADROOM};
use super::planner::{by_key, grid, PlanOptions, Plans, Scored, Search, BALANCE_SHARE};
use super::profile::Profiles;
use super::qos::Qos;
use super::sim::{simulate, SimConfig};
use protocol::spec::{AppSpec, Strategy};

/// Most configurations simulated per strategy before it gives up.
pub const MAX_SIMULATED: usize = 40;
/// Items a check simulates (after a warm-up of a tenth of them).
pub const SIMULATED_ITEMS: f64 = 3000.0;

/// The simulation settings for an app offered `rate` items/s.
pub fn sim_config(rate: f64) -> SimConfig {
    let duration_s = SIMULATED_ITEMS / rate.max(1e-9);
    SimConfig {
        seed: 1,
        duration_s,
        warmup_s: duration_s / 10.0,
    }
}

/// The QoS the simulation predicts for `cfg` under the search's workload.
pub(crate) fn simulated(search: &Search, cfg: &[StageConfig]) -> Result<Qos, ModelError> {
    let m = &search.model;
    let sc = sim_config(m.workload.rate);
    let r = simulate(m, cfg, sc)?;
    // Delivered ÷ offered within the measured window; at least 99% is read as all of it
    // (the rest is items in flight at the window's edges, or sampling noise).
    let window = (sc.duration_s - sc.warmup_s).max(1e-9);
    let offered = r.emitted as f64 / window;
    let ratio = if offered > 0.0 {
        r.throughput_per_s / offered
    } else {
        0.0
    };
    let delivered = if ratio >= 0.99 { 1.0 } else { ratio };
    Ok(Qos {
        throughput_per_s: m.workload.rate * delivered,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        jitter_ms: r.jitter_ms,
        loss_pct: r.loss_pct,
    })
}

struct Checker<'s, 'a> {
    search: &'s Search<'a>,
    /// Simulated QoS by index into the candidates.
    done: Vec<Option<Option<Qos>>>,
}

impl Checker<'_, '_> {
    fn qos(&mut self, all: &[Scored], k: usize) -> Result<Qos, ModelError> {
        if let Some(Some(q)) = self.done[k] {
            return Ok(q);
        }
        let q = simulated(self.search, &all[k].cfg)?;
        self.done[k] = Some(Some(q));
        Ok(q)
    }

    /// The first of `order` whose simulated QoS meets the quota, with that QoS.
    fn first_met(&mut self, all: &[Scored], order: &[usize]) -> Result<Option<Scored>, ModelError> {
        for &k in order.iter().take(MAX_SIMULATED) {
            let q = self.qos(all, k)?;
            let misses = q.shortfalls(&self.search.app.quota, self.search.required);
            if misses.is_empty() {
                let mut s = all[k].clone();
                s.simulated = Some(q);
                return Ok(Some(s));
            }
        }
        Ok(None)
    }
}

/// Indices of `all` that `keep` keeps, sorted by `key` (see [`by_key`]).
fn sorted<T, const N: usize>(
    all: &[T],
    keep: impl Fn(&T) -> bool,
    key: impl Fn(&T) -> [f64; N],
) -> Vec<usize> {
    let mut v: Vec<(usize, [f64; N])> = (0..all.len())
        .filter(|&k| keep(&all[k]))
        .map(|k| (k, key(&all[k])))
        .collect();
    v.sort_by(|(_, a), (_, b)| by_key(a, b));
    v.into_iter().map(|(k, _)| k).collect()
}

/// The plans of every strategy for `app` under `resources`.
/// - `lazy`: fewest cores, then fewest threads, then lowest p99;
/// - `balance`: the lowest p99 within `lazy`'s cores + [`BALANCE_SHARE`] of what it
///   leaves free;
/// - `strong`: the most capacity, then the lowest p99, then the fewest cores;
///
/// Each is the first in its order whose simulation meets the quota. When nothing meets
/// it, `best` is the configuration with the most throughput, then the lowest p99 (a
/// best-effort app runs with it), its QoS simulated.
pub fn plans(
    app: &AppSpec,
    profiles: &Profiles,
    resources: Resources,
    opts: &PlanOptions,
) -> Result<Plans, ModelError> {
    let search = Search::new(app, profiles, resources, opts)?;
    let ok: Vec<Scored> = search
        .enumerate(opts, true)?
        .into_iter()
        .filter(|s| s.misses.is_empty() && search.model.fits(&s.pred))
        .collect();
    let mut check = Checker {
        search: &search,
        done: vec![None; ok.len()],
    };
    let lazy_order = sorted(&ok, |_| true, |s| search.lazy_key(s));
    let lazy = check.first_met(&ok, &lazy_order)?;
    let balance = match &lazy {
        Some(l) => {
            let usable = resources.cpu_cores * CPU_HEADROOM;
            let budget = l.pred.cores + BALANCE_SHARE * (usable - l.pred.cores).max(0.0);
            let order = sorted(
                &ok,
                |s| s.pred.cores <= budget + 1e-9,
                |s| [grid(s.pred.qos.p99_ms, 1e-9), s.pred.cores],
            );
            check.first_met(&ok, &order)?
        }
        None => None,
    };
    let strong = match &lazy {
        Some(_) => {
            // The most capacity (equal within a millionth of an item per second), then
            // the lowest p99, then the fewest cores.
            let order = sorted(
                &ok,
                |_| true,
                |s| {
                    [
                        -grid(s.pred.capacity, 1e-6),
                        grid(s.pred.qos.p99_ms, 1e-9),
                        s.pred.cores,
                    ]
                },
            );
            check.first_met(&ok, &order)?
        }
        None => None,
    };
    // Nothing meets the quota: the most throughput, then the lowest p99, of every
    // configuration (a best-effort app is throttled to what its cores carry).
    let best = if lazy.is_none() {
        let budget = resources.device_memory_bytes.unwrap_or(u64::MAX);
        let everything: Vec<Scored> = search
            .enumerate(opts, false)?
            .into_iter()
            .filter(|s| s.pred.memory_bytes <= budget)
            .collect();
        let order = sorted(
            &everything,
            |_| true,
            |s| [-grid(s.pred.qos.throughput_per_s, 1e-9), s.pred.qos.p99_ms],
        );
        match order.first() {
            Some(&k) => {
                let mut check = Checker {
                    search: &search,
                    done: vec![None; everything.len()],
                };
                let q = check.qos(&everything, k)?;
                let mut s = everything[k].clone();
                s.misses = q.shortfalls(&app.quota, search.required);
                s.simulated = Some(q);
                Some(search.plan_of(&s, app.strategy))
            }
            None => None,
        }
    } else {
        None
    };
    Ok(Plans {
        lazy: lazy.as_ref().map(|s| search.plan_of(s, Strategy::Lazy)),
        balance: balance
            .as_ref()
            .map(|s| search.plan_of(s, Strategy::Balance)),
        strong: strong.as_ref().map(|s| search.plan_of(s, Strategy::Strong)),
        best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_candidates_that_tie_within_a_tolerance_is_a_total_order() {
        // Cores 1e-7 apart in a chain (each "equal" to the next within 1e-6, the ends
        // not) with p99s in the other direction: a before-predicate with a tolerance is
        // not transitive here, and the standard sort may panic on it. Keys on a grid sort.
        let cands: Vec<(f64, f64)> = (0..64)
            .map(|k| (0.5 + f64::from(k % 32) * 1e-7, 100.0 - f64::from(k)))
            .chain([(f64::NAN, 1.0), (0.2, f64::INFINITY)])
            .collect();
        let order = sorted(&cands, |_| true, |c| [grid(c.0, 1e-6), c.1]);
        assert_eq!(order.len(), cands.len());
        assert_eq!(order[0], 65, "fewest cores first");
        let keys: Vec<[f64; 2]> = order
            .iter()
            .map(|&k| [grid(cands[k].0, 1e-6), cands[k].1])
            .collect();
        for w in keys.windows(2) {
            let o = w[0][0]
                .total_cmp(&w[1][0])
                .then(w[0][1].total_cmp(&w[1][1]));
            assert!(o.is_le(), "{w:?}");
        }
        assert!(
            cands[*order.last().expect("last")].0.is_nan(),
            "NaN sorts last"
        );
    }
}
