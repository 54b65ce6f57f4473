//! The body role: the one loop that feeds a function item by item (built-in bodies
//! and user programs alike), and the [`Body`] context the function sends through.
//! Items are handles that release their shared memory when dropped; [`Body::send`]
//! counts the fan-out holds; the loop counts busy time and ends at the end of the
//! stream or on `Stop`.

use crate::send::{Emit, Written};
use crate::watchdog::Watchdog;
use crate::{Item, StageError};
use protocol::messages::{Command, LossReason};
use protocol::node::{Event, NoSlot, Node, NodeError};
use protocol::spec::TaskKind;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// The context of a body stage: its task (name, params), its output pool, and the
/// sends of what it makes.
pub struct Body<'n> {
    node: &'n mut Node,
}

impl<'n> Body<'n> {
    /// The context over a node, outside the loop too (a merge sends what still waits
    /// once its input ended).
    pub fn new(node: &'n mut Node) -> Body<'n> {
        Body { node }
    }

    /// The node below (setup, task spec, pools, metrics): read-only, so the function
    /// cannot take part in the holder accounting.
    pub fn node(&self) -> &Node {
        self.node
    }

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

    /// Send an item on (see [`Emit`]): the holds its payload needs are counted here.
    pub fn send(&mut self, emit: Emit) -> Result<(), StageError> {
        emit.send(self.node)
    }

    /// Send several items whose payloads share slots of `shared` (a batch's one output
    /// slot), the holds of all of them counted together.
    pub fn send_all(&mut self, emits: Vec<Emit>, shared: Vec<Written>) -> Result<(), StageError> {
        crate::send::send_all(self.node, emits, shared)
    }

    /// Pass an item on untouched (zero copy).
    pub fn forward(&mut self, item: Item) -> Result<(), StageError> {
        self.send(Emit::of(item))
    }

    /// Drop an item, counted as lost for `reason` (its shared memory is released; a
    /// request-guarantee app's tails are told not to wait for it).
    pub fn lose(&mut self, item: Item, reason: LossReason) -> Result<(), StageError> {
        let (source, seq) = (item.source().to_string(), item.seq());
        drop(item);
        self.skip(&source, seq, reason)
    }

    /// Count item `seq` of `source` as lost (the item itself is gone already).
    pub fn skip(&mut self, source: &str, seq: u64, reason: LossReason) -> Result<(), StageError> {
        Ok(self.node.skip(source, seq, reason)?)
    }

    /// Count one item as lost without telling the tails (a merge that gave up on a key
    /// whose inputs were already accounted for).
    pub fn count_lost(&self, reason: LossReason) {
        self.node.metrics(|m| m.lose(reason, 1));
    }

    /// Take a slot of this stage's pool, write `len` bytes into it with `fill`, and
    /// hand it back for an [`Emit`]. The slot policy is the stage's (request-guarantee:
    /// wait; best-effort: shed or wait up to its limit): `Ok(Err(NoSlot))` says why no
    /// slot was had.
    pub fn write(
        &mut self,
        len: u64,
        fill: impl FnOnce(&mut [u8]) -> Result<(), StageError>,
    ) -> Result<Result<Written, NoSlot>, StageError> {
        self.write_as(len, None, fill)
    }

    /// [`Body::write`] of a `width`×`height` RGB8 frame ([`Written::frame_payload`]).
    pub fn write_frame(
        &mut self,
        width: u32,
        height: u32,
        fill: impl FnOnce(&mut [u8]) -> Result<(), StageError>,
    ) -> Result<Result<Written, NoSlot>, StageError> {
        let len = u64::from(width) * u64::from(height) * 3;
        self.write_as(len, Some((width, height)), fill)
    }

    fn write_as(
        &mut self,
        len: u64,
        frame: Option<(u32, u32)>,
        fill: impl FnOnce(&mut [u8]) -> Result<(), StageError>,
    ) -> Result<Result<Written, NoSlot>, StageError> {
        let pool = self.node.output_pool()?;
        if len > pool.slot_size() {
            return Err(StageError::TooBig {
                wanted: len,
                slot: pool.slot_size(),
            });
        }
        let policy = self.node.slot_policy();
        let mut writer = match self.node.take_slot(&pool, 1, policy)? {
            Ok(w) => w,
            Err(NoSlot::Stopped) => return Err(NodeError::Stopped.into()),
            Err(why) => return Ok(Err(why)),
        };
        fill(&mut writer.bytes_mut()[..len as usize])?;
        let shm = writer.commit(len)?;
        Ok(Ok(Written {
            pool: pool.clone(),
            shm,
            holders: 1,
            frame,
            sent: false,
        }))
    }
}

/// Feed every item to `f` until every upstream replica has ended its stream (`Ok`) or
/// the supervisor says `Stop` (`Err(Stopped)`). `f` gets the item as a handle: it sends
/// through the [`Body`] whatever it makes of it (zero, one or many items), and what it
/// drops is released. `watchdog` marks each call (user programs: hang detection).
///
/// A `tail` task is refused: its items go through [`crate::tail::run`], the one loop
/// that keeps a tail's exactly-once ledger and acknowledges its deliveries.
pub fn run<E, F>(node: &mut Node, watchdog: Option<&Watchdog>, f: F) -> Result<(), E>
where
    E: From<StageError>,
    F: FnMut(&mut Body<'_>, Item) -> Result<(), E>,
{
    run_with_commands(node, watchdog, f, |_, _| Ok(()))
}

/// [`run`], also handing `on_command` the supervisor's commands the node passes to the
/// stage (other than `Stop`, which ends the loop): `Ack` for a stage that pairs parts of
/// one item (`table.merge`), so it can drop what waits for an item the tails have.
pub fn run_with_commands<E, F, C>(
    node: &mut Node,
    watchdog: Option<&Watchdog>,
    mut f: F,
    mut on_command: C,
) -> Result<(), E>
where
    E: From<StageError>,
    F: FnMut(&mut Body<'_>, Item) -> Result<(), E>,
    C: FnMut(&mut Body<'_>, Command) -> Result<(), E>,
{
    if node.task.kind == TaskKind::Tail {
        return Err(StageError::Failed(format!(
            "task '{}' is a tail: it runs on the tail loop (stage::tail::run), not the body loop",
            node.task.name
        ))
        .into());
    }
    loop {
        match node
            .next(Duration::from_millis(200))
            .map_err(StageError::from)?
        {
            Event::Item(env) => {
                let started = Instant::now();
                let item = Item::new(node, env)?;
                if let Some(w) = watchdog {
                    w.enter();
                }
                let done = f(&mut Body::new(node), item);
                if let Some(w) = watchdog {
                    w.leave();
                }
                done?;
                node.note_busy(started.elapsed().as_nanos() as u64);
            }
            Event::End => return Ok(()),
            Event::Command(Command::Stop) => {
                return Err(StageError::from(NodeError::Stopped).into())
            }
            // Drain: bodies end when their inputs end.
            Event::Command(Command::Drain) => {}
            Event::Command(c) => on_command(&mut Body::new(node), c)?,
            // Idle, and events of other kinds.
            _ => {}
        }
    }
}
