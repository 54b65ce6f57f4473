//! PP-OCRv4 as a cascade: text detection (DB post-process to quads), the angle
//! classifier on the crops (180° turns), and the recogniser with CTC decoding. Crops
//! are taken again from the frame in each step (cheap, and the frame is in shared
//! memory anyway) rather than shipped between processes.

use super::{from_json, row, to_json, vision_err, Output, Parts, Step};
use crate::table::detections::Extras;
use crate::StageError;
use protocol::messages::Envelope;
use serde::{Deserialize, Serialize};
use std::path::Path;
use vision::manifest::{ClsParams, DetParams, Family, Manifest, OutputHead, RecParams};
use vision::ppocr::det::{self, Quad};
use vision::ppocr::{self, rec, OcrGlobal, OcrTransform};
use vision::{RgbImage, RgbView, TensorF32};

/// What travels between the OCR steps.
#[derive(Serialize, Deserialize)]
struct OcrState {
    transform: OcrTransform,
    prep_w: usize,
    prep_h: usize,
    quads: Vec<Quad>,
    rotated: Vec<bool>,
    /// Crop indices in the order they were batched by the last step.
    order: Vec<usize>,
}

struct OcrStep {
    family: Family,
    pre: bool,
    global: OcrGlobal,
    det: DetParams,
    cls: ClsParams,
    rec: RecParams,
    dictionary: Vec<String>,
    /// The agent's recogniser session answers through the top-1 head (the manifest's
    /// `output_head`): `[N, T, 2]` instead of the class scores.
    rec_top1: bool,
}

pub fn step(
    manifest: &Manifest,
    dir: &Path,
    model: &str,
    family: Family,
    pre: bool,
) -> Result<Box<dyn Step>, StageError> {
    let find = |f: Family| {
        manifest
            .models
            .iter()
            .find(|m| m.family == f)
            .map(|m| m.name.clone())
            .ok_or_else(|| StageError::Unsupported(format!("the manifest has no {f:?} model")))
    };
    let det = manifest
        .model(&find(Family::PpocrDet)?)
        .and_then(|e| e.det_params())
        .map_err(vision_err)?;
    let cls = manifest
        .model(&find(Family::PpocrCls)?)
        .and_then(|e| e.cls_params())
        .map_err(vision_err)?;
    let rec_entry = manifest
        .model(&find(Family::PpocrRec)?)
        .map_err(vision_err)?;
    let rec_params = rec_entry.rec_params().map_err(vision_err)?;
    let mut dictionary = Vec::new();
    if family == Family::PpocrRec && !pre {
        // The CTC dictionary is stored in the recogniser's metadata (read from the file: a
        // runtime session only to read it cost a third of a second of start-up).
        let path = manifest.model_path(model, dir).map_err(vision_err)?;
        let bytes = std::fs::read(&path)
            .map_err(|e| StageError::Input(format!("model {model}: {}: {e}", path.display())))?;
        let key = &rec_params.dictionary_metadata_key;
        let chars = vision::onnx_graph::OnnxModel::parse(&bytes)
            .and_then(|m| m.metadata(key))
            .map_err(|e| {
                StageError::Input(format!(
                    "model {model}: {} is not an ONNX model the recogniser's dictionary can be read from: {e}",
                    path.display()
                ))
            })?
            .ok_or_else(|| {
                StageError::Input(format!(
                    "model {model} has no `{key}` metadata with its dictionary"
                ))
            })?;
        dictionary = rec::dictionary_from_metadata(&chars);
    }
    Ok(Box::new(OcrStep {
        family,
        pre,
        global: OcrGlobal {
            text_score: rec_params.text_score,
            ..OcrGlobal::default()
        },
        det,
        cls,
        rec: rec_params,
        dictionary,
        rec_top1: rec_entry.output_head() == OutputHead::Top1,
    }))
}

fn first_of(outputs: &[TensorF32], k: usize) -> Result<&TensorF32, StageError> {
    outputs
        .get(k)
        .ok_or_else(|| StageError::Input(format!("model output {k} is missing")))
}

impl OcrStep {
    fn crops(&self, img: RgbView<'_>, st: &OcrState) -> Result<Vec<RgbImage>, StageError> {
        let (prep, _) = ppocr::prepare(img, &self.global).map_err(vision_err)?;
        st.quads
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let c = ppocr::crop_quad(prep.view(), q).map_err(vision_err)?;
                Ok(if st.rotated.get(i).copied().unwrap_or(false) {
                    c.rotate180()
                } else {
                    c
                })
            })
            .collect()
    }
}

impl Step for OcrStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError> {
        match (self.family, self.pre) {
            (Family::PpocrDet, true) => {
                let (prep, transform) = ppocr::prepare(img, &self.global).map_err(vision_err)?;
                let tensor = det::det_preprocess(prep.view(), &self.det).map_err(vision_err)?;
                let st = OcrState {
                    transform,
                    prep_w: prep.width,
                    prep_h: prep.height,
                    quads: vec![],
                    rotated: vec![],
                    order: vec![],
                };
                Ok(Output::Tensors {
                    state: Some(to_json(&st)?),
                    tensors: vec![tensor],
                })
            }
            (Family::PpocrDet, false) => {
                let mut st: OcrState = from_json(parts)?;
                st.quads =
                    det::det_postprocess(first_of(&outputs, 0)?, st.prep_w, st.prep_h, &self.det)
                        .map_err(vision_err)?;
                st.rotated = vec![false; st.quads.len()];
                Ok(Output::State(to_json(&st)?))
            }
            (family, true) => {
                let mut st: OcrState = from_json(parts)?;
                let crops = self.crops(img, &st)?;
                st.order = ppocr::order_by_aspect(&crops);
                let per = if family == Family::PpocrCls {
                    self.cls.batch
                } else {
                    self.rec.batch
                }
                .max(1);
                let mut tensors = Vec::new();
                for chunk in st.order.chunks(per) {
                    let imgs: Vec<&RgbImage> = chunk.iter().map(|&i| &crops[i]).collect();
                    tensors.push(if family == Family::PpocrCls {
                        rec::cls_preprocess(&imgs, &self.cls).map_err(vision_err)?
                    } else {
                        rec::rec_preprocess(&imgs, &self.rec).map_err(vision_err)?
                    });
                }
                Ok(Output::Tensors {
                    state: Some(to_json(&st)?),
                    tensors,
                })
            }
            (Family::PpocrCls, false) => {
                let mut st: OcrState = from_json(parts)?;
                for (k, chunk) in st.order.clone().chunks(self.cls.batch.max(1)).enumerate() {
                    let res = rec::cls_postprocess(first_of(&outputs, k)?, chunk.len(), &self.cls)
                        .map_err(vision_err)?;
                    for (&i, r) in chunk.iter().zip(res) {
                        if rec::cls_is_rotated(r, &self.cls) {
                            st.rotated[i] = true;
                        }
                    }
                }
                Ok(Output::State(to_json(&st)?))
            }
            (_, false) => {
                let st: OcrState = from_json(parts)?;
                let mut texts = vec![(String::new(), 0.0f32); st.quads.len()];
                for (k, chunk) in st.order.chunks(self.rec.batch.max(1)).enumerate() {
                    let out = first_of(&outputs, k)?;
                    let res = if self.rec_top1 {
                        rec::rec_postprocess_top1(out, &self.dictionary)
                    } else {
                        rec::rec_postprocess(out, &self.dictionary)
                    }
                    .map_err(vision_err)?;
                    for (&i, r) in chunk.iter().zip(res) {
                        texts[i] = r;
                    }
                }
                let rows = st
                    .quads
                    .iter()
                    .zip(texts)
                    .filter(|(_, (_, s))| *s >= self.global.text_score)
                    .map(|(q, (text, score))| {
                        let (polygon, bbox) = ppocr::quad_geometry(&st.transform.to_origin(q));
                        let mut r = row(env, "text", score, &bbox);
                        r.text = Some(text);
                        r.text_score = Some(score);
                        r.polygon = Some(polygon);
                        r
                    })
                    .collect();
                Ok(Output::Detections(
                    rows,
                    Extras {
                        landmarks: false,
                        text: true,
                        polygon: true,
                    },
                ))
            }
        }
    }
}
