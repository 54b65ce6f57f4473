//! The run loop of one app as a type with explicit phases. Each turn it reads what the
//! processes sent, then (at most every round period, and at once after an exit) judges
//! ended processes, answers the control API, restarts, tunes, samples and publishes, and
//! moves the app through its phases:
//!
//! - [`Phase::Running`]: items flow; restarts, live changes and tuning are taken.
//! - [`Phase::Draining`]: a signal asked the sources to stop; the stages end by themselves
//!   as the last items pass (a drain that takes longer than `drain_timeout` fails the app).
//! - [`Phase::Stopping`]: the app failed or a second signal came: `Stop` was sent, then
//!   SIGTERM (after a second, or at once when hurried), then SIGKILL after the grace.
//! - [`Phase::Finishing`]: every process has ended; the loop waits (at most two seconds)
//!   for the reports they sent before exiting, then the run is summarised.

use super::start::Prepared;
use super::tune::Tuning;
use super::{
    handle, round_every, RunOptions, COALESCE_TICK, FULL_RATE_PROCESSES, MAX_EVENTS_PER_ROUND,
    PUBLISH_EVERY_LARGE,
};
use crate::env::cgroup::AppCgroup;
use crate::observe::live::{ChangeRequest, LiveApp, LiveChange, RestartRequest};
use crate::observe::progress::Progress;
use crate::observe::timeline::Timeline;
use crate::plan::app::LoadedApp;
use crate::plan::Plan;
use crate::run::apprun::{AppRun, Event};
use crate::run::hang::LoopWatch;
use crate::run::replica::{publish, signal_all};
use nix::sys::signal::Signal;
use protocol::messages::{Command, StageMetrics};
use protocol::spec::TaskKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the app is in its life (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Running,
    /// Drain asked (by a signal) at `since`.
    Draining {
        since: Instant,
    },
    /// `Stop` sent at `since`; SIGTERM sent at `term_sent`; `hurry` after a second
    /// signal (SIGTERM at once, SIGKILL a second later); `drained`: a drain came first.
    Stopping {
        since: Instant,
        term_sent: Option<Instant>,
        hurry: bool,
        drained: bool,
    },
    /// Every process ended at `since`; `drained`: after a drain.
    Finishing {
        since: Instant,
        drained: bool,
    },
}

impl Phase {
    /// Whether the app is on its way out (no restart, change or tuning is taken).
    fn winding_down(&self) -> bool {
        !matches!(self, Phase::Running)
    }

    /// Whether a drain was asked on the way here.
    pub fn drained(&self) -> bool {
        match *self {
            Phase::Draining { .. } => true,
            Phase::Stopping { drained, .. } | Phase::Finishing { drained, .. } => drained,
            Phase::Running => false,
        }
    }

    fn stop_sent(&self) -> bool {
        matches!(self, Phase::Stopping { .. })
    }
}

/// One app's run loop.
pub struct RunLoop<'a> {
    pub loaded: &'a LoadedApp,
    pub plan: &'a Plan,
    pub opts: &'a RunOptions,
    pub run: AppRun<'a>,
    pub phase: Phase,
    pub failure: Option<String>,
    pub timeline: Timeline,
    pub progress: Progress,
    pub cgroup: Result<AppCgroup, String>,
    pub constraints: String,
    pub out_of_memory: Vec<String>,
    pub started: Instant,
    pub started_ns: u64,
    pub tuning: Tuning,
    events: mpsc::Receiver<Event>,
    restart_requests: mpsc::Receiver<RestartRequest>,
    change_requests: mpsc::Receiver<ChangeRequest>,
    interrupted: Arc<AtomicBool>,
    live: Option<Arc<Mutex<LiveApp>>>,
    rates: Vec<(Instant, u64, f64)>,
    processes: u64,
    hang_after: Duration,
    round_period: Duration,
    coalesce: bool,
    watch: LoopWatch,
    last_round: Option<Instant>,
    published: Option<Instant>,
    /// `Finish` sent to every stage (request guarantee: the tails have everything).
    finish_sent: bool,
    /// The app's own agent told to stop (its stages are all gone).
    agent_stopped: bool,
}

impl<'a> RunLoop<'a> {
    /// Start every process of the prepared app and open the API's request channels.
    pub fn start(
        loaded: &'a LoadedApp,
        plan: &'a Plan,
        opts: &'a RunOptions,
        prepared: Prepared<'a>,
        interrupted: Arc<AtomicBool>,
        live: Option<Arc<Mutex<LiveApp>>>,
    ) -> anyhow::Result<RunLoop<'a>> {
        let app = &loaded.spec;
        let Prepared {
            wiring,
            events_tx,
            events,
            logs,
            processes,
            hang_after,
            cgroup,
            constraints,
        } = prepared;
        let mut run = AppRun::new(wiring, events_tx, logs, opts.startup_timeout);
        run.promise = opts.promise.clone();
        let started = Instant::now();
        let started_ns = protocol::clock::now_ns();
        if let Err(e) = run.start_all() {
            // A limit too small to start in shows as a process killed at start-up: say so.
            let oom = match &cgroup {
                Ok(c) if c.oom_kills() > 0 => Some(c.memory_mb),
                _ => None,
            };
            let e = match oom {
                Some(mb) => e.context(format!(
                    "out of memory at start-up: the app's memory limit{} is less than its processes need to start (raise constraints.memory_mb)",
                    mb.map(|mb| format!(" of {mb} MiB")).unwrap_or_default()
                )),
                None => e,
            };
            return Err(e.context(format!("cannot start app '{}'", app.name)));
        }
        let (restart_tx, restart_requests) = mpsc::channel::<RestartRequest>();
        let (change_tx, change_requests) = mpsc::channel::<ChangeRequest>();
        if let Some(live) = &live {
            if let Ok(mut l) = live.lock() {
                l.restarts = Some(restart_tx);
                l.changes = Some(change_tx);
            }
        }
        let progress = Progress::new(crate::observe::progress::expected_items(app));
        let rates = vec![(Instant::now(), 0, 0.0); run.replicas.len()];
        let timeline = Timeline::new(run.replicas.iter().map(|r| r.label.clone()).collect(), 0.25);
        let tuning = Tuning::new(app, &run);
        Ok(RunLoop {
            loaded,
            plan,
            opts,
            run,
            phase: Phase::Running,
            failure: None,
            timeline,
            progress,
            cgroup,
            constraints,
            out_of_memory: Vec::new(),
            started,
            started_ns,
            tuning,
            events,
            restart_requests,
            change_requests,
            interrupted,
            live,
            rates,
            processes,
            hang_after,
            round_period: round_every(processes),
            coalesce: processes > FULL_RATE_PROCESSES,
            watch: LoopWatch::new(Duration::from_millis(100)),
            last_round: None,
            published: None,
            finish_sent: false,
            agent_stopped: false,
        })
    }

    /// Turn until the app has ended (or every event source is gone).
    pub fn run(&mut self) {
        while let Some(exited) = self.take_events() {
            if !exited
                && self
                    .last_round
                    .is_some_and(|at| at.elapsed() < self.round_period)
            {
                continue;
            }
            self.last_round = Some(Instant::now());
            if self.round() {
                break;
            }
        }
    }

    /// Wait for events and handle everything queued; whether a process exited. None when
    /// the event channel is gone.
    fn take_events(&mut self) -> Option<bool> {
        let mut next = if self.coalesce {
            // A large app's reports arrive spread over the heartbeat period, each of
            // which would wake this loop on its own: the queue is looked at in ticks,
            // and everything that came within one is handled in one wake-up.
            std::thread::sleep(COALESCE_TICK);
            match self.events.try_recv() {
                Ok(event) => Some(event),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return None,
            }
        } else {
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => Some(event),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        };
        let stalled = self.watch.turn();
        // Everything already queued is handled before the round's work, which costs time
        // per replica: with hundreds of processes reporting ten times a second, one event
        // per round falls behind and live processes look hung. And everything the stages
        // sent so far is read before anyone is judged hung.
        let mut handled = 0;
        let mut exited = false;
        while let Some(event) = next.take() {
            if let Event::Exited(i, inc, status) = &event {
                if *inc == self.run.replicas[*i].incarnation {
                    if let Some(note) = oom_note(&mut self.cgroup, status) {
                        let line = format!("{}: {note}", self.run.replicas[*i].label);
                        tracing::error!("{line}");
                        self.timeline.event(line.clone());
                        self.out_of_memory.push(line);
                    }
                    exited = true;
                }
            }
            if let Event::AgentFailed(why) = &event {
                self.failure.get_or_insert_with(|| why.clone());
            }
            handle(&mut self.run, event, &mut self.timeline);
            handled += 1;
            if handled < MAX_EVENTS_PER_ROUND {
                next = self.events.try_recv().ok();
            }
        }
        if let Some(gap) = stalled {
            self.run.forgive_stall(gap, &mut self.timeline);
        }
        Some(exited)
    }

    /// One round of periodic work; whether the loop is done.
    fn round(&mut self) -> bool {
        let stopping = self.phase.stop_sent() || self.failure.is_some();
        if let Some(f) = self.run.judge_ended(stopping, &mut self.timeline) {
            self.failure.get_or_insert(f);
        }
        self.answer_requests();
        if self.failure.is_none() && !self.phase.stop_sent() {
            if let Some(f) = self.run.restart_due(&mut self.timeline) {
                self.failure.get_or_insert(f);
            }
        }
        self.run.leaks.step(&self.run.wiring, false);
        if self.failure.is_none() && !self.phase.drained() && !self.phase.stop_sent() {
            let (run, timeline) = (&mut self.run, &mut self.timeline);
            let app = &self.loaded.spec;
            self.tuning
                .step(app, run, &self.cgroup, timeline, self.started);
        }
        self.observe();
        if self.finished() {
            return true;
        }
        self.act();
        self.advance();
        false
    }

    /// Restarts and live changes asked through the control API.
    fn answer_requests(&mut self) {
        let refuse = self.failure.is_some() || self.phase.winding_down();
        let name = &self.loaded.spec.name;
        while let Ok(req) = self.restart_requests.try_recv() {
            let answer = if refuse {
                Err(format!("app '{name}' is stopping"))
            } else {
                self.run.request_restart(&req.task, req.replica)
            };
            if let Ok(msg) = &answer {
                self.timeline.event(format!("restart requested: {msg}"));
            }
            let _ = req.reply.send(answer);
        }
        while let Ok(req) = self.change_requests.try_recv() {
            let answer = if refuse {
                Err(format!("app '{name}' is stopping"))
            } else {
                match req.change {
                    LiveChange::Rate {
                        items_per_s,
                        unpromised,
                    } => self.run.set_rate(items_per_s, unpromised),
                    LiveChange::Threads(threads) => self.run.set_threads(threads),
                }
            };
            if let Ok(msg) = &answer {
                self.timeline.event(msg.clone());
            }
            let _ = req.reply.send(answer);
        }
    }

    /// The timeline's samples, the progress line and the state the API shows.
    fn observe(&mut self) {
        if self.timeline.due() {
            // The CPU quota in force moves with the node's ledger (best-effort apps).
            if let Ok(group) = &self.cgroup {
                let now = group.describe();
                if now != self.constraints {
                    if let Some(Ok(mut l)) = self.live.as_ref().map(|l| l.lock()) {
                        l.constraints = now.clone();
                    }
                    self.constraints = now;
                }
            }
            let totals: Vec<StageMetrics> = self
                .run
                .replicas
                .iter()
                .map(|r| r.total_metrics())
                .collect();
            self.timeline.sample(totals.iter(), false);
        }
        if self.opts.show_progress {
            let delivered = self
                .run
                .replicas
                .iter()
                .filter(|r| r.kind == TaskKind::Tail)
                .map(|r| r.total_metrics().items_out)
                .max()
                .unwrap_or(0);
            self.progress.update(delivered);
        }
        if let Some(live) = &self.live {
            if self.processes <= FULL_RATE_PROCESSES
                || self
                    .published
                    .is_none_or(|at: Instant| at.elapsed() >= PUBLISH_EVERY_LARGE)
            {
                self.published = Some(Instant::now());
                let (wiring, replicas) = (&self.run.wiring, &self.run.replicas);
                publish(
                    live,
                    wiring,
                    self.opts,
                    replicas,
                    &mut self.rates,
                    (self.started, self.phase.winding_down()),
                );
            }
        }
    }

    /// Done once every process exited and every report it sent has been read (an exit
    /// can overtake the last message; the wait for it is bounded).
    fn finished(&mut self) -> bool {
        if !self.run.all_ended() {
            return false;
        }
        let since = match self.phase {
            Phase::Finishing { since, .. } => since,
            _ => {
                let since = Instant::now();
                self.phase = Phase::Finishing {
                    since,
                    drained: self.phase.drained(),
                };
                since
            }
        };
        let all_read = self.run.replicas.iter().all(|r| r.up_closed);
        all_read || since.elapsed() > Duration::from_secs(2)
    }

    /// What the round does whatever the phase: kill the hung, finish the tails' work,
    /// stop an agent with no stage left.
    fn act(&mut self) {
        // Hang: a live process that missed its heartbeats is killed (the supervisor's own
        // stalls are forgiven, see `hang`).
        if !self.phase.stop_sent() {
            self.run.kill_hung(self.hang_after, &mut self.timeline);
        }
        // Request-guarantee stages stay up after their end of stream (replays may still
        // pass); once every tail has everything they are told to end.
        if !self.finish_sent && self.failure.is_none() && self.run.tails_finished() {
            self.finish_sent = true;
            self.run.send_all(&Command::Finish, false);
        }
        // The agent serves the stages; once they are all gone it has nothing left to do.
        // (An agent of the app's own: a shared one is the node's, the app only detaches.)
        let agent_index = self.run.wiring.agent_index;
        let has_agent = self.run.wiring.agent.is_some() && self.run.wiring.shared.is_none();
        if has_agent
            && !self.agent_stopped
            && self
                .run
                .replicas
                .iter()
                .all(|r| r.task == agent_index || (r.exited.is_some() && r.restart_due.is_none()))
        {
            self.agent_stopped = true;
            if let Some(r) = self.run.replicas.iter_mut().find(|r| r.task == agent_index) {
                r.told_to_stop = true;
            }
            self.run.wiring.command((agent_index, 0), &Command::Stop);
        }
    }

    /// The phase's transitions: a signal drains (a second one stops at once), a failure
    /// stops, a drain past its time fails, a stop escalates to SIGTERM and SIGKILL.
    fn advance(&mut self) {
        if self.interrupted.swap(false, Ordering::SeqCst) {
            match self.phase {
                Phase::Running => {
                    crate::env::appenv::note(&format!(
                        "draining app '{}' (a second Ctrl-C, signal or `supervisor stop` stops it at once)",
                        self.loaded.spec.name
                    ));
                    self.timeline.event("signal: draining from the sources");
                    self.phase = Phase::Draining {
                        since: Instant::now(),
                    };
                    self.run.draining = true;
                    self.run.send_all(&Command::Drain, true);
                }
                // At once: SIGTERM now, SIGKILL a second later for whatever ignores it.
                Phase::Draining { .. } | Phase::Stopping { .. } => {
                    self.failure
                        .get_or_insert_with(|| "stopped by a second signal".into());
                    if let Phase::Stopping { hurry, .. } = &mut self.phase {
                        *hurry = true;
                    } else {
                        self.stop(true);
                    }
                }
                Phase::Finishing { .. } => {}
            }
        }
        // A drain that does not finish in time becomes a stop.
        if let Phase::Draining { since } = self.phase {
            if since.elapsed() > self.opts.drain_timeout {
                self.failure.get_or_insert_with(|| {
                    format!(
                        "the drain did not finish within {} s",
                        self.opts.drain_timeout.as_secs()
                    )
                });
            }
        }
        if self.failure.is_some() && matches!(self.phase, Phase::Running | Phase::Draining { .. }) {
            self.stop(false);
        }
        self.escalate();
    }

    /// Into [`Phase::Stopping`]: no restart is due any more, every process gets `Stop`.
    fn stop(&mut self, hurry: bool) {
        self.phase = Phase::Stopping {
            since: Instant::now(),
            term_sent: None,
            hurry,
            drained: self.phase.drained(),
        };
        for r in self.run.replicas.iter_mut() {
            r.restart_due = None;
        }
        self.run.send_all(&Command::Stop, false);
    }

    /// A stop not obeyed in time: SIGTERM, then SIGKILL after the grace.
    fn escalate(&mut self) {
        let Phase::Stopping {
            since,
            term_sent,
            hurry,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if term_sent.is_none() && (*hurry || since.elapsed() > Duration::from_secs(1)) {
            *term_sent = Some(Instant::now());
            signal_all(&self.run.replicas, Signal::SIGTERM);
        }
        if let Some(at) = *term_sent {
            let grace = if *hurry {
                self.opts.stop_grace.min(Duration::from_secs(1))
            } else {
                self.opts.stop_grace
            };
            if at.elapsed() > grace {
                signal_all(&self.run.replicas, Signal::SIGKILL);
            }
        }
    }
}

/// The note for a process killed by its cgroup's memory limit: killed by SIGKILL while
/// the cgroup counted a new OOM kill.
fn oom_note(
    cgroup: &mut Result<AppCgroup, String>,
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
