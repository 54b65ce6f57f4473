//! What a tail's function gets: an item received just now (read in place) or one
//! that waited in the stash for an earlier one (a copy, its slot given back).

use crate::item::{find, FrameRef};
use crate::{Item, StageError};
use protocol::messages::{Envelope, Payload, PixelFormat};
use protocol::shm::ShmRef;
use std::collections::HashMap;

/// An item as the tail's function gets it: received just now, or kept while it
/// waited for an earlier one (its shared memory copied out, the slot given back).
pub struct Delivered<'a> {
    pub(super) env: &'a Envelope,
    from: Source<'a>,
}

enum Source<'a> {
    Live(&'a Item),
    Copied(&'a HashMap<ShmRef, Vec<u8>>),
}

impl<'a> Delivered<'a> {
    /// An item received just now.
    pub(super) fn live(item: &'a Item) -> Delivered<'a> {
        Delivered {
            env: item.envelope(),
            from: Source::Live(item),
        }
    }

    /// An item that waited in the stash.
    pub(super) fn stashed(item: &'a Stashed) -> Delivered<'a> {
        Delivered {
            env: &item.env,
            from: Source::Copied(&item.copies),
        }
    }

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
pub(super) struct Stashed {
    env: Envelope,
    copies: HashMap<ShmRef, Vec<u8>>,
}

impl Stashed {
    pub(super) fn of(item: Item) -> Result<Stashed, StageError> {
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
