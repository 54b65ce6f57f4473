//! The wiring of a running app: shared-memory pools, every replica's inbox and rewire
//! channels, shared-memory holder ids, and the `Setup` each process gets. Kept for the
//! whole run so a restarted replica gets fresh channel ends and its producers a
//! `Rewire` (DESIGN: "after a restart it hands fresh ends to the new process").

use crate::env::launch::{find_worker, start_child, Pending, Spawner};
use crate::plan::models::ModelStore;
use crate::plan::{ancestors, Plan};
use anyhow::{anyhow, Context};
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use protocol::codec;
use protocol::messages::*;
use protocol::shm::{PoolHandle, SlotPool, MAX_HOLDER_ID};
use protocol::spec::{AppSpec, TaskKind, TaskSpec};
use protocol::{HolderId, PoolId, TaskId};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

mod holders;
mod setup;
use holders::{holder_id, pool_readers};

/// At most this many fds travel in one ipc-channel message.
const MAX_FDS: usize = 64;

/// A replica: (task index, replica index); the agent is task `agent_index`, replica 0.
pub type ReplicaId = (usize, u32);

pub struct Wiring<'a> {
    pub app: &'a AppSpec,
    pub plan: &'a Plan,
    /// The GPU agent's task, when the app has GPU tasks.
    pub agent: Option<TaskSpec>,
    pub agent_index: usize,
    pub pools: BTreeMap<ReplicaId, SlotPool>,
    /// Current inbox sender of every replica (the agent's at `agent_index`).
    pub inbox_tx: Vec<Vec<Option<InboxSender>>>,
    /// Sender side of every replica's rewire channel.
    rewire_tx: Vec<Vec<Option<IpcSender<InboxSender>>>>,
    gpu_replicas: Vec<ReplicaId>,
    store: Option<ModelStore>,
    run_dir: PathBuf,
    heartbeat_ms: u32,
    /// Live batching changes per task: (batch size, max wait ms).
    retuned: BTreeMap<usize, (u32, f64)>,
    /// Live scaling per task: active replicas.
    scaled: BTreeMap<usize, u32>,
    /// The request rate set live (`supervisor rate`): a head (re)started later is
    /// paced at it instead of its file's `fps`.
    pub rate: Option<f64>,
    /// The `cgroup.procs` files of the app's cgroup, which every child joins before it
    /// execs (empty: no cgroup).
    pub cgroup_procs: Vec<std::ffi::CString>,
    /// The node's agent, when the app shares it (daemon) instead of running its own.
    pub shared: Option<crate::run::agent_host::SharedAgent>,
}

impl<'a> Wiring<'a> {
    pub fn new(
        app: &'a AppSpec,
        plan: &'a Plan,
        agent: Option<TaskSpec>,
        store: Option<ModelStore>,
        run_dir: &Path,
        heartbeat_ms: u32,
        shared: Option<crate::run::agent_host::SharedAgent>,
    ) -> anyhow::Result<Wiring<'a>> {
        // Counted before any pool is made: one pool per replica.
        let mut counts: Vec<u32> = plan.stages.iter().map(|s| s.replicas).collect();
        if agent.is_some() {
            counts.push(1);
        }
        let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
        if total > u64::from(MAX_HOLDER_ID) {
            return Err(anyhow!(
                "the app has {total} processes; at most {MAX_HOLDER_ID} are supported"
            ));
        }
        // Task indices travel as task ids, the agent's (after the app's tasks) included.
        TaskId::from_index(app.tasks.len())?;
        crate::plan::memory_check::pools_fit(plan)?;
        let readers = pool_readers(app, &counts, agent.is_some());
        // Pool ids are node-wide when the app shares the node's agent.
        let mut next_pool = shared.as_ref().map_or(1, |s| s.first_pool.get());
        let mut jobs = Vec::new();
        for (t, stage) in plan.stages.iter().enumerate() {
            if let Some(p) = &stage.pool {
                for r in 0..stage.replicas {
                    let mut holders = readers[t].clone();
                    holders.push(holder_id(&counts, (t, r)));
                    jobs.push(crate::run::pool_make::PoolJob {
                        key: (t, r),
                        id: PoolId::new(next_pool),
                        slots: p.slots,
                        slot_size: p.slot_size,
                        holders,
                        name: format!("{}#{r}", stage.task),
                    });
                    next_pool += 1;
                }
            }
        }
        let threads = crate::plan::available_cores() as usize;
        let pools: BTreeMap<(usize, u32), SlotPool> =
            crate::run::pool_make::create_all(jobs, threads)?
                .into_iter()
                .collect();
        let gpu_replicas = plan
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == TaskKind::Gpu)
            .flat_map(|(t, s)| (0..s.replicas).map(move |r| (t, r)))
            .collect();
        Ok(Wiring {
            app,
            plan,
            agent,
            agent_index: app.tasks.len(),
            pools,
            inbox_tx: counts.iter().map(|&n| vec![None; n as usize]).collect(),
            rewire_tx: counts.iter().map(|&n| vec![None; n as usize]).collect(),
            gpu_replicas,
            store,
            run_dir: run_dir.to_path_buf(),
            heartbeat_ms,
            retuned: BTreeMap::new(),
            scaled: BTreeMap::new(),
            rate: None,
            cgroup_procs: Vec::new(),
            shared,
        })
    }

    /// Every replica whose process the app runs: stages first, the agent last (unless
    /// the app shares the node's agent).
    pub fn all_replicas(&self) -> Vec<ReplicaId> {
        let shared = self.shared.is_some();
        let agent = self.agent_index;
        self.inbox_tx
            .iter()
            .enumerate()
            .filter(|(t, _)| !(shared && *t == agent))
            .flat_map(|(t, v)| (0..v.len() as u32).map(move |r| (t, r)))
            .collect()
    }

    /// The agent's output index of the `k`th GPU stage replica.
    fn agent_output_of(&self, k: usize) -> u32 {
        self.shared.as_ref().map_or(0, |s| s.first_output) + k as u32
    }

    /// What the agent of this app (its own, or the node's) is given: every pool and the
    /// inbox of every GPU stage replica, within one message's handles (`extra` more
    /// travel beside them).
    #[allow(clippy::type_complexity)]
    fn agent_view(
        &self,
        extra: usize,
    ) -> anyhow::Result<(Vec<PoolInfo>, Vec<PoolHandle>, Vec<InboxSender>)> {
        let mut infos = Vec::new();
        let mut handles = Vec::new();
        for ((pt, pr), pool) in &self.pools {
            infos.push(PoolInfo {
                id: pool.id(),
                owner: self.label((*pt, *pr)),
            });
            handles.push(pool.handle());
        }
        let outputs = self
            .gpu_replicas
            .iter()
            .map(|g| self.sender(*g))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Pools travel as handles to open, not as fds: only the channels count.
        if extra + outputs.len() > MAX_FDS {
            return Err(anyhow!(
                "the GPU agent would need more than {MAX_FDS} handles; the app has too many stages"
            ));
        }
        Ok((infos, handles, outputs))
    }

    /// Shared agent: hand it the app's pools, its GPU stages' current inboxes and its
    /// models (at start, and again after the agent was restarted).
    pub fn attach_shared(&self) -> anyhow::Result<()> {
        let (Some(shared), Some(agent)) = (&self.shared, &self.agent) else {
            return Ok(());
        };
        let (pools, handles, outputs) = self.agent_view(0)?;
        let models = agent.params.get("models").cloned().unwrap_or_default();
        shared.hosts.attach(
            &shared.device,
            AttachWire {
                app: self.app.name.clone(),
                holder: self.holder((self.agent_index, 0)),
                pools,
                handles,
                first_output: shared.first_output,
                outputs,
                models_json: serde_json::to_string(&models)?,
                budget_mb: self.app.constraints.gpus.first().map(|g| g.memory_mb),
                guaranteed: self.app.service_type == protocol::spec::ServiceType::RequestGuarantee,
            },
        )
    }

    /// Shared agent restarted: point every GPU stage replica at its new inbox (they
    /// re-send what was in flight).
    pub fn rewire_gpu_stages_to_agent(&self) {
        for &g in &self.gpu_replicas {
            if let Err(e) = self.rewire(g, self.data_outputs(g.0), (self.agent_index, 0)) {
                tracing::warn!("{e:#}");
            }
        }
    }

    pub fn replicas_of(&self, t: usize) -> u32 {
        self.inbox_tx.get(t).map_or(0, |v| v.len() as u32)
    }

    /// The shared-memory holder id of a replica (0 is the supervisor's).
    pub fn holder(&self, (t, r): ReplicaId) -> HolderId {
        let before: usize = self.inbox_tx[..t].iter().map(Vec::len).sum();
        // At most MAX_HOLDER_ID replicas (checked in `new`), so this fits.
        HolderId::new((1 + before + r as usize) as u16)
    }

    /// The id the wire gives task `t` (the agent is the task after the app's tasks):
    /// the one place the supervisor's task indices become [`TaskId`]s.
    pub fn task_id(&self, t: usize) -> TaskId {
        // The agent's index, the largest, fits (checked in `new`).
        TaskId::new(t as u16)
    }

    pub fn task_name(&self, t: usize) -> String {
        match self.app.tasks.get(t) {
            Some(task) => task.name.clone(),
            None => self
                .agent
                .as_ref()
                .map_or("agent".into(), |a| a.name.clone()),
        }
    }

    pub fn label(&self, (t, r): ReplicaId) -> String {
        format!("{}#{r}", self.task_name(t))
    }

    pub fn kind(&self, t: usize) -> TaskKind {
        self.app.tasks.get(t).map_or(TaskKind::Gpu, |x| x.kind)
    }

    /// Start the process of a replica (its log file appended to after a restart).
    pub fn start(
        &self,
        spawner: &Spawner,
        id: ReplicaId,
        logs: &Path,
        restart: bool,
    ) -> anyhow::Result<Pending> {
        let label = self.label(id);
        let is_agent = id.0 == self.agent_index;
        let user = crate::plan::user_stage::program_of(self.app, id.0).filter(|_| !is_agent);
        let program = match user {
            Some(p) => PathBuf::from(p.path()),
            None => find_worker(if is_agent || self.kind(id.0) == TaskKind::Gpu {
                "worker-gpu"
            } else {
                "worker-cpu"
            })?,
        };
        let log_path = logs.join(format!("{label}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(restart)
            .write(true)
            .truncate(!restart)
            .open(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = match user {
            Some(p) => {
                let mut cmd = crate::plan::user_stage::command(&program);
                cmd.args(p.args());
                cmd
            }
            None => Process::new(&program),
        };
        crate::env::appenv::apply(&mut cmd);
        crate::env::malloc::tune_worker(&mut cmd);
        cmd.arg(if is_agent { "--agent" } else { "--stage" })
            .arg(format!("{}/{label}", self.app.name))
            .stdin(Stdio::null())
            .stdout(match crate::env::appenv::console() {
                _ if is_agent => Stdio::null(),
                // A foreground `start` following the app in the daemon: its stdout.
                Some(console) => console
                    .stage_stdout()
                    .with_context(|| format!("{label}: cannot pass on the command's stdout"))?,
                None => Stdio::inherit(),
            })
            .stderr(Stdio::from(log));
        if !self.cgroup_procs.is_empty() {
            let files = self.cgroup_procs.clone();
            // SAFETY: between fork and exec the closure only calls open, write and close
            // (async-signal-safe, no allocation: the paths are C strings made beforehand);
            // "0" is the writing process.
            unsafe {
                cmd.pre_exec(move || {
                    use nix::fcntl::OFlag;
                    for file in &files {
                        let fd = nix::fcntl::open(
                            file.as_c_str(),
                            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                            nix::sys::stat::Mode::empty(),
                        )?;
                        if nix::unistd::write(&fd, b"0")? != 1 {
                            return Err(nix::errno::Errno::EIO.into());
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(start_child(spawner, &label, cmd, &program, log_path)?)
    }

    /// Fresh inbox and rewire channels for (a new incarnation of) a replica; the
    /// senders are kept, the receivers go into its setup.
    pub fn fresh_channels(
        &mut self,
        (t, r): ReplicaId,
    ) -> anyhow::Result<(InboxReceiver, IpcReceiver<InboxSender>)> {
        let (tx, rx) = ipc::channel::<Vec<u8>>().context("cannot create a channel")?;
        let (rewire_tx, rewire_rx) =
            ipc::channel::<InboxSender>().context("cannot create a channel")?;
        self.inbox_tx[t][r as usize] = Some(tx);
        self.rewire_tx[t][r as usize] = Some(rewire_tx);
        Ok((rx, rewire_rx))
    }

    fn sender(&self, (t, r): ReplicaId) -> anyhow::Result<InboxSender> {
        if let (Some(s), true) = (&self.shared, t == self.agent_index) {
            return s
                .hosts
                .inbox(&s.device)
                .ok_or_else(|| anyhow!("the agent of {} is not running", s.device));
        }
        self.inbox_tx
            .get(t)
            .and_then(|v| v.get(r as usize))
            .cloned()
            .flatten()
            .ok_or_else(|| anyhow!("{} has no inbox yet", self.label((t, r))))
    }

    /// Send a command to a replica's inbox (ignored when it is gone; the node's shared
    /// agent takes no commands from one app).
    pub fn command(&self, id: ReplicaId, cmd: &Command) {
        if self.shared.is_some() && id.0 == self.agent_index {
            return;
        }
        if let (Ok(tx), Ok(bytes)) = (
            self.sender(id),
            codec::encode("command", &Inbox::Command(cmd.clone())),
        ) {
            let _ = tx.send(bytes);
        }
    }

    /// Send raw inbox bytes (e.g. an end of stream on behalf of a finished replica).
    pub fn inbox_send(&self, id: ReplicaId, msg: &Inbox) {
        if let (Ok(tx), Ok(bytes)) = (self.sender(id), codec::encode("inbox", msg)) {
            let _ = tx.send(bytes);
        }
    }

    /// Tell producer `producer` that its output `output` now goes to `consumer`'s
    /// current inbox.
    pub fn rewire(
        &self,
        producer: ReplicaId,
        output: u32,
        consumer: ReplicaId,
    ) -> anyhow::Result<()> {
        let new_sender = self.sender(consumer)?;
        if let (Some(s), true) = (&self.shared, producer.0 == self.agent_index) {
            return s.hosts.rewire(&s.device, output, new_sender);
        }
        let via = self
            .rewire_tx
            .get(producer.0)
            .and_then(|v| v.get(producer.1 as usize))
            .cloned()
            .flatten()
            .ok_or_else(|| anyhow!("{} has no rewire channel", self.label(producer)))?;
        via.send(new_sender)
            .map_err(|e| anyhow!("cannot rewire {}: {e:?}", self.label(producer)))?;
        self.command(producer, &Command::Rewire { output });
        Ok(())
    }

    /// The data consumers of task `t`, in output order: (task index, first output).
    fn routes(&self, t: usize) -> Vec<(usize, u32)> {
        let Some(task) = self.app.tasks.get(t) else {
            return Vec::new();
        };
        let mut first = 0;
        let mut out = Vec::new();
        for (c, consumer) in self.app.tasks.iter().enumerate() {
            if consumer.inputs.contains(&task.name) {
                out.push((c, first));
                first += self.replicas_of(c);
            }
        }
        out
    }

    fn data_outputs(&self, t: usize) -> u32 {
        self.routes(t)
            .iter()
            .map(|(c, _)| self.replicas_of(*c))
            .sum()
    }

    /// Every replica that sends to `id`, with the index of `id` among its outputs.
    pub fn producers_of(&self, id: ReplicaId) -> Vec<(ReplicaId, u32)> {
        let (t, r) = id;
        let mut out = Vec::new();
        if t == self.agent_index {
            for &g in &self.gpu_replicas {
                out.push((g, self.data_outputs(g.0)));
            }
            return out;
        }
        for input in &self.app.tasks[t].inputs {
            let Some(p) = self.app.task_index(input) else {
                continue;
            };
            if let Some((_, first)) = self.routes(p).into_iter().find(|(c, _)| *c == t) {
                for pr in 0..self.replicas_of(p) {
                    out.push(((p, pr), first + r));
                }
            }
        }
        if let Some(k) = self.gpu_replicas.iter().position(|g| *g == id) {
            out.push(((self.agent_index, 0), self.agent_output_of(k)));
        }
        out
    }

    /// How many of task `t`'s replicas get items now (the plan's, or the last scaling's).
    pub fn active_now(&self, t: usize) -> u32 {
        self.scaled
            .get(&t)
            .copied()
            .unwrap_or_else(|| self.plan.stages.get(t).map_or(1, |s| s.active))
    }

    /// Send task `t`'s items to its first `active` replicas: every producer replica
    /// is told (a restarted one starts with it).
    pub fn scale(&mut self, t: usize, active: u32) {
        self.scaled.insert(t, active);
        let cmd = Command::Scale {
            task: self.task_name(t),
            active,
        };
        for input in &self.app.tasks[t].inputs {
            if let Some(p) = self.app.task_index(input) {
                for r in 0..self.replicas_of(p) {
                    self.command((p, r), &cmd);
                }
            }
        }
    }

    /// The batch size task `t` runs with now (the plan's, or the last retune's).
    pub fn batch_now(&self, t: usize) -> u32 {
        self.retuned
            .get(&t)
            .map_or(self.plan.stages[t].batch_size, |r| r.0)
    }

    pub fn batch_wait_now(&self, t: usize) -> f64 {
        self.retuned
            .get(&t)
            .map_or(self.plan.stages[t].batch_max_wait_ms, |r| r.1)
    }

    /// Retune every replica of task `t` (a restarted one starts with it too).
    pub fn retune(&mut self, t: usize, batch_size: u32, batch_max_wait_ms: f64) {
        self.retuned.insert(t, (batch_size, batch_max_wait_ms));
        for r in 0..self.replicas_of(t) {
            self.command(
                (t, r),
                &Command::Retune {
                    batch_size,
                    batch_max_wait_ms,
                },
            );
        }
    }

    /// Free every shared-memory hold of a replica that died.
    pub fn reclaim(&self, id: ReplicaId) -> u32 {
        let holder = self.holder(id);
        self.pools.values().map(|p| p.reclaim_holder(holder)).sum()
    }

    /// Free slots over all pools (the no-leak check after a run).
    pub fn free_slots(&self) -> (u32, u32) {
        self.pools
            .values()
            .fold((0, 0), |(f, n), p| (f + p.free_slots(), n + p.slot_count()))
    }

    /// For each pool with slots still held: its writer, and who holds how many (a leak
    /// report once every process has ended).
    pub fn held_report(&self) -> Vec<String> {
        let holders: Vec<(HolderId, String)> = self
            .all_replicas()
            .into_iter()
            .map(|id| (self.holder(id), self.label(id)))
            .chain([(HolderId::SUPERVISOR, "supervisor".to_string())])
            .collect();
        self.pools
            .iter()
            .filter(|(_, p)| p.free_slots() < p.slot_count())
            .map(|(&owner, p)| {
                let who: Vec<String> = holders
                    .iter()
                    .filter_map(|(h, label)| match p.holds_of(*h) {
                        0 => None,
                        n => Some(format!("{label}: {n}")),
                    })
                    .collect();
                format!(
                    "pool of {}: {} of {} slots held ({})",
                    self.label(owner),
                    p.slot_count() - p.free_slots(),
                    p.slot_count(),
                    if who.is_empty() {
                        "no holder recorded".to_string()
                    } else {
                        who.join(", ")
                    }
                )
            })
            .collect()
    }

    /// Head replicas whose items reach `t` (or every head for the agent).
    pub fn heads_feeding(&self, t: usize) -> Vec<ReplicaId> {
        let mut up = if t == self.agent_index {
            (0..self.app.tasks.len()).collect()
        } else {
            let mut a = ancestors(self.app, t);
            a.insert(t);
            a
        };
        up.retain(|&x| self.kind(x) == TaskKind::Head);
        up.into_iter()
            .flat_map(|h| (0..self.replicas_of(h)).map(move |r| (h, r)))
            .collect()
    }
}
