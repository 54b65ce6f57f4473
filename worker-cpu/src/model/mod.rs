//! `model.preprocess` and `model.postprocess`: the CPU steps around a model run, per
//! model family. An item travels the cascade as a `Payload::Batch` of its original
//! frame (a shared-memory reference, never copied), the family's state between steps
//! (`Payload::State`, JSON) and the tensors for or from the model. The last
//! post-processing step replaces state and tensors with a detection table.

mod embedder;
mod mtcnn;
mod pose;
mod ppocr;
mod segment;
mod superres;
mod yolo;

use crate::table::detections::{detections_batch, encode_ipc, DetectionRow, Extras};
use crate::StageError;
use protocol::functions::params;
use protocol::messages::{DType, Envelope, LossReason, Payload, PixelFormat};
use protocol::node::Node;
use protocol::shm::ShmRef;
use stage::{Body, Emit, Item, Written};
use std::borrow::Cow;
use std::path::PathBuf;
use vision::manifest::{Family, Manifest};
use vision::{RgbView, TensorF32, TensorView};

/// The parts of an item in a model cascade.
pub struct Parts {
    /// The original frame: (payload, width, height).
    pub frame: Option<(Payload, u32, u32)>,
    pub state: Option<Vec<u8>>,
    /// A table the item carries (Arrow IPC), e.g. the detections an embedder crops.
    pub table: Option<Vec<u8>>,
    /// Tensors in order (inputs before inference, outputs after).
    pub tensors: Vec<(ShmRef, Vec<u32>)>,
}

impl Parts {
    pub fn of(payload: &Payload) -> Parts {
        let mut parts = Parts {
            frame: None,
            state: None,
            table: None,
            tensors: Vec::new(),
        };
        let list = match payload {
            Payload::Batch(items) => items.clone(),
            other => vec![other.clone()],
        };
        for p in list {
            match p {
                Payload::Frame { width, height, .. } => {
                    parts.frame = Some((p.clone(), width, height))
                }
                Payload::State(s) => parts.state = Some(s),
                Payload::Tensor { shm, shape, .. } => parts.tensors.push((shm, shape)),
                Payload::Table(t) => parts.table = Some(t),
                Payload::Batch(_) => {}
            }
        }
        parts
    }
}

/// What one step produced for an item.
pub enum Output {
    /// New state and tensors to hand to the model stage.
    Tensors {
        state: Option<Vec<u8>>,
        tensors: Vec<TensorF32>,
    },
    /// New state and tensors that are written straight into the slot for the model stage
    /// (P-Net's pyramid: 8 MB of tensors per 720p frame, not built and then copied).
    TensorsFrom {
        state: Option<Vec<u8>>,
        source: Box<dyn TensorSource>,
    },
    /// New state only (between cascade steps).
    State(Vec<u8>),
    /// The final detection table.
    Detections(Vec<DetectionRow>, Extras),
    /// A final table of the family's own columns (detection columns and more), and bytes
    /// that travel on beside it as `Payload::State` (a segmentation mask).
    Table(arrow_array::RecordBatch, Option<Vec<u8>>),
    /// A final table already encoded (Arrow IPC), e.g. detections with embeddings.
    TableIpc(Vec<u8>),
    /// A new frame in place of the item's frame (super-resolution).
    Frame(vision::RgbImage),
}

/// Tensors that can write themselves into a stage's output slot.
pub trait TensorSource {
    /// The shape of each tensor, in order.
    fn shapes(&self) -> Vec<Vec<usize>>;
    /// Writes tensor `k` as little-endian f32 bytes into `out`, exactly its size.
    fn write_le(&self, k: usize, out: &mut [u8]) -> Result<(), StageError>;
}

impl TensorSource for Vec<TensorF32> {
    fn shapes(&self) -> Vec<Vec<usize>> {
        self.iter().map(|t| t.shape.clone()).collect()
    }

    fn write_le(&self, k: usize, out: &mut [u8]) -> Result<(), StageError> {
        let t = self
            .get(k)
            .ok_or_else(|| StageError::Input(format!("no tensor {k} of {}", self.len())))?;
        if out.len() != t.data.len() * 4 {
            return Err(StageError::Input(format!(
                "tensor {k} is {} bytes, its place {}",
                t.data.len() * 4,
                out.len()
            )));
        }
        if cfg!(target_endian = "little") {
            // f32 in memory are already their little-endian bytes: one copy.
            out.copy_from_slice(bytemuck::cast_slice(&t.data));
        } else {
            for (d, v) in out.chunks_exact_mut(4).zip(&t.data) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// A family step that turns an item into its next form.
pub trait Step {
    fn run(
        &mut self,
        frame: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError>;

    /// [`Step::run`] with the model's outputs read in place where they lie (the slot of
    /// shared memory). The default copies them into tensors of their own and calls `run`;
    /// a step that only reads its outputs overrides this and saves the copy.
    fn run_views(
        &mut self,
        frame: RgbView<'_>,
        parts: &Parts,
        outputs: &[TensorView<'_>],
        env: &Envelope,
    ) -> Result<Output, StageError> {
        let owned = outputs
            .iter()
            .map(TensorView::to_tensor)
            .collect::<Result<Vec<_>, _>>()
            .map_err(vision_err)?;
        self.run(frame, parts, owned, env)
    }

    /// How many of the model's outputs (in order) the step reads; the rest are released
    /// unread (ISNet returns eleven side maps beside its alpha). `None`: all of them.
    fn outputs_read(&self) -> Option<usize> {
        None
    }
}

fn vision_err(e: vision::VisionError) -> StageError {
    StageError::Input(e.to_string())
}

/// Find the manifest and model folder the supervisor named.
pub fn manifest_of(node: &Node) -> Result<(Manifest, PathBuf), StageError> {
    let path = node.setup.models_manifest.clone().ok_or_else(|| {
        StageError::Unsupported("no model manifest was given to this stage".into())
    })?;
    let dir = node.setup.models_dir.clone().unwrap_or_default();
    let manifest = Manifest::load(std::path::Path::new(&path)).map_err(vision_err)?;
    Ok((manifest, PathBuf::from(dir)))
}

/// Build the step for this task's model, before (`pre`) or after the model runs.
fn make_step(node: &Node, model: &str, pre: bool) -> Result<Box<dyn Step>, StageError> {
    let (manifest, dir) = manifest_of(node)?;
    let entry = manifest.model(model).map_err(vision_err)?;
    match entry.family {
        Family::Mtcnn => mtcnn::step(&manifest, model, pre),
        Family::PpocrDet | Family::PpocrCls | Family::PpocrRec => {
            ppocr::step(&manifest, &dir, model, entry.family, pre)
        }
        Family::Centernet => {
            yolo::check_centernet(entry, &node.task.name, model)?;
            yolo::step(&manifest, model, entry.family, pre)
        }
        Family::Yolox | Family::Yolov5 | Family::Yolov8 => {
            yolo::step(&manifest, model, entry.family, pre)
        }
        Family::Segmentation => segment::step(&manifest, &node.task.name, model, pre),
        Family::Embedder => embedder::step(node, entry, pre),
        Family::Superres => superres::step(&manifest, model, pre),
        Family::Pose => {
            // The network input goes into this stage's slots: sized by the plan, checked now.
            let slot = pre
                .then(|| node.output_pool().ok().map(|p| p.slot_size()))
                .flatten();
            pose::step(&manifest, &node.task.name, model, pre, slot)
        }
    }
}

/// `model.preprocess`: run the model family's pre-processing step on every item.
pub fn run_preprocess(node: &mut Node) -> Result<(), StageError> {
    let params::ModelPreprocess { model } = crate::params(node)?;
    let step = make_step(node, &model, true)?;
    run(node, step)
}

/// `model.postprocess`: run the model family's post-processing step on every item.
pub fn run_postprocess(node: &mut Node) -> Result<(), StageError> {
    let params::ModelPostprocess { model, .. } = crate::params(node)?;
    let step = make_step(node, &model, false)?;
    run(node, step)
}

/// The stage SDK's body loop over the step: items release their shared memory when
/// dropped, and the send counts the fan-out holds (no hold is counted here).
fn run(node: &mut Node, mut step: Box<dyn Step>) -> Result<(), StageError> {
    stage::body::run(node, None, |body, item| handle(body, step.as_mut(), item))
}

fn handle(body: &mut Body<'_>, step: &mut dyn Step, item: Item) -> Result<(), StageError> {
    let parts = Parts::of(item.payload());
    let Some((frame_payload, w, h)) = parts.frame.clone() else {
        tracing::warn!(
            seq = item.seq(),
            "model step got an item without its frame; dropped"
        );
        return body.lose(item, LossReason::BadInput);
    };
    let Payload::Frame {
        shm: frame_ref,
        format: PixelFormat::Rgb8,
        ..
    } = frame_payload
    else {
        tracing::warn!(
            source = %item.source(),
            seq = item.seq(),
            "{}: model steps take 8-bit RGB frames; item dropped",
            body.task_name()
        );
        return body.lose(item, LossReason::BadInput);
    };
    let wanted = step.outputs_read().unwrap_or(parts.tensors.len());
    let mut inputs = Vec::new();
    for (shm, shape) in parts.tensors.iter().take(wanted) {
        inputs.push(SlotTensor::read(item.read(shm)?, shape)?);
    }
    let views: Vec<TensorView<'_>> = inputs.iter().map(SlotTensor::view).collect();
    let result = {
        let bytes = item.read(&frame_ref)?;
        let view = RgbView::new(bytes, w as usize, h as usize).map_err(vision_err)?;
        step.run_views(view, &parts, &views, item.envelope())
    };
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            // Most step errors name the task already; the others get its name in front.
            let why = e.to_string();
            let task = body.task_name();
            if why.contains(&format!("task '{task}'")) {
                tracing::warn!(source = %item.source(), seq = item.seq(), "{why}");
            } else {
                tracing::warn!(source = %item.source(), seq = item.seq(), "{task}: {why}");
            }
            return body.lose(item, LossReason::BadInput);
        }
    };
    if let Output::Frame(img) = output {
        return superres::send_frame(body, item, img);
    }
    // The frame goes on; the tensors read are left out of the payload, so the send
    // releases them.
    let mut next = vec![Payload::Frame {
        shm: frame_ref,
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
    }];
    let placed = match output {
        Output::State(s) => {
            next.push(Payload::State(s));
            Placed::Nothing
        }
        Output::TableIpc(t) => {
            next.push(Payload::Table(t));
            Placed::Nothing
        }
        Output::Detections(rows, extras) => {
            let table =
                detections_batch(&rows, extras).map_err(|e| StageError::Input(e.to_string()))?;
            next.push(Payload::Table(
                encode_ipc(&table).map_err(|e| StageError::Input(e.to_string()))?,
            ));
            Placed::Nothing
        }
        Output::Table(table, extra) => {
            next.push(Payload::Table(
                encode_ipc(&table).map_err(|e| StageError::Input(e.to_string()))?,
            ));
            next.extend(extra.map(Payload::State));
            Placed::Nothing
        }
        Output::Frame(_) => unreachable!("handled above"),
        Output::Tensors { state, tensors } => push_tensors(body, &mut next, state, &tensors)?,
        Output::TensorsFrom { state, source } => {
            push_tensors(body, &mut next, state, source.as_ref())?
        }
    };
    let emit = match placed {
        Placed::Slot(w) => Emit::of(item).written(w),
        Placed::Nothing => Emit::of(item),
        // Best-effort overload: shed this item (its holds go back on drop).
        Placed::NoSlot => return body.lose(item, LossReason::Shed),
    };
    body.send(emit.payload(Payload::Batch(next)))
}

/// Where an item's tensors went.
enum Placed {
    /// It had none.
    Nothing,
    /// Into this slot.
    Slot(Written),
    /// Nowhere: a best-effort app had no free slot.
    NoSlot,
}

/// Pushes the state, then the tensors written into a slot, onto `next`.
fn push_tensors(
    body: &mut Body<'_>,
    next: &mut Vec<Payload>,
    state: Option<Vec<u8>>,
    tensors: &dyn TensorSource,
) -> Result<Placed, StageError> {
    next.extend(state.map(Payload::State));
    let shapes = tensors.shapes();
    if shapes.is_empty() {
        return Ok(Placed::Nothing);
    }
    Ok(match write_tensors(body, tensors, &shapes)? {
        Some((slot, refs)) => {
            next.extend(refs);
            Placed::Slot(slot)
        }
        None => Placed::NoSlot,
    })
}

/// A model output as a step reads it: its values in place in the slot when they lie there as
/// aligned f32 of this machine's byte order (slots place tensors 64-byte aligned), else
/// copied out first ([`vision::f32s_of_le`]).
struct SlotTensor<'a> {
    shape: Vec<usize>,
    data: Cow<'a, [f32]>,
}

impl<'a> SlotTensor<'a> {
    fn read(bytes: &'a [u8], shape: &[u32]) -> Result<SlotTensor<'a>, StageError> {
        let tensor = SlotTensor {
            shape: shape.iter().map(|&d| d as usize).collect(),
            data: vision::f32s_of_le(bytes),
        };
        tensor.view().check("model output").map_err(vision_err)?;
        Ok(tensor)
    }

    fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: &self.data,
        }
    }
}

/// Pack tensors into one slot of this stage's pool (64-byte aligned): the slot and one
/// tensor payload per tensor; `None` when a best-effort app has no free slot (the caller
/// sheds the item).
fn write_tensors(
    body: &mut Body<'_>,
    tensors: &dyn TensorSource,
    shapes: &[Vec<usize>],
) -> Result<Option<(Written, Vec<Payload>)>, StageError> {
    let mut placed = Vec::new();
    let mut offset = 0usize;
    for shape in shapes {
        let len = shape.iter().product::<usize>() * 4;
        placed.push((offset, len));
        offset += len.div_ceil(64) * 64;
    }
    let slot_size = body.node().output_pool()?.slot_size();
    if offset as u64 > slot_size {
        return Err(StageError::Input(format!(
            "tensors of {offset} bytes do not fit the {slot_size}-byte slots planned for this stage"
        )));
    }
    let written = body.write(offset as u64, |slot| {
        for (k, &(at, len)) in placed.iter().enumerate() {
            tensors.write_le(k, &mut slot[at..at + len])?;
        }
        Ok(())
    })?;
    let Ok(written) = written else {
        return Ok(None);
    };
    let mut payloads = Vec::with_capacity(shapes.len());
    for (shape, &(at, len)) in shapes.iter().zip(&placed) {
        payloads.push(Payload::Tensor {
            shm: written.part(at as u64, len as u64)?,
            dtype: DType::F32,
            shape: shape.iter().map(|&d| d as u32).collect(),
        });
    }
    Ok(Some((written, payloads)))
}

/// A detection row for an item.
pub fn row(env: &Envelope, class: &str, score: f32, b: &vision::BBox) -> DetectionRow {
    DetectionRow {
        source: env.source.clone(),
        seq: env.seq,
        class: class.to_string(),
        score,
        x1: b.x1,
        y1: b.y1,
        x2: b.x2,
        y2: b.y2,
        landmarks: None,
        text: None,
        text_score: None,
        polygon: None,
        track_id: None,
    }
}

/// Bad input of a task's model step, naming the task and the model.
pub fn task_model_error(task: &str, model: &str, what: impl std::fmt::Display) -> StageError {
    StageError::Input(format!("task '{task}', model `{model}`: {what}"))
}

/// The model's first output, or the error naming the task and the model.
pub fn first_output<'a>(
    outputs: &'a [TensorF32],
    task: &str,
    model: &str,
) -> Result<&'a TensorF32, StageError> {
    outputs
        .first()
        .ok_or_else(|| task_model_error(task, model, "the model returned no output"))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StageError> {
    serde_json::to_vec(v).map_err(|e| StageError::Input(e.to_string()))
}

pub fn from_json<T: serde::de::DeserializeOwned>(parts: &Parts) -> Result<T, StageError> {
    let bytes = parts.state.as_ref().ok_or_else(|| {
        StageError::Input("the item carries no state from the previous step".into())
    })?;
    serde_json::from_slice(bytes)
        .map_err(|e| StageError::Input(format!("bad state from the previous step: {e}")))
}

#[cfg(test)]
mod tests {
    use super::{SlotTensor, TensorSource};
    use std::borrow::Cow;
    use vision::TensorF32;

    fn le_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn outputs_aligned_in_the_slot_are_read_in_place_others_through_a_copy() {
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 2.0).collect();
        let bytes = le_bytes(&values);
        let mut buffer = vec![0u8; bytes.len() + 4];
        let aligned = buffer.as_ptr().align_offset(4);
        for at in [aligned, aligned + 1] {
            buffer[at..at + bytes.len()].copy_from_slice(&bytes);
            let t = SlotTensor::read(&buffer[at..at + bytes.len()], &[1, 4, 6]).expect("read");
            assert_eq!(t.view().shape, &[1, 4, 6]);
            assert_eq!(
                t.view().data,
                values.as_slice(),
                "{at} bytes into the buffer"
            );
            let in_place = matches!(t.data, Cow::Borrowed(_));
            assert_eq!(in_place, at == aligned && cfg!(target_endian = "little"));
        }
    }

    #[test]
    fn tensors_are_written_as_little_endian_bytes_and_a_wrong_place_is_an_error() {
        let tensors = vec![
            TensorF32::new(vec![2, 2], vec![1.5, -2.0, 3.25, 0.0]).expect("tensor"),
            TensorF32::new(vec![1], vec![7.0]).expect("tensor"),
        ];
        assert_eq!(tensors.shapes(), vec![vec![2, 2], vec![1]]);
        let mut out = vec![0u8; 16];
        tensors.write_le(0, &mut out).expect("write");
        assert_eq!(out, le_bytes(&[1.5, -2.0, 3.25, 0.0]));
        assert!(tensors.write_le(1, &mut out).is_err(), "16 bytes for 4");
        assert!(tensors.write_le(2, &mut out).is_err(), "no third tensor");
    }

    #[test]
    fn an_output_that_does_not_fill_its_shape_is_an_error() {
        let bytes = le_bytes(&[1.0, 2.0, 3.0]);
        let err = SlotTensor::read(&bytes, &[2, 2])
            .err()
            .expect("too few values");
        assert!(err.to_string().contains("model output"), "{err}");
    }
}
