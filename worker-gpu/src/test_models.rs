//! Helpers for the agent's tests that load real sessions: the ONNX Runtime (or none,
//! to skip, when it is not provisioned and SMARTPIPE_SKIP_MODEL_TESTS=1) and hosted
//! models from the provisioned files.

use crate::residency::AgentModel;
use std::path::PathBuf;
use vision::{Provider, Runtime, SessionOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The runtime, or `None` when ONNX Runtime is not provisioned and
/// SMARTPIPE_SKIP_MODEL_TESTS=1 (as vision's model tests do).
pub fn runtime() -> Option<Runtime> {
    let lib = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
    };
    if !lib.is_file() && std::env::var("SMARTPIPE_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        return None;
    }
    Some(Runtime::init(&lib, Provider::Cpu).expect("ONNX Runtime (run scripts/provision.sh)"))
}

/// Session options that load the files as they are: the residency tests count each model at
/// its file's bytes (the CPU rewrites grow MTCNN's graphs a little — PReLU's constants — and
/// what a grown graph is counted is tested on UpConv7).
pub fn files_as_they_are() -> SessionOptions {
    SessionOptions {
        graph_rewrites: false,
        ..SessionOptions::default()
    }
}

pub fn model(name: &str, file: &str) -> AgentModel {
    let path = root().join(".smartpipe/models").join(file);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(1000);
    AgentModel {
        name: name.into(),
        path: path.display().to_string(),
        bytes,
        max_rows: None,
        max_run_values: None,
        native_tail: None,
        own_arena: false,
        strips: None,
        top1_outputs: false,
        winograd: true,
        outputs: vec![],
    }
}

/// MTCNN's three models, named `pnet`, `rnet` and `onet`, as the provisioned files.
pub fn mtcnn() -> (AgentModel, AgentModel, AgentModel) {
    (
        model("pnet", "mtcnn-pnet.onnx"),
        model("rnet", "mtcnn-rnet.onnx"),
        model("onet", "mtcnn-onet.onnx"),
    )
}
