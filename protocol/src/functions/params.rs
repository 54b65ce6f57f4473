//! The typed parameters of every built-in function: one struct per function, parsed
//! with serde (unknown fields refused, defaults as DESIGN.md gives them). `validate`
//! parses every task's params into its struct, and the stage that runs the task reads
//! them through the same struct, so a parameter cannot validate and then be read
//! differently (or not at all) at run time.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Parse a task's params object into the function's params struct.
pub fn parse<T: DeserializeOwned>(params: &Map<String, Value>) -> Result<T, serde_json::Error> {
    serde_json::from_value(Value::Object(params.clone()))
}

/// Whether a task's params parse into `T` (the registry's `check` entry).
pub(crate) fn check<T: DeserializeOwned>(params: &Map<String, Value>) -> Result<(), String> {
    parse::<T>(params).map(drop).map_err(|e| e.to_string())
}

/// `source.video`'s check: its params parse, and a `limit` reads at least one frame.
pub(crate) fn check_source_video(params: &Map<String, Value>) -> Result<(), String> {
    match parse::<SourceVideo>(params).map_err(|e| e.to_string())?.limit {
        Some(0) => Err(
            "limit 0 would read no frame: give the number of frames to read, or leave `limit` out to read the whole video"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// `image.show`'s check: its params parse, and a URL to stream to is of a protocol it
/// streams with.
pub(crate) fn check_image_show(params: &Map<String, Value>) -> Result<(), String> {
    let p = parse::<ImageShow>(params).map_err(|e| e.to_string())?;
    match p.path.as_deref().map(super::streamed_video) {
        Some(Err(why)) => Err(why),
        _ => Ok(()),
    }
}

/// `table.print`'s check: a known format, and a path for Parquet (a file, never stdout).
pub(crate) fn check_table_print(params: &Map<String, Value>) -> Result<(), String> {
    let p = parse::<TablePrint>(params).map_err(|e| e.to_string())?;
    if p.formulas != FORMULAS_KEEP && p.formulas != FORMULAS_ESCAPE {
        return Err(format!(
            "formulas '{}' is not one of keep, escape",
            p.formulas
        ));
    }
    if p.formulas == FORMULAS_ESCAPE && p.format != "csv" {
        return Err(format!(
            "formulas 'escape' is for csv, which spreadsheets open; format '{}' is not read as formulas",
            p.format
        ));
    }
    match (p.format.as_str(), &p.path) {
        ("parquet", None) => Err("format parquet writes a file: give its `path`".into()),
        ("pretty" | "csv" | "jsonl" | "parquet", _) => Ok(()),
        (other, _) => Err(format!(
            "format '{other}' is not one of pretty, csv, jsonl, parquet"
        )),
    }
}

/// `table.select`'s check: each column named once (a table with two columns of one name
/// is a Parquet file no reader opens).
pub(crate) fn check_table_select(params: &Map<String, Value>) -> Result<(), String> {
    let p = parse::<TableSelect>(params).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    match p.columns.iter().find(|c| !seen.insert(c.as_str())) {
        Some(twice) => Err(format!(
            "column '{twice}' is named twice: a table has each column once"
        )),
        None => Ok(()),
    }
}

fn gradient() -> String {
    "gradient".into()
}
fn hundred() -> u64 {
    100
}
fn twenty_five() -> f64 {
    25.0
}
fn pretty() -> String {
    "pretty".into()
}
fn embedding() -> String {
    "embedding".into()
}
fn thousand() -> u64 {
    1000
}

/// `source.images {path, fps?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceImages {
    pub path: String,
    #[serde(default)]
    pub fps: f64,
}

/// `source.video {path, limit?, fps?, read_timeout_s = 30, reconnect?, start_s = 0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceVideo {
    pub path: String,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub fps: f64,
    /// Seconds the source waits for the decoder's next frame before it ends the stream
    /// (a network stream that stopped sending); 0 waits for ever.
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: f64,
    /// Whether a stream that ends or goes silent is opened again (default: for URLs of
    /// live protocols, RTSP, RTMP, RTP, SRT, UDP, TCP).
    #[serde(default)]
    pub reconnect: Option<bool>,
    /// Seconds into the video to start from: the frames before are not read (ffmpeg seeks
    /// to the key frame before it and decodes from there, so the first frame is exact).
    #[serde(default)]
    pub start_s: f64,
    /// What the supervisor's probe found of a URL, so the head does not probe it again (a
    /// live MPEG-TS takes ffprobe 5 s, at every restart), or of a file, with the file's
    /// stamp then (the head probes a file that changed since). Not an app parameter:
    /// `validate` refuses it in an app file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed: Option<ProbedStream>,
}

/// A stream's size as its frames are decoded, and whether it is live (`source.video`'s
/// `probed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbedStream {
    pub width: u32,
    pub height: u32,
    pub live: bool,
    /// A file's stamp when it was probed (`None`: a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileStamp>,
}

/// A file's length and modification time: a probe of it holds while they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    pub len: u64,
    pub modified_ns: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` now (`None`: no such file, or no modification time).
    pub fn of(path: impl AsRef<std::path::Path>) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?;
        let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(FileStamp {
            len: meta.len(),
            modified_ns: u64::try_from(since.as_nanos()).ok()?,
        })
    }
}

impl ProbedStream {
    /// Whether a head may take this probe instead of its own: a URL's always (the
    /// supervisor probed it just before), a file's while it keeps the stamp it had.
    pub fn holds_for(&self, path: &str) -> bool {
        match self.file {
            None => true,
            Some(stamp) => FileStamp::of(path) == Some(stamp),
        }
    }
}

/// `source.video`'s default `read_timeout_s`: far more than a local file or a live
/// stream's connection takes to give a frame.
pub const DEFAULT_READ_TIMEOUT_S: f64 = 30.0;

fn default_read_timeout_s() -> f64 {
    DEFAULT_READ_TIMEOUT_S
}

/// `image.gen {width, height, count = 100, fps = 0, pattern = gradient}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageGen {
    pub width: u32,
    pub height: u32,
    #[serde(default = "hundred")]
    pub count: u64,
    #[serde(default)]
    pub fps: f64,
    #[serde(default = "gradient")]
    pub pattern: String,
}

/// `image.resize {width, height}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageResize {
    pub width: u32,
    pub height: u32,
}

/// `image.crop {x, y, width, height}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCrop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// `image.show {dir}` or `{path, fps = 25}`, `mask = blend | cutout | none`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShow {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "twenty_five")]
    pub fps: f64,
    #[serde(default)]
    pub mask: Option<String>,
}

/// `table.print {format = pretty, path?, formulas = keep}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePrint {
    #[serde(default = "pretty")]
    pub format: String,
    #[serde(default)]
    pub path: Option<String>,
    /// csv: `keep` (default) writes text cells as they are; `escape` puts a `'` before a
    /// text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first).
    #[serde(default = "keep")]
    pub formulas: String,
}

/// `table.print {formulas}`'s values.
pub const FORMULAS_KEEP: &str = "keep";
pub const FORMULAS_ESCAPE: &str = "escape";

fn keep() -> String {
    FORMULAS_KEEP.into()
}

/// `table.filter {where}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilter {
    #[serde(rename = "where")]
    pub predicate: String,
}

/// `table.select {columns}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSelect {
    pub columns: Vec<String>,
}

/// One column name or a list of them (`table.merge`'s `on`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `table.merge {on?, how = join | concat}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMerge {
    #[serde(default)]
    pub on: Option<OneOrMany>,
    #[serde(default)]
    pub how: Option<String>,
}

/// `track.deepsort {max_age?, n_init?, max_cosine_distance?, max_iou_distance?,
/// nn_budget?, embedding = embedding}` (absent numbers keep the tracker's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackDeepsort {
    #[serde(default)]
    pub max_age: Option<u32>,
    #[serde(default)]
    pub n_init: Option<u32>,
    #[serde(default)]
    pub max_cosine_distance: Option<f64>,
    #[serde(default)]
    pub max_iou_distance: Option<f64>,
    #[serde(default)]
    pub nn_budget: Option<usize>,
    #[serde(default = "embedding")]
    pub embedding: String,
}

/// `model.preprocess {model}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPreprocess {
    pub model: String,
}

/// `model.inference {model, output_slot_mb = 64}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInference {
    pub model: String,
    #[serde(default)]
    pub output_slot_mb: Option<u64>,
}

/// `model.postprocess {model, scale?}` (`scale`: a super-resolution model's factor,
/// filled in from the manifest when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPostprocess {
    pub model: String,
    #[serde(default)]
    pub scale: Option<u64>,
}

/// Functions that take no parameters (`core.forward`, `bench.sink`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `bench.blob {bytes, count, fps = 0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchBlob {
    pub bytes: usize,
    pub count: u64,
    #[serde(default)]
    pub fps: f64,
}

/// `test.fault {mode, after = 0, stall_ms = 1000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFault {
    pub mode: String,
    #[serde(default)]
    pub after: u64,
    #[serde(default = "thousand")]
    pub stall_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::{FileStamp, ProbedStream};

    #[test]
    fn a_files_probe_holds_while_the_file_keeps_its_stamp() {
        let dir = std::env::temp_dir().join(format!("probed-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("v.mp4");
        let path = file.to_str().expect("utf-8 path");
        std::fs::write(&file, b"a video").expect("write");
        let probed = |file| ProbedStream {
            width: 64,
            height: 48,
            live: false,
            file,
        };
        let stamped = probed(FileStamp::of(path));
        assert!(stamped.file.is_some());
        assert!(stamped.holds_for(path));
        std::fs::write(&file, b"another, longer video").expect("rewrite");
        assert!(!stamped.holds_for(path), "the file changed since its probe");
        std::fs::remove_file(&file).expect("remove");
        assert!(!stamped.holds_for(path), "the file is gone");
        assert!(
            probed(None).holds_for("rtsp://camera.invalid/s"),
            "a URL's probe"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
