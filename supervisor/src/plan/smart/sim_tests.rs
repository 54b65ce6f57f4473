use super::*;
use crate::plan::smart::model::{Prediction, StageConfig};
use crate::plan::smart::testkit::{chain, linear, model};

fn cfg(n: usize, at: &[(usize, StageConfig)]) -> Vec<StageConfig> {
    let mut v = vec![StageConfig::default(); n];
    for (i, c) in at {
        v[*i] = *c;
    }
    v
}

fn sc(b: u32, w: f64, r: u32) -> StageConfig {
    StageConfig {
        batch: b,
        max_wait_ms: w,
        replicas: r,
        threads: 1,
    }
}

fn close(what: &str, model: f64, sim: f64, tol: f64) {
    let err = (model - sim).abs() / sim.max(1e-9);
    assert!(
        err <= tol,
        "{what}: model {model:.2} vs sim {sim:.2} ({:.0}% off)",
        err * 100.0
    );
}

/// Throughput within 5 %, mean and p99 latency of the first path within 15 %.
fn model_matches_sim(p: &crate::plan::smart::model::Prediction, s: &SimResult) {
    close(
        "throughput",
        p.qos.throughput_per_s,
        s.throughput_per_s,
        0.05,
    );
    close("mean latency", p.paths[0].mean_ms, s.mean_ms, 0.15);
    close("p99 latency", p.qos.p99_ms, s.p99_ms, 0.15);
}

/// Compares model and simulation on one configuration; returns (model, sim) p99.
fn agree(
    stages: &[(&str, &str)],
    prof: &[(&str, f64, f64)],
    rate: f64,
    c: &[(usize, StageConfig)],
) -> (f64, f64) {
    let app = chain(stages, serde_json::json!({}));
    let m = model(&app, &linear(prof), rate, false);
    let c = cfg(app.tasks.len(), c);
    let p = m.predict(&c).unwrap();
    let s = simulate(
        &m,
        &c,
        SimConfig {
            seed: 7,
            duration_s: 400.0,
            warmup_s: 20.0,
        },
    )
    .unwrap();
    eprintln!("model {:?}\nsim   {:?}", p.qos, s);
    model_matches_sim(&p, &s);
    (p.qos.p99_ms, s.p99_ms)
}

#[test]
fn rng_is_deterministic_and_lognormal_has_mean_one() {
    let mut a = Rng::new(3);
    let mut b = Rng::new(3);
    assert_eq!(a.next_u64(), b.next_u64());
    let n = 200_000;
    let m: f64 = (0..n).map(|_| a.lognormal1(0.3)).sum::<f64>() / n as f64;
    assert!((m - 1.0).abs() < 0.01, "{m}");
}

#[test]
fn single_stage_mm1_like() {
    // ρ = 0.5 at batch 1.
    agree(&[("a", "cpu")], &[("a", 0.010, 0.0)], 50.0, &[]);
}

#[test]
fn two_stage_chain_moderate_load() {
    agree(
        &[("a", "cpu"), ("b", "cpu")],
        &[("a", 0.008, 0.0), ("b", 0.012, 0.0)],
        40.0,
        &[],
    );
}

#[test]
fn replicas_split_the_load() {
    // One replica would be at ρ = 1.6; two at 0.8 each.
    agree(
        &[("a", "cpu")],
        &[("a", 0.020, 0.0)],
        80.0,
        &[(1, sc(1, 0.0, 2))],
    );
}

#[test]
fn batching_with_a_wait_fills_batches() {
    // t(4) = 30 ms per 4 items; λ = 100/s fills a batch of 4 in 30 ms.
    agree(
        &[("a", "cpu")],
        &[("a", 0.018, 0.003)],
        100.0,
        &[(1, sc(4, 50.0, 1))],
    );
}

#[test]
fn greedy_batching_absorbs_overload_of_batch_one() {
    // Batch 1 would need 21 ms per item at 60/s (ρ = 1.26); batch up to 8, no wait.
    agree(
        &[("a", "cpu")],
        &[("a", 0.020, 0.001)],
        60.0,
        &[(1, sc(8, 0.0, 1))],
    );
}

#[test]
fn overloaded_best_effort_sheds_the_excess() {
    let app = chain(&[("a", "cpu")], serde_json::json!({}));
    let m = model(&app, &linear(&[("a", 0.020, 0.0)]), 100.0, true);
    let c = cfg(3, &[]);
    let p = m.predict(&c).unwrap();
    let s = simulate(&m, &c, SimConfig::default()).unwrap();
    close(
        "throughput",
        p.qos.throughput_per_s,
        s.throughput_per_s,
        0.05,
    );
    assert!((p.qos.loss_pct - 50.0).abs() < 1.0, "{:?}", p.qos);
    assert!((s.loss_pct - 50.0).abs() < 3.0, "{s:?}");
}

/// Model and simulation of a chain whose processes share `cores` cores: the simulation
/// shares them exactly (processor sharing), the model by mean slowdowns plus the wait for
/// the cores as one multi-server queue. Heavier loads than these (above ~0.8 of one core)
/// leave the model up to ~25% optimistic on p99, which is why the planner's picks are
/// checked by the simulation.
fn contended(stages: &[(&str, &str)], prof: &[(&str, f64, f64)], rate: f64, cores: f64) {
    let app = chain(stages, serde_json::json!({}));
    let mut m = model(&app, &linear(prof), rate, false);
    m.resources.cpu_cores = cores;
    let c = cfg(app.tasks.len(), &[]);
    let p = m.predict(&c).unwrap();
    let s = simulate(
        &m,
        &c,
        SimConfig {
            seed: 11,
            duration_s: 600.0,
            warmup_s: 20.0,
        },
    )
    .unwrap();
    let slow: Vec<f64> = p.stages.iter().map(|s| s.slowdown).collect();
    eprintln!(
        "cores {cores}, busy {:.2}: slowdowns {slow:.3?}\nmodel {:?}\nsim   mean {:.1} p99 {:.1} tput {:.2}",
        p.cores, p.qos, s.mean_ms, s.p99_ms, s.throughput_per_s
    );
    model_matches_sim(&p, &s);
}

#[test]
fn contention_three_stages_on_one_core() {
    contended(
        &[("a", "cpu"), ("b", "cpu"), ("c", "cpu")],
        &[("a", 0.0, 0.008), ("b", 0.0, 0.008), ("c", 0.0, 0.008)],
        30.0,
        1.0,
    );
}

#[test]
fn contention_four_stages_on_two_cores() {
    contended(
        &[("a", "cpu"), ("b", "cpu"), ("c", "cpu"), ("d", "cpu")],
        &[
            ("a", 0.0, 0.020),
            ("b", 0.0, 0.012),
            ("c", 0.0, 0.016),
            ("d", 0.0, 0.008),
        ],
        25.0,
        2.0,
    );
}

#[test]
fn contention_with_the_agent_on_cpu() {
    contended(
        &[("pre", "cpu"), ("net", "gpu"), ("post", "cpu")],
        &[
            ("pre", 0.0, 0.012),
            ("net", 0.0, 0.015),
            ("post", 0.0, 0.006),
        ],
        20.0,
        1.0,
    );
}

/// Three equal stages at light load, cv 0.6 each: items slow at every stage at once (path
/// loading 1) spread the path's latency about √3 times as wide as independent stages do.
#[test]
fn shared_per_item_variability_widens_the_path() {
    let app = chain(
        &[("a", "cpu"), ("b", "cpu"), ("c", "cpu")],
        serde_json::json!({}),
    );
    let run = |loading: Option<f64>| {
        let mut prof = linear(&[("a", 0.0, 0.010), ("b", 0.0, 0.010), ("c", 0.0, 0.010)]);
        for t in ["a", "b", "c"] {
            let mut p = prof.get(t).unwrap().clone();
            p.cv = Some(0.6);
            p.path_loading = loading;
            prof.insert(p);
        }
        let m = model(&app, &prof, 5.0, false);
        let c = vec![StageConfig::default(); app.tasks.len()];
        let s = simulate(
            &m,
            &c,
            SimConfig {
                seed: 3,
                duration_s: 2000.0,
                warmup_s: 20.0,
            },
        )
        .unwrap();
        // The analytic model adds the shared parts' covariance too.
        model_matches_sim(&m.predict(&c).unwrap(), &s);
        s
    };
    let independent = run(None);
    let shared = run(Some(1.0));
    let ratio = shared.jitter_ms / independent.jitter_ms;
    assert!(
        (1.5..2.0).contains(&ratio),
        "jitter {:.2} ms shared vs {:.2} ms independent (ratio {ratio:.2})",
        shared.jitter_ms,
        independent.jitter_ms
    );
    assert!(shared.p99_ms > independent.p99_ms * 1.2);
    // The mean is the same: the factor only moves the spread.
    close("mean latency", shared.mean_ms, independent.mean_ms, 0.03);
}

/// The agent on `cpu:0` with two executors runs two batches at once: a chain bound by its
/// two models carries about twice the rate on two cores (bounded by the cores' CPU time
/// and by each GPU stage's one batch at the agent at a time), and the simulation of the
/// same plan agrees with the analytic model.
#[test]
fn agent_executors_on_cpu_carry_the_models_side_by_side() {
    let app = chain(
        &[("pre", "cpu"), ("pnet", "gpu"), ("rnet", "gpu")],
        serde_json::json!({}),
    );
    let run = |executors: u32, pnet_s: f64, rnet_s: f64| {
        let prof = linear(&[
            ("pre", 0.0, 0.004),
            ("pnet", 0.0, pnet_s),
            ("rnet", 0.0, rnet_s),
        ]);
        let mut m = model(&app, &prof, 60.0, false);
        m.resources.cpu_cores = 2.0;
        m.resources.agent_threads = 1;
        m.resources.agent_executors = executors;
        let c = cfg(app.tasks.len(), &[]);
        let p = m.predict(&c).unwrap();
        let s = simulate(
            &m,
            &c,
            SimConfig {
                seed: 5,
                duration_s: 300.0,
                warmup_s: 20.0,
            },
        )
        .unwrap();
        eprintln!(
            "executors {executors}: model {:.1}/s (capacity {:.1}, cores {:.2}), sim {:.1}/s",
            p.qos.throughput_per_s, p.capacity, p.cores, s.throughput_per_s
        );
        close(
            "throughput",
            p.qos.throughput_per_s,
            s.throughput_per_s,
            0.1,
        );
        (p, s)
    };
    let (one, one_sim) = run(1, 0.020, 0.020);
    let (two, two_sim) = run(2, 0.020, 0.020);
    // One executor: the device's 40 ms an item bounds the app at 25/s.
    close("one executor", one.capacity, 25.0, 0.01);
    // Two: 50/s for the device, but 2 cores ÷ 44 ms of CPU an item bound it lower.
    assert!(two.capacity <= 2.0 / 0.044 + 1e-9, "{}", two.capacity);
    assert!(two_sim.throughput_per_s > 1.5 * one_sim.throughput_per_s);
    // The same CPU work an item either way, spread over twice the threads.
    let per_item = |p: &Prediction| p.cores / p.qos.throughput_per_s;
    close("cores per item", per_item(&two), per_item(&one), 0.05);
    // A 30 ms P-Net: its stage, one batch at the agent at a time, bounds the app below
    // what two executors could carry.
    let (alone, _) = run(2, 0.030, 0.010);
    assert!(alone.capacity < 1.0 / 0.030 + 1e-9, "{}", alone.capacity);
}
