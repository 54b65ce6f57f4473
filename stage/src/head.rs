//! The head role: a source writes each item once into a slot of its pool and sends its
//! reference on. [`Head::emit`] does it under the stage's slot policy, skips what the
//! tails already have after a restart (resume-from), and counts what is shed; the node
//! keeps the replay hold of a request-guarantee app. [`commands`] reads what the
//! supervisor said meanwhile (drain, stop, finish); rate changes are the node's
//! (`Node::take_rate_change`).

use crate::StageError;
use protocol::messages::{Command, Envelope, LossReason, Payload};
use protocol::node::{NoSlot, Node, NodeError};
use protocol::shm::{ShmRef, SlotPool};
use std::sync::Arc;

/// What a source's loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// Stop producing: drained, or the app has every item already.
    Drain,
}

/// What became of one emitted item (more outcomes may come: match with a `_` arm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Emitted {
    Sent,
    /// Below the resume point: the tails have it from before a restart (it was still
    /// read, so a stream source stays in step).
    Replayed,
    /// No slot was had (best-effort): the item is counted as shed.
    Shed(NoSlot),
    /// Best effort: the item was older than the app's latency quota when it was due to
    /// go (the source is behind its pace). Counted lost as `deadline` here, once, not
    /// sent on for every stage below to drop (it was still read, as a shed item is).
    Late,
}

/// The context of one source of a head task.
pub struct Head {
    pool: Arc<SlotPool>,
    source: String,
    app: String,
    resume_from: u64,
    /// Where a shed or replayed item is read to, so stream sources stay in step.
    scratch: Vec<u8>,
    /// Best effort: an item was found past the latency quota and the source skips
    /// ahead to the newest due one ([`Head::skip_late`]).
    catching_up: bool,
}

impl Head {
    /// The head of the node's task (the source is named after the task).
    pub fn new(node: &Node) -> Result<Head, StageError> {
        Ok(Head {
            pool: node.output_pool()?,
            source: node.task.name.clone(),
            app: node.setup.app.clone(),
            resume_from: node.resume_from(&node.task.name),
            scratch: Vec::new(),
            catching_up: false,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Bytes of one slot of the head's pool: the largest item it can send.
    pub fn slot_size(&self) -> u64 {
        self.pool.slot_size()
    }

    /// The first sequence number the tails do not have yet.
    pub fn resume_from(&self) -> u64 {
        self.resume_from
    }

    /// Emit item `seq` of `len` bytes, written by `fill`, created at `created_ns`;
    /// `payload` says what the written bytes are (a frame, a tensor).
    pub fn emit<E: From<StageError>>(
        &mut self,
        node: &mut Node,
        seq: u64,
        created_ns: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
        payload: impl FnOnce(ShmRef) -> Payload,
    ) -> Result<Emitted, E> {
        node.note_emitted(&self.source, seq);
        if seq < self.resume_from {
            self.scratch.resize(len, 0);
            fill(&mut self.scratch)?;
            return Ok(Emitted::Replayed);
        }
        if node.too_late(created_ns) {
            self.scratch.resize(len, 0);
            fill(&mut self.scratch)?;
            self.lose(node, seq, LossReason::Deadline)?;
            return Ok(Emitted::Late);
        }
        let pool = self.pool.clone();
        let holders = node.consumer_count();
        let policy = node.slot_policy();
        let mut writer = match node
            .take_slot(&pool, holders, policy)
            .map_err(StageError::from)?
        {
            Ok(w) => w,
            Err(NoSlot::Stopped) => return Err(StageError::from(NodeError::Stopped).into()),
            Err(why) => {
                self.scratch.resize(len, 0);
                fill(&mut self.scratch)?;
                node.metrics(|m| m.lose(LossReason::Shed, 1));
                return Ok(Emitted::Shed(why));
            }
        };
        let bytes = writer.bytes_mut();
        if bytes.len() < len {
            return Err(StageError::Failed(format!(
                "item {seq} of {len} bytes does not fit the {}-byte slots planned for '{}'",
                bytes.len(),
                self.source
            ))
            .into());
        }
        fill(&mut bytes[..len])?;
        let shm = writer.commit(len as u64).map_err(StageError::from)?;
        let env = Envelope {
            app: self.app.clone(),
            source: self.source.clone(),
            seq,
            created_ns,
            hops: Vec::with_capacity(8),
            payload: payload(shm),
        };
        node.send(env, created_ns).map_err(StageError::from)?;
        Ok(Emitted::Sent)
    }

    /// Best effort, for a source that can skip an item unread (generated items, files):
    /// whether item `seq`, due at `created_ns`, is stale. It is when it is older than the
    /// app's latency quota (counted lost as `deadline`: the source is behind its pace),
    /// and from then on while `newer_due` (the next item is due already; counted as
    /// `shed`), so the source resumes with the newest item: what it sends has the whole
    /// quota ahead of it, where the oldest would reach the next stage past its deadline
    /// and be dropped there. A stale item is counted and `true` comes back; the caller
    /// skips it. Never stale: an item the tails have from before a restart, anything in
    /// a request-guarantee app or without a latency quota.
    pub fn skip_late(
        &mut self,
        node: &mut Node,
        seq: u64,
        created_ns: u64,
        newer_due: bool,
    ) -> Result<bool, StageError> {
        match self.stale(node, seq, created_ns, newer_due) {
            Some(reason) => {
                self.lose(node, seq, reason)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Head::skip_late`]'s verdict without counting it: why item `seq` is stale, for a
    /// stream source that must read an item before it knows the item exists (it counts
    /// it with [`Head::lose`] once read).
    pub fn stale(
        &mut self,
        node: &Node,
        seq: u64,
        created_ns: u64,
        newer_due: bool,
    ) -> Option<LossReason> {
        if seq < self.resume_from {
            return None;
        }
        let reason = if node.too_late(created_ns) {
            LossReason::Deadline
        } else if self.catching_up && newer_due {
            LossReason::Shed
        } else {
            self.catching_up = false;
            return None;
        };
        self.catching_up = true;
        Some(reason)
    }

    /// Item `seq` could not be read (a bad file): counted as lost, and the tails of a
    /// request-guarantee app are told not to wait for it.
    pub fn lose(
        &mut self,
        node: &mut Node,
        seq: u64,
        reason: LossReason,
    ) -> Result<(), StageError> {
        node.note_emitted(&self.source, seq);
        Ok(node.skip(&self.source, seq, reason)?)
    }
}

/// What the supervisor said since the last look: `Stop` is an error
/// (`NodeError::Stopped`), a drain or finish ends the source.
pub fn commands(node: &mut Node) -> Result<Flow, StageError> {
    match node.poll_command()? {
        Some(Command::Drain) => Ok(Flow::Drain),
        Some(Command::Stop) => Err(NodeError::Stopped.into()),
        Some(Command::Finish) => Ok(Flow::Drain),
        _ => Ok(Flow::Go),
    }
}
