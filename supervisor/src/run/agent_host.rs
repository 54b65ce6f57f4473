//! The node's GPU agents (DESIGN: one agent per device for all apps): the daemon starts
//! one `worker-gpu --agent` per device the first time an app needs it, and every app it
//! hosts attaches to it (its pools at node-wide ids, its GPU stages' inboxes at
//! node-wide output indices, its models) instead of starting an agent of its own. The
//! agent serves requests earliest deadline first across apps and loads a model file
//! two apps share once. When the agent dies it is started again (at most
//! [`MAX_RESTARTS`] in [`RESTART_WINDOW`]); every app then attaches again and rewires
//! its GPU stages, which re-send what was in flight. The agent is stopped when its last
//! app detaches.

use crate::env::launch::{find_worker, start_child, Spawner};
use crate::run::apprun::Event;
use anyhow::{anyhow, Context};
use ipc_channel::ipc::{self, IpcSender};
use protocol::codec;
use protocol::messages::*;
use protocol::spec::{ServiceType, TaskSpec};
use protocol::{HolderId, PoolId, TaskId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An agent that dies more often than this within [`RESTART_WINDOW`] is not started
/// again: the apps on it fail with the reason.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Pool ids each app may use (its pools are numbered from a base of its own).
const POOLS_PER_APP: u32 = 1 << 16;
const STARTUP: Duration = Duration::from_secs(60);

/// The channel ends of a running agent.
struct Link {
    inbox: InboxSender,
    rewire: IpcSender<InboxSender>,
    attach: IpcSender<AttachWire>,
}

/// An app on a device's agent.
struct Member {
    events: mpsc::Sender<Event>,
    /// The models the app attached with (none before its first attach).
    models: Vec<SharedModel>,
}

/// What of a hosted model must agree between apps sharing it under one name: one
/// session per name answers them all.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct SharedModel {
    name: String,
    path: String,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    top1_outputs: bool,
}

impl SharedModel {
    fn describe(&self) -> String {
        format!(
            "{}, outputs [{}]{}",
            self.path,
            self.outputs.join(", "),
            if self.top1_outputs {
                ", top-1 head"
            } else {
                ""
            }
        )
    }
}

/// The model of `app` that another member hosts differently under the same name, as the
/// refusal people read (the agent checks the same, but a refusal there came after the
/// app's stages were running and took the agent down with it).
fn model_clash(
    members: &BTreeMap<String, Member>,
    app: &str,
    models: &[SharedModel],
) -> Option<String> {
    for m in models {
        for (other, member) in members.iter().filter(|(name, _)| name.as_str() != app) {
            if let Some(have) = member.models.iter().find(|h| h.name == m.name && *h != m) {
                return Some(format!(
                    "model '{}' of app '{app}' ({}) differs from the one app '{other}' runs under that name on this device ({}): one name is one session on a shared agent; rename one of them in its manifest",
                    m.name,
                    m.describe(),
                    have.describe()
                ));
            }
        }
    }
    None
}

struct DeviceAgent {
    link: Option<Link>,
    /// Bumped at every start, so the exit of an old process is told from the current.
    generation: u64,
    members: BTreeMap<String, Member>,
    next_output: u32,
    starts: Vec<Instant>,
    /// The environment of the app that started the agent (its console left out): the
    /// agent and its restarts run under it, not under the daemon's.
    env: Option<Arc<crate::env::appenv::AppEnv>>,
}

/// Every device agent of the node (one per daemon).
pub struct AgentHosts {
    devices: Mutex<BTreeMap<String, DeviceAgent>>,
    next_pool_base: Mutex<u32>,
    spawner: Spawner,
    logs: PathBuf,
}

/// An app's place on its device's agent; detaches the app when dropped.
pub struct SharedAgent {
    pub hosts: Arc<AgentHosts>,
    pub device: String,
    pub app: String,
    /// The first pool id of the app (its pools are numbered from here).
    pub first_pool: PoolId,
    /// The agent's output index of the app's first GPU stage replica.
    pub first_output: u32,
}

impl Drop for SharedAgent {
    fn drop(&mut self) {
        self.hosts.detach(&self.device, &self.app);
    }
}

impl AgentHosts {
    /// Agents' logs go to `logs/agent-<device>.log`.
    pub fn new(logs: PathBuf) -> Arc<AgentHosts> {
        Arc::new(AgentHosts {
            devices: Mutex::new(BTreeMap::new()),
            next_pool_base: Mutex::new(1),
            spawner: Spawner::start(),
            logs,
        })
    }

    fn devices(&self) -> MutexGuard<'_, BTreeMap<String, DeviceAgent>> {
        // A thread that panicked while holding it left plain data behind: go on with it.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for app `app` (with `gpu_replicas` GPU stage replicas) on `device`'s
    /// agent, which is started when it is not running. `events` gets
    /// [`Event::AgentRestarted`] / [`Event::AgentFailed`].
    pub fn join(
        self: &Arc<Self>,
        device: &str,
        app: &str,
        gpu_replicas: u32,
        events: mpsc::Sender<Event>,
    ) -> anyhow::Result<SharedAgent> {
        let first_pool = {
            let mut base = self
                .next_pool_base
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = PoolId::new(*base);
            *base = base
                .checked_add(POOLS_PER_APP)
                .ok_or_else(|| anyhow!("the daemon ran out of pool ids; restart it"))?;
            first
        };
        let mut devices = self.devices();
        let dev = devices
            .entry(device.to_string())
            .or_insert_with(|| DeviceAgent {
                link: None,
                generation: 0,
                members: BTreeMap::new(),
                next_output: 0,
                starts: Vec::new(),
                env: None,
            });
        if dev.members.contains_key(app) {
            return Err(anyhow!("app '{app}' is already on the agent of {device}"));
        }
        if dev.link.is_none() {
            dev.env = crate::env::appenv::current().map(|env| {
                Arc::new(crate::env::appenv::AppEnv {
                    console: None,
                    ..(*env).clone()
                })
            });
            self.start_agent(device, dev)?;
        }
        let first_output = dev.next_output;
        dev.next_output = dev
            .next_output
            .checked_add(gpu_replicas)
            .ok_or_else(|| anyhow!("the agent of {device} ran out of output indices"))?;
        dev.members.insert(
            app.to_string(),
            Member {
                events,
                models: Vec::new(),
            },
        );
        Ok(SharedAgent {
            hosts: self.clone(),
            device: device.to_string(),
            app: app.to_string(),
            first_pool,
            first_output,
        })
    }

    /// Start `device`'s agent process and hand it its (empty) setup.
    fn start_agent(self: &Arc<Self>, device: &str, dev: &mut DeviceAgent) -> anyhow::Result<()> {
        let task = crate::plan::models::device_agent_task(device, serde_json::json!([]), None)?;
        let label = task.name.clone();
        let program = match &dev.env {
            Some(env) => crate::env::appenv::scope(env.clone(), || find_worker("worker-gpu")),
            None => find_worker("worker-gpu"),
        }?;
        std::fs::create_dir_all(&self.logs)
            .with_context(|| format!("cannot create {}", self.logs.display()))?;
        let log_path = self.logs.join(format!("{label}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Process::new(&program);
        cmd.arg("--agent")
            .arg(format!("node/{label}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        match &dev.env {
            Some(env) => crate::env::appenv::scope(env.clone(), || {
                crate::env::appenv::apply(&mut cmd);
                crate::env::malloc::tune_worker(&mut cmd);
            }),
            None => crate::env::malloc::tune_worker(&mut cmd),
        }
        let pending = start_child(&self.spawner, &label, cmd, &program, log_path)?;
        let connected = pending.accept(STARTUP)?;
        let (inbox_tx, inbox_rx) = ipc::channel::<Vec<u8>>().context("cannot create a channel")?;
        let (rewire_tx, rewire_rx) =
            ipc::channel::<InboxSender>().context("cannot create a channel")?;
        let (attach_tx, attach_rx) =
            ipc::channel::<AttachWire>().context("cannot create a channel")?;
        let setup = agent_setup(&task, device, dev.generation as u32)?;
        connected
            .reply
            .send(SetupWire {
                setup: codec::encode("setup", &setup)?,
                refused: None,
                inbox: Some(inbox_rx),
                outputs: vec![],
                pools: vec![],
                rewire: Some(rewire_rx),
                attach: Some(attach_rx),
            })
            .map_err(|e| anyhow!("cannot send the setup to {label}: {e:?}"))?;
        dev.generation += 1;
        dev.starts.push(Instant::now());
        dev.link = Some(Link {
            inbox: inbox_tx,
            rewire: rewire_tx,
            attach: attach_tx,
        });
        tracing::info!(device, pid = connected.child.id(), "node agent started");
        // Its up channel: heartbeats are not judged here; a failure is logged.
        let up = connected.up;
        let name = label.clone();
        std::thread::spawn(move || {
            while let Ok(wire) = up.recv() {
                if let Ok(Up::Failed { error, .. }) = codec::decode::<Up>("up", &wire.bytes) {
                    tracing::error!(agent = %name, "{error}");
                }
            }
        });
        let hosts = Arc::downgrade(self);
        let device = device.to_string();
        let generation = dev.generation;
        let mut child = connected.child;
        std::thread::spawn(move || {
            let status = child.wait();
            if let Some(hosts) = hosts.upgrade() {
                hosts.on_exit(&device, generation, status);
            }
        });
        Ok(())
    }

    /// The agent of `device` ended: started again for its apps (who attach again), or
    /// their failure when it dies too often.
    fn on_exit(
        self: &Arc<Self>,
        device: &str,
        generation: u64,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        let mut devices = self.devices();
        let Some(dev) = devices.get_mut(device) else {
            return;
        };
        if dev.generation != generation {
            return;
        }
        dev.link = None;
        if dev.members.is_empty() {
            return;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        tracing::warn!(device, %status, "node agent ended");
        dev.starts.retain(|t| t.elapsed() < RESTART_WINDOW);
        let outcome = if dev.starts.len() > MAX_RESTARTS {
            Err(anyhow!(
                "the agent of {device} ended ({status}) {} times within {} s",
                dev.starts.len(),
                RESTART_WINDOW.as_secs()
            ))
        } else {
            self.start_agent(device, dev)
        };
        let event = |_: &Member| match &outcome {
            Ok(()) => Event::AgentRestarted,
            Err(e) => Event::AgentFailed(format!("{e:#}")),
        };
        for m in dev.members.values() {
            let _ = m.events.send(event(m));
        }
    }

    /// Hand app `wire.app`'s pools, GPU-stage inboxes and models to `device`'s agent.
    pub fn attach(&self, device: &str, wire: AttachWire) -> anyhow::Result<()> {
        let mut devices = self.devices();
        let dev = devices
            .get_mut(device)
            .ok_or_else(|| anyhow!("the agent of {device} is not running"))?;
        let models: Vec<SharedModel> =
            serde_json::from_str::<Option<Vec<SharedModel>>>(&wire.models_json)
                .map_err(|e| anyhow!("the models of app '{}': {e}", wire.app))?
                .unwrap_or_default();
        if let Some(clash) = model_clash(&dev.members, &wire.app, &models) {
            return Err(anyhow!(clash));
        }
        if let Some(member) = dev.members.get_mut(&wire.app) {
            member.models = models;
        }
        let link = dev
            .link
            .as_ref()
            .ok_or_else(|| anyhow!("the agent of {device} is not running"))?;
        let app = wire.app.clone();
        link.attach
            .send(wire)
            .map_err(|e| anyhow!("cannot attach app '{app}' to the agent of {device}: {e:?}"))?;
        send_command(link, &Command::Attach { app })
    }

    /// The agent's current inbox (for a GPU stage's setup or rewiring).
    pub fn inbox(&self, device: &str) -> Option<InboxSender> {
        self.devices()
            .get(device)
            .and_then(|d| d.link.as_ref().map(|l| l.inbox.clone()))
    }

    /// Point the agent's output `output` at `sender` (a GPU stage that was restarted).
    /// Done under the lock: apps rewiring at once must not mix their senders.
    pub fn rewire(&self, device: &str, output: u32, sender: InboxSender) -> anyhow::Result<()> {
        let devices = self.devices();
        let link = devices
            .get(device)
            .and_then(|d| d.link.as_ref())
            .ok_or_else(|| anyhow!("the agent of {device} is not running"))?;
        link.rewire
            .send(sender)
            .map_err(|e| anyhow!("cannot rewire the agent of {device}: {e:?}"))?;
        send_command(link, &Command::Rewire { output })
    }

    /// App `app` has ended: the agent drops its pools and models; the agent stops when
    /// it was the last app.
    pub fn detach(&self, device: &str, app: &str) {
        let mut devices = self.devices();
        let Some(dev) = devices.get_mut(device) else {
            return;
        };
        if dev.members.remove(app).is_none() {
            return;
        }
        if let Some(link) = &dev.link {
            let _ = send_command(link, &Command::Detach { app: app.into() });
            if dev.members.is_empty() {
                let _ = send_command(link, &Command::Stop);
            }
        }
        if dev.members.is_empty() {
            dev.link = None;
        }
    }
}

fn send_command(link: &Link, cmd: &Command) -> anyhow::Result<()> {
    let bytes = codec::encode("command", &Inbox::Command(cmd.clone()))?;
    link.inbox
        .send(bytes)
        .map_err(|e| anyhow!("the agent is gone: {e:?}"))
}

/// The setup of a node agent (`task`): no pools, outputs or models until apps attach.
fn agent_setup(task: &TaskSpec, device: &str, incarnation: u32) -> anyhow::Result<Setup> {
    Ok(Setup {
        app: "node".into(),
        service_type: ServiceType::BestEffort,
        task_index: TaskId::new(0),
        task_json: serde_json::to_string(task)?,
        replica: 0,
        replicas: 1,
        outputs: vec![],
        expected_eos: 0,
        pools: vec![],
        own_pool: None,
        run_dir: String::new(),
        heartbeat_ms: 500,
        batch_size: 1,
        batch_max_wait_ms: 0.0,
        batch_capacity: 1,
        threads: crate::plan::agent_threads(device),
        slot_wait_ms: 0,
        deadline_ms: 0,
        agent_deadline_ms: 0,
        agent_output: None,
        agent_reply_to: None,
        models_manifest: None,
        models_dir: None,
        // No pools until apps attach; each app's attach wire names the agent's holder id.
        holder: HolderId::new(0),
        incarnation,
        resume: vec![],
        resume_output_len: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, path: &str, top1: bool) -> SharedModel {
        SharedModel {
            name: name.into(),
            path: path.into(),
            outputs: vec!["out".into()],
            top1_outputs: top1,
        }
    }

    fn member(models: Vec<SharedModel>) -> Member {
        Member {
            events: mpsc::channel().0,
            models,
        }
    }

    #[test]
    fn a_model_name_another_app_hosts_differently_is_refused_naming_both() {
        let mut members = BTreeMap::new();
        members.insert(
            "a".to_string(),
            member(vec![model("sr", "/m/sr.onnx", false)]),
        );
        members.insert("b".to_string(), member(vec![]));
        // The same model under the same name is shared.
        assert_eq!(
            model_clash(&members, "b", &[model("sr", "/m/sr.onnx", false)]),
            None
        );
        let other_file = model_clash(&members, "b", &[model("sr", "/x/zero.onnx", false)])
            .expect("another file under the name");
        assert!(
            other_file.contains("model 'sr' of app 'b' (/x/zero.onnx")
                && other_file.contains("app 'a' runs under that name")
                && other_file.contains("rename one of them"),
            "{other_file}"
        );
        assert!(model_clash(&members, "b", &[model("sr", "/m/sr.onnx", true)]).is_some());
        // An app's own earlier attach (after an agent restart) is not a clash.
        assert_eq!(
            model_clash(&members, "a", &[model("sr", "/x/zero.onnx", false)]),
            None
        );
    }
}
