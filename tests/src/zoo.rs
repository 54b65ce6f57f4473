//! Set-up shared by the model-family tests (pose, segmentation, YOLOv8, …): the provisioned
//! ONNX Runtime library and models, a `supervisor` command pointed at them, and the project's
//! Python environment that runs the families' reference transcriptions.

use crate::{repo_root, supervisor, with_models};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ONNX Runtime library `scripts/provision.sh` installs, relative to the repository.
pub const ORT_LIB: &str = ".smartpipe/lib/libonnxruntime.so.1.32.0";

/// `supervisor` with the provisioned models and ONNX Runtime, and `manifest` instead of the
/// repository's model manifest when one is given.
pub fn model_command(manifest: Option<&Path>) -> Command {
    let mut cmd = supervisor();
    with_models(&mut cmd).env("ORT_DYLIB_PATH", repo_root().join(ORT_LIB));
    if let Some(m) = manifest {
        cmd.env("SMARTPIPE_MANIFEST", m);
    }
    cmd
}

/// Fails the test, naming the file, when ONNX Runtime or `model` is not provisioned.
pub fn require_model(model: &str) {
    let root = repo_root();
    for f in [
        root.join(ORT_LIB),
        root.join(format!(".smartpipe/models/{model}.onnx")),
    ] {
        assert!(
            f.is_file(),
            "{} is missing: run scripts/provision.sh (make test does)",
            f.display()
        );
    }
}

/// The project's Python (`.smartpipe/venv`) that runs the reference scripts, or `None` after
/// printing why the caller skips.
pub fn reference_python() -> Option<PathBuf> {
    let python = repo_root().join(".smartpipe/venv/bin/python");
    if python.is_file() {
        Some(python)
    } else {
        println!(
            "skipped: {} is missing (scripts/provision.sh makes it)",
            python.display()
        );
        None
    }
}
