//! Sent from stage to stage along the app's edges: items (payloads in shared memory), end of stream, and every inbox message.

use super::*;
use crate::shm::ShmRef;
use serde::{Deserialize, Serialize};

/// Pixel layout of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelFormat {
    /// 8-bit RGB, interleaved, rows packed (stride = 3 × width).
    Rgb8,
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    U8,
    F32,
    I64,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    Frame {
        shm: ShmRef,
        width: u32,
        height: u32,
        format: PixelFormat,
    },
    Tensor {
        shm: ShmRef,
        dtype: DType,
        shape: Vec<u32>,
    },
    /// An Arrow IPC stream holding one record batch.
    Table(Vec<u8>),
    /// Several payloads of one item (e.g. a frame and its detections).
    Batch(Vec<Payload>),
    /// Model-family state between the steps of a cascade (JSON), e.g. MTCNN's
    /// candidate boxes between P-Net and R-Net.
    State(Vec<u8>),
}

impl Payload {
    /// Every shared-memory reference inside, in order.
    pub fn shm_refs(&self) -> Vec<ShmRef> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }
    fn collect_refs(&self, out: &mut Vec<ShmRef>) {
        match self {
            Payload::Frame { shm, .. } | Payload::Tensor { shm, .. } => out.push(*shm),
            Payload::Table(_) | Payload::State(_) => {}
            Payload::Batch(items) => items.iter().for_each(|p| p.collect_refs(out)),
        }
    }
}

/// One hop of an item through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Task index of the stage.
    pub stage: TaskId,
    /// When the stage got the item (for heads: when it was created).
    pub recv_ns: u64,
    /// When the stage sent it on.
    pub sent_ns: u64,
}

/// One item on its way from a head to the tails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub app: String,
    pub source: String,
    pub seq: u64,
    pub created_ns: u64,
    pub hops: Vec<Hop>,
    pub payload: Payload,
}

/// End of stream from one upstream replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eos {
    pub stage: TaskId,
    pub replica: u32,
    /// What the sources upstream of it emitted.
    pub totals: Vec<SourceTotal>,
}

/// Everything that arrives in a child's inbox (bincode bytes on an [`InboxSender`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Inbox {
    Data(Envelope),
    /// Item `seq` of `source` will never arrive (lost with `reason` in a
    /// request-guarantee app): tails move past it instead of waiting.
    Skip {
        source: String,
        seq: u64,
        reason: LossReason,
    },
    Eos(Eos),
    Command(Command),
    AgentRequest(AgentRequest),
    AgentReply(AgentReply),
}
