//! The running stage replicas as the supervisor tracks them: their process, last
//! metrics and report, how they ended; signalling them; and publishing them to the
//! control API.

use crate::control::{LiveApp, LiveStage};
use crate::plan::Plan;
use crate::run::RunOptions;
use protocol::messages::{StageMetrics, StageReport};
use protocol::spec::TaskKind;
use std::process::ExitStatus;
use std::time::Instant;

/// One running stage replica.
pub struct Replica {
    pub task: usize,
    pub label: String,
    pub pid: i32,
    pub kind: TaskKind,
    pub metrics: StageMetrics,
    pub report: Option<StageReport>,
    pub failed: Option<String>,
    pub exited: Option<ExitStatus>,
    /// When the last message (heartbeat or other) came from it.
    pub last_seen: Instant,
    /// Its up-channel closed (so its final report, if any, has arrived).
    pub up_closed: bool,
}

pub fn signal_all(replicas: &[Replica], sig: i32) {
    for r in replicas.iter().filter(|r| r.exited.is_none()) {
        // SAFETY: the child is in its own process group whose id is its pid; it has
        // not been reaped (exited is None), so the pid is still ours.
        unsafe { libc::kill(-r.pid, sig) };
    }
}

pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// Copy the replicas' state into what the control API serves. `rates` keeps, per
/// replica, (when, items_out then, items/s) to report a recent rate.
pub fn publish(
    live: &std::sync::Mutex<LiveApp>,
    app: &protocol::spec::AppSpec,
    the_plan: &Plan,
    opts: &RunOptions,
    replicas: &[Replica],
    rates: &mut [(Instant, u64, f64)],
    started: Instant,
) {
    let stages = replicas
        .iter()
        .zip(rates.iter_mut())
        .map(|(r, rate)| {
            let dt = rate.0.elapsed().as_secs_f64();
            if dt >= 1.0 {
                rate.2 = r.metrics.items_out.saturating_sub(rate.1) as f64 / dt;
                *rate = (Instant::now(), r.metrics.items_out, rate.2);
            }
            let state = match (&r.exited, &r.failed, &r.report) {
                (_, Some(_), _) => "failed".to_string(),
                (Some(s), _, _) if s.success() => "finished".to_string(),
                (Some(s), _, _) => describe_status(*s),
                (None, _, Some(_)) => "finishing".to_string(),
                (None, _, None) => "running".to_string(),
            };
            let stage_plan = the_plan.stages.get(r.task);
            LiveStage {
                label: r.label.clone(),
                task: app
                    .tasks
                    .get(r.task)
                    .map(|t| t.name.clone())
                    .unwrap_or_else(|| r.label.split('#').next().unwrap_or("").to_string()),
                pid: r.pid,
                state,
                restarts: 0,
                batch: stage_plan.map(|p| p.batch_size).unwrap_or(1),
                replicas: stage_plan.map(|p| p.replicas).unwrap_or(1),
                items_per_s: rate.2,
                metrics: r.metrics.clone(),
            }
        })
        .collect();
    if let Ok(mut l) = live.lock() {
        let restarts = l.restarts.take();
        *l = LiveApp {
            name: app.name.clone(),
            state: if replicas.iter().all(|r| r.exited.is_some()) {
                "ended"
            } else {
                "running"
            }
            .into(),
            run_dir: opts.run_dir.display().to_string(),
            supervisor_pid: std::process::id(),
            uptime_s: started.elapsed().as_secs_f64(),
            stages,
            restarts,
        };
    }
}
