//! The live state of a running app and what the supervisor does to it: start a
//! replica's process (first time or after a restart), decide about a process that
//! ended (restart policy, backoff, intensity), restart it with fresh channel ends and
//! rewire its neighbours, re-send what the tails have not acknowledged, and pass the
//! tails' acknowledgements on to the heads.

use crate::env::launch::{Connected, Spawner};
use crate::observe::timeline::Timeline;
use crate::run::replica::{describe_status, Replica};
use crate::run::supervise::{restarts, EndKind, RestartBook, Verdict};
use crate::run::wiring::{ReplicaId, Wiring};
use anyhow::{anyhow, Context};
use protocol::codec;
use protocol::messages::*;
use protocol::spec::{RestartPolicy, ServiceType, TaskKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) mod outputs;
mod requests;

pub enum Event {
    /// A message from replica `idx`'s process number `incarnation`.
    Up(usize, u32, Box<Up>),
    Exited(usize, u32, std::io::Result<ExitStatus>),
    /// The process's up-channel closed: every message it sent has been delivered.
    UpClosed(usize, u32),
    /// A message from it that does not decode: that stage is broken, not the supervisor.
    BadUp(usize, u32, String),
    /// The node's shared GPU agent was started again: attach again, rewire the GPU stages.
    AgentRestarted,
    /// The node's shared GPU agent died too often: the app cannot go on.
    AgentFailed(String),
}

pub struct AppRun<'a> {
    pub wiring: Wiring<'a>,
    pub replicas: Vec<Replica>,
    /// Index in `replicas` of every replica id.
    pub index: BTreeMap<ReplicaId, usize>,
    pub events_tx: mpsc::Sender<Event>,
    pub spawner: Spawner,
    pub logs: PathBuf,
    pub startup_timeout: Duration,
    books: BTreeMap<usize, RestartBook>,
    /// The sources were told to drain: a head restarted from now on is told too (the one
    /// it replaces may have been killed before it read the drain).
    pub draining: bool,
    /// Per head source: what every tail fed by it has acknowledged (the minimum).
    acked: BTreeMap<String, u64>,
    /// Time from a restart to the new process's first output, per restart (ms).
    pub first_output_ms: Vec<f64>,
    /// Holds freed from processes that died.
    pub reclaimed: u64,
    /// Counts a process killed mid-update left on a slot, found and freed.
    pub leaks: crate::run::leaks::LeakRepair,
    /// Restarted tails whose output cannot be resumed, with the parts of their output
    /// that existed before their first restart (`outputs`).
    restarted_outputs: outputs::PartsBefore,
    /// A request-guarantee app admitted on a profile: the rate and reservation it was
    /// promised (a rate change is admitted again: `requests`).
    pub promise: Option<crate::plan::readmit::Promise>,
    /// The frames each video source's file announced when the run started (the summary's
    /// `short_sources` compares what was read with them).
    pub video_frames: BTreeMap<String, u64>,
}

impl<'a> AppRun<'a> {
    pub fn new(
        wiring: Wiring<'a>,
        events_tx: mpsc::Sender<Event>,
        logs: PathBuf,
        startup_timeout: Duration,
    ) -> AppRun<'a> {
        let ids = wiring.all_replicas();
        let wiring_app = wiring.app;
        let mut replicas = Vec::new();
        let mut index = BTreeMap::new();
        for id in ids {
            index.insert(id, replicas.len());
            replicas.push(Replica::new(
                id.0,
                id.1,
                wiring.label(id),
                wiring.kind(id.0),
            ));
        }
        AppRun {
            wiring,
            replicas,
            index,
            events_tx,
            spawner: Spawner::start(),
            logs,
            startup_timeout,
            books: BTreeMap::new(),
            draining: false,
            acked: BTreeMap::new(),
            first_output_ms: Vec::new(),
            reclaimed: 0,
            leaks: Default::default(),
            restarted_outputs: Default::default(),
            promise: None,
            video_frames: crate::run::finish::announced_video_frames(wiring_app),
        }
    }

    fn guaranteed(&self) -> bool {
        self.wiring.app.service_type == ServiceType::RequestGuarantee
    }

    fn id_of(&self, idx: usize) -> ReplicaId {
        (self.replicas[idx].task, self.replicas[idx].replica)
    }

    /// Start every process, accept them all, then hand out the setups (every inbox
    /// must exist before any setup names it).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        for idx in 0..self.replicas.len() {
            pending.push((
                idx,
                self.wiring
                    .start(&self.spawner, self.id_of(idx), &self.logs, false)?,
            ));
        }
        let mut connected = Vec::new();
        let mut error = None;
        for (idx, p) in pending {
            if error.is_some() {
                let mut child = p.child;
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            match p.accept(self.startup_timeout) {
                Ok(c) => connected.push((idx, c)),
                Err(e) => error = Some(e),
            }
        }
        if let Some(e) = error {
            for (_, mut c) in connected {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
            return Err(anyhow!(e));
        }
        let mut ends = Vec::new();
        for (idx, _) in &connected {
            ends.push(self.wiring.fresh_channels(self.id_of(*idx))?);
        }
        // The node's shared agent learns the GPU stages' inboxes before they can ask it.
        if let Err(e) = self.wiring.attach_shared() {
            for (_, mut c) in connected {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
            return Err(e);
        }
        for ((idx, c), (inbox, rewire)) in connected.into_iter().zip(ends) {
            let wire = self
                .wiring
                .setup_wire(self.id_of(idx), 0, inbox, rewire, vec![], None)?;
            self.hand_over(idx, c, wire)?;
        }
        Ok(())
    }

    /// Send a connected process its setup and watch it.
    fn hand_over(&mut self, idx: usize, c: Connected, wire: SetupWire) -> anyhow::Result<()> {
        tracing::debug!(stage = %c.stage, pid = c.hello.pid, "connected");
        c.reply
            .send(wire)
            .map_err(|e| anyhow!("cannot send the setup to {}: {e:?}", c.stage))?;
        let inc = self.replicas[idx].incarnation;
        let r = &mut self.replicas[idx];
        r.pid = c.child.id() as i32;
        r.last_seen = Instant::now();
        r.started_at = Instant::now();
        let tx = self.events_tx.clone();
        let up = c.up;
        std::thread::spawn(move || {
            while let Ok(wire) = up.recv() {
                match codec::decode::<Up>("up", &wire.bytes) {
                    Ok(msg) => {
                        if tx.send(Event::Up(idx, inc, Box::new(msg))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if tx.send(Event::BadUp(idx, inc, e.to_string())).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Event::UpClosed(idx, inc));
        });
        let tx = self.events_tx.clone();
        let mut child = c.child;
        std::thread::spawn(move || {
            let _ = tx.send(Event::Exited(idx, inc, child.wait()));
        });
        Ok(())
    }

    /// A message from a replica's current process.
    pub fn on_up(&mut self, idx: usize, msg: Up, timeline: &mut Timeline) -> Option<String> {
        self.replicas[idx].last_seen = Instant::now();
        match msg {
            Up::Heartbeat(m) => {
                let r = &mut self.replicas[idx];
                if r.report.is_none() {
                    r.metrics = m;
                }
                if let Some(at) = r.restarted_at {
                    if r.metrics.items_out > 0 {
                        self.first_output_ms.push(at.elapsed().as_secs_f64() * 1e3);
                        r.restarted_at = None;
                    }
                }
            }
            Up::Finished(report) => {
                let r = &mut self.replicas[idx];
                r.metrics = report.metrics.clone();
                r.received = report.received.clone();
                r.report = Some(report);
            }
            Up::Failed { error } => {
                let label = self.replicas[idx].label.clone();
                tracing::error!("{label} failed: {error}");
                timeline.event(format!("{label} failed: {error}"));
                self.replicas[idx].failed = Some(error);
            }
            Up::Delivered {
                frontier,
                output_len,
                received,
                since,
            } => {
                let r = &mut self.replicas[idx];
                r.delivered_now.absorb(&since);
                for f in frontier {
                    r.frontier.insert(f.source, f.total);
                }
                if output_len.is_some() {
                    r.output_len = output_len;
                }
                r.received = received;
                if let Some(at) = r.restarted_at.take() {
                    self.first_output_ms.push(at.elapsed().as_secs_f64() * 1e3);
                }
                self.pass_acks_on();
            }
            Up::Hello(_) => {}
        }
        None
    }

    /// Tell each head what every tail it feeds has acknowledged, and the stages that
    /// pair parts of its items (`table.merge`: a replayed part of a delivered item
    /// must not wait there for partners that will not come).
    fn pass_acks_on(&mut self) {
        let heads: Vec<usize> = (0..self.wiring.app.tasks.len())
            .filter(|&t| self.wiring.kind(t) == TaskKind::Head)
            .collect();
        for h in heads {
            let source = self.wiring.task_name(h);
            let tails: Vec<&Replica> = self
                .replicas
                .iter()
                .filter(|r| r.kind == TaskKind::Tail)
                .filter(|r| crate::plan::ancestors(self.wiring.app, r.task).contains(&h))
                .collect();
            let Some(min) = tails
                .iter()
                .map(|r| r.frontier.get(&source).copied().unwrap_or(0))
                .min()
            else {
                continue;
            };
            if self.acked.get(&source).is_some_and(|&a| a >= min) || min == 0 {
                continue;
            }
            self.acked.insert(source.clone(), min);
            let ack = Command::Ack(vec![SourceTotal { source, total: min }]);
            for r in 0..self.wiring.replicas_of(h) {
                self.wiring.command((h, r), &ack);
                // A head waiting for a free slot reads the acknowledgement (which frees
                // its slots) only once it wakes up.
                if let Some(pool) = self.wiring.pools.get(&(h, r)) {
                    pool.wake_waiters();
                }
            }
            let app = self.wiring.app;
            let pairing = (0..app.tasks.len()).filter(|&m| {
                protocol::functions::pairs_parts(&app.tasks[m].function)
                    && crate::plan::ancestors(app, m).contains(&h)
            });
            for m in pairing {
                for r in 0..self.wiring.replicas_of(m) {
                    self.wiring.command((m, r), &ack);
                }
            }
        }
    }

    /// A replica's process ended: free what it held; it is judged once its last
    /// messages are in (an exit can overtake them), see [`AppRun::judge_ended`].
    pub fn on_exit(&mut self, idx: usize, status: Option<ExitStatus>) {
        let id = self.id_of(idx);
        let freed = self.wiring.reclaim(id);
        self.reclaimed += u64::from(freed);
        // Only a process that did not end by itself can have stopped mid-update.
        if !status.is_some_and(|s| s.success()) {
            self.leaks.note_exit(&self.wiring);
        }
        let r = &mut self.replicas[idx];
        r.exited =
            Some(status.unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(1)));
        r.judge_pending = Some(Instant::now());
    }

    /// Judge every ended process whose messages have all arrived (or did not within
    /// a second). Returns the app's failure, if one ends the app.
    pub fn judge_ended(&mut self, stopping: bool, timeline: &mut Timeline) -> Option<String> {
        for idx in 0..self.replicas.len() {
            let r = &self.replicas[idx];
            let ready = r
                .judge_pending
                .is_some_and(|at| r.up_closed || at.elapsed() > Duration::from_secs(1));
            if !ready {
                continue;
            }
            self.replicas[idx].judge_pending = None;
            let status = self.replicas[idx].exited;
            if let Some(f) = self.judge(idx, status, stopping, timeline) {
                return Some(f);
            }
        }
        None
    }

    fn judge(
        &mut self,
        idx: usize,
        status: Option<ExitStatus>,
        stopping: bool,
        timeline: &mut Timeline,
    ) -> Option<String> {
        let r = &mut self.replicas[idx];
        let clean = status.is_some_and(|s| s.success());
        if stopping || r.told_to_stop {
            return None;
        }
        let finished = clean && r.report.is_some();
        if finished {
            return None;
        }
        let how = status
            .map(describe_status)
            .unwrap_or_else(|| "vanished".into());
        let log = self.logs.join(format!("{}.log", r.label));
        let what = format!(
            "stage {} {how}{}; see {}",
            r.label,
            r.failed
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            log.display()
        );
        if r.manual_restart {
            r.restart_due = Some(Instant::now());
            self.books.entry(r.task).or_default().on_manual();
            return None;
        }
        let end = if r.hung {
            EndKind::Hang
        } else if r.failed.is_some() {
            EndKind::Error
        } else if clean {
            EndKind::Early
        } else {
            EndKind::Crash
        };
        let policy = self
            .wiring
            .app
            .tasks
            .get(r.task)
            .and_then(|t| t.restart)
            .unwrap_or(RestartPolicy::Transient);
        if !restarts(policy, end) {
            return Some(what);
        }
        let ran_for = r.started_at.elapsed();
        let book = self.books.entry(r.task).or_default();
        if let Some(hangs) = book.on_hang_streak(end == EndKind::Hang, r.metrics.items_out > 0) {
            return Some(format!(
                "{what}; its last {hangs} processes were each killed as hung before sending any item on: what it is given (the same replayed item, or its start) hangs it every time, so the app is stopped (the stage's log shows what it was doing)"
            ));
        }
        match book.on_end(Instant::now(), ran_for) {
            Verdict::RestartAfter(delay) => {
                let note = format!("{what}; restarting in {} ms", delay.as_millis());
                tracing::warn!("{note}");
                timeline.event(note);
                r.restart_due = Some(Instant::now() + delay);
                None
            }
            Verdict::Escalate { restarts, within } => Some(format!(
                "{what}; it was restarted {restarts} times within {} s (the restart intensity), so the app is stopped",
                within.as_secs()
            )),
        }
    }

    /// Restart every replica whose backoff is over. Returns a failure when a restart
    /// could not be done at all.
    pub fn restart_due(&mut self, timeline: &mut Timeline) -> Option<String> {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| self.replicas[i].restart_due.is_some_and(|t| t <= now))
            .collect();
        for idx in due {
            self.replicas[idx].restart_due = None;
            let label = self.replicas[idx].label.clone();
            match self.restart(idx) {
                Ok(()) => {
                    let note = format!(
                        "{label} restarted (process {})",
                        self.replicas[idx].incarnation
                    );
                    tracing::info!("{note}");
                    timeline.event(note);
                }
                Err(e) => {
                    // A process that dies while starting counts as one more crash.
                    tracing::warn!("restart of {label} failed: {e:#}");
                    self.on_exit(idx, None);
                    self.replicas[idx].judge_pending = None;
                    if let Some(f) = self.judge(idx, None, false, timeline) {
                        return Some(format!("{f} (restart: {e:#})"));
                    }
                }
            }
        }
        None
    }

    /// Start a new process for replica `idx` (whose old one is gone), rewire its
    /// producers to it, and have the heads re-send what the tails lack.
    fn restart(&mut self, idx: usize) -> anyhow::Result<()> {
        let id = self.id_of(idx);
        self.note_output_restart(idx);
        self.replicas[idx].retire_process();
        self.replicas[idx].exited = Some(std::os::unix::process::ExitStatusExt::from_raw(0));
        let pending = self.wiring.start(&self.spawner, id, &self.logs, true)?;
        let connected = pending
            .accept(self.startup_timeout)
            .with_context(|| format!("cannot restart {}", self.replicas[idx].label))?;
        let (inbox, rewire) = self.wiring.fresh_channels(id)?;
        let r = &self.replicas[idx];
        let (resume, resume_len) = match r.kind {
            TaskKind::Head => {
                let source = self.wiring.task_name(id.0);
                let total = self.acked.get(&source).copied().unwrap_or(0);
                (vec![SourceTotal { source, total }], None)
            }
            TaskKind::Tail => (
                r.frontier
                    .iter()
                    .map(|(source, total)| SourceTotal {
                        source: source.clone(),
                        total: *total,
                    })
                    .collect(),
                r.output_len,
            ),
            _ => (vec![], None),
        };
        let incarnation = r.incarnation;
        let wire = self
            .wiring
            .setup_wire(id, incarnation, inbox, rewire, resume, resume_len)?;
        self.replicas[idx].exited = None;
        self.hand_over(idx, connected, wire)?;
        self.replicas[idx].restarted_at = Some(Instant::now());
        // Producers that are alive now send to the new inbox; those that finished
        // already are represented by their end of stream.
        for (producer, output) in self.wiring.producers_of(id) {
            let Some(&p) = self.index.get(&producer) else {
                continue;
            };
            let pr = &self.replicas[p];
            if pr.exited.is_none() && pr.restart_due.is_none() {
                if let Err(e) = self.wiring.rewire(producer, output, id) {
                    tracing::warn!("{e:#}");
                }
            }
            if let Some(report) = &pr.report {
                if producer.0 != self.wiring.agent_index {
                    self.wiring.inbox_send(
                        id,
                        &Inbox::Eos(Eos {
                            stage: self.wiring.task_id(producer.0),
                            replica: producer.1,
                            totals: report.announced.clone(),
                        }),
                    );
                }
            }
        }
        if self.guaranteed() && id.0 != self.wiring.agent_index {
            for head in self.wiring.heads_feeding(id.0) {
                if head != id {
                    self.wiring.command(head, &Command::Replay);
                }
            }
        }
        if self.draining && self.replicas[idx].kind == TaskKind::Head {
            self.wiring.command(id, &Command::Drain);
        }
        Ok(())
    }

    /// A replica's process sent a message that does not decode: it is killed and
    /// judged like a crash (restarted per its policy); the supervisor goes on.
    pub fn on_bad_up(&mut self, idx: usize, error: &str, timeline: &mut Timeline) {
        let r = &mut self.replicas[idx];
        r.bad_messages += 1;
        let why = format!(
            "stage {} sent a message that does not decode ({error}); it is killed and restarted like a crash",
            r.label
        );
        tracing::error!("{why}");
        timeline.event(why);
        if r.exited.is_none() && !r.hung {
            // Our child's own process group; it has not been reaped.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(r.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// No process runs and none is waiting to be restarted.
    pub fn all_ended(&self) -> bool {
        self.replicas
            .iter()
            .all(|r| r.exited.is_some() && r.restart_due.is_none() && r.judge_pending.is_none())
    }

    /// Every tail finished its stream (request-guarantee: the app has everything).
    pub fn tails_finished(&self) -> bool {
        self.replicas
            .iter()
            .filter(|r| r.kind == TaskKind::Tail)
            .all(|r| r.report.is_some() && r.exited.is_some_and(|s| s.success()))
    }

    /// Send a command to every replica still running (heads only, or all).
    pub fn send_all(&self, cmd: &Command, heads_only: bool) {
        for r in &self.replicas {
            if r.exited.is_some() || (heads_only && r.kind != TaskKind::Head) {
                continue;
            }
            self.wiring.command((r.task, r.replica), cmd);
        }
    }
}
