//! The tail role: the one loop every sink runs. The node below drops replayed
//! duplicates and acknowledges what was delivered (protocol's `node/tail.rs`); this loop
//! puts items back in order per source (request-guarantee apps), records each delivery,
//! takes it back when the function fails to write it, and releases the shared memory.
//! The function sees every item once, in order, and never a hold count.

use crate::item::{find, FrameRef};
use crate::{Item, StageError};
use protocol::messages::{Command, Envelope, LossReason, Payload, PixelFormat};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The context of a tail stage.
pub struct Tail<'n> {
    node: &'n mut Node,
}

impl Tail<'_> {
    /// The node below (setup, task spec): read-only.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The output file's length after the item just written (sent with the
    /// acknowledgements, so that a restarted tail cuts a half-written file back).
    pub fn set_output_len(&mut self, len: u64) {
        self.node.set_output_len(len);
    }

    /// Count one delivered item as lost for `reason` (it arrived but cannot be used).
    pub fn count_lost(&self, reason: LossReason) {
        self.node.metrics(|m| m.lose(reason, 1));
    }
}

/// An item as the tail's function gets it: received just now, or kept while it
/// waited for an earlier one (its shared memory copied out, the slot given back).
pub struct Delivered<'a> {
    env: &'a Envelope,
    from: Source<'a>,
}

enum Source<'a> {
    Live(&'a Item),
    Copied(&'a HashMap<ShmRef, Vec<u8>>),
}

impl Delivered<'_> {
    pub fn envelope(&self) -> &Envelope {
        self.env
    }

    pub fn payload(&self) -> &Payload {
        &self.env.payload
    }

    pub fn source(&self) -> &str {
        &self.env.source
    }

    pub fn seq(&self) -> u64 {
        self.env.seq
    }

    /// The bytes of one shared-memory reference of the payload.
    pub fn read(&self, shm: &ShmRef) -> Result<&[u8], StageError> {
        match &self.from {
            Source::Live(item) => item.read(shm),
            Source::Copied(copies) => copies.get(shm).map(Vec::as_slice).ok_or_else(|| {
                StageError::Failed(format!(
                    "slot {} of pool {} is not part of item {}/{}",
                    shm.slot, shm.pool, self.env.source, self.env.seq
                ))
            }),
        }
    }

    /// The item's RGB8 frame (alone or the first frame of a composite item).
    pub fn frame(&self) -> Result<Option<FrameRef<'_>>, StageError> {
        let Some((shm, width, height)) = find(&self.env.payload, &mut |p| match p {
            Payload::Frame {
                shm,
                width,
                height,
                format: PixelFormat::Rgb8,
            } => Some((*shm, *width, *height)),
            _ => None,
        }) else {
            return Ok(None);
        };
        let bytes = self.read(&shm)?;
        let len = width as usize * height as usize * 3;
        let data = bytes.get(..len).ok_or_else(|| {
            StageError::Failed(format!(
                "frame {}/{} of {width}x{height} holds {} bytes",
                self.env.source,
                self.env.seq,
                bytes.len()
            ))
        })?;
        Ok(Some(FrameRef {
            width,
            height,
            data,
        }))
    }
}

/// An item that arrived ahead of a gap, its shared memory copied out.
struct Stashed {
    env: Envelope,
    copies: HashMap<ShmRef, Vec<u8>>,
}

impl Stashed {
    fn of(item: Item) -> Result<Stashed, StageError> {
        let mut copies = HashMap::new();
        for r in item.payload().shm_refs() {
            copies.insert(r, item.read(&r)?.to_vec());
        }
        let env = item.envelope().clone();
        // Dropping the item gives its slots back at once.
        drop(item);
        Ok(Stashed { env, copies })
    }
}

/// Receive items until every upstream replica has ended; hand each to `f` and record
/// its delivery (taken back when `f` fails).
///
/// Request-guarantee apps get every item exactly once and in order per source: the node
/// drops replayed duplicates, and an item that overtook a missing one waits here (as a
/// copy, not holding its slot) until everything before it arrived or is known lost.
pub fn run<E, F>(node: &mut Node, mut f: F) -> Result<(), E>
where
    E: From<StageError>,
    F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
{
    let in_order = node.guaranteed();
    let mut stash: BTreeMap<(String, u64), Stashed> = BTreeMap::new();
    loop {
        let event = node
            .next(Duration::from_millis(200))
            .map_err(StageError::from)?;
        let ended = matches!(event, Event::End);
        match event {
            Event::Item(env) => {
                let started = Instant::now();
                let item = Item::new(node, env)?;
                if in_order && item.seq() >= node.frontier(item.source()) {
                    let key = (item.source().to_string(), item.seq());
                    stash.insert(key, Stashed::of(item)?);
                } else {
                    let delivered = Delivered {
                        env: item.envelope(),
                        from: Source::Live(&item),
                    };
                    deliver(node, &delivered, &mut f)?;
                }
                node.note_busy(started.elapsed().as_nanos() as u64);
            }
            Event::Command(Command::Stop) => {
                return Err(StageError::from(NodeError::Stopped).into())
            }
            _ => {}
        }
        // Write what no longer waits for anything before it.
        while let Some(key) = stash
            .keys()
            .find(|(source, seq)| *seq < node.frontier(source))
            .cloned()
        {
            if let Some(item) = stash.remove(&key) {
                deliver_stashed(node, &item, &mut f)?;
            }
        }
        if ended {
            if !stash.is_empty() {
                tracing::warn!(
                    items = stash.len(),
                    "the stream ended with items still waiting for earlier ones; writing them"
                );
                for (_, item) in std::mem::take(&mut stash) {
                    deliver_stashed(node, &item, &mut f)?;
                }
            }
            return Ok(());
        }
    }
}

fn deliver_stashed<E, F>(node: &mut Node, item: &Stashed, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
{
    let delivered = Delivered {
        env: &item.env,
        from: Source::Copied(&item.copies),
    };
    deliver(node, &delivered, f)
}

/// Record one delivery and hand the item to the function.
fn deliver<E, F>(node: &mut Node, item: &Delivered<'_>, f: &mut F) -> Result<(), E>
where
    F: FnMut(&mut Tail<'_>, &Delivered<'_>) -> Result<(), E>,
{
    node.record_delivery(item.env);
    let written = f(&mut Tail { node }, item);
    if written.is_err() {
        node.unrecord_delivery(item.env);
    }
    written
}
