//! The `segmentation` family's CPU steps: `model.preprocess` resizes and normalises the
//! frame into the network input; `model.postprocess` turns the model's alpha or logits into
//! a mask of the frame's size (sent on beside the frame as an encoded mask, for
//! `image.show`) and a table with one row per class present: the detection columns
//! (`class`, `score` = mean alpha or probability, `x1`…`y2` = the class's box) plus `area`
//! (pixels of the frame).

use super::{Output, Parts, Step};
use crate::table::detections::{detections_batch, DetectionRow, Extras};
use crate::StageError;
use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use protocol::messages::Envelope;
use std::sync::Arc;
use vision::manifest::{Manifest, ModelEntry};
use vision::segment::{self, Region, SegmentParams};
use vision::{RgbView, TensorF32};

struct SegmentStep {
    pre: bool,
    task: String,
    model: String,
    params: SegmentParams,
}

/// The step of `task` for segmentation model `model`; refuses a model whose declared
/// input or output cannot be a segmentation network's.
pub fn step(
    manifest: &Manifest,
    task: &str,
    model: &str,
    pre: bool,
) -> Result<Box<dyn Step>, StageError> {
    let fail = |why: String| StageError::Input(format!("task '{task}', model `{model}`: {why}"));
    let entry = manifest.model(model).map_err(|e| fail(e.to_string()))?;
    let params = entry.segment_params().map_err(|e| fail(e.to_string()))?;
    params.check().map_err(|e| fail(format!("params.{e}")))?;
    check_io(entry, &params).map_err(fail)?;
    Ok(Box::new(SegmentStep {
        pre,
        task: task.to_string(),
        model: model.to_string(),
        params,
    }))
}

/// What a segmentation network looks like: one `[N,3,H,W]` input (H, W = `input_size` where
/// fixed) and 4-D outputs.
fn check_io(entry: &ModelEntry, p: &SegmentParams) -> Result<(), String> {
    let family = "a segmentation model takes one [N,3,H,W] input";
    if entry.inputs.len() > 1 {
        return Err(format!("declares {} inputs; {family}", entry.inputs.len()));
    }
    if let Some(i) = entry.inputs.first() {
        let s = &i.shape;
        if s.len() != 4 || !(s[1] == 3 || s[1] == -1) || (s[1] == -1 && s[3] == 3) {
            return Err(format!(
                "input `{}` has shape {:?}; {family} (is this model of another family?)",
                i.name, s
            ));
        }
        let [h, w] = p.input_size;
        if (s[2] != -1 && s[2] != h as i64) || (s[3] != -1 && s[3] != w as i64) {
            return Err(format!(
                "params.input_size {:?} does not fit input `{}` of shape {:?}",
                p.input_size, i.name, s
            ));
        }
    }
    if let Some(o) = entry.outputs.iter().find(|o| o.shape.len() != 4) {
        return Err(format!(
            "output `{}` has shape {:?}; a segmentation model outputs [N,C,H,W] (is this model of another family?)",
            o.name, o.shape
        ));
    }
    Ok(())
}

impl Step for SegmentStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        _parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError> {
        let named = |e: vision::VisionError| super::task_model_error(&self.task, &self.model, e);
        if self.pre {
            let tensor = segment::preprocess(img, &self.params).map_err(named)?;
            return Ok(Output::Tensors {
                state: None,
                tensors: vec![tensor],
            });
        }
        let out = super::first_output(&outputs, &self.task, &self.model)?;
        let (mask, regions) =
            segment::postprocess(out, img.width, img.height, &self.params).map_err(named)?;
        let table = region_table(env, &regions)?;
        Ok(Output::Table(table, Some(mask.encode())))
    }

    fn outputs_read(&self) -> Option<usize> {
        // Only the first output (the alpha or the logits) is read, after inference.
        (!self.pre).then_some(1)
    }
}

/// The detection columns of the regions plus `area`.
pub fn region_table(env: &Envelope, regions: &[Region]) -> Result<RecordBatch, StageError> {
    let rows: Vec<DetectionRow> = regions
        .iter()
        .map(|r| super::row(env, &r.class, r.score, &r.bbox))
        .collect();
    let base =
        detections_batch(&rows, Extras::NONE).map_err(|e| StageError::Input(e.to_string()))?;
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("area", DataType::UInt64, false));
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from_iter_values(
        regions.iter().map(|r| r.area),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| StageError::Input(e.to_string()))
}
