//! What `run_app` does before the first process starts: the checks the plan needs, the
//! logs folder and `plan.json`, the GPU agent (the app's own or the node's shared one),
//! the heartbeat period and hang limit for the app's size, the wiring (pools, channels)
//! and the app's cgroup.

use super::{heartbeat_for, RunOptions};
use crate::env::cgroup::AppCgroup;
use crate::observe::live::LiveApp;
use crate::plan::app::LoadedApp;
use crate::plan::models::agent_task;
use crate::plan::Plan;
use crate::run::apprun::Event;
use crate::run::wiring::Wiring;
use anyhow::{anyhow, Context};
use protocol::spec::{ServiceType, TaskKind};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// An app wired and ready to start.
pub struct Prepared<'a> {
    pub wiring: Wiring<'a>,
    pub events_tx: mpsc::Sender<Event>,
    pub events: mpsc::Receiver<Event>,
    pub logs: PathBuf,
    /// Processes of the app (its replicas, and its own agent).
    pub processes: u64,
    /// A stage silent this long is taken for hung.
    pub hang_after: Duration,
    /// The app's cgroup, or why it runs without one.
    pub cgroup: Result<AppCgroup, String>,
    /// "constraints enforced: …" or "constraints not enforced: <why>".
    pub constraints: String,
}

/// Check, write the plan, join or make the agent, wire the app and make its cgroup.
pub fn prepare<'a>(
    loaded: &'a LoadedApp,
    the_plan: &'a Plan,
    opts: &RunOptions,
    live: Option<&Arc<Mutex<LiveApp>>>,
) -> anyhow::Result<Prepared<'a>> {
    let app = &loaded.spec;
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
        serde_json::to_vec_pretty(the_plan).unwrap_or_default(),
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
    if opts.hang_after < Duration::from_millis(3 * u64::from(opts.heartbeat_ms)) {
        tracing::warn!(
            "a hang bound of {} ms is less than three heartbeats ({} ms apart): {} ms is used",
            opts.hang_after.as_millis(),
            opts.heartbeat_ms,
            hang_after.as_millis()
        );
    }
    if heartbeat_ms != opts.heartbeat_ms {
        tracing::info!(
            "{processes} processes: heartbeats every {heartbeat_ms} ms, a stage silent for {} ms is taken for hung",
            hang_after.as_millis()
        );
    }
    let mut wiring = Wiring::new(
        app,
        the_plan,
        agent,
        store,
        &opts.run_dir,
        heartbeat_ms,
        shared,
    )?;
    let (cgroup, constraints) = cgroup_for(loaded, &mut wiring);
    if let Some(live) = live {
        if let Ok(mut l) = live.lock() {
            l.constraints = constraints.clone();
        }
    }
    Ok(Prepared {
        wiring,
        events_tx,
        events,
        logs,
        processes,
        hang_after,
        cgroup,
        constraints,
    })
}

/// The app's own cgroup, limited to its constraints; the app runs without one when
/// cgroups cannot be written, and says so.
fn cgroup_for(loaded: &LoadedApp, wiring: &mut Wiring<'_>) -> (Result<AppCgroup, String>, String) {
    let app = &loaded.spec;
    let cgroup = crate::env::cgroup::for_app(app);
    let constraints = match &cgroup {
        Ok(group) => {
            wiring.cgroup_procs = group.procs_files();
            // Best effort runs on what the node's guaranteed apps leave, now and as
            // they come and go (the ledger sets its CPU quota).
            if app.service_type == ServiceType::BestEffort {
                if let Err(e) = crate::plan::ledger::attach_cgroup(&app.name, group.cpu_files()) {
                    tracing::warn!("{e}");
                }
            }
            group.describe()
        }
        Err(why) => why.clone(),
    };
    tracing::info!("{constraints}");
    (cgroup, constraints)
}
