//! The tail role: the one loop every sink runs, and the one place of a tail's
//! exactly-once delivery. The node below hands the loop every data item and every skip
//! as events (`Event::Item`, `Event::Skipped`: lost upstream, or dropped for its
//! deadline); the loop, with its [`TailLedger`]:
//!
//! - marks each arrival and each skip per source, and drops a replayed duplicate (the
//!   [`Item`] handle's drop gives its slot back);
//! - in request-guarantee apps, keeps an item that overtook a missing one in its stash
//!   (a copy: its slot goes back at once) and delivers it when everything before it
//!   arrived or is known lost;
//! - hands each item to the function once, records the delivery and takes it back
//!   when the function fails;
//! - acknowledges to the supervisor what was delivered: at most every [`ACK_WINDOW`],
//!   at once when [`ACK_ITEMS`] items arrived or when nothing else arrives, and never
//!   sleeps in a receive while an acknowledgement is held back (the wait it passes to
//!   `Node::next` ends when the window closes; a receive that did sleep on one counts
//!   in `ack_stalls`);
//! - ends when the node says the stream ended, or (request-guarantee) when everything
//!   up to the sources' announced totals is in, with a last acknowledgement carrying
//!   the output file's length.
//!
//! A restarted tail's ledger starts from what the supervisor had acknowledged
//! (`Setup::resume`, `Setup::resume_output_len`), so what it delivered before is
//! dropped as duplicates. The delivery statistics (latencies, hops, stays) stay in the
//! node, which reports them (`Node::record_delivery`).
//!
//! The function sees every item once, in order, and never a hold count.

mod delivered;
pub mod ledger;

pub use delivered::Delivered;
pub use ledger::{SourceProgress, TailLedger, ACK_ITEMS, ACK_WINDOW};

use crate::{Item, StageError};
use delivered::Stashed;
use protocol::messages::{Command, Envelope, LossReason};
use protocol::node::{Event, Node, NodeError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one receive waits when no acknowledgement is held back.
const RECEIVE_WAIT: Duration = Duration::from_millis(200);

/// The context of a tail stage.
pub struct Tail<'n> {
    node: &'n mut Node,
    ledger: &'n mut TailLedger,
}

impl Tail<'_> {
    /// The node below (setup, task spec): read-only.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The output file's length after the item just written (sent with the
    /// acknowledgements, so that a restarted tail cuts a half-written file back).
    pub fn set_output_len(&mut self, len: u64) {
        self.ledger.set_output_len(len);
    }

    /// Count one delivered item as lost for `reason` (it arrived but cannot be used).
    pub fn count_lost(&self, reason: LossReason) {
        self.node.metrics(|m| m.lose(reason, 1));
    }
}

/// Receive items until the stream ended; hand each to `f` once and record its delivery
/// (taken back when `f` fails), acknowledging what was delivered as it goes.
///
/// Request-guarantee apps get every item exactly once and in order per source: a
/// replayed duplicate is dropped, and an item that overtook a missing one waits (as a
/// copy, not holding its slot) until everything before it arrived or is known lost.
pub fn run<E, F>(node: &mut Node, mut f: F) -> Result<(), E>
where
    E: From<StageError>,
    F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
{
    let mut tail = TailLoop {
        ledger: TailLedger::resumed(&node.setup, Instant::now()),
        stash: BTreeMap::new(),
    };
    loop {
        tail.acknowledge(node, false)?;
        if tail.has_everything(node) {
            return tail.end(node, &mut f);
        }
        // Held back by the window, an acknowledgement goes when it closes: the heads
        // of a request-guarantee app may be waiting for exactly that to free slots.
        let held_back = tail.ledger.due_in(Instant::now());
        let wait = held_back.map_or(RECEIVE_WAIT, |due| due.min(RECEIVE_WAIT));
        match node.next(wait).map_err(StageError::from)? {
            Event::Item(env) => tail.arrived(node, env, &mut f)?,
            Event::Skipped { source, seq, .. } => {
                tail.ledger.mark(&source, seq);
            }
            Event::Idle => {
                // A receive longer than the window that ended with an acknowledgement
                // held back slept on it (issue 14): never, as the wait is bounded above.
                if tail.ledger.pending() && wait > ACK_WINDOW {
                    node.metrics(|m| m.ack_stalls += 1);
                }
                tail.acknowledge(node, true)?;
            }
            Event::End => return tail.end(node, &mut f),
            Event::Command(Command::Stop) => {
                return Err(StageError::from(NodeError::Stopped).into())
            }
            // The sources' totals (checked above), drain, and events of other kinds.
            _ => {}
        }
        tail.deliver_unblocked(node, &mut f)?;
    }
}

/// The tail loop's state: the ledger and the items waiting for earlier ones.
struct TailLoop {
    ledger: TailLedger,
    stash: BTreeMap<(String, u64), Stashed>,
}

impl TailLoop {
    /// One item arrived: dropped when it is a duplicate, stashed when it overtook a
    /// missing one, delivered otherwise.
    fn arrived<E, F>(&mut self, node: &mut Node, env: Envelope, f: &mut F) -> Result<(), E>
    where
        E: From<StageError>,
        F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
    {
        let started = Instant::now();
        let item = Item::new(node, env)?;
        if !self.ledger.mark(item.source(), item.seq()) {
            // A replayed item this tail already has: dropping it releases its slot.
            return Ok(());
        }
        if self.ledger.guaranteed() && item.seq() >= self.ledger.frontier(item.source()) {
            let key = (item.source().to_string(), item.seq());
            self.stash.insert(key, Stashed::of(item)?);
        } else {
            deliver(node, &mut self.ledger, &Delivered::live(&item), f)?;
        }
        node.note_busy(started.elapsed().as_nanos() as u64);
        Ok(())
    }

    /// Deliver what no longer waits for anything before it.
    fn deliver_unblocked<E, F>(&mut self, node: &mut Node, f: &mut F) -> Result<(), E>
    where
        F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
    {
        while let Some(key) = self
            .stash
            .keys()
            .find(|(source, seq)| *seq < self.ledger.frontier(source))
            .cloned()
        {
            if let Some(item) = self.stash.remove(&key) {
                deliver(node, &mut self.ledger, &Delivered::stashed(&item), f)?;
            }
        }
        Ok(())
    }

    /// Request-guarantee: every source announced its total and everything up to it
    /// arrived or is known lost.
    fn has_everything(&self, node: &Node) -> bool {
        self.ledger.guaranteed()
            && node
                .announced_totals()
                .is_some_and(|totals| self.ledger.has_all(totals))
    }

    /// The end of the stream: write what still waits, and acknowledge at once.
    fn end<E, F>(&mut self, node: &mut Node, f: &mut F) -> Result<(), E>
    where
        E: From<StageError>,
        F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
    {
        if !self.stash.is_empty() {
            tracing::warn!(
                items = self.stash.len(),
                "the stream ended with items still waiting for earlier ones; writing them"
            );
            for (_, item) in std::mem::take(&mut self.stash) {
                deliver(node, &mut self.ledger, &Delivered::stashed(&item), f)?;
            }
        }
        Ok(self.acknowledge(node, true)?)
    }

    /// Send the supervisor the acknowledgement the ledger says is due (any that is
    /// pending when `now`).
    fn acknowledge(&mut self, node: &mut Node, now: bool) -> Result<(), StageError> {
        if let Some(frontier) = self.ledger.take_due(Instant::now(), now) {
            node.acknowledge(frontier, self.ledger.output_len())?;
        }
        Ok(())
    }
}

/// Record one delivery and hand the item to the function.
fn deliver<E, F>(
    node: &mut Node,
    ledger: &mut TailLedger,
    item: &Delivered<'_>,
    f: &mut F,
) -> Result<(), E>
where
    F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
{
    node.record_delivery(item.env);
    let written = f(&mut Tail { node, ledger }, item);
    if written.is_err() {
        node.unrecord_delivery(item.env);
    }
    written
}
