//! Plays the supervisor and the neighbours of one stage in-process: real ipc channels,
//! real shared-memory pools, the real bootstrap. The stage's loop runs in the test's
//! thread over messages queued before it starts.

// Test code: a failed step fails the test (clippy.toml allows this in `#[test]`s only).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Shared by several test files, each of which uses a part of it.
#![allow(dead_code)]

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use protocol::codec;
use protocol::messages::*;
use protocol::node::Node;
use protocol::shm::{ShmRef, SlotPool};
use protocol::spec::ServiceType;
use protocol::{HolderId, PoolId, TaskId};

/// The upstream producer's pool, this stage's own pool, and the holder ids.
pub const UP_POOL: PoolId = PoolId::new(1);
pub const OWN_POOL: PoolId = PoolId::new(2);
pub const NODE_HOLDER: HolderId = HolderId::new(5);
pub const UP_HOLDER: HolderId = HolderId::new(3);
pub const FIRST_CONSUMER_HOLDER: u16 = 10;
pub const SLOT: u64 = 4096;

/// The holder id of consumer task `k`.
pub fn consumer_holder(k: u16) -> HolderId {
    HolderId::new(FIRST_CONSUMER_HOLDER + k)
}

pub struct Harness {
    pub node: Node,
    pub inbox: IpcSender<Vec<u8>>,
    pub consumers: Vec<IpcReceiver<Vec<u8>>>,
    pub up: IpcReceiver<UpWire>,
    pub up_pool: SlotPool,
    pub own_pool: SlotPool,
}

/// A stage of `kind` ("cpu" or "tail") with `consumers` consumer tasks.
pub fn start(kind: &str, consumers: u32, service: ServiceType, slots: u32) -> Harness {
    start_with(kind, consumers, service, slots, Vec::new())
}

/// [`start`], for a "head" too, with the resume points of a restarted stage.
pub fn start_with(
    kind: &str,
    consumers: u32,
    service: ServiceType,
    slots: u32,
    resume: Vec<SourceTotal>,
) -> Harness {
    start_restarted(kind, consumers, service, slots, resume, None)
}

/// [`start_with`], and the output file's length the supervisor had acknowledged.
pub fn start_restarted(
    kind: &str,
    consumers: u32,
    service: ServiceType,
    slots: u32,
    resume: Vec<SourceTotal>,
    resume_output_len: Option<u64>,
) -> Harness {
    start_wired(
        kind,
        consumers,
        service,
        slots,
        resume,
        resume_output_len,
        None,
    )
    .0
}

/// The device agent's side of a GPU stage: the channel its requests arrive on, and the
/// supervisor's rewire channel, where the inbox of a restarted agent is handed over.
pub struct AgentSide {
    pub requests: IpcReceiver<Vec<u8>>,
    pub rewire: IpcSender<InboxSender>,
}

/// The GPU stage's reply route among the agent's outputs.
pub const REPLY_TO: u32 = 7;

/// A best-effort GPU stage (one consumer) of process incarnation `incarnation`, wired to
/// an agent.
pub fn start_gpu_stage(incarnation: u32) -> (Harness, AgentSide) {
    let (h, agent) = start_wired(
        "gpu",
        1,
        ServiceType::BestEffort,
        4,
        Vec::new(),
        None,
        Some(incarnation),
    );
    (h, agent.expect("an agent was wired"))
}

/// [`start_with`], wired to a device agent (after the consumers among the outputs, as the
/// supervisor does) when `agent` names the stage's incarnation.
fn start_wired(
    kind: &str,
    consumers: u32,
    service: ServiceType,
    slots: u32,
    resume: Vec<SourceTotal>,
    resume_output_len: Option<u64>,
    agent: Option<u32>,
) -> (Harness, Option<AgentSide>) {
    let mut holders = vec![NODE_HOLDER, UP_HOLDER];
    holders.extend((0..consumers as u16).map(consumer_holder));
    let up_pool = SlotPool::create(UP_POOL, slots, SLOT, &holders).unwrap();
    let own_pool = SlotPool::create(OWN_POOL, slots, SLOT, &holders).unwrap();
    let (inbox_tx, inbox_rx) = ipc::channel::<Vec<u8>>().unwrap();
    let mut outputs = Vec::new();
    let mut receivers = Vec::new();
    let mut routes = Vec::new();
    for k in 0..consumers {
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        outputs.push(tx);
        receivers.push(rx);
        routes.push(OutputRoute {
            task: format!("consumer{k}"),
            first: k,
            replicas: 1,
            active: 1,
            holders: vec![consumer_holder(k as u16)],
            by_item: false,
        });
    }
    let mut agent_side = None;
    let mut rewire = None;
    if agent.is_some() {
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        let (rewire_tx, rewire_rx) = ipc::channel::<InboxSender>().unwrap();
        outputs.push(tx);
        rewire = Some(rewire_rx);
        agent_side = Some(AgentSide {
            requests: rx,
            rewire: rewire_tx,
        });
    }
    let task = serde_json::json!({"name": "under-test", "kind": kind, "function": "core.forward"});
    let setup = Setup {
        app: "sdk".into(),
        service_type: service,
        task_index: TaskId::new(1),
        task_json: task.to_string(),
        replica: 0,
        replicas: 1,
        outputs: routes,
        expected_eos: u32::from(kind != "head"),
        pools: vec![
            PoolInfo {
                id: UP_POOL,
                owner: "up#0".into(),
            },
            PoolInfo {
                id: OWN_POOL,
                owner: "under-test#0".into(),
            },
        ],
        own_pool: Some(OWN_POOL),
        run_dir: std::env::temp_dir().display().to_string(),
        heartbeat_ms: 100,
        batch_size: 1,
        batch_max_wait_ms: 0.0,
        batch_capacity: 1,
        threads: 1,
        slot_wait_ms: 20,
        deadline_ms: 0,
        agent_deadline_ms: 0,
        agent_output: agent.map(|_| consumers),
        agent_reply_to: agent.map(|_| REPLY_TO),
        models_manifest: None,
        models_dir: None,
        holder: NODE_HOLDER,
        incarnation: agent.unwrap_or(0),
        resume,
        resume_output_len,
    };
    let (server, name) = IpcOneShotServer::<UpWire>::new().unwrap();
    let pools = vec![up_pool.handle(), own_pool.handle()];
    let supervisor = std::thread::spawn(move || {
        let (up, hello) = server.accept().unwrap();
        let wire = SetupWire {
            setup: codec::encode("setup", &setup).unwrap(),
            refused: None,
            inbox: Some(inbox_rx),
            outputs,
            pools,
            rewire,
            attach: None,
        };
        hello.reply.unwrap().send(wire).unwrap();
        up
    });
    let node = Node::bootstrap_with(&name, 0, "under-test#0").unwrap();
    let up = supervisor.join().unwrap();
    let h = Harness {
        node,
        inbox: inbox_tx,
        consumers: receivers,
        up,
        up_pool,
        own_pool,
    };
    (h, agent_side)
}

impl Harness {
    /// Write `bytes` into a slot of the upstream pool, held by the stage under test.
    pub fn upstream_slot(&self, bytes: &[u8]) -> ShmRef {
        let mut w = self.up_pool.try_acquire(1).expect("a free upstream slot");
        w.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        let r = w.commit(bytes.len() as u64).unwrap();
        self.up_pool.transfer(&r, NODE_HOLDER).unwrap();
        r
    }

    /// Queue item `seq` of source "cam" for the stage.
    pub fn send(&self, seq: u64, payload: Payload) {
        let env = Envelope {
            app: "sdk".into(),
            source: "cam".into(),
            seq,
            created_ns: protocol::clock::now_ns(),
            hops: vec![Hop {
                stage: TaskId::new(0),
                recv_ns: 0,
                sent_ns: 0,
            }],
            payload,
        };
        self.inbox
            .send(codec::encode("item", &Inbox::Data(env)).unwrap())
            .unwrap();
    }

    /// Queue a 2×2 RGB8 frame whose bytes all are `seq`.
    pub fn send_frame(&self, seq: u64) -> ShmRef {
        let shm = self.upstream_slot(&[seq as u8; 12]);
        self.send(
            seq,
            Payload::Frame {
                shm,
                width: 2,
                height: 2,
                format: PixelFormat::Rgb8,
            },
        );
        shm
    }

    /// Queue the upstream's end of stream: source "cam" emitted `total` items.
    pub fn end(&self, total: u64) {
        let eos = Eos {
            stage: TaskId::new(0),
            replica: 0,
            totals: vec![SourceTotal {
                source: "cam".into(),
                total,
            }],
        };
        self.inbox
            .send(codec::encode("eos", &Inbox::Eos(eos)).unwrap())
            .unwrap();
    }

    /// Queue an upstream stage's word that item `seq` of source "cam" will not come.
    pub fn skip(&self, seq: u64) {
        let skip = Inbox::Skip {
            source: "cam".into(),
            seq,
            reason: LossReason::BadInput,
        };
        self.inbox
            .send(codec::encode("skip", &skip).unwrap())
            .unwrap();
    }

    /// Queue a command from the supervisor.
    pub fn command(&self, command: Command) {
        self.inbox
            .send(codec::encode("command", &Inbox::Command(command)).unwrap())
            .unwrap();
    }

    /// The items consumer `k` received so far.
    pub fn received(&self, k: usize) -> Vec<Envelope> {
        let mut items = Vec::new();
        while let Ok(bytes) = self.consumers[k].try_recv() {
            if let Inbox::Data(env) = codec::decode::<Inbox>("inbox", &bytes).unwrap() {
                items.push(env);
            }
        }
        items
    }

    /// Every message the stage sent up so far.
    pub fn sent_up(&self) -> Vec<Up> {
        let mut msgs = Vec::new();
        while let Ok(wire) = self.up.try_recv() {
            msgs.push(codec::decode::<Up>("up", &wire.bytes).unwrap());
        }
        msgs
    }
}

/// The frontiers of the acknowledgements among `msgs`: per message, source "cam"'s
/// total and the output length sent with it.
pub fn acknowledged(msgs: &[Up]) -> Vec<(u64, Option<u64>)> {
    msgs.iter()
        .filter_map(|m| match m {
            Up::Delivered {
                frontier,
                output_len,
                ..
            } => frontier
                .iter()
                .find(|t| t.source == "cam")
                .map(|t| (t.total, *output_len)),
            _ => None,
        })
        .collect()
}
