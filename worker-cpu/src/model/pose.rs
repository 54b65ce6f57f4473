//! The `pose` family's CPU steps (MoveNet MultiPose): `model.preprocess` pads the frame to a
//! square and resizes it into the network input; `model.postprocess` turns the `[1, 6, 56]`
//! output into a table with one row per person: the detection columns (`class` = `person`,
//! `score`, `x1`…`y2` = the person's box in frame pixels) plus `keypoints`, 17 × (x, y, score)
//! in COCO order (`vision::pose::COCO_KEYPOINTS`), which `image.show` draws as a skeleton.

use super::{from_json, to_json, Output, Parts, Step};
use crate::table::detections::{detections_batch, DetectionRow, Extras};
use crate::StageError;
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use protocol::messages::Envelope;
use std::sync::Arc;
use vision::manifest::Manifest;
use vision::pose::{self, Person, Placement, PoseParams, KEYPOINTS};
use vision::{RgbView, TensorF32};

/// Name of the keypoints column: 17 × (x, y, score), frame pixels.
pub const KEYPOINTS_COLUMN: &str = "keypoints";

struct PoseStep {
    pre: bool,
    task: String,
    model: String,
    params: PoseParams,
}

/// The step of `task` for pose model `model` (`slot`: the byte size of this stage's output
/// slots, checked for `model.preprocess`); refuses a model whose declared
/// I/O or params cannot be MoveNet MultiPose's, or whose network input does not fit the slots,
/// naming task and model.
pub fn step(
    manifest: &Manifest,
    task: &str,
    model: &str,
    pre: bool,
    slot: Option<u64>,
) -> Result<Box<dyn Step>, StageError> {
    let fail = |why: String| StageError::Input(format!("task '{task}', model `{model}`: {why}"));
    let entry = manifest.model(model).map_err(|e| fail(e.to_string()))?;
    let params = entry.pose_params().map_err(|e| fail(e.to_string()))?;
    params
        .check()
        .map_err(|(field, msg)| fail(format!("{field}: {msg}")))?;
    pose::check_io(entry, &params).map_err(fail)?;
    let s = params.input_size as u64;
    let need = s * s * 3 * 4;
    if let Some(slot) = slot.filter(|&slot| pre && need > slot) {
        return Err(fail(format!(
            "the network input ({s}×{s}×3 floats, {need} bytes) does not fit the {slot}-byte slots planned for this stage; lower params.input_size"
        )));
    }
    Ok(Box::new(PoseStep {
        pre,
        task: task.to_string(),
        model: model.to_string(),
        params,
    }))
}

impl Step for PoseStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError> {
        let named = |e: vision::VisionError| super::task_model_error(&self.task, &self.model, e);
        if self.pre {
            let (tensor, placement) = pose::preprocess(img, &self.params).map_err(named)?;
            return Ok(Output::Tensors {
                state: Some(to_json(&placement)?),
                tensors: vec![tensor],
            });
        }
        let placement: Placement = from_json(parts)?;
        let out = super::first_output(&outputs, &self.task, &self.model)?;
        let people = pose::postprocess(out, &placement, img.width, img.height, &self.params)
            .map_err(named)?;
        Ok(Output::Table(people_table(env, &people)?, None))
    }
}

/// The detection columns of the people plus `keypoints`.
pub fn people_table(env: &Envelope, people: &[Person]) -> Result<RecordBatch, StageError> {
    let rows: Vec<DetectionRow> = people
        .iter()
        .map(|p| super::row(env, "person", p.score, &p.bbox))
        .collect();
    let base =
        detections_batch(&rows, Extras::NONE).map_err(|e| StageError::Input(e.to_string()))?;
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let n = (KEYPOINTS * 3) as i32;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    fields.push(Field::new(
        KEYPOINTS_COLUMN,
        DataType::FixedSizeList(item.clone(), n),
        false,
    ));
    let mut list = FixedSizeListBuilder::with_capacity(
        Float32Builder::with_capacity(people.len() * KEYPOINTS * 3),
        n,
        people.len(),
    )
    .with_field(item);
    for p in people {
        for k in &p.keypoints {
            list.values().append_slice(k);
        }
        list.append(true);
    }
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    columns.push(Arc::new(list.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| StageError::Input(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::{decode_ipc, encode_ipc, rows_of};
    use protocol::messages::Payload;
    use vision::BBox;

    #[test]
    fn a_person_row_keeps_the_detection_columns_and_adds_keypoints() {
        let env = Envelope {
            app: "a".into(),
            source: "cam".into(),
            seq: 4,
            created_ns: 0,
            hops: vec![],
            payload: Payload::State(vec![]),
        };
        let mut keypoints = [[0.0; 3]; KEYPOINTS];
        keypoints[16] = [7.0, 8.0, 0.9];
        let person = Person {
            score: 0.8,
            bbox: BBox::new(1.0, 2.0, 3.0, 4.0),
            keypoints,
        };
        let table = people_table(&env, &[person]).unwrap();
        let back = decode_ipc(&encode_ipc(&table).unwrap()).unwrap();
        let names: Vec<String> = back
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "source",
                "seq",
                "class",
                "score",
                "x1",
                "y1",
                "x2",
                "y2",
                "keypoints"
            ]
        );
        let rows = rows_of(&back).unwrap();
        assert_eq!(
            (rows[0].class.as_str(), rows[0].seq, rows[0].x2),
            ("person", 4, 3.0)
        );
        let kps = crate::table::skeleton::keypoints_of(&back)
            .unwrap()
            .unwrap();
        assert_eq!(kps[0][16], [7.0, 8.0, 0.9]);
        let empty = people_table(&env, &[]).unwrap();
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(empty.schema(), table.schema());
    }
}
