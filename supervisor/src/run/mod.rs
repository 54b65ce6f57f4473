//! Running one app in the foreground: create the pools and channels of the plan,
//! start and bootstrap one process per stage replica, watch them (heartbeats, reports,
//! exits, signals), drain on SIGINT/SIGTERM, and summarise.

// The room's modules (docs/architecture.md: the rooms and their order).
pub mod agent_host;
pub mod apprun;
pub mod hang;
pub mod leaks;
pub mod pool_make;
pub mod replica;
pub mod starvation;
pub mod supervise;
pub mod wiring;

use crate::observe::live::{ChangeRequest, LiveApp, LiveChange, RestartRequest};
use crate::observe::summary::{Summary, TailReports};
use crate::observe::timeline::Timeline;
use crate::plan::app::LoadedApp;
use crate::plan::models::agent_task;
use crate::plan::{plan, Plan};
use crate::run::apprun::{AppRun, Event};
use crate::run::replica::{publish, signal_all};
use crate::run::wiring::Wiring;
use anyhow::{anyhow, Context};
use protocol::messages::*;
use protocol::spec::{ServiceType, TaskKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Events handled in one round of the run loop before its periodic work runs.
const MAX_EVENTS_PER_ROUND: usize = 4096;
/// The run loop's periodic work (judging, restarts, tuning, sampling: each a pass over
/// every replica) runs at most this often, and at once after a process exits. Apps of
/// more than [`FULL_RATE_PROCESSES`] processes run it proportionally less often (at most
/// [`MAX_ROUND_EVERY`] apart), like their heartbeats, so an idle supervisor's load does
/// not grow with the app.
const ROUND_EVERY: Duration = Duration::from_millis(100);
const MAX_ROUND_EVERY: Duration = Duration::from_millis(500);
/// A best-effort model call may take this fraction of the tightest latency quota of the
/// node's request-guarantee apps (1/4: a guaranteed request that arrives behind one still
/// has most of its budget).
const BEST_EFFORT_CALL_SHARE: f64 = 4.0;
/// The run loop of an app of more than [`FULL_RATE_PROCESSES`] processes looks at its
/// events this often instead of waking for each (an exit is acted on this much later).
const COALESCE_TICK: Duration = Duration::from_millis(100);
/// `status` sees a large app's state at most this often (a pass building every stage's row).
const PUBLISH_EVERY_LARGE: Duration = Duration::from_millis(500);

/// The period of the run loop's round for an app of `processes` processes.
fn round_every(processes: u64) -> Duration {
    if processes <= FULL_RATE_PROCESSES {
        return ROUND_EVERY;
    }
    let scaled = ROUND_EVERY.as_millis() as u64 * processes / FULL_RATE_PROCESSES;
    Duration::from_millis(scaled).min(MAX_ROUND_EVERY)
}
/// Up to this many processes an app's run loop works at full rate (see [`round_every`]).
const FULL_RATE_PROCESSES: u64 = 32;
/// Up to [`FULL_RATE_PROCESSES`] processes an app's stages report every `heartbeat_ms`;
/// a larger app's report less often (at most [`MAX_HEARTBEAT_MS`] apart), so that the
/// supervisor reads as many reports a second as for this many processes (160 at the
/// default 100 ms: each costs it a reader's wake-up, a decode and a hand-over to the run
/// loop, ≈ 30 µs, so the idle supervisor of a 250-process app stays near ½ % of a core,
/// `tools/bench/scale.sh`).
const FULL_RATE_REPORTING: u64 = 16;
const MAX_HEARTBEAT_MS: u64 = 2000;

/// The heartbeat period of an app of `processes` processes, given the base period.
pub fn heartbeat_for(base_ms: u32, processes: u64) -> u32 {
    let base = u64::from(base_ms);
    if processes <= FULL_RATE_PROCESSES {
        return base_ms;
    }
    let scaled = (base * processes / FULL_RATE_REPORTING).min(MAX_HEARTBEAT_MS.max(base));
    u32::try_from(scaled).unwrap_or(base_ms)
}

pub struct RunOptions {
    pub run_dir: PathBuf,
    pub startup_timeout: Duration,
    pub heartbeat_ms: u32,
    /// Grace between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// How long a drain (after SIGINT/SIGTERM) may take before the app is stopped.
    pub drain_timeout: Duration,
    /// A process silent this long (missed heartbeats) is taken for hung and killed.
    pub hang_after: Duration,
    /// Show a progress bar (terminal) or progress lines (otherwise) on stderr.
    pub show_progress: bool,
    /// The node's GPU agents (the daemon): GPU stages use the device's shared agent
    /// instead of an agent of the app's own.
    pub agents: Option<Arc<crate::run::agent_host::AgentHosts>>,
}

pub struct RunOutcome {
    pub summary: Summary,
    pub error: Option<String>,
}

/// One event from a replica's threads (messages of an earlier process are dropped).
fn handle(run: &mut AppRun<'_>, event: Event, timeline: &mut Timeline) {
    match event {
        Event::Up(i, inc, msg) if inc == run.replicas[i].incarnation => {
            run.on_up(i, *msg, timeline);
        }
        Event::UpClosed(i, inc) if inc == run.replicas[i].incarnation => {
            run.replicas[i].up_closed = true
        }
        Event::Exited(i, inc, status) if inc == run.replicas[i].incarnation => {
            run.on_exit(i, status.ok());
        }
        Event::BadUp(i, inc, error) if inc == run.replicas[i].incarnation => {
            run.on_bad_up(i, &error, timeline);
        }
        Event::AgentRestarted => {
            timeline.event("the node's GPU agent was restarted: attaching again");
            match run.wiring.attach_shared() {
                Ok(()) => run.wiring.rewire_gpu_stages_to_agent(),
                Err(e) => tracing::error!("{e:#}"),
            }
        }
        _ => {}
    }
}

/// What a tail that ended without its report (it failed, or was stopped at once)
/// delivered: its counters as its last heartbeat (sent also on a failure) had them,
/// per source where its acknowledgements named one.
fn unreported_tail(r: &crate::run::replica::Replica) -> StageReport {
    let out = r.metrics.items_out;
    let mut received = r.received.clone();
    match received.as_mut_slice() {
        [] if out > 0 => received.push(SourceTotal {
            source: "(unreported)".into(),
            total: out,
        }),
        [only] => only.total = only.total.max(out),
        _ => {}
    }
    StageReport {
        metrics: r.total_metrics(),
        received,
        ..StageReport::default()
    }
}

/// A request-guarantee app whose every item was bad input delivered nothing it
/// promised: that is a failure, not a finish.
fn nothing_delivered(app: &protocol::spec::AppSpec, summary: &Summary) -> Option<String> {
    let bad = summary.lost.get("bad_input").copied().unwrap_or(0);
    (app.service_type == ServiceType::RequestGuarantee
        && summary.items_in > 0
        && summary.items_out == 0
        && bad > 0)
        .then(|| {
            format!(
                "nothing was delivered: all {} items were bad input (see the heads' logs); a request-guarantee app that delivers nothing has failed",
                summary.items_in
            )
        })
}

/// Run an app to completion (or until stopped). Returns the summary; `error` is set
/// when the app failed.
pub fn run_app(
    loaded: &LoadedApp,
    opts: &RunOptions,
    interrupted: Arc<AtomicBool>,
    live: Option<Arc<std::sync::Mutex<LiveApp>>>,
) -> anyhow::Result<RunOutcome> {
    let app = &loaded.spec;
    let the_plan: Plan = plan(app).context("cannot plan the app")?;
    let store = crate::plan::models::locate(app, &loaded.file)?;
    // One GPU agent (device cpu:0 unless CUDA is available) when any task is a GPU task.
    let agent = if app.tasks.iter().any(|t| t.kind == TaskKind::Gpu) {
        let store = store.as_ref().context("GPU tasks need a model manifest")?;
        Some(agent_task(app, store)?)
    } else {
        None
    };
    if app.service_type == ServiceType::RequestGuarantee {
        if let Some(t) = the_plan
            .stages
            .iter()
            .find(|s| s.kind == TaskKind::Tail && s.replicas > 1)
        {
            return Err(anyhow!(
                "tail '{}' of a request-guarantee app runs as one replica (it puts the output in order and removes duplicates); remove its `replicas`",
                t.task
            ));
        }
    }
    let logs = opts.run_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    std::fs::write(
        opts.run_dir.join("plan.json"),
        serde_json::to_vec_pretty(&the_plan).unwrap_or_default(),
    )
    .with_context(|| format!("cannot write the plan into {}", opts.run_dir.display()))?;

    let (events_tx, events) = mpsc::channel::<Event>();
    let shared = match (&agent, &opts.agents) {
        (Some(_), Some(hosts)) => {
            let gpu_replicas: u32 = the_plan
                .stages
                .iter()
                .filter(|s| s.kind == TaskKind::Gpu)
                .map(|s| s.replicas)
                .sum();
            Some(
                hosts
                    .join(
                        &crate::plan::device(),
                        &app.name,
                        gpu_replicas,
                        events_tx.clone(),
                    )
                    .context("cannot join the node's GPU agent")?,
            )
        }
        _ => None,
    };
    let processes = the_plan
        .stages
        .iter()
        .map(|s| u64::from(s.replicas))
        .sum::<u64>()
        + u64::from(agent.is_some() && shared.is_none());
    let heartbeat_ms = heartbeat_for(opts.heartbeat_ms, processes);
    // A stage is judged hung after three missed heartbeats at the least.
    let hang_after = opts
        .hang_after
        .max(Duration::from_millis(3 * u64::from(heartbeat_ms)));
    if heartbeat_ms != opts.heartbeat_ms {
        tracing::info!(
            "{processes} processes: heartbeats every {heartbeat_ms} ms, a stage silent for {} ms is taken for hung",
            hang_after.as_millis()
        );
    }
    let mut wiring = Wiring::new(
        app,
        &the_plan,
        agent,
        store,
        &opts.run_dir,
        heartbeat_ms,
        shared,
    )?;
    // The app's own cgroup, limited to its constraints; the app runs without one when
    // cgroups cannot be written, and says so.
    let mut cgroup = crate::env::cgroup::for_app(app);
    let constraints = match &cgroup {
        Ok(group) => {
            wiring.cgroup_procs = group.procs_files();
            // Best effort runs on what the node's guaranteed apps leave, now and as
            // they come and go (the ledger sets its CPU quota).
            if app.service_type == protocol::spec::ServiceType::BestEffort {
                if let Err(e) = crate::plan::ledger::attach_cgroup(&app.name, group.cpu_files()) {
                    tracing::warn!("{e}");
                }
            }
            group.describe()
        }
        Err(why) => why.clone(),
    };
    tracing::info!("{constraints}");
    if let Some(live) = &live {
        if let Ok(mut l) = live.lock() {
            l.constraints = constraints.clone();
        }
    }
    let mut out_of_memory: Vec<String> = Vec::new();
    let mut run = AppRun::new(wiring, events_tx, logs, opts.startup_timeout);
    let started = Instant::now();
    let started_ns = protocol::clock::now_ns();
    run.start_all()
        .with_context(|| format!("cannot start app '{}'", app.name))?;
    let (restart_tx, restart_requests) = mpsc::channel::<RestartRequest>();
    let (change_tx, change_requests) = mpsc::channel::<ChangeRequest>();
    if let Some(live) = &live {
        if let Ok(mut l) = live.lock() {
            l.restarts = Some(restart_tx);
            l.changes = Some(change_tx);
        }
    }

    let mut progress =
        crate::observe::progress::Progress::new(crate::observe::progress::expected_items(app));
    let mut rates: Vec<(Instant, u64, f64)> = vec![(Instant::now(), 0, 0.0); run.replicas.len()];
    let mut timeline = Timeline::new(run.replicas.iter().map(|r| r.label.clone()).collect(), 0.25);

    let mut failure: Option<String> = None;
    let mut stop_sent: Option<Instant> = None;
    let mut term_sent: Option<Instant> = None;
    let mut drained_at: Option<Instant> = None;
    // A second signal: stop at once (SIGTERM now, SIGKILL after a second).
    let mut hurry = false;
    let mut finish_sent = false;
    let mut agent_stopped = false;
    let mut all_exited_at: Option<Instant> = None;
    let agent_index = run.wiring.agent_index;
    let mut tuner = crate::plan::tuning::BatchTuner::new(app, |t| run.wiring.batch_now(t));
    let mut retunes: Vec<(f64, String, u32, u32)> = Vec::new();
    let mut scaler = crate::plan::tuning::ReplicaScaler::new(
        app,
        |t| run.wiring.active_now(t),
        |t| run.wiring.replicas_of(t),
    );
    let mut rescales: Vec<(f64, String, u32, u32)> = Vec::new();
    let mut quota_read: Option<Instant> = None;
    // Best effort: when the node's guaranteed apps were last looked at, and the one
    // with the tightest latency quota then.
    let mut floor_read: Option<Instant> = None;
    let mut beside: Option<(f64, String)> = None;
    let mut published: Option<Instant> = None;
    let round_period = round_every(processes);
    // An agent of the app's own (a shared one is the node's: the app only detaches).
    let has_agent = run.wiring.agent.is_some() && run.wiring.shared.is_none();
    let mut watch = crate::run::hang::LoopWatch::new(Duration::from_millis(100));
    let mut last_round: Option<Instant> = None;
    let coalesce = processes > FULL_RATE_PROCESSES;
    loop {
        let mut next = if coalesce {
            // A large app's reports arrive spread over the heartbeat period, each of
            // which would wake this loop on its own: the queue is looked at in ticks,
            // and everything that came within one is handled in one wake-up.
            std::thread::sleep(COALESCE_TICK);
            match events.try_recv() {
                Ok(event) => Some(event),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        } else {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => Some(event),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let stalled = watch.turn();
        // Everything already queued is handled before the round's work below, which
        // costs time per replica: with hundreds of processes reporting ten times a
        // second, one event per round falls behind and live processes look hung. And
        // everything the stages sent so far is read before anyone is judged hung.
        let mut handled = 0;
        let mut exited = false;
        while let Some(event) = next.take() {
            if let Event::Exited(i, inc, status) = &event {
                if *inc == run.replicas[*i].incarnation {
                    if let Some(note) = oom_note(&mut cgroup, status) {
                        let line = format!("{}: {note}", run.replicas[*i].label);
                        tracing::error!("{line}");
                        timeline.event(line.clone());
                        out_of_memory.push(line);
                    }
                    exited = true;
                }
            }
            if let Event::AgentFailed(why) = &event {
                failure.get_or_insert_with(|| why.clone());
            }
            handle(&mut run, event, &mut timeline);
            handled += 1;
            if handled < MAX_EVENTS_PER_ROUND {
                next = events.try_recv().ok();
            }
        }
        if let Some(gap) = stalled {
            run.forgive_stall(gap, &mut timeline);
        }
        if !exited && last_round.is_some_and(|at| at.elapsed() < round_period) {
            continue;
        }
        last_round = Some(Instant::now());
        let stopping = stop_sent.is_some() || failure.is_some();
        if let Some(f) = run.judge_ended(stopping, &mut timeline) {
            failure.get_or_insert(f);
        }
        while let Ok(req) = restart_requests.try_recv() {
            let answer = if failure.is_some() || stop_sent.is_some() || drained_at.is_some() {
                Err(format!("app '{}' is stopping", app.name))
            } else {
                run.request_restart(&req.task, req.replica)
            };
            if let Ok(msg) = &answer {
                timeline.event(format!("restart requested: {msg}"));
            }
            let _ = req.reply.send(answer);
        }
        while let Ok(req) = change_requests.try_recv() {
            let answer = if failure.is_some() || stop_sent.is_some() || drained_at.is_some() {
                Err(format!("app '{}' is stopping", app.name))
            } else {
                match req.change {
                    LiveChange::Rate(items_per_s) => Ok(run.set_rate(items_per_s)),
                    LiveChange::Threads(threads) => run.set_threads(threads),
                }
            };
            if let Ok(msg) = &answer {
                timeline.event(msg.clone());
            }
            let _ = req.reply.send(answer);
        }
        if failure.is_none() && stop_sent.is_none() {
            if let Some(f) = run.restart_due(&mut timeline) {
                failure.get_or_insert(f);
            }
        }
        run.leaks.step(&run.wiring, false);
        if !tuner.is_empty() && failure.is_none() && drained_at.is_none() {
            if app.service_type == ServiceType::BestEffort
                && floor_read.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1))
            {
                // Beside guaranteed apps, a best-effort model call holds the agent for at
                // most a quarter of their tightest latency quota.
                floor_read = Some(Instant::now());
                let floor = crate::plan::ledger::guaranteed_latency_floor(
                    &crate::plan::ledger::Ledger::snapshot(),
                );
                if floor.as_ref().map(|f| &f.1) != beside.as_ref().map(|f| &f.1) {
                    let note = match &floor {
                        Some((ms, who)) => format!(
                            "best effort: model calls kept within {:.0} ms while '{who}' (p99 ≤ {ms:.0} ms) runs",
                            ms / BEST_EFFORT_CALL_SHARE
                        ),
                        None => "best effort: no guaranteed app left, batches back to the plan".into(),
                    };
                    tracing::info!("{note}");
                    timeline.event(note);
                    beside = floor.clone();
                }
                tuner.set_time_cap(floor.map(|f| f.0 / BEST_EFFORT_CALL_SHARE), |t| {
                    crate::plan::tuning::per_item_ms(&live_metrics(&run.replicas, t))
                });
            }
            let changes = tuner.step(Instant::now(), |t| live_metrics(&run.replicas, t));
            for (t, from, to) in changes {
                let wait = run.wiring.batch_wait_now(t).max(2.0);
                run.wiring.retune(t, to, wait);
                let task = run.wiring.task_name(t);
                let note = format!("tuning: {task} batch {from} → {to}");
                tracing::info!("{note}");
                timeline.event(note);
                retunes.push((started.elapsed().as_secs_f64(), task, from, to));
            }
        }
        if !scaler.is_empty() && failure.is_none() && drained_at.is_none() {
            // A best-effort app's share of the node (its CPU quota, which the ledger
            // lowers while guaranteed apps run): no more replicas get items than that.
            if let (Ok(group), ServiceType::BestEffort) = (&cgroup, app.service_type) {
                if quota_read.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                    quota_read = Some(Instant::now());
                    scaler.set_cores(group.cpu_quota_cores());
                }
            }
            let changes = scaler.step(Instant::now(), |t| live_metrics(&run.replicas, t));
            for (t, from, to) in changes {
                run.wiring.scale(t, to);
                let task = run.wiring.task_name(t);
                let note = format!("balance: {task} replicas getting items {from} → {to}");
                tracing::info!("{note}");
                timeline.event(note);
                rescales.push((started.elapsed().as_secs_f64(), task, from, to));
            }
        }
        if timeline.due() {
            let totals: Vec<StageMetrics> =
                run.replicas.iter().map(|r| r.total_metrics()).collect();
            timeline.sample(totals.iter(), false);
        }
        if opts.show_progress {
            let delivered = run
                .replicas
                .iter()
                .filter(|r| r.kind == TaskKind::Tail)
                .map(|r| r.total_metrics().items_out)
                .max()
                .unwrap_or(0);
            progress.update(delivered);
        }
        if let Some(live) = &live {
            if processes <= FULL_RATE_PROCESSES
                || published.is_none_or(|at: Instant| at.elapsed() >= PUBLISH_EVERY_LARGE)
            {
                published = Some(Instant::now());
                publish(live, &run.wiring, opts, &run.replicas, &mut rates, started);
            }
        }
        // Done once every process exited and every report it sent has been read (an
        // exit can overtake the last message; the wait for it is bounded).
        if run.all_ended() {
            let all_read = run.replicas.iter().all(|r| r.up_closed);
            let since = *all_exited_at.get_or_insert_with(Instant::now);
            if all_read || since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        // Hang: a live process that missed its heartbeats is killed (the supervisor's
        // own stalls are forgiven above, see `hang`).
        if stop_sent.is_none() {
            run.kill_hung(hang_after, &mut timeline);
        }
        // Request-guarantee stages stay up after their end of stream (replays may still
        // pass); once every tail has everything they are told to end.
        if !finish_sent && failure.is_none() && run.tails_finished() {
            finish_sent = true;
            run.send_all(&Command::Finish, false);
        }
        // The agent serves the stages; once they are all gone it has nothing left to do.
        if has_agent
            && !agent_stopped
            && run
                .replicas
                .iter()
                .all(|r| r.task == agent_index || (r.exited.is_some() && r.restart_due.is_none()))
        {
            agent_stopped = true;
            run.wiring.command((agent_index, 0), &Command::Stop);
        }
        if interrupted.swap(false, Ordering::SeqCst) {
            if drained_at.is_none() {
                crate::env::appenv::note(&format!(
                    "draining app '{}' (signal again to stop at once)",
                    app.name
                ));
                timeline.event("signal: draining from the sources");
                drained_at = Some(Instant::now());
                run.send_all(&Command::Drain, true);
            } else {
                // At once: SIGTERM now, SIGKILL a second later for whatever ignores it.
                failure.get_or_insert_with(|| "stopped by a second signal".into());
                hurry = true;
            }
        }
        if failure.is_some() && stop_sent.is_none() {
            stop_sent = Some(Instant::now());
            for r in run.replicas.iter_mut() {
                r.restart_due = None;
            }
            run.send_all(&Command::Stop, false);
        }
        // A drain that does not finish in time becomes a stop.
        if let Some(at) = drained_at {
            if stop_sent.is_none() && at.elapsed() > opts.drain_timeout {
                failure.get_or_insert_with(|| {
                    format!(
                        "the drain did not finish within {} s",
                        opts.drain_timeout.as_secs()
                    )
                });
            }
        }
        if let Some(at) = stop_sent {
            if term_sent.is_none() && (hurry || at.elapsed() > Duration::from_secs(1)) {
                term_sent = Some(Instant::now());
                signal_all(&run.replicas, nix::sys::signal::Signal::SIGTERM);
            }
        }
        if let Some(at) = term_sent {
            let grace = if hurry {
                opts.stop_grace.min(Duration::from_secs(1))
            } else {
                opts.stop_grace
            };
            if at.elapsed() > grace {
                signal_all(&run.replicas, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    progress.finish();
    let totals: Vec<StageMetrics> = run.replicas.iter().map(|r| r.total_metrics()).collect();
    timeline.sample(totals.iter(), true);

    let mut announced: BTreeMap<String, u64> = BTreeMap::new();
    let mut stage_metrics: BTreeMap<String, StageMetrics> = BTreeMap::new();
    for r in &run.replicas {
        stage_metrics.insert(r.label.clone(), r.total_metrics());
        if r.kind == TaskKind::Head {
            match &r.report {
                Some(rep) => {
                    for t in &rep.announced {
                        announced.insert(t.source.clone(), t.total);
                    }
                }
                // Stopped or failed before its report: what its heartbeats counted.
                None => {
                    let m = r.total_metrics();
                    let seen = m.items_out + m.lost.iter().sum::<u64>();
                    let source = run.wiring.task_name(r.task);
                    *announced.entry(source).or_insert(0) += seen;
                }
            }
        }
    }
    // A restarted tail's report counts only what its last process delivered: add what
    // the earlier ones did.
    let tail_reports: Vec<(usize, StageReport)> = run
        .replicas
        .iter()
        .filter(|r| r.kind == TaskKind::Tail)
        .map(|r| {
            let mut rep = r.report.clone().unwrap_or_else(|| unreported_tail(r));
            for (source, n) in &r.received_before {
                match rep.received.iter_mut().find(|s| &s.source == source) {
                    Some(s) => s.total += n,
                    None => rep.received.push(SourceTotal {
                        source: source.clone(),
                        total: *n,
                    }),
                }
            }
            (r.task, rep)
        })
        .collect();
    let tails: Vec<TailReports<'_>> = app
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TaskKind::Tail)
        .map(|(i, t)| TailReports {
            task: t.name.clone(),
            reports: tail_reports
                .iter()
                .filter(|(task, _)| *task == i)
                .map(|(_, rep)| rep)
                .collect(),
        })
        .collect();
    let mut summary = Summary::build(&app.name, wall_s, &announced, &tails, stage_metrics);
    summary.check_quota(&app.quota);
    summary.restarts = run
        .replicas
        .iter()
        .filter(|r| r.incarnation > 0)
        .map(|r| (r.label.clone(), r.incarnation))
        .collect();
    summary.bad_messages = run
        .replicas
        .iter()
        .filter(|r| r.bad_messages > 0)
        .map(|r| (r.label.clone(), r.bad_messages))
        .collect();
    summary.restart_to_first_output_ms = run.first_output_ms.clone();
    summary.reclaimed_holds = run.reclaimed;
    summary.retunes = retunes;
    summary.rescales = rescales;
    // No process runs any more: what no holder accounts for is a killed process's.
    run.leaks.step(&run.wiring, true);
    summary.repaired_holds = run.leaks.repaired;
    let (free, slots) = run.wiring.free_slots();
    summary.slots_held_at_end = slots - free;
    summary.slots_held_report = run.wiring.held_report();
    for line in &summary.slots_held_report {
        tracing::warn!("held after every process ended: {line}");
    }
    summary.run_dir = opts.run_dir.display().to_string();
    summary.constraints = constraints;
    summary.out_of_memory = out_of_memory;
    // Every process has been reaped: the cgroup can go.
    drop(cgroup);
    summary.app_file = loaded.file.display().to_string();
    if let Some(why) = nothing_delivered(app, &summary) {
        tracing::error!("{why}");
        failure.get_or_insert(why);
    }
    summary.outcome = match (&failure, drained_at) {
        (Some(_), _) => "failed".into(),
        (None, Some(_)) => "drained after a signal".into(),
        (None, None) => "finished".into(),
    };
    let _ = std::fs::write(
        opts.run_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    );
    let mut latencies = Vec::new();
    let mut arrivals = Vec::new();
    for t in &tails {
        for r in &t.reports {
            latencies.extend_from_slice(&r.latencies_ms);
            arrivals.extend(
                r.arrivals_ns
                    .iter()
                    .map(|&a| a.saturating_sub(started_ns) as f64 / 1e9),
            );
        }
    }
    let page = crate::observe::report::render(&crate::observe::report::ReportData {
        app,
        plan: &the_plan,
        summary: &summary,
        timeline: &timeline,
        latencies_ms: &latencies,
        arrivals_s: &arrivals,
    });
    if let Err(e) = std::fs::write(opts.run_dir.join("report.html"), page) {
        tracing::warn!("cannot write report.html: {e}");
    }
    Ok(RunOutcome {
        summary,
        error: failure,
    })
}

/// The note for a process killed by its cgroup's memory limit: killed by SIGKILL while
/// the cgroup counted a new OOM kill.
fn oom_note(
    cgroup: &mut Result<crate::env::cgroup::AppCgroup, String>,
    status: &std::io::Result<std::process::ExitStatus>,
) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let killed = status
        .as_ref()
        .is_ok_and(|s| s.signal() == Some(libc::SIGKILL));
    match cgroup {
        Ok(group) if killed => group.new_oom_kill(),
        _ => None,
    }
}

/// The current counters of task `t`'s running replicas (for the live tuners).
fn live_metrics(replicas: &[crate::run::replica::Replica], t: usize) -> Vec<&StageMetrics> {
    replicas
        .iter()
        .filter(|r| r.task == t && r.exited.is_none())
        .map(|r| &r.metrics)
        .collect()
}
