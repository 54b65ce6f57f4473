//! Every message between SmartPipe processes.
//!
//! Two layers: ipc-channel carries the *wire* structs ([`UpWire`], [`SetupWire`]) whose
//! handles (channel ends, shared memory) only ipc-channel can move; everything else is
//! our own bincode bytes ([`crate::codec`]) inside them or sent as `Vec<u8>`.
//!
//! Messages are grouped by direction: [`supervisor_to_node`] (setup, commands),
//! [`node_to_supervisor`] (heartbeats, metrics, reports), [`node_to_node`] (items along
//! the edges) and [`node_to_agent`] (a GPU stage's requests and the agent's replies); all
//! are re-exported here.

use crate::ids::{HolderId, PoolId, TaskId};
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

pub mod node_to_agent;
pub mod node_to_node;
pub mod node_to_supervisor;
pub mod supervisor_to_node;

pub use node_to_agent::*;
pub use node_to_node::*;
pub use node_to_supervisor::*;
pub use supervisor_to_node::*;

/// Bumped whenever a message changes shape; a child of another version is refused.
pub const PROTOCOL_VERSION: u32 = 9;

/// Environment variables the supervisor hands to every child.
pub const ENV_BOOTSTRAP: &str = "SMARTPIPE_BOOTSTRAP";
pub const ENV_NONCE: &str = "SMARTPIPE_NONCE";
/// Whether test-only fault functions may run (set by the test suite only).
/// `Setup::slot_wait_ms` of a best-effort app with no latency quota: wait for a free
/// output slot as long as it takes (the producers slow down), shed nothing.
pub const SLOT_WAIT_FOREVER: u32 = u32::MAX;
pub const ENV_TEST_FAULTS: &str = "SMARTPIPE_TEST_FAULTS";

/// The sender half every child writes its up-messages into.
pub type UpSender = IpcSender<UpWire>;
/// A data or command channel (bincode [`Inbox`] bytes).
pub type InboxSender = IpcSender<Vec<u8>>;
pub type InboxReceiver = IpcReceiver<Vec<u8>>;

/// Child → supervisor, on the connection opened with the bootstrap server name.
#[derive(Serialize, Deserialize)]
pub struct UpWire {
    /// bincode of [`Up`].
    pub bytes: Vec<u8>,
    /// Only with the first message (`Hello`): where the supervisor sends `Setup`.
    pub reply: Option<IpcSender<SetupWire>>,
}

/// Supervisor → child, once, after a good `Hello`.
#[derive(Serialize, Deserialize)]
pub struct SetupWire {
    /// bincode of [`Setup`], or of a refusal message when `refused` is set.
    pub setup: Vec<u8>,
    pub refused: Option<String>,
    /// This replica's inbox: data from upstream and commands from the supervisor.
    pub inbox: Option<InboxReceiver>,
    /// Inbox senders of every replica of every consumer task, in [`Setup::outputs`] order.
    pub outputs: Vec<InboxSender>,
    /// Shared-memory pools this process may read or write, in [`Setup::pools`] order
    /// (where to open each: the supervisor's fd).
    pub pools: Vec<crate::shm::PoolHandle>,
    /// Where the supervisor sends the new inbox sender of a restarted consumer, just
    /// before the matching [`Command::Rewire`] (ipc-channel handles cannot travel in
    /// our bincode bytes).
    pub rewire: Option<IpcReceiver<InboxSender>>,
    /// A node's shared GPU agent: where the supervisor sends each app's [`AttachWire`],
    /// just before the matching [`Command::Attach`].
    pub attach: Option<IpcReceiver<AttachWire>>,
}

/// An app joining a node's shared GPU agent (DESIGN: one agent per device for all apps):
/// its pools, the inboxes of its GPU stages and the models they ask for.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttachWire {
    pub app: String,
    /// The agent's holder id in this app's pools.
    pub holder: HolderId,
    pub pools: Vec<PoolInfo>,
    /// Where to open the pools' memory, in `pools` order.
    pub handles: Vec<crate::shm::PoolHandle>,
    /// The agent's output index of `outputs[0]`; a GPU stage's `reply_to` is
    /// `first_output` + its position. Indices are node-wide: no two apps share one.
    pub first_output: u32,
    pub outputs: Vec<InboxSender>,
    /// JSON of the models the app's GPU stages use (the agent task's `models` param).
    pub models_json: String,
    /// The app's share of the device memory for resident models (none = unlimited).
    pub budget_mb: Option<u64>,
    /// A request-guarantee app: its models are evicted only after every best-effort app's.
    pub guaranteed: bool,
}

/// First message of every child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub nonce: u64,
    pub version: u32,
    /// `task#replica`.
    pub stage: String,
    pub pid: u32,
}
