//! Running one app: create the pools and channels of the plan (`start`), start and
//! bootstrap one process per stage replica and watch them through the run loop's phases
//! (`run_loop`: heartbeats, reports, exits, signals, draining, stopping), and summarise
//! (`finish`).

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

mod finish;
mod run_loop;
mod start;
mod tune;

use crate::observe::live::LiveApp;
use crate::observe::summary::Summary;
use crate::observe::timeline::Timeline;
use crate::plan::app::LoadedApp;
use crate::plan::{plan, Plan};
use crate::run::apprun::{AppRun, Event};
use anyhow::Context;
use run_loop::RunLoop;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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
    /// A request-guarantee app admitted on a profile: what it was promised (its rate is
    /// admitted again when changed).
    pub promise: Option<crate::plan::readmit::Promise>,
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

/// Run an app to completion (or until stopped). Returns the summary; `error` is set
/// when the app failed.
pub fn run_app(
    loaded: &LoadedApp,
    opts: &RunOptions,
    interrupted: Arc<AtomicBool>,
    live: Option<Arc<std::sync::Mutex<LiveApp>>>,
) -> anyhow::Result<RunOutcome> {
    let the_plan: Plan = plan(&loaded.spec).context("cannot plan the app")?;
    let prepared = start::prepare(loaded, &the_plan, opts, live.as_ref())?;
    let mut run = RunLoop::start(loaded, &the_plan, opts, prepared, interrupted, live)?;
    run.run();
    Ok(run.finish())
}
