//! MTCNN as a cascade: P-Net over the image pyramid, R-Net and O-Net on the crops of
//! the surviving boxes. Pre-processing builds the net's input, post-processing turns
//! its outputs into boxes (state) or, after O-Net, faces with five landmarks.

use super::{from_json, row, to_json, vision_err, Output, Parts, Step, TensorSource};
use crate::table::detections::Extras;
use crate::StageError;
use protocol::messages::Envelope;
use vision::manifest::Manifest;
use vision::mtcnn::{self as m, FaceBox, MtcnnConfig};
use vision::{RgbView, TensorF32, TensorView};

#[derive(Clone, Copy, PartialEq)]
enum Net {
    P,
    R,
    O,
}

struct MtcnnStep {
    net: Net,
    pre: bool,
    cfg: MtcnnConfig,
}

pub fn step(manifest: &Manifest, model: &str, pre: bool) -> Result<Box<dyn Step>, StageError> {
    let net = match model {
        "mtcnn-pnet" => Net::P,
        "mtcnn-rnet" => Net::R,
        "mtcnn-onet" => Net::O,
        other => {
            return Err(StageError::Unsupported(format!(
                "unknown MTCNN net '{other}'"
            )))
        }
    };
    let p = manifest
        .model("mtcnn-pnet")
        .and_then(|e| e.mtcnn_params())
        .map_err(vision_err)?;
    let r = manifest
        .model("mtcnn-rnet")
        .and_then(|e| e.mtcnn_params())
        .map_err(vision_err)?;
    let o = manifest
        .model("mtcnn-onet")
        .and_then(|e| e.mtcnn_params())
        .map_err(vision_err)?;
    Ok(Box::new(MtcnnStep {
        net,
        pre,
        cfg: MtcnnConfig::from_params(&p, &r, &o),
    }))
}

impl Step for MtcnnStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        env: &Envelope,
    ) -> Result<Output, StageError> {
        let views: Vec<TensorView<'_>> = outputs.iter().map(TensorF32::view).collect();
        self.run_views(img, parts, &views, env)
    }

    /// The nets' outputs are only read: post-processing reads them in the slot.
    fn run_views(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: &[TensorView<'_>],
        env: &Envelope,
    ) -> Result<Output, StageError> {
        let cfg = &self.cfg;
        match (self.net, self.pre) {
            (Net::P, true) => {
                let scales = m::pyramid_scales(img.width, img.height, cfg);
                let pyramid = m::PnetPyramid::new(img, &scales, cfg).map_err(vision_err)?;
                Ok(Output::TensorsFrom {
                    state: None,
                    source: Box::new(pyramid),
                })
            }
            (Net::P, false) => {
                let scales = m::pyramid_scales(img.width, img.height, cfg);
                let per = if scales.is_empty() {
                    0
                } else {
                    outputs.len() / scales.len()
                };
                let mut cands = Vec::new();
                for (k, scale) in scales.iter().enumerate() {
                    let outs = &outputs[k * per..(k + 1) * per];
                    cands.extend(m::pnet_postprocess(outs, *scale, cfg).map_err(vision_err)?);
                }
                Ok(Output::State(to_json(&m::pnet_finalize(&cands, cfg))?))
            }
            (net, true) => {
                let boxes: Vec<FaceBox> = from_json(parts)?;
                let tensors = if boxes.is_empty() {
                    vec![]
                } else if net == Net::R {
                    vec![m::rnet_preprocess(img, &boxes, cfg).map_err(vision_err)?]
                } else {
                    vec![m::onet_preprocess(img, &boxes, cfg).map_err(vision_err)?]
                };
                Ok(Output::Tensors {
                    state: Some(to_json(&boxes)?),
                    tensors,
                })
            }
            (Net::R, false) => {
                let boxes: Vec<FaceBox> = from_json(parts)?;
                let next = if boxes.is_empty() {
                    boxes
                } else {
                    m::rnet_postprocess(&boxes, outputs, cfg).map_err(vision_err)?
                };
                Ok(Output::State(to_json(&next)?))
            }
            (Net::O, false) => {
                let boxes: Vec<FaceBox> = from_json(parts)?;
                let faces = if boxes.is_empty() {
                    vec![]
                } else {
                    m::onet_postprocess(&boxes, outputs, img.width, img.height, cfg)
                        .map_err(vision_err)?
                };
                let rows = faces
                    .iter()
                    .map(|d| {
                        let mut r = row(env, &d.class, d.score, &d.bbox);
                        r.landmarks = d.landmarks;
                        r
                    })
                    .collect();
                Ok(Output::Detections(rows, Extras::MTCNN))
            }
        }
    }
}

/// P-Net's pyramid, written level by level straight into the slot for the model stage.
impl TensorSource for m::PnetPyramid {
    fn shapes(&self) -> Vec<Vec<usize>> {
        m::PnetPyramid::shapes(self)
    }

    fn write_le(&self, k: usize, out: &mut [u8]) -> Result<(), StageError> {
        m::PnetPyramid::write_le(self, k, out).map_err(vision_err)
    }
}
