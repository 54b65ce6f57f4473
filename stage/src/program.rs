//! A user program's process: bootstrap, the body loop with one [`Output`] per item,
//! hang detection, and the end the supervisor expects (finished, stopped or failed).

use crate::body::{self, Body};
use crate::send::{Emit, Meta, Written};
use crate::watchdog::{item_timeout, Watchdog};
use crate::{Item, StageError};
use protocol::messages::{LossReason, Payload};
use protocol::node::{Node, NodeError};

/// What a body sends on for one item.
pub enum Output {
    /// The item itself, untouched: its shared memory is passed on, nothing is copied.
    Forward(Item),
    /// A new frame written into this stage's pool ([`Body::frame`]).
    Frame(Written),
    /// Nothing: a best-effort app had no free slot ([`Body::frame`] returned this); the
    /// item is counted as shed.
    Shed,
    /// A table made for this item: an Arrow IPC stream of one record batch (it travels
    /// in the message, as the built-in table functions' tables do).
    Table(Vec<u8>),
    /// Any item: a payload made of the item's parts, slots this stage wrote and tables
    /// ([`Emit`]); the holds are counted by the SDK.
    Emit(Emit),
}

impl Body<'_> {
    /// Take a slot for a `width`×`height` RGB8 frame, to be filled through
    /// [`Written::bytes_mut`] and returned as [`Output::Frame`] (`None`: a best-effort app
    /// had no free slot). [`Body::frame`] does both steps in one call.
    pub fn new_frame(&mut self, width: u32, height: u32) -> Result<Option<Written>, StageError> {
        Ok(self.write_frame(width, height, |_| Ok(()))?.ok())
    }

    /// Write a `width`×`height` RGB8 frame into a slot of this stage's pool: `fill` gets
    /// the slot's bytes (exactly `width × height × 3`). Request-guarantee apps wait for
    /// a free slot; best-effort apps get [`Output::Shed`] when none is free.
    pub fn frame(
        &mut self,
        width: u32,
        height: u32,
        fill: impl FnOnce(&mut [u8]) -> Result<(), StageError>,
    ) -> Result<Output, StageError> {
        Ok(match self.write_frame(width, height, fill)? {
            Ok(w) => Output::Frame(w),
            Err(_) => Output::Shed,
        })
    }
}

/// Bootstrap, run `f` over every item to the end of the stream, and report.
pub(crate) fn run<F>(name: &str, f: F) -> u8
where
    F: FnMut(&mut Body<'_>, Item) -> Result<Output, StageError>,
{
    protocol::logcap::init_stage_logging();
    let label = std::env::args()
        .skip_while(|a| a != "--stage")
        .nth(1)
        .unwrap_or_else(|| name.to_string());
    let mut node = match Node::bootstrap(&label) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("{name} {label}: {e}");
            return 2;
        }
    };
    tracing::info!(stage = %node.label(), program = name, "started");
    let watchdog = Watchdog::start(node.heartbeat_switch(), item_timeout());
    match run_outputs(&mut node, Some(&watchdog), f) {
        Ok(()) => match node.finish() {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("cannot report the end of the stream: {e}");
                1
            }
        },
        Err(StageError::Node(NodeError::Stopped)) => {
            tracing::info!("stopped by the supervisor");
            node.stopped();
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            node.fail(&e.to_string());
            1
        }
    }
}

/// The body loop for a function that returns one [`Output`] per item.
pub(crate) fn run_outputs<F>(
    node: &mut Node,
    watchdog: Option<&Watchdog>,
    mut f: F,
) -> Result<(), StageError>
where
    F: FnMut(&mut Body<'_>, Item) -> Result<Output, StageError>,
{
    body::run(node, watchdog, |body, item| {
        let meta = Meta::of(&item);
        let out = f(body, item);
        send(body, meta, out)
    })
}

/// Send what the function returned for one item (an item it did not return is
/// released already: the function consumed it).
fn send(
    body: &mut Body<'_>,
    meta: Meta,
    out: Result<Output, StageError>,
) -> Result<(), StageError> {
    match out {
        Ok(Output::Forward(item)) => body.forward(item),
        Ok(Output::Emit(emit)) => body.send(emit),
        Ok(Output::Frame(written)) => {
            let payload = written.frame_payload().ok_or_else(|| {
                StageError::Failed("Output::Frame of a slot not written as a frame".into())
            })?;
            body.send(Emit::from_meta(meta, payload).written(written))
        }
        Ok(Output::Table(ipc)) => body.send(Emit::from_meta(meta, Payload::Table(ipc))),
        Ok(Output::Shed) => body.skip(&meta.source, meta.seq, LossReason::Shed),
        Err(StageError::BadInput(why)) => {
            tracing::warn!(source = %meta.source, seq = meta.seq, "item dropped: {why}");
            body.skip(&meta.source, meta.seq, LossReason::BadInput)
        }
        Err(e) => Err(e),
    }
}
