//! The live tuning of a `balance` app inside the run loop: batch sizes from the measured
//! time per item (kept within what the node's guaranteed apps leave a best-effort app),
//! and how many replicas of a task get items (within a best-effort app's CPU quota).

use super::BEST_EFFORT_CALL_SHARE;
use crate::env::cgroup::AppCgroup;
use crate::observe::timeline::Timeline;
use crate::plan::tuning::{BatchTuner, ReplicaScaler, CPU_FIRST_TRIAL_AFTER};
use crate::run::apprun::AppRun;
use crate::run::replica::Replica;
use protocol::messages::StageMetrics;
use protocol::spec::{AppSpec, ServiceType};
use std::time::{Duration, Instant};

/// Overrides how long into a run the first batch trial waits on CPU cores (seconds, 0:
/// at once).
pub const ENV_CPU_FIRST_TRIAL_S: &str = "SMARTPIPE_CPU_FIRST_TRIAL_S";

/// [`CPU_FIRST_TRIAL_AFTER`], or [`ENV_CPU_FIRST_TRIAL_S`] when set to a number of
/// seconds (anything else is warned of and ignored).
fn cpu_first_trial_after() -> Duration {
    let Some(v) = crate::env::appenv::var(ENV_CPU_FIRST_TRIAL_S) else {
        return CPU_FIRST_TRIAL_AFTER;
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(86_400.0)),
        _ => {
            tracing::warn!(
                "{ENV_CPU_FIRST_TRIAL_S}={v:?} is not a number of seconds: the first batch trial waits {} s",
                CPU_FIRST_TRIAL_AFTER.as_secs()
            );
            CPU_FIRST_TRIAL_AFTER
        }
    }
}

/// The live tuners of a `balance` app and what they changed.
pub struct Tuning {
    tuner: BatchTuner,
    pub retunes: Vec<(f64, String, u32, u32)>,
    scaler: ReplicaScaler,
    pub rescales: Vec<(f64, String, u32, u32)>,
    quota_read: Option<Instant>,
    /// Best effort: when the node's guaranteed apps were last looked at, and the one
    /// with the tightest latency quota then.
    floor_read: Option<Instant>,
    beside: Option<(f64, String)>,
}

impl Tuning {
    /// The tuners of `app`, starting from what `run` was planned with.
    pub fn new(app: &AppSpec, run: &AppRun<'_>) -> Tuning {
        let mut tuner = BatchTuner::new(app, |t| run.wiring.batch_now(t));
        if crate::plan::on_cpu_cores(&crate::plan::device()) {
            tuner.hold_first_trials(Instant::now() + cpu_first_trial_after());
        }
        Tuning {
            tuner,
            retunes: Vec::new(),
            scaler: ReplicaScaler::new(
                app,
                |t| run.wiring.active_now(t),
                |t| run.wiring.replicas_of(t),
            ),
            rescales: Vec::new(),
            quota_read: None,
            floor_read: None,
            beside: None,
        }
    }

    /// One round of tuning: batch sizes, then replicas getting items.
    pub fn step(
        &mut self,
        app: &AppSpec,
        run: &mut AppRun<'_>,
        cgroup: &Result<AppCgroup, String>,
        timeline: &mut Timeline,
        started: Instant,
    ) {
        self.tune_batches(app, run, timeline, started);
        self.scale_replicas(app, run, cgroup, timeline, started);
    }

    /// Batch sizes of a `balance` app, within what guaranteed apps leave a best-effort one.
    fn tune_batches(
        &mut self,
        app: &AppSpec,
        run: &mut AppRun<'_>,
        timeline: &mut Timeline,
        started: Instant,
    ) {
        let t = self;
        if t.tuner.is_empty() {
            return;
        }
        if app.service_type == ServiceType::BestEffort
            && t.floor_read
                .is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1))
        {
            // Beside guaranteed apps, a best-effort model call holds the agent for at
            // most a quarter of their tightest latency quota.
            t.floor_read = Some(Instant::now());
            let floor = crate::plan::ledger::guaranteed_latency_floor(
                &crate::plan::ledger::Ledger::snapshot(),
            );
            if floor.as_ref().map(|f| &f.1) != t.beside.as_ref().map(|f| &f.1) {
                let note = match &floor {
                    Some((ms, who)) => format!(
                        "best effort: model calls kept within {:.0} ms while '{who}' (p99 ≤ {ms:.0} ms) runs",
                        ms / BEST_EFFORT_CALL_SHARE
                    ),
                    None => "best effort: no guaranteed app left, batches back to the plan".into(),
                };
                tracing::info!("{note}");
                timeline.event(note);
                t.beside = floor.clone();
            }
            let replicas = &run.replicas;
            t.tuner
                .set_time_cap(floor.map(|f| f.0 / BEST_EFFORT_CALL_SHARE), |task| {
                    crate::plan::tuning::per_item_ms(&live_metrics(replicas, task))
                });
        }
        let changes = t
            .tuner
            .step(Instant::now(), |task| live_metrics(&run.replicas, task));
        for change in changes {
            let (task, from, to) = (change.task, change.from, change.to);
            let wait = run.wiring.batch_wait_now(task).max(2.0);
            run.wiring.retune(task, to, wait);
            let name = run.wiring.task_name(task);
            let note = change.note(&name);
            tracing::info!("{note}");
            timeline.event(note);
            crate::observe::timeline::push_bounded(
                &mut t.retunes,
                (started.elapsed().as_secs_f64(), name, from, to),
            );
        }
    }

    /// Replicas getting items, for a `balance` app.
    fn scale_replicas(
        &mut self,
        app: &AppSpec,
        run: &mut AppRun<'_>,
        cgroup: &Result<AppCgroup, String>,
        timeline: &mut Timeline,
        started: Instant,
    ) {
        let t = self;
        if t.scaler.is_empty() {
            return;
        }
        // A best-effort app's share of the node (its CPU quota, which the ledger lowers
        // while guaranteed apps run): no more replicas get items than that.
        if let (Ok(group), ServiceType::BestEffort) = (cgroup, app.service_type) {
            if t.quota_read
                .is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1))
            {
                t.quota_read = Some(Instant::now());
                t.scaler.set_cores(group.cpu_quota_cores());
            }
        }
        let changes = t
            .scaler
            .step(Instant::now(), |task| live_metrics(&run.replicas, task));
        for (task, from, to) in changes {
            run.wiring.scale(task, to);
            let name = run.wiring.task_name(task);
            let note = format!("balance: {name} replicas getting items {from} → {to}");
            tracing::info!("{note}");
            timeline.event(note);
            crate::observe::timeline::push_bounded(
                &mut t.rescales,
                (started.elapsed().as_secs_f64(), name, from, to),
            );
        }
    }
}

/// The current counters of task `t`'s running replicas (for the live tuners).
fn live_metrics(replicas: &[Replica], t: usize) -> Vec<&StageMetrics> {
    replicas
        .iter()
        .filter(|r| r.task == t && r.exited.is_none())
        .map(|r| &r.metrics)
        .collect()
}
