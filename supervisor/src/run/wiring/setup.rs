//! The `Setup` a replica's (new) process gets: what every process has (app, task,
//! holder id, heartbeats, deadlines), the agent's view of every GPU stage, and a stage's
//! outputs, the pools it maps and its batching and model settings.

use super::{ReplicaId, SetupWire, Wiring, MAX_FDS};
use crate::plan::ancestors;
use anyhow::{anyhow, Context};
use ipc_channel::ipc::IpcReceiver;
use protocol::codec;
use protocol::messages::*;
use protocol::shm::PoolHandle;
use protocol::spec::TaskKind;

impl Wiring<'_> {
    /// The task as its process gets it: a head's `fps` is the live rate once one is set,
    /// and a video head of a URL gets what the planner's probe found of it.
    fn task_json(&self, t: usize) -> anyhow::Result<String> {
        let task = &self.app.tasks[t];
        if task.kind != TaskKind::Head {
            return Ok(serde_json::to_string(task)?);
        }
        let mut task = task.clone();
        if let Some(rate) = self.rate {
            crate::plan::pace_head(&mut task, rate);
        }
        pass_probed_stream(&mut task);
        Ok(serde_json::to_string(&task)?)
    }

    pub fn setup_wire(
        &self,
        id: ReplicaId,
        incarnation: u32,
        inbox: InboxReceiver,
        rewire: IpcReceiver<InboxSender>,
        resume: Vec<SourceTotal>,
        resume_output_len: Option<u64>,
    ) -> anyhow::Result<SetupWire> {
        let (t, r) = id;
        let app = self.app;
        let common = |task_index: usize, task_json: String| {
            self.common_setup(
                id,
                incarnation,
                task_index,
                task_json,
                &resume,
                resume_output_len,
            )
        };
        if t == self.agent_index {
            let agent = self.agent.as_ref().context("no agent in this app")?;
            let setup = common(t, serde_json::to_string(agent)?);
            return self.agent_setup_wire(setup, inbox, rewire);
        }
        let task = &app.tasks[t];
        let mut outputs = Vec::new();
        let mut routes = Vec::new();
        for (c, first) in self.routes(t) {
            let n = self.replicas_of(c);
            routes.push(OutputRoute {
                task: app.tasks[c].name.clone(),
                first,
                replicas: n,
                active: self.active_now(c),
                holders: (0..n).map(|cr| self.holder((c, cr))).collect(),
                by_item: protocol::functions::pairs_parts(&app.tasks[c].function),
            });
            for cr in 0..n {
                outputs.push(self.sender((c, cr))?);
            }
        }
        let expected_eos: u32 = task
            .inputs
            .iter()
            .filter_map(|i| app.task_index(i))
            .map(|j| self.replicas_of(j))
            .sum();
        let mapped = self.mapped_pools(id);
        // Pools travel as handles to open, not as fds: only the channels count.
        let fds = 2 + outputs.len();
        if fds > MAX_FDS {
            return Err(anyhow!(
                "stage {}#{r} needs {fds} channel handles, more than the {MAX_FDS} one message can carry; use fewer replicas downstream",
                task.name
            ));
        }
        let stage = &self.plan.stages[t];
        let mut agent_output = None;
        let mut agent_reply_to = None;
        if task.kind == TaskKind::Gpu {
            agent_output = Some(outputs.len() as u32);
            outputs.push(self.sender((self.agent_index, 0))?);
            agent_reply_to = self
                .gpu_replicas
                .iter()
                .position(|x| *x == id)
                .map(|p| self.agent_output_of(p));
        }
        let setup = Setup {
            outputs: routes,
            expected_eos,
            pools: mapped.iter().map(|(i, _)| i.clone()).collect(),
            own_pool: self.pools.get(&id).map(|p| p.id()),
            batch_size: self.batch_now(t),
            batch_max_wait_ms: self.batch_wait_now(t),
            batch_capacity: crate::plan::tuning::capacity(app, t, stage.batch_size),
            threads: stage.threads,
            agent_output,
            agent_reply_to,
            models_manifest: self
                .store
                .as_ref()
                .map(|s| s.manifest_path.display().to_string()),
            models_dir: self
                .store
                .as_ref()
                .map(|s| s.models_dir.display().to_string()),
            ..common(t, self.task_json(t)?)
        };
        Ok(SetupWire {
            setup: codec::encode("setup", &setup)?,
            refused: None,
            inbox: Some(inbox),
            outputs,
            pools: mapped.into_iter().map(|(_, shm)| shm).collect(),
            rewire: Some(rewire),
            attach: None,
        })
    }

    /// What every process's `Setup` has, before its role fills in the rest.
    fn common_setup(
        &self,
        id: ReplicaId,
        incarnation: u32,
        task_index: usize,
        task_json: String,
        resume: &[SourceTotal],
        resume_output_len: Option<u64>,
    ) -> Setup {
        let (t, r) = id;
        let app = self.app;
        Setup {
            app: app.name.clone(),
            service_type: app.service_type,
            task_index: self.task_id(task_index),
            task_json,
            replica: r,
            replicas: self.replicas_of(t),
            outputs: vec![],
            expected_eos: 0,
            pools: vec![],
            own_pool: None,
            run_dir: self.run_dir.display().to_string(),
            heartbeat_ms: self.heartbeat_ms,
            batch_size: 1,
            batch_max_wait_ms: 0.0,
            batch_capacity: 1,
            threads: 1,
            slot_wait_ms: slot_wait_ms(&app.quota),
            deadline_ms: deadline_ms(app),
            agent_deadline_ms: agent_deadline_ms(app),
            agent_output: None,
            agent_reply_to: None,
            models_manifest: None,
            models_dir: None,
            holder: self.holder(id),
            incarnation,
            resume: resume.to_vec(),
            resume_output_len,
        }
    }

    /// The agent's setup: its inbox and rewire channel travel with the pools and outputs.
    fn agent_setup_wire(
        &self,
        common: Setup,
        inbox: InboxReceiver,
        rewire: IpcReceiver<InboxSender>,
    ) -> anyhow::Result<SetupWire> {
        let (infos, handles, outputs) = self.agent_view(2)?;
        let setup = Setup {
            pools: infos,
            threads: crate::plan::agent_threads(&crate::plan::device()),
            ..common
        };
        Ok(SetupWire {
            setup: codec::encode("setup", &setup)?,
            refused: None,
            inbox: Some(inbox),
            outputs,
            pools: handles,
            rewire: Some(rewire),
            attach: None,
        })
    }

    /// The pools replica `id` maps: its ancestors' and its own.
    fn mapped_pools(&self, id: ReplicaId) -> Vec<(PoolInfo, PoolHandle)> {
        let (t, r) = id;
        let mut mapped: Vec<(PoolInfo, PoolHandle)> = Vec::new();
        let mut readable = ancestors(self.app, t);
        readable.insert(t);
        for ((pt, pr), pool) in &self.pools {
            if readable.contains(pt) && (*pt != t || *pr == r) {
                mapped.push((
                    PoolInfo {
                        id: pool.id(),
                        owner: self.label((*pt, *pr)),
                    },
                    pool.handle(),
                ));
            }
        }
        mapped
    }
}

/// Best-effort: how long a stage waits for a free output slot before it sheds the item.
/// An item still without a slot after the app's latency quota would miss it anyway;
/// shedding at once instead would drop items whenever a downstream batch holds the
/// slots for a moment. Without a latency quota there is no latency to protect: every
/// producer waits as long as it takes ([`SLOT_WAIT_FOREVER`]) and nothing is shed.
pub fn slot_wait_ms(quota: &protocol::spec::Quota) -> u32 {
    quota
        .max_latency_ms
        .map_or(SLOT_WAIT_FOREVER, |ms| ms.clamp(0.0, 60_000.0) as u32)
}

/// How long after its creation a GPU stage's item should be run by the agent: the app's
/// latency quota; without one, 10 s for a request-guarantee app and an hour for a
/// best-effort one, so the agent, serving the earliest deadline first across the apps
/// it hosts, never lets a best-effort burst delay a guaranteed request.
pub fn agent_deadline_ms(app: &protocol::spec::AppSpec) -> u32 {
    match (app.quota.max_latency_ms, app.service_type) {
        (Some(ms), _) => ms.clamp(1.0, 3_600_000.0) as u32,
        (None, protocol::spec::ServiceType::RequestGuarantee) => 10_000,
        (None, protocol::spec::ServiceType::BestEffort) => 3_600_000,
    }
}

/// Best-effort apps with a latency quota: items older than the quota are dropped where
/// they are received (0 = never; guaranteed apps never drop).
pub fn deadline_ms(app: &protocol::spec::AppSpec) -> u32 {
    match (app.service_type, app.quota.max_latency_ms) {
        (protocol::spec::ServiceType::BestEffort, Some(ms)) => ms.clamp(1.0, 3_600_000.0) as u32,
        _ => 0,
    }
}

/// A `source.video` head of a URL gets what this supervisor's planner probed of it
/// (`params.probed`), so it does not probe the stream again: ffprobe analyses 5 s of a live
/// MPEG-TS, at every start and restart of the head.
fn pass_probed_stream(task: &mut protocol::spec::TaskSpec) {
    use protocol::functions::{builtin, Builtin};
    if builtin(&task.function) != Some(Builtin::SourceVideo) {
        return;
    }
    let Some(path) = task.params.get("path").and_then(|p| p.as_str()) else {
        return;
    };
    let Some(probed) = crate::plan::source_probe::probed_stream(path) else {
        return;
    };
    if let Ok(value) = serde_json::to_value(probed) {
        task.params.insert("probed".into(), value);
    }
}
