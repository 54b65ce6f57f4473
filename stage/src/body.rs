//! The body role: the one loop that feeds a user function item by item, sends what it
//! returns, counts busy time and losses, and ends the stage the way the supervisor
//! expects (finished, stopped or failed).

use crate::watchdog::{item_timeout, Watchdog};
use crate::{Item, StageError};
use protocol::clock::now_ns;
use protocol::messages::{Command, Envelope, Hop, LossReason, Payload, PixelFormat};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::{ShmRef, SlotPool};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The context of a body stage: its task (name, params) and its output pool.
pub struct Body {
    node: Node,
}

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
}

/// A frame written into a slot, not sent yet (dropping it frees the slot).
pub struct Written {
    pool: Arc<SlotPool>,
    shm: ShmRef,
    holders: u32,
    width: u32,
    height: u32,
    sent: bool,
}

impl Drop for Written {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        for _ in 0..self.holders {
            if let Err(e) = self.pool.release(&self.shm) {
                tracing::warn!("cannot free an unsent output slot: {e}");
                return;
            }
        }
    }
}

impl Written {
    /// The frame's bytes (`width × height × 3`), to fill before it is sent.
    pub fn bytes_mut(&mut self) -> Result<&mut [u8], StageError> {
        let bytes = self.pool.read(&self.shm)?;
        // SAFETY: this slot was taken and committed by this process and is not sent yet:
        // no other process reads or writes it until `send`. The pool's memory is a
        // writable shared mapping (its base is a `*mut u8`), read returned it bounds-
        // checked, and `&mut self` keeps this the only live reference made here.
        Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_ptr() as *mut u8, bytes.len()) })
    }

    /// Width and height of the frame.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

impl Body {
    /// The task's name in the app.
    pub fn task_name(&self) -> &str {
        &self.node.task.name
    }

    /// `task#replica`, as logs name this process.
    pub fn label(&self) -> String {
        self.node.label()
    }

    /// The task's `params`, as written in the app file.
    pub fn params(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.node.task.params
    }

    /// One parameter, typed (`None` when absent).
    pub fn param<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StageError> {
        match self.node.task.params.get(name) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| StageError::Param {
                    task: self.node.task.name.clone(),
                    param: name.to_string(),
                    detail: e.to_string(),
                }),
        }
    }

    /// Take a slot for a `width`×`height` RGB8 frame, to be filled through
    /// [`Written::bytes_mut`] and returned as [`Output::Frame`] (`None`: a best-effort app
    /// had no free slot). [`Body::frame`] does both steps in one call.
    pub fn new_frame(&mut self, width: u32, height: u32) -> Result<Option<Written>, StageError> {
        match self.frame(width, height, |_| Ok(()))? {
            Output::Frame(w) => Ok(Some(w)),
            _ => Ok(None),
        }
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
        let wanted = u64::from(width) * u64::from(height) * 3;
        let pool = self.node.output_pool()?;
        if wanted > pool.slot_size() {
            return Err(StageError::TooBig {
                wanted,
                slot: pool.slot_size(),
            });
        }
        let holders = self.node.consumer_count();
        let Some(mut writer) = self.node.output_slot(&pool)? else {
            return Ok(Output::Shed);
        };
        let len = wanted as usize;
        fill(&mut writer.bytes_mut()[..len])?;
        let shm = writer.commit(wanted)?;
        Ok(Output::Frame(Written {
            pool: pool.clone(),
            shm,
            holders,
            width,
            height,
            sent: false,
        }))
    }
}

/// What an item was before the user function took it: enough to address its output.
struct Meta {
    app: String,
    source: String,
    seq: u64,
    created_ns: u64,
    hops: Vec<Hop>,
}

/// Bootstrap, run `f` over every item to the end of the stream, and report.
pub(crate) fn run<F>(name: &str, f: F) -> u8
where
    F: FnMut(&mut Body, Item) -> Result<Output, StageError>,
{
    protocol::logcap::init_stage_logging();
    let label = std::env::args()
        .skip_while(|a| a != "--stage")
        .nth(1)
        .unwrap_or_else(|| name.to_string());
    let node = match Node::bootstrap(&label) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("{name} {label}: {e}");
            return 2;
        }
    };
    tracing::info!(stage = %node.label(), program = name, "started");
    let watchdog = Watchdog::start(node.heartbeat_switch(), item_timeout());
    let mut body = Body { node };
    match body_loop(&mut body, &watchdog, f) {
        Ok(()) => match body.node.finish() {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("cannot report the end of the stream: {e}");
                1
            }
        },
        Err(StageError::Node(NodeError::Stopped)) => {
            tracing::info!("stopped by the supervisor");
            body.node.stopped();
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            body.node.fail(&e.to_string());
            1
        }
    }
}

fn body_loop<F>(body: &mut Body, watchdog: &Watchdog, mut f: F) -> Result<(), StageError>
where
    F: FnMut(&mut Body, Item) -> Result<Output, StageError>,
{
    loop {
        match body.node.next(Duration::from_millis(200))? {
            Event::Item(env) => {
                let recv = now_ns();
                let started = Instant::now();
                let meta = Meta {
                    app: env.app.clone(),
                    source: env.source.clone(),
                    seq: env.seq,
                    created_ns: env.created_ns,
                    hops: env.hops.clone(),
                };
                let item = Item::new(&body.node, env)?;
                watchdog.enter();
                let out = f(body, item);
                watchdog.leave();
                send(body, meta, out, recv)?;
                body.node.note_busy(started.elapsed().as_nanos() as u64);
            }
            Event::End => return Ok(()),
            Event::Command(Command::Stop) => return Err(NodeError::Stopped.into()),
            _ => {}
        }
    }
}

/// Send what the user function returned for one item (its input is already released:
/// the function consumed the item).
fn send(
    body: &mut Body,
    meta: Meta,
    out: Result<Output, StageError>,
    recv: u64,
) -> Result<(), StageError> {
    match out {
        Ok(Output::Forward(item)) => Ok(body.node.forward(item.take(), recv)?),
        Ok(Output::Frame(mut written)) => {
            let env = Envelope {
                app: meta.app,
                source: meta.source,
                seq: meta.seq,
                created_ns: meta.created_ns,
                hops: meta.hops,
                payload: Payload::Frame {
                    shm: written.shm,
                    width: written.width,
                    height: written.height,
                    format: PixelFormat::Rgb8,
                },
            };
            // From here the holds belong to the consumers (or are freed by `send`).
            written.sent = true;
            Ok(body.node.send(env, recv)?)
        }
        Ok(Output::Shed) => Ok(body.node.skip(&meta.source, meta.seq, LossReason::Shed)?),
        Ok(Output::Table(ipc)) => {
            let env = Envelope {
                app: meta.app,
                source: meta.source,
                seq: meta.seq,
                created_ns: meta.created_ns,
                hops: meta.hops,
                payload: Payload::Table(ipc),
            };
            Ok(body.node.send(env, recv)?)
        }
        Err(StageError::BadInput(why)) => {
            tracing::warn!(source = %meta.source, seq = meta.seq, "item dropped: {why}");
            Ok(body
                .node
                .skip(&meta.source, meta.seq, LossReason::BadInput)?)
        }
        Err(e) => Err(e),
    }
}
