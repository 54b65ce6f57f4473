//! Running one app in the foreground: create the pools and channels of the plan,
//! start and bootstrap one process per stage replica, watch them (heartbeats, reports,
//! exits, signals), drain on SIGINT/SIGTERM, and summarise.

use crate::app::LoadedApp;
use crate::control::LiveApp;
use crate::launch::{find_worker, start_child, Connected, Spawner};
use crate::models::agent_task;
use crate::plan::ancestors;
use crate::plan::{plan, Plan};
use crate::replica::{describe_status, publish, signal_all, Replica};
use crate::summary::{Summary, TailReports};
use crate::timeline::Timeline;
use anyhow::{anyhow, Context};
use ipc_channel::ipc::{self, IpcSharedMemory};
use protocol::codec;
use protocol::messages::*;
use protocol::shm::SlotPool;
use protocol::spec::TaskKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// At most this many fds travel in one ipc-channel message.
const MAX_FDS: usize = 64;

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
}

pub struct RunOutcome {
    pub summary: Summary,
    pub error: Option<String>,
}

enum Event {
    Up(usize, Box<Up>),
    Exited(usize, std::io::Result<ExitStatus>),
    /// The child's up-channel closed: every message it sent has been delivered.
    UpClosed(usize),
}

fn worker_for(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Gpu => "worker-gpu",
        _ => "worker-cpu",
    }
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
    let store = crate::models::locate(app, &loaded.file)?;
    // One GPU agent (device cpu:0 unless CUDA is available) when any task is a GPU task.
    let agent = if app.tasks.iter().any(|t| t.kind == TaskKind::Gpu) {
        let store = store.as_ref().context("GPU tasks need a model manifest")?;
        Some(agent_task(app, store)?)
    } else {
        None
    };
    let agent_index = app.tasks.len();
    let logs = opts.run_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    std::fs::write(
        opts.run_dir.join("plan.json"),
        serde_json::to_vec_pretty(&the_plan).unwrap_or_default(),
    )
    .with_context(|| format!("cannot write the plan into {}", opts.run_dir.display()))?;

    // Pools: one per replica of every producing stage.
    let mut pools: BTreeMap<(usize, u32), SlotPool> = BTreeMap::new();
    let mut next_pool = 1u32;
    for (t, stage) in the_plan.stages.iter().enumerate() {
        if let Some(p) = &stage.pool {
            for r in 0..stage.replicas {
                let pool = SlotPool::create(next_pool, p.slots, p.slot_size)
                    .with_context(|| format!("cannot create the pool of {}#{r}", stage.task))?;
                pools.insert((t, r), pool);
                next_pool += 1;
            }
        }
    }
    // Inboxes: one per replica of every stage.
    let mut inbox_tx: Vec<Vec<InboxSender>> = Vec::new();
    let mut inbox_rx: Vec<Vec<Option<InboxReceiver>>> = Vec::new();
    for stage in &the_plan.stages {
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..stage.replicas {
            let (tx, rx) = ipc::channel::<Vec<u8>>().context("cannot create a channel")?;
            txs.push(tx);
            rxs.push(Some(rx));
        }
        inbox_tx.push(txs);
        inbox_rx.push(rxs);
    }
    if agent.is_some() {
        let (tx, rx) = ipc::channel::<Vec<u8>>().context("cannot create a channel")?;
        inbox_tx.push(vec![tx]);
        inbox_rx.push(vec![Some(rx)]);
    }
    // Where each GPU stage replica's inbox sits among the agent's outputs.
    let gpu_replicas: Vec<(usize, u32)> = the_plan
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == TaskKind::Gpu)
        .flat_map(|(t, s)| (0..s.replicas).map(move |r| (t, r)))
        .collect();

    // Start every process first, then accept them (start-up overlaps).
    let spawner = Spawner::start();
    let started = Instant::now();
    let started_ns = protocol::clock::now_ns();
    let mut pending = Vec::new();
    for (t, stage) in the_plan.stages.iter().enumerate() {
        let program = find_worker(worker_for(stage.kind))?;
        for r in 0..stage.replicas {
            let label = format!("{}#{r}", stage.task);
            let log_path = logs.join(format!("{label}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            let mut cmd = Process::new(&program);
            cmd.arg("--stage")
                .arg(format!("{}/{label}", app.name))
                .stdin(Stdio::null())
                .stdout(Stdio::inherit())
                .stderr(Stdio::from(log));
            pending.push((
                t,
                r,
                start_child(&spawner, &label, cmd, &program, log_path)?,
            ));
        }
    }
    if let Some(agent_spec) = &agent {
        let program = find_worker("worker-gpu")?;
        let label = format!("{}#0", agent_spec.name);
        let log_path = logs.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Process::new(&program);
        cmd.arg("--agent")
            .arg(format!("{}/{label}", app.name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        pending.push((
            agent_index,
            0,
            start_child(&spawner, &label, cmd, &program, log_path)?,
        ));
    }
    let mut connected: Vec<(usize, u32, Connected)> = Vec::new();
    let mut startup_error = None;
    for (t, r, p) in pending {
        if startup_error.is_some() {
            let mut child = p.child;
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        match p.accept(opts.startup_timeout) {
            Ok(c) => {
                tracing::debug!(stage = %c.stage, pid = c.hello.pid, "connected");
                connected.push((t, r, c))
            }
            Err(e) => startup_error = Some(e),
        }
    }
    if let Some(e) = startup_error {
        for (_, _, mut c) in connected {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        return Err(anyhow!(e).context(format!("cannot start app '{}'", app.name)));
    }

    // Send every stage its setup.
    for (t, r, c) in &connected {
        let (t, r) = (*t, *r);
        if t == agent_index {
            let Some(agent_spec) = &agent else { continue };
            let mut all_pools = Vec::new();
            let mut infos = Vec::new();
            for ((pt, pr), pool) in &pools {
                infos.push(PoolInfo {
                    id: pool.id(),
                    owner: format!("{}#{pr}", app.tasks[*pt].name),
                });
                all_pools.push(pool.handle());
            }
            let outputs: Vec<InboxSender> = gpu_replicas
                .iter()
                .map(|(gt, gr)| inbox_tx[*gt][*gr as usize].clone())
                .collect();
            if 1 + outputs.len() + all_pools.len() > MAX_FDS {
                return Err(anyhow!("the GPU agent would need more than {MAX_FDS} handles; the app has too many stages"));
            }
            let setup = Setup {
                app: app.name.clone(),
                service_type: app.service_type,
                task_index: agent_index as u16,
                task_json: serde_json::to_string(agent_spec)?,
                replica: 0,
                replicas: 1,
                outputs: vec![],
                expected_eos: 0,
                pools: infos,
                own_pool: None,
                run_dir: opts.run_dir.display().to_string(),
                heartbeat_ms: opts.heartbeat_ms,
                batch_size: 1,
                batch_max_wait_ms: 0.0,
                threads: crate::plan::agent_threads(&crate::plan::device()),
                agent_output: None,
                agent_reply_to: None,
                models_manifest: None,
                models_dir: None,
            };
            let wire = SetupWire {
                setup: codec::encode("setup", &setup)?,
                refused: None,
                inbox: inbox_rx[t][0].take(),
                outputs,
                pools: all_pools,
            };
            c.reply
                .send(wire)
                .map_err(|e| anyhow!("cannot send the setup to {}: {e:?}", c.stage))?;
            continue;
        }
        let task = &app.tasks[t];
        let mut outputs = Vec::new();
        let mut routes = Vec::new();
        for (c_idx, consumer) in app.tasks.iter().enumerate() {
            if consumer.inputs.contains(&task.name) {
                routes.push(OutputRoute {
                    task: consumer.name.clone(),
                    first: outputs.len() as u32,
                    replicas: the_plan.stages[c_idx].replicas,
                });
                outputs.extend(inbox_tx[c_idx].iter().cloned());
            }
        }
        let expected_eos: u32 = task
            .inputs
            .iter()
            .filter_map(|i| app.task_index(i))
            .map(|j| the_plan.stages[j].replicas)
            .sum();
        let mut mapped: Vec<(PoolInfo, IpcSharedMemory)> = Vec::new();
        let mut readable = ancestors(app, t);
        readable.insert(t);
        for ((pt, pr), pool) in &pools {
            if readable.contains(pt) && (*pt != t || *pr == r) {
                mapped.push((
                    PoolInfo {
                        id: pool.id(),
                        owner: format!("{}#{pr}", app.tasks[*pt].name),
                    },
                    pool.handle(),
                ));
            }
        }
        let fds = 1 + outputs.len() + mapped.len();
        if fds > MAX_FDS {
            return Err(anyhow!(
                "stage {}#{r} needs {fds} channel and memory handles, more than the {MAX_FDS} one message can carry; use fewer replicas downstream",
                task.name
            ));
        }
        let stage = &the_plan.stages[t];
        let mut agent_output = None;
        let mut agent_reply_to = None;
        if task.kind == TaskKind::Gpu {
            agent_output = Some(outputs.len() as u32);
            outputs.push(inbox_tx[agent_index][0].clone());
            agent_reply_to = gpu_replicas
                .iter()
                .position(|x| *x == (t, r))
                .map(|p| p as u32);
        }
        let setup = Setup {
            app: app.name.clone(),
            service_type: app.service_type,
            task_index: t as u16,
            task_json: serde_json::to_string(task)?,
            replica: r,
            replicas: stage.replicas,
            outputs: routes,
            expected_eos,
            pools: mapped.iter().map(|(i, _)| i.clone()).collect(),
            own_pool: pools.get(&(t, r)).map(|p| p.id()),
            run_dir: opts.run_dir.display().to_string(),
            heartbeat_ms: opts.heartbeat_ms,
            batch_size: stage.batch_size,
            batch_max_wait_ms: stage.batch_max_wait_ms,
            threads: stage.threads,
            agent_output,
            agent_reply_to,
            models_manifest: store
                .as_ref()
                .map(|s| s.manifest_path.display().to_string()),
            models_dir: store.as_ref().map(|s| s.models_dir.display().to_string()),
        };
        let wire = SetupWire {
            setup: codec::encode("setup", &setup)?,
            refused: None,
            inbox: inbox_rx[t][r as usize].take(),
            outputs,
            pools: mapped.into_iter().map(|(_, shm)| shm).collect(),
        };
        c.reply
            .send(wire)
            .map_err(|e| anyhow!("cannot send the setup to {}: {e:?}", c.stage))?;
    }

    // Watch: one reader thread per child's up-channel and one waiter per child.
    let (events_tx, events) = mpsc::channel::<Event>();
    let mut replicas = Vec::new();
    for (idx, (t, _r, c)) in connected.into_iter().enumerate() {
        replicas.push(Replica {
            task: t,
            label: c.stage.clone(),
            pid: c.child.id() as i32,
            kind: app.tasks.get(t).map(|x| x.kind).unwrap_or(TaskKind::Gpu),
            metrics: StageMetrics::default(),
            report: None,
            failed: None,
            exited: None,
            last_seen: Instant::now(),
            up_closed: false,
        });
        let tx = events_tx.clone();
        let up = c.up;
        std::thread::spawn(move || {
            while let Ok(wire) = up.recv() {
                match codec::decode::<Up>("up", &wire.bytes) {
                    Ok(msg) => {
                        if tx.send(Event::Up(idx, Box::new(msg))).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("bad message from a child: {e}"),
                }
            }
            let _ = tx.send(Event::UpClosed(idx));
        });
        let tx = events_tx.clone();
        let mut child = c.child;
        std::thread::spawn(move || {
            let _ = tx.send(Event::Exited(idx, child.wait()));
        });
    }
    drop(events_tx);
    let mut progress = crate::progress::Progress::new(crate::progress::expected_items(app));
    let mut rates: Vec<(Instant, u64, f64)> = vec![(Instant::now(), 0, 0.0); replicas.len()];
    let mut timeline = Timeline::new(replicas.iter().map(|r| r.label.clone()).collect(), 0.25);

    let mut failure: Option<String> = None;
    let mut stop_sent: Option<Instant> = None;
    let mut term_sent: Option<Instant> = None;
    let mut drained_at: Option<Instant> = None;
    let mut agent_stopped = false;
    let mut all_exited_at: Option<Instant> = None;
    let send_all = |cmd: Command, heads_only: bool| {
        let bytes = codec::encode("command", &Inbox::Command(cmd)).unwrap_or_default();
        for (t, txs) in inbox_tx.iter().enumerate() {
            if heads_only && app.tasks.get(t).map(|x| x.kind) != Some(TaskKind::Head) {
                continue;
            }
            for tx in txs {
                let _ = tx.send(bytes.clone());
            }
        }
    };
    loop {
        let waited = Instant::now();
        let event = events.recv_timeout(Duration::from_millis(100));
        if let Ok(Event::Up(i, _)) = &event {
            replicas[*i].last_seen = Instant::now();
        }
        match event {
            Ok(Event::Up(i, msg)) => match *msg {
                Up::Heartbeat(m) => {
                    if replicas[i].report.is_none() {
                        replicas[i].metrics = m;
                    }
                }
                Up::Finished(report) => {
                    replicas[i].metrics = report.metrics.clone();
                    replicas[i].report = Some(report);
                }
                Up::Failed { error } => {
                    tracing::error!("{} failed: {error}", replicas[i].label);
                    timeline.event(format!("{} failed: {error}", replicas[i].label));
                    replicas[i].failed = Some(error.clone());
                    if failure.is_none() {
                        failure = Some(format!("stage {} failed: {error}", replicas[i].label));
                    }
                }
                Up::Hello(_) => {}
            },
            Ok(Event::UpClosed(i)) => replicas[i].up_closed = true,
            Ok(Event::Exited(i, status)) => {
                let status = status.ok();
                let r = &mut replicas[i];
                r.exited = Some(
                    status.unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(1)),
                );
                let clean = status.is_some_and(|s| s.success());
                if !clean && failure.is_none() && stop_sent.is_none() {
                    let how = status
                        .map(describe_status)
                        .unwrap_or_else(|| "vanished".into());
                    let log = opts.run_dir.join("logs").join(format!("{}.log", r.label));
                    failure = Some(format!(
                        "stage {} {how}{}; see {}",
                        r.label,
                        r.failed
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default(),
                        log.display()
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        timeline.sample(replicas.iter().map(|r| &r.metrics), false);
        if opts.show_progress {
            let delivered = replicas
                .iter()
                .filter(|r| r.kind == TaskKind::Tail)
                .map(|r| r.metrics.items_out)
                .max()
                .unwrap_or(0);
            progress.update(delivered);
        }
        if let Some(live) = &live {
            publish(live, app, &the_plan, opts, &replicas, &mut rates, started);
        }
        // Done once every process exited and every report it sent has been read (an
        // exit can overtake the last message; the wait for it is bounded).
        if replicas.iter().all(|r| r.exited.is_some()) {
            let all_read = replicas.iter().all(|r| r.up_closed);
            let since = *all_exited_at.get_or_insert_with(Instant::now);
            if all_read || since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        // Hang: a live process that missed its heartbeats is killed. (When this loop
        // itself was late, the machine is overloaded: judge nobody this round.)
        let loop_late = waited.elapsed() > Duration::from_millis(u64::from(opts.heartbeat_ms) * 2);
        if !loop_late && stop_sent.is_none() {
            for r in replicas.iter_mut() {
                let silent = r.last_seen.elapsed();
                if r.exited.is_none() && r.report.is_none() && silent > opts.hang_after {
                    // SAFETY: our child's own process group; it has not been reaped.
                    unsafe { libc::kill(-r.pid, libc::SIGKILL) };
                    let why = format!(
                        "stage {} stopped answering (no heartbeat for {} ms) and was killed",
                        r.label,
                        silent.as_millis()
                    );
                    tracing::error!("{why}");
                    timeline.event(why.clone());
                    r.failed.get_or_insert(why.clone());
                    failure.get_or_insert(why);
                    r.last_seen = Instant::now();
                }
            }
        }
        // The agent serves the stages; once they are all gone it has nothing left to do.
        if !agent_stopped
            && replicas
                .iter()
                .all(|r| r.exited.is_some() || r.task == agent_index)
        {
            agent_stopped = true;
            if let Some(tx) = inbox_tx
                .get(agent_index)
                .filter(|_| agent.is_some())
                .and_then(|v| v.first())
            {
                let _ = tx.send(
                    codec::encode("command", &Inbox::Command(Command::Stop)).unwrap_or_default(),
                );
            }
        }
        if interrupted.swap(false, Ordering::SeqCst) {
            if drained_at.is_none() {
                eprintln!("draining app '{}' (signal again to stop at once)", app.name);
                timeline.event("signal: draining from the sources");
                drained_at = Some(Instant::now());
                send_all(Command::Drain, true);
            } else if stop_sent.is_none() {
                failure.get_or_insert_with(|| "stopped by a second signal".into());
                stop_sent = Some(Instant::now());
                send_all(Command::Stop, false);
            }
        }
        if failure.is_some() && stop_sent.is_none() {
            stop_sent = Some(Instant::now());
            send_all(Command::Stop, false);
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
                stop_sent = Some(Instant::now());
                send_all(Command::Stop, false);
            }
        }
        if let Some(at) = stop_sent {
            if term_sent.is_none() && at.elapsed() > Duration::from_secs(1) {
                term_sent = Some(Instant::now());
                signal_all(&replicas, libc::SIGTERM);
            }
        }
        if let Some(at) = term_sent {
            if at.elapsed() > opts.stop_grace {
                signal_all(&replicas, libc::SIGKILL);
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    progress.finish();
    timeline.sample(replicas.iter().map(|r| &r.metrics), true);

    let mut announced: BTreeMap<String, u64> = BTreeMap::new();
    let mut stage_metrics: BTreeMap<String, StageMetrics> = BTreeMap::new();
    for r in &replicas {
        stage_metrics.insert(r.label.clone(), r.metrics.clone());
        if r.kind == TaskKind::Head {
            if let Some(rep) = &r.report {
                for t in &rep.announced {
                    announced.insert(t.source.clone(), t.total);
                }
            }
        }
    }
    let tails: Vec<TailReports<'_>> = app
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TaskKind::Tail)
        .map(|(i, t)| TailReports {
            task: t.name.clone(),
            reports: replicas
                .iter()
                .filter(|r| r.task == i)
                .filter_map(|r| r.report.as_ref())
                .collect(),
        })
        .collect();
    let mut summary = Summary::build(&app.name, wall_s, &announced, &tails, stage_metrics);
    summary.check_quota(&app.quota);
    summary.run_dir = opts.run_dir.display().to_string();
    summary.app_file = loaded.file.display().to_string();
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
    let page = crate::report::render(&crate::report::ReportData {
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
