//! In-process end-to-end loops over the per-family steps, calling ORT directly: the reference the
//! multi-process pipeline is checked and benchmarked against. Each function only chains public steps,
//! so a pipeline stage can run any one of them on its own.

use std::path::Path;

use crate::engine::{Model, Runtime, SessionOptions};
use crate::error::{Result, VisionError};
use crate::geometry::Detection;
use crate::manifest::{ClsParams, DetParams, Family, Manifest, RecParams};
use crate::mtcnn::{self, MtcnnConfig};
use crate::ppocr::{self, det, rec, OcrGlobal, TextLine};
use crate::tensor::{RgbImage, RgbView, TensorF32};
use crate::yolo::{self, YoloConfig, YoloLayout};

fn load(
    rt: &Runtime,
    manifest: &Manifest,
    models_dir: &Path,
    name: &str,
    opts: &SessionOptions,
) -> Result<Model> {
    let entry = manifest.model(name)?;
    let opts = SessionOptions {
        native_tail: entry.native_tail,
        ..opts.clone()
    };
    let mut model = Model::load(rt, name, &manifest.model_path(name, models_dir)?, &opts)?;
    model.set_strips(entry.strips);
    model.set_max_run_values(entry.max_run_values);
    Ok(model)
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
    let scales = mtcnn::pyramid_scales(img.width, img.height, &cfg);
    for (input, scale) in mtcnn::pnet_preprocess_pyramid(img, &scales, &cfg)?
        .into_iter()
        .zip(scales)
    {
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

/// The three PP-OCR models, their parameters and the recogniser's dictionary.
#[derive(Debug)]
pub struct OcrModels {
    pub det: Model,
    pub cls: Model,
    pub rec: Model,
    pub det_params: DetParams,
    pub cls_params: ClsParams,
    pub rec_params: RecParams,
    pub global: OcrGlobal,
    /// CTC dictionary: "blank", the model's characters, " ".
    pub dictionary: Vec<String>,
}

impl OcrModels {
    /// Loads `ppocr-det`, `ppocr-cls` and `ppocr-rec` and reads the dictionary from the rec model.
    pub fn load(
        rt: &Runtime,
        manifest: &Manifest,
        models_dir: &Path,
        opts: &SessionOptions,
    ) -> Result<Self> {
        let rec_params = manifest.model("ppocr-rec")?.rec_params()?;
        let rec = load(rt, manifest, models_dir, "ppocr-rec", opts)?;
        let key = &rec_params.dictionary_metadata_key;
        let chars = rec.metadata(key)?.ok_or_else(|| VisionError::Metadata {
            model: rec.name().to_string(),
            msg: format!("no `{key}` key with the CTC dictionary"),
        })?;
        Ok(Self {
            det: load(rt, manifest, models_dir, "ppocr-det", opts)?,
            cls: load(rt, manifest, models_dir, "ppocr-cls", opts)?,
            det_params: manifest.model("ppocr-det")?.det_params()?,
            cls_params: manifest.model("ppocr-cls")?.cls_params()?,
            global: OcrGlobal {
                text_score: rec_params.text_score,
                ..OcrGlobal::default()
            },
            dictionary: rec::dictionary_from_metadata(&chars),
            rec_params,
            rec,
        })
    }
}

fn first(out: Vec<TensorF32>, model: &Model) -> Result<TensorF32> {
    out.into_iter().next().ok_or_else(|| VisionError::Output {
        model: model.name().to_string(),
        output: "0".into(),
        msg: "model returned no output".into(),
    })
}

/// Text lines in reading order, like `RapidOCR()(img)`.
pub fn read_text(m: &mut OcrModels, img: RgbView<'_>) -> Result<Vec<TextLine>> {
    let (prep, t) = ppocr::prepare(img, &m.global)?;
    let out = m
        .det
        .run(&[det::det_preprocess(prep.view(), &m.det_params)?])?;
    let quads = det::det_postprocess(&first(out, &m.det)?, prep.width, prep.height, &m.det_params)?;
    let mut crops = quads
        .iter()
        .map(|q| ppocr::crop_quad(prep.view(), q))
        .collect::<Result<Vec<_>>>()?;
    // angle classifier, batched in aspect-ratio order
    let order = ppocr::order_by_aspect(&crops);
    for batch in order.chunks(m.cls_params.batch.max(1)) {
        let imgs: Vec<&RgbImage> = batch.iter().map(|&i| &crops[i]).collect();
        let out = m.cls.run(&[rec::cls_preprocess(&imgs, &m.cls_params)?])?;
        let res = rec::cls_postprocess(&first(out, &m.cls)?, batch.len(), &m.cls_params)?;
        for (&i, r) in batch.iter().zip(res) {
            if rec::cls_is_rotated(r, &m.cls_params) {
                crops[i] = crops[i].rotate180();
            }
        }
    }
    // recogniser, batched the same way (padding width depends on the batch)
    let mut texts = vec![(String::new(), 0.0f32); crops.len()];
    for batch in ppocr::order_by_aspect(&crops).chunks(m.rec_params.batch.max(1)) {
        let imgs: Vec<&RgbImage> = batch.iter().map(|&i| &crops[i]).collect();
        let out = m.rec.run(&[rec::rec_preprocess(&imgs, &m.rec_params)?])?;
        let res = rec::rec_postprocess(&first(out, &m.rec)?, &m.dictionary)?;
        for (&i, r) in batch.iter().zip(res) {
            texts[i] = r;
        }
    }
    Ok(quads
        .iter()
        .zip(texts)
        .filter(|(_, (_, s))| *s >= m.global.text_score)
        .map(|(q, (text, text_score))| {
            let (polygon, bbox) = ppocr::quad_geometry(&t.to_origin(q));
            TextLine {
                text,
                text_score,
                polygon,
                bbox,
            }
        })
        .collect())
}

/// A YOLO model with its settings.
#[derive(Debug)]
pub struct YoloModel {
    pub model: Model,
    pub config: YoloConfig,
}

impl YoloModel {
    /// Loads a `yolox`, `yolov5` or `yolov8` family model from the manifest.
    pub fn load(
        rt: &Runtime,
        manifest: &Manifest,
        models_dir: &Path,
        name: &str,
        opts: &SessionOptions,
    ) -> Result<Self> {
        let e = manifest.model(name)?;
        let layout = match e.family {
            Family::Yolox => YoloLayout::Yolox,
            Family::Yolov5 => YoloLayout::Yolov5,
            Family::Yolov8 => YoloLayout::Yolov8,
            Family::Centernet => YoloLayout::Centernet,
            other => {
                return Err(VisionError::Param {
                    name: "family".into(),
                    msg: format!("model `{name}` is {other:?}, not a YOLO model"),
                })
            }
        };
        let config = YoloConfig::from_params(layout, &e.yolo_params()?);
        Ok(Self {
            model: load(rt, manifest, models_dir, name, opts)?,
            config,
        })
    }
}

/// Objects detected by a YOLO-family model (named for the YOLOX check against ddddocr).
pub fn detect_yolox(m: &mut YoloModel, img: RgbView<'_>) -> Result<Vec<Detection>> {
    let (input, lb) = yolo::yolo_preprocess(img, &m.config)?;
    let out = m.model.run(&[input])?;
    yolo::yolo_postprocess(
        &first(out, &m.model)?,
        &lb,
        img.width,
        img.height,
        &m.config,
    )
}
