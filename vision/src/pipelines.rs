//! In-process end-to-end loops over the per-family steps, calling ORT directly: the reference the
//! multi-process pipeline is checked and benchmarked against. Each function only chains public steps,
//! so a pipeline stage can run any one of them on its own.

use std::path::Path;

use crate::engine::{Model, Runtime, SessionOptions};
use crate::error::Result;
use crate::geometry::Detection;
use crate::manifest::Manifest;
use crate::mtcnn::{self, MtcnnConfig};
use crate::tensor::RgbView;

fn load(
    rt: &Runtime,
    manifest: &Manifest,
    models_dir: &Path,
    name: &str,
    opts: &SessionOptions,
) -> Result<Model> {
    Model::load(rt, name, &manifest.model_path(name, models_dir)?, opts)
}

/// The three MTCNN nets and their parameters.
#[derive(Debug)]
pub struct FaceModels {
    pub pnet: Model,
    pub rnet: Model,
    pub onet: Model,
    pub config: MtcnnConfig,
}

impl FaceModels {
    /// Loads `mtcnn-pnet`, `mtcnn-rnet` and `mtcnn-onet` from the manifest.
    pub fn load(
        rt: &Runtime,
        manifest: &Manifest,
        models_dir: &Path,
        opts: &SessionOptions,
    ) -> Result<Self> {
        let p = manifest.model("mtcnn-pnet")?.mtcnn_params()?;
        let r = manifest.model("mtcnn-rnet")?.mtcnn_params()?;
        let o = manifest.model("mtcnn-onet")?.mtcnn_params()?;
        Ok(Self {
            pnet: load(rt, manifest, models_dir, "mtcnn-pnet", opts)?,
            rnet: load(rt, manifest, models_dir, "mtcnn-rnet", opts)?,
            onet: load(rt, manifest, models_dir, "mtcnn-onet", opts)?,
            config: MtcnnConfig::from_params(&p, &r, &o),
        })
    }
}

/// Faces with landmarks, like `MTCNN().detect_faces_raw(img)`.
pub fn detect_faces(m: &mut FaceModels, img: RgbView<'_>) -> Result<Vec<Detection>> {
    let cfg = m.config.clone();
    let mut cands = Vec::new();
    for scale in mtcnn::pyramid_scales(img.width, img.height, &cfg) {
        let input = mtcnn::pnet_preprocess(img, scale, &cfg)?;
        let out = m.pnet.run(&[input])?;
        cands.extend(mtcnn::pnet_postprocess(&out, scale, &cfg)?);
    }
    let boxes = mtcnn::pnet_finalize(&cands, &cfg);
    if boxes.is_empty() {
        return Ok(vec![]);
    }
    let out = m.rnet.run(&[mtcnn::rnet_preprocess(img, &boxes, &cfg)?])?;
    let boxes = mtcnn::rnet_postprocess(&boxes, &out, &cfg)?;
    if boxes.is_empty() {
        return Ok(vec![]);
    }
    let out = m.onet.run(&[mtcnn::onet_preprocess(img, &boxes, &cfg)?])?;
    mtcnn::onet_postprocess(&boxes, &out, img.width, img.height, &cfg)
}
