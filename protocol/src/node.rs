//! The child side of the protocol: bootstrap with the supervisor, the inbox loop,
//! routing to consumers, heartbeats and the final report. Every stage process
//! (`worker-cpu`, `worker-gpu`) runs its function on top of a [`Node`].

use crate::clock::now_ns;
use crate::codec::{self, CodecError};
use crate::ids::{HolderId, PoolId, TaskId};
use crate::messages::*;
use crate::shm::{ShmError, SlotPool, SlotWriter};
use crate::spec::{ServiceType, TaskSpec};
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod attach;
mod commands;
mod ending;
mod heartbeat;
mod item_key;
mod losses;
mod slots;
mod tail;

use heartbeat::{source_totals, spawn_heartbeat};
use item_key::ItemKey;

pub use slots::{NoSlot, SlotPolicy};
use tail::Deliveries;

/// Items a tail receives before it records their stays ([`StayStats`]).
pub const STAY_WARMUP_ITEMS: usize = 4;

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
    UnknownPool(PoolId),
    #[error("this stage has no output pool")]
    NoOutputPool,
    #[error("stopped by the supervisor")]
    Stopped,
}

/// What the inbox produced.
#[derive(Debug)]
pub enum Event {
    /// A data item. A stage without consumers (a tail) gets every one, replayed
    /// duplicates too: telling those apart is the tail loop's (`stage::tail`).
    Item(Envelope),
    /// Stages without consumers (tails): item `seq` of `source` will not come, lost
    /// upstream (an `Inbox::Skip`) or dropped here for its deadline (`reason`; the loss
    /// is counted already). Other stages pass skips on to their consumers instead.
    Skipped {
        source: String,
        seq: u64,
        reason: LossReason,
    },
    /// Stages without consumers of a request-guarantee app: every upstream replica has
    /// ended its stream, and [`Node::announced_totals`] says how many items each source
    /// sent. Whether all of them arrived is the tail's to tell (its ledger); `End`
    /// comes only with the supervisor's `Finish`.
    TotalsAnnounced,
    /// Every upstream replica has ended its stream (request-guarantee apps: and the
    /// supervisor said the app has everything, or a stage with consumers passed it on).
    End,
    /// The supervisor asked the stage to stop producing (heads) or to exit.
    Command(Command),
    /// Nothing arrived within the timeout.
    Idle,
    /// GPU agent: a stage asks for a model run.
    Request(AgentRequest),
    /// GPU stage: the agent answers.
    Reply(AgentReply),
    /// Output `k` was rewired to a restarted process (a GPU stage re-sends its request
    /// when its agent was restarted).
    Rewired(u32),
}

/// One running stage replica.
pub struct Node {
    pub setup: Setup,
    pub task: TaskSpec,
    up: IpcSender<UpWire>,
    inbox: InboxReceiver,
    outputs: Vec<InboxSender>,
    pools: HashMap<PoolId, Arc<SlotPool>>,
    round_robin: Vec<u32>,
    metrics: Arc<Mutex<StageMetrics>>,
    alive: Arc<AtomicBool>,
    /// Upstream replicas (task index, replica) whose end of stream arrived.
    eos_from: BTreeSet<(TaskId, u32)>,
    ended: bool,
    /// The supervisor said the app has everything (request-guarantee stages end then).
    finish_ordered: bool,
    totals: BTreeMap<String, u64>,
    deliveries: Deliveries,
    rewire: Option<IpcReceiver<InboxSender>>,
    /// A node's shared GPU agent: where apps' attach wires arrive.
    attach: Option<IpcReceiver<AttachWire>>,
    /// Holder id of the process behind each output.
    out_holders: Vec<HolderId>,
    /// Outputs whose consumer was found dead (logged once until rewired).
    dead_outputs: BTreeSet<usize>,
    /// Our end-of-stream marker once sent (sent again to a rewired consumer).
    eos_sent: Option<Vec<u8>>,
    /// Heads of request-guarantee apps: items kept (one hold each) until the tails
    /// acknowledge them, for replay after a restart.
    retained: BTreeMap<(String, u64), Envelope>,
    /// The output rewired by the last `Rewire` command, reported by `next`.
    last_rewired: Option<u32>,
    /// Commands a head received while it waited for a slot, for its next polls. The
    /// inbox is still read meanwhile: the acknowledgements behind a drain free the slot.
    held_commands: VecDeque<Command>,
    /// Heads: a new rate from `SetRate`, for the source's pacer to take.
    new_rate: Option<f64>,
    /// Request-guarantee apps: the items this process counted lost (a replay of one is
    /// not counted again).
    counted_losses: losses::CountedLosses,
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
        Node::bootstrap_with(&server, nonce, program)
    }

    /// [`Node::bootstrap`] with the bootstrap server's name and nonce given (the SDK's
    /// tests play the supervisor in-process).
    pub fn bootstrap_with(server: &str, nonce: u64, program: &str) -> Result<Node, NodeError> {
        let server = server.to_string();
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
        for (info, handle) in setup.pools.iter().zip(wire.pools) {
            pools.insert(
                info.id,
                Arc::new(SlotPool::open_as(info.id, handle, setup.holder)?),
            );
        }
        let mut out_holders = vec![HolderId::NONE; wire.outputs.len()];
        for route in &setup.outputs {
            for (k, h) in route.holders.iter().enumerate() {
                if let Some(slot) = out_holders.get_mut(route.first as usize + k) {
                    *slot = *h;
                }
            }
        }
        let metrics = Arc::new(Mutex::new(StageMetrics {
            batch_size: setup.batch_size,
            ..StageMetrics::default()
        }));
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
            eos_from: BTreeSet::new(),
            ended: false,
            finish_ordered: false,
            totals: BTreeMap::new(),
            deliveries: Deliveries::default(),
            rewire: wire.rewire,
            attach: wire.attach,
            out_holders,
            dead_outputs: BTreeSet::new(),
            eos_sent: None,
            retained: BTreeMap::new(),
            last_rewired: None,
            held_commands: VecDeque::new(),
            new_rate: None,
            counted_losses: losses::CountedLosses::default(),
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

    pub fn pool(&self, id: PoolId) -> Result<&SlotPool, NodeError> {
        self.pools
            .get(&id)
            .map(|p| p.as_ref())
            .ok_or(NodeError::UnknownPool(id))
    }

    /// A shared handle on pool `id`, for reads that outlive a `&self` borrow.
    pub fn shared_pool(&self, id: PoolId) -> Result<Arc<SlotPool>, NodeError> {
        self.pools
            .get(&id)
            .cloned()
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
            m.services += 1;
            m.busy_sq_ms2 += (ns as f64 / 1e6).powi(2);
            observe(&mut m.service_buckets, ns as f64 / 1e9);
        });
    }

    /// Whether this stage is a head (its inbox carries only commands).
    pub fn is_head(&self) -> bool {
        self.setup.expected_eos == 0
    }

    /// Heads: the first sequence number to emit for `source` (after a restart, what
    /// the tails already have is not produced again).
    pub fn resume_from(&self, source: &str) -> u64 {
        self.setup
            .resume
            .iter()
            .find(|r| r.source == source)
            .map_or(0, |r| r.total)
    }

    /// Send an item to every consumer task (one replica each, round robin). Its
    /// shared-memory references must already count one holder per consumer task.
    /// Heads of request-guarantee apps keep one more hold until the tails acknowledge
    /// the item, so they can send it again after a restart.
    pub fn send(&mut self, mut env: Envelope, recv_ns: u64) -> Result<(), NodeError> {
        if self.guaranteed() && self.is_head() {
            for r in env.payload.shm_refs() {
                self.pool(r.pool)?.add_holders(&r, 1)?;
            }
            self.retained
                .insert((env.source.clone(), env.seq), env.clone());
        }
        env.hops.push(Hop {
            stage: self.setup.task_index,
            recv_ns,
            sent_ns: now_ns(),
        });
        let refs = env.payload.shm_refs();
        let spread = self.spread_of(&env.source, env.seq);
        let bytes = codec::encode("item", &Inbox::Data(env))?;
        self.route(spread, &bytes, &refs)?;
        self.metrics(|m| m.items_out += 1);
        Ok(())
    }

    /// What picks the replica of a consumer that pairs parts of an item: the item's
    /// [`ItemKey::spread`] (0, not computed, when no consumer pairs parts).
    fn spread_of(&self, source: &str, seq: u64) -> u32 {
        if self.setup.outputs.iter().any(|r| r.by_item) {
            ItemKey { source, seq }.spread()
        } else {
            0
        }
    }

    /// Send encoded bytes of an item to one replica of every consumer task: round robin,
    /// or by the item's `spread` ([`Node::spread_of`]) where the consumer pairs parts.
    /// One hold of each reference moves to it first. A consumer found dead keeps
    /// nothing: the hold is dropped again, and the item is replayed (request-guarantee)
    /// or counted lost.
    fn route(
        &mut self,
        spread: u32,
        bytes: &[u8],
        refs: &[crate::shm::ShmRef],
    ) -> Result<(), NodeError> {
        for k in 0..self.setup.outputs.len() {
            let route = &self.setup.outputs[k];
            let active = route.active.clamp(1, route.replicas.max(1));
            let turn = if route.by_item {
                spread
            } else {
                let turn = self.round_robin[k];
                self.round_robin[k] = turn.wrapping_add(1);
                turn
            };
            let pick = (route.first + turn % active) as usize;
            let holder = self
                .out_holders
                .get(pick)
                .copied()
                .unwrap_or(HolderId::NONE);
            for r in refs {
                self.pool(r.pool)?.transfer(r, holder)?;
            }
            let sent = self.outputs.get(pick).map(|out| out.send(bytes.to_vec()));
            if !matches!(sent, Some(Ok(()))) {
                for r in refs {
                    self.pool(r.pool)?.release_for(r, holder)?;
                }
                if self.dead_outputs.insert(pick) {
                    tracing::warn!(
                        consumer = %self.setup.outputs[k].task,
                        output = pick,
                        "a consumer is gone; waiting for the supervisor to restart it"
                    );
                }
            }
        }
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

    /// Count an item as lost and free what it holds. In a request-guarantee app the
    /// tails are told it will not come, so they do not wait for it.
    pub fn lose(&mut self, env: &Envelope, reason: LossReason) -> Result<(), NodeError> {
        self.release(&env.payload)?;
        self.skip(&env.source, env.seq, reason)
    }

    /// Count item `seq` of `source` as lost (a head that could not read it, a stage
    /// that could not process it); request-guarantee apps tell the tails, every time,
    /// but count a replayed item's loss once.
    pub fn skip(&mut self, source: &str, seq: u64, reason: LossReason) -> Result<(), NodeError> {
        let guaranteed = self.guaranteed();
        if !guaranteed || self.counted_losses.first_time(source, seq) {
            self.metrics(|m| m.lose(reason, 1));
        }
        if guaranteed {
            self.send_skip(source, seq, reason)?;
        }
        Ok(())
    }

    /// Tell every consumer that item `seq` of `source` will not come (a stage without
    /// consumers has no one to tell).
    fn send_skip(&mut self, source: &str, seq: u64, reason: LossReason) -> Result<(), NodeError> {
        let bytes = codec::encode(
            "skip",
            &Inbox::Skip {
                source: source.to_string(),
                seq,
                reason,
            },
        )?;
        let spread = self.spread_of(source, seq);
        self.route(spread, &bytes, &[])
    }

    /// Heads: the rate the supervisor set since the last call, if it set one.
    pub fn take_rate_change(&mut self) -> Option<f64> {
        self.new_rate.take()
    }

    /// Whether a new rate waits for [`Node::take_rate_change`].
    pub fn rate_changed(&self) -> bool {
        self.new_rate.is_some()
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

    /// Whether this stage has no consumers (a tail): skips are its events, not messages
    /// to pass on.
    fn has_no_consumers(&self) -> bool {
        self.setup.outputs.is_empty() && !self.is_head()
    }

    /// Wait up to `timeout` for the next inbox event. A tail is handed every data item
    /// and every skip as they come; its loop (`stage::tail::run`) keeps the exactly-once
    /// ledger, so it also chooses `timeout` (no longer than its acknowledgement window).
    pub fn next(&mut self, timeout: Duration) -> Result<Event, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.end_reached() {
                return Ok(end);
            }
            let wait =
                crate::clock::whole_ms_up(deadline.saturating_duration_since(Instant::now()));
            let bytes = match self.inbox.try_recv_timeout(wait) {
                Ok(bytes) => bytes,
                Err(ipc_channel::TryRecvError::Empty) => {
                    if Instant::now() < deadline {
                        continue;
                    }
                    return Ok(Event::Idle);
                }
                Err(ipc_channel::TryRecvError::IpcError(e)) => {
                    return Err(NodeError::SupervisorGone(format!("inbox: {e:?}")))
                }
            };
            match codec::decode::<Inbox>("inbox", &bytes)? {
                Inbox::Data(env) => {
                    self.metrics(|m| m.items_in += 1);
                    if self.past_deadline(&env) {
                        self.lose(&env, LossReason::Deadline)?;
                        if self.has_no_consumers() {
                            return Ok(Event::Skipped {
                                source: env.source,
                                seq: env.seq,
                                reason: LossReason::Deadline,
                            });
                        }
                        continue;
                    }
                    return Ok(Event::Item(env));
                }
                Inbox::Skip {
                    source,
                    seq,
                    reason,
                } => {
                    if self.has_no_consumers() {
                        return Ok(Event::Skipped {
                            source,
                            seq,
                            reason,
                        });
                    }
                    self.send_skip(&source, seq, reason)?;
                }
                Inbox::Eos(eos) => {
                    self.eos_from.insert((eos.stage, eos.replica));
                    for t in eos.totals {
                        let total = self.totals.entry(t.source).or_insert(0);
                        *total = (*total).max(t.total);
                    }
                    if self.has_no_consumers() && self.guaranteed() && self.upstream_done() {
                        return Ok(Event::TotalsAnnounced);
                    }
                }
                Inbox::Command(c) => {
                    if let Some(c) = self.command(c)? {
                        if c != Command::Finish {
                            return Ok(Event::Command(c));
                        }
                    } else if let Some(k) = self.last_rewired.take() {
                        return Ok(Event::Rewired(k));
                    }
                }
                Inbox::AgentRequest(r) => return Ok(Event::Request(r)),
                Inbox::AgentReply(r) => return Ok(Event::Reply(r)),
            }
        }
    }

    /// Best effort: the item is older than the app's latency quota (`Setup::deadline_ms`),
    /// so serving it would only deliver it late.
    fn past_deadline(&self, env: &Envelope) -> bool {
        self.too_late(env.created_ns)
    }

    /// Best effort: whether an item created (due) at `created_ns` is already older than
    /// the app's latency quota (`Setup::deadline_ms`). Every stage drops such an item
    /// (`LossReason::Deadline`); a head that is behind its pace does not send it at all.
    /// Never true in a request-guarantee app or without a latency quota.
    pub fn too_late(&self, created_ns: u64) -> bool {
        self.setup.deadline_ms > 0
            && !self.guaranteed()
            && now_ns().saturating_sub(created_ns) > u64::from(self.setup.deadline_ms) * 1_000_000
    }

    /// Send a message to one output by index (agent replies, requests to the agent).
    /// A peer found dead is not an error: the supervisor restarts it and rewires the
    /// output (`Event::Rewired`), and the caller sends again or the item is replayed.
    pub fn send_to(&self, output: u32, msg: &Inbox) -> Result<bool, NodeError> {
        let bytes = codec::encode("message", msg)?;
        let out = self
            .outputs
            .get(output as usize)
            .ok_or_else(|| NodeError::Bootstrap(format!("no output {output}")))?;
        if out.send(bytes).is_ok() {
            return Ok(true);
        }
        tracing::warn!(
            output,
            "a peer is gone; waiting for the supervisor to restart it"
        );
        Ok(false)
    }
}
