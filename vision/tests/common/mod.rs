//! Shared helpers for the model tests: find the repo, the provisioned files and the runtime.
// Test code: a failed unwrap or expect is a failed test (clippy.toml allows them only
// inside #[test] functions, and these are helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vision::manifest::Manifest;
use vision::{Provider, RgbImage, Runtime, TensorF32};

/// Deterministic values in about [-1, 1] (xorshift of `seed`), for weights and inputs of
/// models a test builds.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The largest absolute difference between two outputs of the same shape.
pub fn max_abs_diff(a: &TensorF32, b: &TensorF32) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn models_dir() -> PathBuf {
    repo_root().join(".smartpipe/models")
}

pub fn manifest() -> Manifest {
    Manifest::load(&repo_root().join("apps/models.json")).expect("apps/models.json must load")
}

fn ort_lib() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
    }
}

/// The runtime, or `None` when the provisioned files are missing and SMARTPIPE_SKIP_MODEL_TESTS=1.
/// Without that variable, missing files fail the test with a message saying what to do.
pub fn runtime(models: &[&str], media: &[&str]) -> Option<Runtime> {
    let mut missing = vec![];
    let lib = ort_lib();
    if !lib.is_file() {
        missing.push(lib.clone());
    }
    for m in models {
        let p = models_dir().join(format!("{m}.onnx"));
        if !p.is_file() {
            missing.push(p);
        }
    }
    for m in media {
        let p = repo_root().join(".smartpipe/media").join(m);
        if !p.is_file() {
            missing.push(p);
        }
    }
    if !missing.is_empty() {
        if std::env::var("SMARTPIPE_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping: SMARTPIPE_SKIP_MODEL_TESTS=1 and {missing:?} missing");
            return None;
        }
        panic!("missing {missing:?}: run scripts/provision.sh (or set SMARTPIPE_SKIP_MODEL_TESTS=1 to skip model tests)");
    }
    Some(Runtime::init(&lib, Provider::Cpu).expect("ONNX Runtime must initialise"))
}

/// A file a test writes (a constructed model, garbage), in a folder of its own under the
/// system's temporary folder; the folder goes when this is dropped, also when the test fails.
pub struct ScratchFile {
    dir: PathBuf,
    pub path: PathBuf,
}

/// Writes `bytes` as `name` in a scratch folder for `tag` (unique to this test process).
pub fn scratch_file(tag: &str, name: &str, bytes: &[u8]) -> ScratchFile {
    let dir = std::env::temp_dir().join(format!("vision-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    ScratchFile { dir, path }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn load_media(name: &str) -> RgbImage {
    let path = repo_root().join(".smartpipe/media").join(name);
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    RgbImage::new(img.into_raw(), w, h).expect("valid image")
}

pub fn reference(name: &str) -> serde_json::Value {
    let path = repo_root().join("tests/fixtures/reference").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}
