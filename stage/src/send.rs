//! Sending on: an outgoing item ([`Emit`]) built from the items a stage received (their
//! shared memory passed on, no copy) and the slots it wrote ([`Written`]). The holder
//! accounting of a send is done here and nowhere else: every slot the outgoing payload
//! references ends up with one hold per reference per consumer, every hold the stage
//! had but does not pass on is released, and a payload that names shared memory the
//! stage does not hold is refused.

use crate::{Item, StageError};
use protocol::messages::{Envelope, Hop, Payload, PixelFormat};
use protocol::node::Node;
use protocol::shm::{ShmRef, SlotPool};
use protocol::PoolId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A slot this stage wrote, not sent yet (dropping it frees the slot).
pub struct Written {
    pub(crate) pool: Arc<SlotPool>,
    pub(crate) shm: ShmRef,
    /// Holds this handle owns on the slot.
    pub(crate) holders: u32,
    /// `(width, height)` when it is an RGB8 frame.
    pub(crate) frame: Option<(u32, u32)>,
    pub(crate) sent: bool,
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
    /// The written bytes' reference (the whole committed length).
    pub fn shm(&self) -> ShmRef {
        self.shm
    }

    /// A reference to `len` bytes at `offset` of this slot (several tensors packed in
    /// one slot), checked against the committed length.
    pub fn part(&self, offset: u64, len: u64) -> Result<ShmRef, StageError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.shm.len => Ok(ShmRef {
                offset: self.shm.offset + offset,
                len,
                ..self.shm
            }),
            _ => Err(StageError::Failed(format!(
                "bytes {offset}..+{len} lie outside the {} bytes written in slot {} of pool {}",
                self.shm.len, self.shm.slot, self.shm.pool
            ))),
        }
    }

    /// The frame payload of a slot written as an RGB8 frame.
    pub fn frame_payload(&self) -> Option<Payload> {
        let (width, height) = self.frame?;
        Some(Payload::Frame {
            shm: self.shm,
            width,
            height,
            format: PixelFormat::Rgb8,
        })
    }

    /// The frame's bytes (`width × height × 3`), to fill before it is sent.
    pub fn bytes_mut(&mut self) -> Result<&mut [u8], StageError> {
        let bytes = self.pool.read(&self.shm)?;
        // SAFETY: this slot was taken and committed by this process and is not sent yet:
        // no other process reads or writes it until `send`. The pool's memory is a
        // writable shared mapping (its base is a `*mut u8`), read returned it bounds-
        // checked, and `&mut self` keeps this the only live reference made here.
        Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_ptr() as *mut u8, bytes.len()) })
    }

    /// Width and height of the frame (0 × 0 for a slot not written as a frame).
    pub fn size(&self) -> (u32, u32) {
        self.frame.unwrap_or((0, 0))
    }
}

/// Where an outgoing item comes from: its source, sequence number, creation time and
/// the hops it took so far.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub app: String,
    pub source: String,
    pub seq: u64,
    pub created_ns: u64,
    pub hops: Vec<Hop>,
    pub recv_ns: u64,
}

impl Meta {
    pub(crate) fn of(item: &Item) -> Meta {
        let env = item.envelope();
        Meta {
            app: env.app.clone(),
            source: env.source.clone(),
            seq: env.seq,
            created_ns: env.created_ns,
            hops: env.hops.clone(),
            recv_ns: item.recv_ns(),
        }
    }
}

/// One outgoing item: the payload, and everything its shared memory may come from.
pub struct Emit {
    meta: Meta,
    payload: Payload,
    inputs: Vec<Item>,
    written: Vec<Written>,
}

impl Emit {
    /// The item sent on as it is (a forward: zero copy), or, with [`Emit::payload`],
    /// an item of the same source and sequence number made from it.
    pub fn of(item: Item) -> Emit {
        Emit {
            meta: Meta::of(&item),
            payload: item.payload().clone(),
            inputs: vec![item],
            written: Vec::new(),
        }
    }

    /// An item with this envelope (source, sequence number, hops, payload), received at
    /// `recv_ns`; the payload's shared memory must come from the inputs and written
    /// slots named on it (e.g. the parts a merge combined).
    pub fn new(env: Envelope, recv_ns: u64) -> Emit {
        let Envelope {
            app,
            source,
            seq,
            created_ns,
            hops,
            payload,
        } = env;
        let meta = Meta {
            app,
            source,
            seq,
            created_ns,
            hops,
            recv_ns,
        };
        Emit::from_meta(meta, payload)
    }

    pub(crate) fn from_meta(meta: Meta, payload: Payload) -> Emit {
        Emit {
            meta,
            payload,
            inputs: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Send this payload instead. It may reference the shared memory of every input
    /// and every written slot of this emit (each passed on without a copy); what it
    /// leaves out is released.
    pub fn payload(mut self, payload: Payload) -> Emit {
        self.payload = payload;
        self
    }

    /// One more received item whose shared memory the payload may pass on (the rest
    /// of it is released): e.g. the other inputs of a merge.
    pub fn input(mut self, item: Item) -> Emit {
        self.inputs.push(item);
        self
    }

    /// A slot this stage wrote that the payload references.
    pub fn written(mut self, written: Written) -> Emit {
        self.written.push(written);
        self
    }

    /// Send it to every consumer, counting the holds (see the module's docs).
    pub(crate) fn send(self, node: &mut Node) -> Result<(), StageError> {
        send_all(node, vec![self], Vec::new())
    }
}

/// Send several items whose payloads may share slots (`shared`: e.g. one output slot
/// holding the model outputs of every item of a batch), counting the holds of all of
/// them together: per slot, one hold per reference per consumer.
pub(crate) fn send_all(
    node: &mut Node,
    emits: Vec<Emit>,
    mut shared: Vec<Written>,
) -> Result<(), StageError> {
    let consumers = i64::from(node.consumer_count());
    let mut slots: BTreeMap<(PoolId, u32, u32), Slot> = BTreeMap::new();
    let key = |r: &ShmRef| (r.pool, r.slot, r.generation);
    let mut outgoing = Vec::with_capacity(emits.len());
    for emit in emits {
        let Emit {
            meta,
            payload,
            inputs,
            mut written,
        } = emit;
        for item in inputs {
            for r in item.take().payload.shm_refs() {
                slots.entry(key(&r)).or_insert_with(|| Slot::new(r)).have += 1;
            }
        }
        shared.append(&mut written);
        for r in payload.shm_refs() {
            slots.entry(key(&r)).or_insert_with(|| Slot::new(r)).need += consumers;
        }
        outgoing.push((meta, payload));
    }
    for w in &mut shared {
        slots
            .entry(key(&w.shm))
            .or_insert_with(|| Slot::new(w.shm))
            .have += i64::from(w.holders);
        // From here its holds are counted below.
        w.sent = true;
    }
    let mut unheld = None;
    for slot in slots.values() {
        if slot.need > 0 && slot.have == 0 {
            unheld = Some(slot.r);
            continue;
        }
        let pool = node.pool(slot.r.pool)?;
        if slot.need > slot.have {
            pool.add_holders(&slot.r, (slot.need - slot.have) as u32)?;
        }
        for _ in slot.need..slot.have {
            pool.release(&slot.r)?;
        }
    }
    if let Some(r) = unheld {
        let items: Vec<String> = outgoing
            .iter()
            .map(|(m, _)| format!("{}/{}", m.source, m.seq))
            .collect();
        return Err(StageError::Failed(format!(
            "the item(s) {} to send reference slot {} of pool {}, which this stage does not hold (name it as an input or a written slot)",
            items.join(", "),
            r.slot,
            r.pool
        )));
    }
    if consumers == 0 {
        return Ok(());
    }
    for (meta, payload) in outgoing {
        let env = Envelope {
            app: meta.app,
            source: meta.source,
            seq: meta.seq,
            created_ns: meta.created_ns,
            hops: meta.hops,
            payload,
        };
        node.send(env, meta.recv_ns)?;
    }
    Ok(())
}

/// The holds of one slot: how many the stage has, how many the send needs.
struct Slot {
    r: ShmRef,
    have: i64,
    need: i64,
}

impl Slot {
    fn new(r: ShmRef) -> Slot {
        Slot {
            r,
            have: 0,
            need: 0,
        }
    }
}
