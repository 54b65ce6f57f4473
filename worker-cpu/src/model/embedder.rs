//! The `embedder` family (DeepSORT's appearance model): pre-processing crops every
//! box of the item's detection table (the table travels on as the step's state);
//! post-processing adds the model's vectors to that table as an `embedding` column
//! (FixedSizeList<float32>) and keeps every other column, ready for `track.deepsort`.

use super::{Output, Parts, Step};
use crate::table::{decode_ipc, encode_ipc, rows_of};
use crate::StageError;
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use protocol::messages::Envelope;
use protocol::node::Node;
use std::sync::Arc;
use vision::embedder::{self, EmbedderParams};
use vision::manifest::ModelEntry;
use vision::{RgbView, TensorF32};

struct EmbedderStep {
    task: String,
    model: String,
    pre: bool,
    params: EmbedderParams,
}

pub fn step(node: &Node, entry: &ModelEntry, pre: bool) -> Result<Box<dyn Step>, StageError> {
    let params = embedder::params_of(entry).map_err(|e| StageError::Input(e.to_string()))?;
    Ok(Box::new(EmbedderStep {
        task: node.task.name.clone(),
        model: entry.name.clone(),
        pre,
        params,
    }))
}

impl EmbedderStep {
    fn err(&self, msg: impl std::fmt::Display) -> StageError {
        StageError::Input(format!(
            "task '{}', model `{}` (embedder): {msg}",
            self.task, self.model
        ))
    }
}

/// `batch` with an `embedding` column of `vectors` (one per row).
fn with_embeddings(
    batch: &RecordBatch,
    vectors: &[Vec<f32>],
    dim: usize,
) -> Result<RecordBatch, String> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut b =
        FixedSizeListBuilder::with_capacity(Float32Builder::new(), dim as i32, vectors.len())
            .with_field(item.clone());
    for v in vectors {
        b.values().append_slice(v);
        b.append(true);
    }
    let col: ArrayRef = Arc::new(b.finish());
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        if f.name() != "embedding" {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    fields.push(Field::new(
        "embedding",
        DataType::FixedSizeList(item, dim as i32),
        true,
    ));
    columns.push(col);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

impl Step for EmbedderStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        _env: &Envelope,
    ) -> Result<Output, StageError> {
        if self.pre {
            let table = parts.table.clone().ok_or_else(|| {
                self.err("the item carries no detection table to crop (put the embedder after a detector's model.postprocess)")
            })?;
            let batch = decode_ipc(&table).map_err(|e| self.err(e))?;
            let rows =
                rows_of(&batch).map_err(|e| self.err(format!("not a detection table: {e}")))?;
            let boxes: Vec<[f32; 4]> = rows.iter().map(|r| [r.x1, r.y1, r.x2, r.y2]).collect();
            let tensors = if boxes.is_empty() {
                vec![]
            } else {
                vec![embedder::preprocess(img, &boxes, &self.params).map_err(|e| self.err(e))?]
            };
            return Ok(Output::Tensors {
                state: Some(table),
                tensors,
            });
        }
        let table = parts
            .state
            .as_ref()
            .ok_or_else(|| self.err("the item carries no table from the pre-processing step"))?;
        let batch = decode_ipc(table).map_err(|e| self.err(e))?;
        let n = batch.num_rows();
        let vectors = if n == 0 {
            vec![]
        } else {
            let out = outputs
                .first()
                .ok_or_else(|| self.err("the model returned no output"))?;
            embedder::vectors(&self.model, out, n, &self.params)
                .map_err(|e| StageError::Input(format!("task '{}': {e}", self.task)))?
        };
        let out = with_embeddings(&batch, &vectors, self.params.dim).map_err(|e| self.err(e))?;
        Ok(Output::TableIpc(encode_ipc(&out).map_err(|e| self.err(e))?))
    }
}
