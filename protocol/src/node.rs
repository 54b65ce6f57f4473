//! The child side of the protocol: bootstrap with the supervisor, the inbox loop,
//! routing to consumers, heartbeats and the final report. Every stage process
//! (`worker-cpu`, `worker-gpu`) runs its function on top of a [`Node`].

use crate::clock::now_ns;
use crate::codec::{self, CodecError};
use crate::messages::*;
use crate::shm::{ShmError, SlotPool, SlotWriter};
use crate::spec::{ServiceType, TaskSpec};
use ipc_channel::ipc::{self, IpcSender};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0} is not set: this program is started by `supervisor start`, not by hand")]
    NotSupervised(&'static str),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("the supervisor refused this process: {0}")]
    Refused(String),
    #[error("the supervisor went away ({0})")]
    SupervisorGone(String),
    #[error("a consumer's channel is closed ({task}): {detail}")]
    ConsumerGone { task: String, detail: String },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Shm(#[from] ShmError),
    #[error("no pool {0} is mapped in this process")]
    UnknownPool(u32),
    #[error("this stage has no output pool")]
    NoOutputPool,
    #[error("stopped by the supervisor")]
    Stopped,
    #[error("{0}")]
    Stage(String),
}

/// What the inbox produced.
#[derive(Debug)]
pub enum Event {
    Item(Envelope),
    /// Every upstream replica has ended its stream.
    End,
    /// The supervisor asked the stage to stop producing (heads) or to exit.
    Command(Command),
    /// Nothing arrived within the timeout.
    Idle,
    /// GPU agent: a stage asks for a model run.
    Request(AgentRequest),
    /// GPU stage: the agent answers.
    Reply(AgentReply),
}

/// Per-tail delivery statistics.
#[derive(Default)]
struct Deliveries {
    arrivals_ns: Vec<u64>,
    first_created_ns: u64,
    last_arrival_ns: u64,
    latencies_ms: Vec<f32>,
    hop_us: Vec<Vec<f32>>,
    received: BTreeMap<String, u64>,
}

/// One running stage replica.
pub struct Node {
    pub setup: Setup,
    pub task: TaskSpec,
    up: IpcSender<UpWire>,
    inbox: InboxReceiver,
    outputs: Vec<InboxSender>,
    pools: HashMap<u32, Arc<SlotPool>>,
    round_robin: Vec<u32>,
    metrics: Arc<Mutex<StageMetrics>>,
    alive: Arc<AtomicBool>,
    eos_seen: u32,
    totals: BTreeMap<String, u64>,
    deliveries: Deliveries,
}

impl Node {
    /// Connect to the supervisor named in the environment and receive the stage setup.
    pub fn bootstrap(program: &str) -> Result<Node, NodeError> {
        let server =
            std::env::var(ENV_BOOTSTRAP).map_err(|_| NodeError::NotSupervised(ENV_BOOTSTRAP))?;
        let nonce: u64 = std::env::var(ENV_NONCE)
            .map_err(|_| NodeError::NotSupervised(ENV_NONCE))?
            .parse()
            .map_err(|_| NodeError::Bootstrap(format!("{ENV_NONCE} is not a number")))?;
        let up = IpcSender::<UpWire>::connect(server.clone())
            .map_err(|e| NodeError::Bootstrap(format!("cannot connect to {server}: {e}")))?;
        let (reply_tx, reply_rx) =
            ipc::channel::<SetupWire>().map_err(|e| NodeError::Bootstrap(e.to_string()))?;
        let hello = Hello {
            nonce,
            version: PROTOCOL_VERSION,
            stage: program.to_string(),
            pid: std::process::id(),
        };
        up.send(UpWire {
            bytes: codec::encode("hello", &Up::Hello(hello))?,
            reply: Some(reply_tx),
        })
        .map_err(|e| NodeError::SupervisorGone(e.to_string()))?;
        let wire = reply_rx
            .try_recv_timeout(Duration::from_secs(60))
            .map_err(|e| NodeError::Bootstrap(format!("no setup from the supervisor: {e:?}")))?;
        if let Some(reason) = wire.refused {
            return Err(NodeError::Refused(reason));
        }
        let setup: Setup = codec::decode("setup", &wire.setup)?;
        let task: TaskSpec = serde_json::from_str(&setup.task_json)
            .map_err(|e| NodeError::Bootstrap(format!("task spec: {e}")))?;
        let inbox = wire
            .inbox
            .ok_or_else(|| NodeError::Bootstrap("setup carries no inbox".into()))?;
        if wire.pools.len() != setup.pools.len() {
            return Err(NodeError::Bootstrap(format!(
                "setup lists {} pools but carries {}",
                setup.pools.len(),
                wire.pools.len()
            )));
        }
        let mut pools = HashMap::new();
        for (info, shm) in setup.pools.iter().zip(wire.pools) {
            pools.insert(info.id, Arc::new(SlotPool::attach(info.id, shm)?));
        }
        let metrics = Arc::new(Mutex::new(StageMetrics::default()));
        let alive = Arc::new(AtomicBool::new(true));
        spawn_heartbeat(
            up.clone(),
            metrics.clone(),
            alive.clone(),
            setup.heartbeat_ms,
        );
        Ok(Node {
            round_robin: vec![setup.replica; setup.outputs.len()],
            outputs: wire.outputs,
            setup,
            task,
            up,
            inbox,
            pools,
            metrics,
            alive,
            eos_seen: 0,
            totals: BTreeMap::new(),
            deliveries: Deliveries::default(),
        })
    }

    /// The label used in logs: `task#replica`.
    pub fn label(&self) -> String {
        format!("{}#{}", self.task.name, self.setup.replica)
    }

    pub fn guaranteed(&self) -> bool {
        self.setup.service_type == ServiceType::RequestGuarantee
    }

    /// Number of consumer tasks (each gets every item).
    pub fn consumer_count(&self) -> u32 {
        self.setup.outputs.len() as u32
    }

    pub fn pool(&self, id: u32) -> Result<&SlotPool, NodeError> {
        self.pools
            .get(&id)
            .map(|p| p.as_ref())
            .ok_or(NodeError::UnknownPool(id))
    }

    /// This stage's output pool (shared handle, so a writer can outlive `&self` borrows).
    pub fn output_pool(&self) -> Result<Arc<SlotPool>, NodeError> {
        let id = self.setup.own_pool.ok_or(NodeError::NoOutputPool)?;
        self.pools
            .get(&id)
            .cloned()
            .ok_or(NodeError::UnknownPool(id))
    }

    /// Update the counters the heartbeat reports.
    pub fn metrics(&self, f: impl FnOnce(&mut StageMetrics)) {
        if let Ok(mut m) = self.metrics.lock() {
            f(&mut m);
        }
    }

    /// Count `ns` of work on one item (busy time and the service-time histogram).
    pub fn note_busy(&self, ns: u64) {
        self.metrics(|m| {
            m.busy_ns += ns;
            observe(&mut m.service_buckets, ns as f64 / 1e9);
        });
    }

    /// Take an output slot for one item. Guaranteed apps wait (the source slows
    /// down) while watching the inbox for `Stop`; best-effort apps get `None` at once
    /// when no slot is free, and the caller sheds the item.
    pub fn output_slot<'p>(
        &mut self,
        pool: &'p SlotPool,
    ) -> Result<Option<SlotWriter<'p>>, NodeError> {
        let holders = self.consumer_count();
        self.output_slot_for(pool, holders)
    }

    /// Like [`Node::output_slot`], for a slot that will be referenced `holders` times.
    pub fn output_slot_for<'p>(
        &mut self,
        pool: &'p SlotPool,
        holders: u32,
    ) -> Result<Option<SlotWriter<'p>>, NodeError> {
        if !self.guaranteed() {
            return Ok(pool.try_acquire(holders));
        }
        let started = Instant::now();
        loop {
            if let Some(w) = pool.acquire(holders, Duration::from_millis(50)) {
                let waited = started.elapsed().as_nanos() as u64;
                self.metrics(|m| m.waiting_for_slot_ns += waited);
                return Ok(Some(w));
            }
            // Heads' inboxes carry only commands; other stages get `Stop` behind their data
            // (and the supervisor's SIGTERM follows), so only heads look here.
            if self.setup.expected_eos == 0 {
                if let Some(Command::Stop) = self.poll_command()? {
                    return Err(NodeError::Stopped);
                }
            }
        }
    }

    /// Send an item to every consumer task (one replica each, round robin). Its
    /// shared-memory references must already count one holder per consumer task.
    pub fn send(&mut self, mut env: Envelope, recv_ns: u64) -> Result<(), NodeError> {
        env.hops.push(Hop {
            stage: self.setup.task_index,
            recv_ns,
            sent_ns: now_ns(),
        });
        let bytes = codec::encode("item", &Inbox::Data(env))?;
        for (k, route) in self.setup.outputs.iter().enumerate() {
            let pick = route.first + self.round_robin[k] % route.replicas.max(1);
            self.round_robin[k] = self.round_robin[k].wrapping_add(1);
            self.outputs[pick as usize]
                .send(bytes.clone())
                .map_err(|e| NodeError::ConsumerGone {
                    task: route.task.clone(),
                    detail: format!("{e:?}"),
                })?;
        }
        self.metrics(|m| m.items_out += 1);
        Ok(())
    }

    /// Pass an item on untouched: add holders for fan-out, copy nothing.
    pub fn forward(&mut self, env: Envelope, recv_ns: u64) -> Result<(), NodeError> {
        let extra = self.consumer_count().saturating_sub(1);
        if extra > 0 {
            for r in env.payload.shm_refs() {
                self.pool(r.pool)?.add_holders(&r, extra)?;
            }
        }
        if self.consumer_count() == 0 {
            self.release(&env.payload)?;
            return Ok(());
        }
        self.send(env, recv_ns)
    }

    /// Drop this stage's hold on every shared-memory reference of a payload.
    pub fn release(&self, payload: &Payload) -> Result<(), NodeError> {
        for r in payload.shm_refs() {
            self.pool(r.pool)?.release(&r)?;
        }
        Ok(())
    }

    /// Count an item as lost and free what it holds.
    pub fn lose(&self, env: &Envelope, reason: LossReason) -> Result<(), NodeError> {
        self.metrics(|m| m.lose(reason, 1));
        self.release(&env.payload)
    }

    /// Note an item that a head emitted (for the end-of-stream totals).
    pub fn note_emitted(&mut self, source: &str, seq: u64) {
        let total = self.totals.entry(source.to_string()).or_insert(0);
        *total = (*total).max(seq + 1);
    }

    /// Set a source's total exactly (a stream source that found its end).
    pub fn note_emitted_total(&mut self, source: &str, total: u64) {
        self.totals.insert(source.to_string(), total);
    }

    /// Non-blocking look at the inbox for a command (heads call this between items).
    pub fn poll_command(&mut self) -> Result<Option<Command>, NodeError> {
        match self.inbox.try_recv() {
            Ok(bytes) => match codec::decode::<Inbox>("inbox", &bytes)? {
                Inbox::Command(c) => Ok(Some(c)),
                other => Err(NodeError::Bootstrap(format!(
                    "a head's inbox carries only commands, got {}",
                    match other {
                        Inbox::Data(_) => "data",
                        Inbox::Eos(_) => "an end of stream",
                        _ => "an agent message",
                    }
                ))),
            },
            Err(ipc_channel::TryRecvError::Empty) => Ok(None),
            Err(ipc_channel::TryRecvError::IpcError(e)) => {
                Err(NodeError::SupervisorGone(format!("{e:?}")))
            }
        }
    }

    /// Wait up to `timeout` for the next inbox event.
    pub fn next(&mut self, timeout: Duration) -> Result<Event, NodeError> {
        // `End` is reported once, when the last end-of-stream marker arrives; the inbox
        // is still read afterwards (a GPU stage waits for its agent's replies).
        let bytes = match self.inbox.try_recv_timeout(timeout) {
            Ok(bytes) => bytes,
            Err(ipc_channel::TryRecvError::Empty) => return Ok(Event::Idle),
            Err(ipc_channel::TryRecvError::IpcError(e)) => {
                return Err(NodeError::SupervisorGone(format!("inbox: {e:?}")))
            }
        };
        match codec::decode::<Inbox>("inbox", &bytes)? {
            Inbox::Data(env) => {
                self.metrics(|m| m.items_in += 1);
                Ok(Event::Item(env))
            }
            Inbox::Eos(eos) => {
                self.eos_seen += 1;
                for t in eos.totals {
                    let total = self.totals.entry(t.source).or_insert(0);
                    *total = (*total).max(t.total);
                }
                if self.eos_seen >= self.setup.expected_eos {
                    Ok(Event::End)
                } else {
                    Ok(Event::Idle)
                }
            }
            Inbox::Command(c) => Ok(Event::Command(c)),
            Inbox::AgentRequest(r) => Ok(Event::Request(r)),
            Inbox::AgentReply(r) => Ok(Event::Reply(r)),
        }
    }

    /// Send a message to one output by index (agent replies, requests to the agent).
    pub fn send_to(&self, output: u32, msg: &Inbox) -> Result<(), NodeError> {
        let bytes = codec::encode("message", msg)?;
        self.outputs
            .get(output as usize)
            .ok_or_else(|| NodeError::Bootstrap(format!("no output {output}")))?
            .send(bytes)
            .map_err(|e| NodeError::ConsumerGone {
                task: format!("output {output}"),
                detail: format!("{e:?}"),
            })
    }

    /// A tail records that an item reached the end of the pipeline.
    pub fn record_delivery(&mut self, env: &Envelope) {
        let now = now_ns();
        let d = &mut self.deliveries;
        if d.first_created_ns == 0 || env.created_ns < d.first_created_ns {
            d.first_created_ns = env.created_ns;
        }
        d.last_arrival_ns = now;
        d.arrivals_ns.push(now);
        if let Ok(mut m) = self.metrics.lock() {
            m.items_out += 1;
            let latency = now.saturating_sub(env.created_ns);
            m.latency_sum_ns += latency;
            observe(&mut m.latency_buckets, latency as f64 / 1e9);
        }
        d.latencies_ms
            .push(now.saturating_sub(env.created_ns) as f32 / 1e6);
        let arrivals = env
            .hops
            .iter()
            .skip(1)
            .map(|h| h.recv_ns)
            .chain(std::iter::once(now));
        for (k, (hop, arrived)) in env.hops.iter().zip(arrivals).enumerate() {
            if d.hop_us.len() <= k {
                d.hop_us.push(Vec::new());
            }
            d.hop_us[k].push(arrived.saturating_sub(hop.sent_ns) as f32 / 1e3);
        }
        *d.received.entry(env.source.clone()).or_insert(0) += 1;
    }

    /// End the stream: tell every consumer replica, report to the supervisor, and
    /// stop the heartbeat. The process should exit 0 afterwards.
    pub fn finish(mut self) -> Result<(), NodeError> {
        let totals: Vec<SourceTotal> = self
            .totals
            .iter()
            .map(|(source, total)| SourceTotal {
                source: source.clone(),
                total: *total,
            })
            .collect();
        let eos = codec::encode(
            "eos",
            &Inbox::Eos(Eos {
                stage: self.setup.task_index,
                replica: self.setup.replica,
                totals: totals.clone(),
            }),
        )?;
        // Only data consumers get it (not the agent, nor an agent's reply channels).
        for route in &self.setup.outputs {
            for k in route.first..route.first + route.replicas {
                if let Some(out) = self.outputs.get(k as usize) {
                    out.send(eos.clone()).map_err(|e| NodeError::ConsumerGone {
                        task: route.task.clone(),
                        detail: format!("{e:?}"),
                    })?;
                }
            }
        }
        self.alive.store(false, Ordering::SeqCst);
        let metrics = self.metrics.lock().map(|m| m.clone()).unwrap_or_default();
        let d = std::mem::take(&mut self.deliveries);
        let report = StageReport {
            metrics,
            latencies_ms: d.latencies_ms,
            hop_us: d.hop_us,
            received: d
                .received
                .into_iter()
                .map(|(source, total)| SourceTotal { source, total })
                .collect(),
            announced: totals,
            first_created_ns: d.first_created_ns,
            last_arrival_ns: d.last_arrival_ns,
            arrivals_ns: d.arrivals_ns,
        };
        self.send_up(&Up::Finished(report))
    }

    /// Tell the supervisor why this stage cannot go on.
    pub fn fail(&self, error: &str) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.send_up(&Up::Failed {
            error: error.to_string(),
        });
    }

    fn send_up(&self, msg: &Up) -> Result<(), NodeError> {
        let bytes = codec::encode("up", msg)?;
        self.up
            .send(UpWire { bytes, reply: None })
            .map_err(|e| NodeError::SupervisorGone(format!("{e:?}")))
    }
}

fn spawn_heartbeat(
    up: IpcSender<UpWire>,
    metrics: Arc<Mutex<StageMetrics>>,
    alive: Arc<AtomicBool>,
    every_ms: u32,
) {
    let every = Duration::from_millis(u64::from(every_ms.max(10)));
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            while alive.load(Ordering::SeqCst) {
                let snapshot = match metrics.lock() {
                    Ok(m) => m.clone(),
                    Err(_) => return,
                };
                let Ok(bytes) = codec::encode("heartbeat", &Up::Heartbeat(snapshot)) else {
                    return;
                };
                if !alive.load(Ordering::SeqCst) || up.send(UpWire { bytes, reply: None }).is_err()
                {
                    return;
                }
                std::thread::sleep(every);
            }
        })
        .ok();
}
