//! `stage`: write a SmartPipe stage as your own program.
//!
//! A task of an app may name a `program` instead of a built-in `function`:
//!
//! ```json
//! {"name": "inv", "kind": "cpu", "program": "stages/invert", "inputs": ["frames"], "params": {"strength": 1}}
//! ```
//!
//! The supervisor starts that program as the stage's process (one per replica) and it
//! gets what built-in stages get: supervision and restart policies, exactly-once
//! delivery in request-guarantee apps, heartbeats and hang detection, metrics, logs
//! (its stderr is the stage log) and the planner's pools. The program links this crate,
//! declares the payload kinds it takes and makes, and hands a function to a loop:
//!
//! ```no_run
//! use stage::{Kind, Output, Stage, StageError};
//!
//! fn main() -> std::process::ExitCode {
//!     Stage::new("invert")
//!         .takes(Kind::Frame)
//!         .makes(Kind::Frame)
//!         .run_body(|ctx, item| {
//!             let frame = item.frame().ok_or_else(|| StageError::BadInput("not a frame".into()))?;
//!             let (w, h) = (frame.width, frame.height);
//!             // Written straight into a shared-memory slot of this stage's pool.
//!             ctx.frame(w, h, |out| {
//!                 for (o, i) in out.iter_mut().zip(frame.data) {
//!                     *o = 255 - i;
//!                 }
//!                 Ok(())
//!             })
//!             // `item` is dropped here: its shared memory goes back to its producer.
//!         })
//! }
//! ```
//!
//! - **Items** ([`Item`]) are handles on shared memory: reading a frame copies nothing,
//!   and dropping the item releases its slot. [`Output::Forward`] passes an item on
//!   untouched (zero copy, fan-out counted for you).
//! - **Outputs** are written once into a slot of the stage's own pool
//!   ([`Body::frame`]); no code of yours counts holders.
//! - **Errors**: [`StageError::BadInput`] drops the one item (counted as lost, bad input,
//!   and in a request-guarantee app the tails are told not to wait for it); any other
//!   error ends the stage as failed, and its restart policy decides what follows.
//! - **Hangs**: a function that holds one item longer than `SMARTPIPE_ITEM_TIMEOUT_MS`
//!   (default 30 s) stops the process's heartbeats; the supervisor then takes the stage
//!   for hung and restarts it by its policy.
//! - **The same loops as the built-ins**: SmartPipe's own CPU stages run on this crate
//!   too. [`body::run`] feeds a function `(&mut Body, Item)` that sends zero, one or many
//!   items through [`Body::send`] with an [`Emit`] (a forward, a payload made of the
//!   item's parts, slots written with [`Body::write`], the parts of several items);
//!   the send counts one hold per reference per consumer and releases what is not
//!   passed on. [`tail::run`] hands a sink every item once and in order per source
//!   (request-guarantee apps), records its delivery and releases its slot.
//! - **Heads** ([`Head`]) write each new item into a slot under the stage's policy and
//!   skip what the tails had before a restart.
//! - **The agent client** ([`AgentClient`]): a GPU stage's view of its device agent.
//!   [`AgentClient::call_all`] sends requests at once and returns their answers in
//!   request order, ignores replies of a killed incarnation, asks a restarted agent
//!   again for what it had not answered, and keeps the items that arrive meanwhile
//!   ([`AgentClient::take_arrived`]).
//! - **Errors of every stage program**: user programs, `worker-cpu` and `worker-gpu`
//!   (the GPU stage and the agent) fail with one [`StageError`]; a failed agent request
//!   is [`StageError::Agent`] (the model and the agent's typed `AgentError`), a stop by
//!   the supervisor is [`StageError::is_stop`] (a clean end).
//! - **Slots**: the stage's [`SlotPolicy`] (wait, shed, wait up to) comes from its app;
//!   when no slot is had, [`NoSlot`] says why (shed, timed out, stopped).
//! - **Describe**: run with `--smartpipe-describe` the program prints its declaration
//!   (JSON: protocol version, kinds taken and made) and exits; `supervisor validate`
//!   uses it to type-check the task against its neighbours without starting the app.

pub mod agent_client;
pub mod body;
mod error;
pub mod head;
mod item;
mod program;
mod send;
pub mod tail;
mod watchdog;

pub use agent_client::{AgentClient, AgentResult, Arrived};
pub use body::Body;
pub use error::StageError;
pub use head::{Emitted, Flow, Head};
pub use item::{FrameRef, Item, TensorRef};
pub use program::Output;
pub use protocol::messages::{DType, LossReason, Payload};
pub use protocol::node::{NoSlot, Node, SlotPolicy};
pub use protocol::user_stage::{Declaration, PayloadKind as Kind, DESCRIBE_FLAG};
pub use protocol::PROTOCOL_VERSION;
pub use send::{Emit, Written};
pub use tail::{Delivered, Tail};
pub use watchdog::Watchdog;

use std::process::ExitCode;

/// A stage program: its name (for logs), what it takes and makes.
#[derive(Debug, Clone)]
pub struct Stage {
    name: String,
    takes: Vec<Kind>,
    makes: Vec<Kind>,
}

impl Stage {
    pub fn new(name: &str) -> Stage {
        Stage {
            name: name.to_string(),
            takes: Vec::new(),
            makes: Vec::new(),
        }
    }

    /// A payload kind this stage accepts (call once per kind).
    pub fn takes(mut self, kind: Kind) -> Stage {
        self.takes.push(kind);
        self
    }

    /// A payload kind this stage emits (call once per kind; [`Kind::Any`] for a
    /// pass-through that makes what it takes).
    pub fn makes(mut self, kind: Kind) -> Stage {
        self.makes.push(kind);
        self
    }

    /// The declaration `--smartpipe-describe` prints.
    pub fn declaration(&self) -> Declaration {
        Declaration {
            protocol: protocol::PROTOCOL_VERSION,
            takes: self.takes.clone(),
            makes: self.makes.clone(),
        }
    }

    /// Whether this process was asked to describe itself (it then prints its
    /// declaration): the first thing every `run_*` checks.
    fn describe_if_asked(&self) -> Option<u8> {
        if !std::env::args().any(|a| a == DESCRIBE_FLAG) {
            return None;
        }
        match serde_json::to_string(&self.declaration()) {
            Ok(json) => {
                println!("{json}");
                Some(0)
            }
            Err(e) => {
                eprintln!("{}: cannot write the declaration: {e}", self.name);
                Some(2)
            }
        }
    }

    /// Run as a body (a `cpu` task): `f` gets each item and says what to send on.
    /// Returns the process's exit status; `main` returns it.
    pub fn run_body<F>(self, f: F) -> ExitCode
    where
        F: FnMut(&mut Body<'_>, Item) -> Result<Output, StageError>,
    {
        ExitCode::from(self.run_body_code(f))
    }

    /// [`Stage::run_body`], with the exit status as a number (for language bindings).
    pub fn run_body_code<F>(self, f: F) -> u8
    where
        F: FnMut(&mut Body<'_>, Item) -> Result<Output, StageError>,
    {
        if let Some(code) = self.describe_if_asked() {
            return code;
        }
        program::run(&self.name, f)
    }
}
