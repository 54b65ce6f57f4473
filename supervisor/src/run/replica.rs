//! The running stage replicas as the supervisor tracks them: their process, last
//! metrics and report, how they ended; signalling them; and publishing them to the
//! control API.

use crate::observe::live::{LiveApp, LiveStage};
use crate::run::RunOptions;
use protocol::messages::{NewDeliveries, SourceTotal, StageMetrics, StageReport};
use protocol::spec::TaskKind;
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Instant;

/// One stage replica (its current process, and what it did before restarts).
pub struct Replica {
    pub task: usize,
    pub replica: u32,
    /// How many processes this replica had before the current one.
    pub incarnation: u32,
    pub label: String,
    pub pid: i32,
    pub kind: TaskKind,
    pub metrics: StageMetrics,
    pub report: Option<StageReport>,
    pub failed: Option<String>,
    pub exited: Option<ExitStatus>,
    /// When the last message (heartbeat or other) came from it.
    pub last_seen: Instant,
    /// When its current process was set up.
    pub started_at: Instant,
    /// Its up-channel closed (so its final report, if any, has arrived).
    pub up_closed: bool,
    /// Killed for missing its heartbeats.
    pub hung: bool,
    /// While silent: its heartbeat thread's run delay (ns) and when it was read, to tell
    /// starvation from a hang (`starvation`).
    pub starve_sample: Option<(u64, Instant)>,
    /// Messages from its processes that did not decode (each one killed it).
    pub bad_messages: u64,
    /// Killed on purpose to be restarted (a `restart` request).
    pub manual_restart: bool,
    /// Told to stop while the app runs on (the app's own agent once its stages are gone):
    /// however it ends, it is not restarted.
    pub told_to_stop: bool,
    /// When its restart is due (after the backoff).
    pub restart_due: Option<Instant>,
    /// Its process ended at this time and has not been judged yet.
    pub judge_pending: Option<Instant>,
    /// Counters of its earlier processes, summed.
    pub earlier: StageMetrics,
    /// Tails: what was acknowledged per source, the output file length then, and the
    /// items delivered per source by this process and (summed) by earlier ones.
    pub frontier: BTreeMap<String, u64>,
    pub output_len: Option<u64>,
    pub received: Vec<SourceTotal>,
    pub received_before: BTreeMap<String, u64>,
    /// Tails: latencies and arrivals of the items the current process acknowledged (sent
    /// with its acknowledgements), and of the earlier processes' items: a killed tail's
    /// deliveries count in the summary's latency too.
    pub delivered_now: NewDeliveries,
    pub delivered_before: NewDeliveries,
    /// When the current process was set up after a restart, until its first output.
    pub restarted_at: Option<Instant>,
}

impl Replica {
    pub fn new(task: usize, replica: u32, label: String, kind: TaskKind) -> Replica {
        Replica {
            task,
            replica,
            incarnation: 0,
            label,
            pid: 0,
            kind,
            metrics: StageMetrics::default(),
            report: None,
            failed: None,
            exited: None,
            last_seen: Instant::now(),
            started_at: Instant::now(),
            up_closed: false,
            hung: false,
            starve_sample: None,
            bad_messages: 0,
            manual_restart: false,
            told_to_stop: false,
            restart_due: None,
            judge_pending: None,
            earlier: StageMetrics::default(),
            frontier: BTreeMap::new(),
            output_len: None,
            received: Vec::new(),
            received_before: BTreeMap::new(),
            delivered_now: NewDeliveries::default(),
            delivered_before: NewDeliveries::default(),
            restarted_at: None,
        }
    }

    /// Counters over every process of this replica.
    pub fn total_metrics(&self) -> StageMetrics {
        let mut m = self.metrics.clone();
        let e = &self.earlier;
        m.items_in += e.items_in;
        m.items_out += e.items_out;
        for (a, b) in m.lost.iter_mut().zip(e.lost) {
            *a += b;
        }
        m.busy_ns += e.busy_ns;
        m.services += e.services;
        m.busy_sq_ms2 += e.busy_sq_ms2;
        m.waiting_for_slot_ns += e.waiting_for_slot_ns;
        m.ack_stalls += e.ack_stalls;
        m.frames_fitted += e.frames_fitted;
        m.read_stalls += e.read_stalls;
        m.reconnects += e.reconnects;
        for (a, b) in [
            (&mut m.service_buckets, &e.service_buckets),
            (&mut m.latency_buckets, &e.latency_buckets),
        ] {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        m.latency_sum_ns += e.latency_sum_ns;
        m.model_loads += e.model_loads;
        m.model_evictions += e.model_evictions;
        m.model_load_ns += e.model_load_ns;
        if e.bad_input_example.is_some() {
            m.bad_input_example = e.bad_input_example.clone();
        }
        m
    }

    /// Fold the current process's counters into `earlier` (it died; a new one starts).
    pub fn retire_process(&mut self) {
        self.earlier = self.total_metrics();
        self.metrics = StageMetrics::default();
        for s in std::mem::take(&mut self.received) {
            *self.received_before.entry(s.source).or_insert(0) += s.total;
        }
        let delivered = self.delivered_by_this_process();
        self.delivered_before.absorb(&delivered);
        self.delivered_now = NewDeliveries::default();
        self.report = None;
        self.failed = None;
        self.exited = None;
        self.up_closed = false;
        self.hung = false;
        self.manual_restart = false;
        self.incarnation += 1;
    }
}

impl Replica {
    /// Tails: the current process's deliveries: those its acknowledgements carried, and
    /// those since the last one that its report carries when it reported.
    pub fn delivered_by_this_process(&self) -> NewDeliveries {
        let mut delivered = self.delivered_now.clone();
        if let Some(r) = &self.report {
            delivered.absorb(&NewDeliveries {
                latencies_ms: r.latencies_ms.clone(),
                arrivals_ns: r.arrivals_ns.clone(),
                first_created_ns: r.first_created_ns,
                seen: r.latencies_seen,
                max_ms: r.latency_max_ms,
            });
        }
        delivered
    }
}

pub fn signal_all(replicas: &[Replica], sig: nix::sys::signal::Signal) {
    for r in replicas.iter().filter(|r| r.exited.is_none()) {
        // The child is in its own process group whose id is its pid; it has not been
        // reaped (exited is None), so the pid is still ours.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(r.pid), sig);
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
/// replica, (when, items_out then, items/s) to report a recent rate; `stopping`: the app
/// drains or stops (its state says so, not "running").
pub fn publish(
    live: &std::sync::Mutex<LiveApp>,
    wiring: &crate::run::wiring::Wiring,
    opts: &RunOptions,
    replicas: &[Replica],
    rates: &mut [(Instant, u64, f64)],
    (started, stopping): (Instant, bool),
) {
    let (app, the_plan) = (wiring.app, wiring.plan);
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
                _ if r.restart_due.is_some() => "restarting".to_string(),
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
                restarts: r.incarnation,
                batch: match r.metrics.batch_size {
                    0 => stage_plan.map(|p| p.batch_size).unwrap_or(1),
                    live => live,
                },
                replicas: stage_plan.map(|p| p.replicas).unwrap_or(1),
                active: wiring.active_now(r.task),
                items_per_s: rate.2,
                metrics: r.total_metrics(),
            }
        })
        .collect();
    if let Ok(mut l) = live.lock() {
        let restarts = l.restarts.take();
        let changes = l.changes.take();
        let constraints = std::mem::take(&mut l.constraints);
        *l = LiveApp {
            name: app.name.clone(),
            state: if replicas.iter().all(|r| r.exited.is_some()) {
                "ended"
            } else if stopping {
                "stopping"
            } else {
                "running"
            }
            .into(),
            run_dir: opts.run_dir.display().to_string(),
            supervisor_pid: std::process::id(),
            uptime_s: started.elapsed().as_secs_f64(),
            constraints,
            stages,
            request_rate: wiring.rate,
            restarts,
            changes,
        };
    }
}
