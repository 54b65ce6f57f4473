//! YOLO (YOLOX, YOLOv5 and YOLOv8 output layouts, and CenterNet's): letterbox pre-processing, and
//! decoding + NMS back to original-frame pixels after the model.

use super::{from_json, row, to_json, vision_err, Output, Parts, Step};
use crate::table::detections::Extras;
use crate::StageError;
use protocol::messages::Envelope;
use serde::{Deserialize, Serialize};
use vision::geometry::Letterbox;
use vision::manifest::{Family, Manifest};
use vision::yolo::{self, YoloConfig, YoloLayout};
use vision::{RgbImage, RgbView, TensorF32};

/// How the letterboxed input relates to the frame.
#[derive(Serialize, Deserialize)]
struct Placement {
    ratio: f32,
    pad_x: usize,
    pad_y: usize,
}

struct YoloStep {
    pre: bool,
    cfg: YoloConfig,
}

pub fn step(
    manifest: &Manifest,
    model: &str,
    family: Family,
    pre: bool,
) -> Result<Box<dyn Step>, StageError> {
    let layout = match family {
        Family::Yolox => YoloLayout::Yolox,
        Family::Yolov5 => YoloLayout::Yolov5,
        Family::Centernet => YoloLayout::Centernet,
        _ => YoloLayout::Yolov8,
    };
    let params = manifest
        .model(model)
        .and_then(|e| e.yolo_params())
        .map_err(vision_err)?;
    Ok(Box::new(YoloStep {
        pre,
        cfg: YoloConfig::from_params(layout, &params),
    }))
}

/// Refuses, naming task and model, a `centernet` entry whose declared I/O cannot be CenterNet's.
pub fn check_centernet(
    entry: &vision::manifest::ModelEntry,
    task: &str,
    model: &str,
) -> Result<(), StageError> {
    let fail = |why: String| StageError::Input(format!("task '{task}', model `{model}`: {why}"));
    let params = entry.yolo_params().map_err(|e| fail(e.to_string()))?;
    vision::centernet::check_io(entry, params.input_size).map_err(fail)
}

impl Step for YoloStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError> {
        if self.pre {
            let (tensor, lb) = yolo::yolo_preprocess(img, &self.cfg).map_err(vision_err)?;
            let placement = Placement {
                ratio: lb.ratio,
                pad_x: lb.pad_x,
                pad_y: lb.pad_y,
            };
            return Ok(Output::Tensors {
                state: Some(to_json(&placement)?),
                tensors: vec![tensor],
            });
        }
        let p: Placement = from_json(parts)?;
        let lb = Letterbox {
            image: RgbImage::black(0, 0),
            ratio: p.ratio,
            pad_x: p.pad_x,
            pad_y: p.pad_y,
        };
        let out = outputs
            .first()
            .ok_or_else(|| StageError::Input("the YOLO model returned no output".into()))?;
        let dets = yolo::yolo_postprocess(out, &lb, img.width, img.height, &self.cfg)
            .map_err(vision_err)?;
        let rows = dets
            .iter()
            .map(|d| row(env, &d.class, d.score, &d.bbox))
            .collect();
        Ok(Output::Detections(rows, Extras::NONE))
    }
}
