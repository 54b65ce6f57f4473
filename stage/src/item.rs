//! Received items: handles on an envelope whose shared memory is read in place and
//! released when the handle is dropped.

use crate::StageError;
use protocol::messages::{DType, Envelope, Payload};
use protocol::node::Node;
use protocol::shm::{ShmRef, SlotPool};
use protocol::PoolId;
use std::collections::HashMap;
use std::sync::Arc;

/// One item this stage received. Its frame or tensor is read where it lies (no copy);
/// dropping the item gives its shared memory back.
pub struct Item {
    env: Option<Envelope>,
    pools: HashMap<PoolId, Arc<SlotPool>>,
    recv_ns: u64,
}

/// A frame read in place: packed RGB8, `width × height × 3` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// A tensor read in place.
#[derive(Debug, Clone)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: Vec<u32>,
    pub data: &'a [u8],
}

impl Item {
    /// Wrap a received envelope, holding every pool it references (for a role that
    /// reads its own inbox, such as the GPU stage's batching; the loops do it for you).
    pub fn new(node: &Node, env: Envelope) -> Result<Item, StageError> {
        let mut pools = HashMap::new();
        for r in env.payload.shm_refs() {
            if let std::collections::hash_map::Entry::Vacant(e) = pools.entry(r.pool) {
                e.insert(node.shared_pool(r.pool)?);
            }
        }
        Ok(Item {
            env: Some(env),
            pools,
            recv_ns: protocol::clock::now_ns(),
        })
    }

    /// When this process received the item (the hop's arrival time).
    pub fn recv_ns(&self) -> u64 {
        self.recv_ns
    }

    /// The envelope as received: its payload's references are read with [`Item::read`].
    pub fn envelope(&self) -> &Envelope {
        self.env()
    }

    /// The item's payload.
    pub fn payload(&self) -> &Payload {
        &self.env().payload
    }

    fn env(&self) -> &Envelope {
        // Present until `take` consumes the item.
        match &self.env {
            Some(env) => env,
            None => unreachable!("an item is only emptied by `take`, which consumes it"),
        }
    }

    /// The head task the item came from.
    pub fn source(&self) -> &str {
        &self.env().source
    }

    /// Its sequence number at that head.
    pub fn seq(&self) -> u64 {
        self.env().seq
    }

    /// The bytes of one shared-memory reference of this item's payload, in place.
    pub fn read(&self, shm: &ShmRef) -> Result<&[u8], StageError> {
        let pool = self.pools.get(&shm.pool).ok_or_else(|| {
            StageError::Failed(format!("pool {} is not mapped in this process", shm.pool))
        })?;
        Ok(pool.read(shm)?)
    }

    /// The item's frame (alone or the first frame of a composite item).
    pub fn frame(&self) -> Option<FrameRef<'_>> {
        let (shm, width, height) = find(&self.env().payload, &mut |p| match p {
            Payload::Frame {
                shm, width, height, ..
            } => Some((*shm, *width, *height)),
            _ => None,
        })?;
        let data = self.read(&shm).ok()?;
        let len = (width as usize) * (height as usize) * 3;
        Some(FrameRef {
            width,
            height,
            data: data.get(..len)?,
        })
    }

    /// The item's tensor (alone or the first of a composite item).
    pub fn tensor(&self) -> Option<TensorRef<'_>> {
        let (shm, dtype, shape) = find(&self.env().payload, &mut |p| match p {
            Payload::Tensor { shm, dtype, shape } => Some((*shm, *dtype, shape.clone())),
            _ => None,
        })?;
        let data = self.read(&shm).ok()?;
        Some(TensorRef { dtype, shape, data })
    }

    /// The item's table as an Arrow IPC stream (one record batch), if it has one.
    pub fn table_ipc(&self) -> Option<&[u8]> {
        fn table(p: &Payload) -> Option<&[u8]> {
            match p {
                Payload::Table(bytes) => Some(bytes),
                Payload::Batch(parts) => parts.iter().find_map(table),
                _ => None,
            }
        }
        table(&self.env().payload)
    }

    /// The envelope, leaving nothing to release on drop (it travels on).
    pub(crate) fn take(mut self) -> Envelope {
        match self.env.take() {
            Some(env) => env,
            None => unreachable!("an item is only emptied by `take`, which consumes it"),
        }
    }
}

/// The first part of a payload (depth first) that `f` picks.
pub(crate) fn find<T>(p: &Payload, f: &mut impl FnMut(&Payload) -> Option<T>) -> Option<T> {
    if let Some(t) = f(p) {
        return Some(t);
    }
    match p {
        Payload::Batch(parts) => parts.iter().find_map(|q| find(q, f)),
        _ => None,
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let Some(env) = self.env.take() else {
            return;
        };
        for r in env.payload.shm_refs() {
            if let Some(pool) = self.pools.get(&r.pool) {
                if let Err(e) = pool.release(&r) {
                    tracing::warn!(seq = env.seq, "cannot release an input slot: {e}");
                }
            }
        }
    }
}
