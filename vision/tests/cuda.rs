//! The CUDA provider against the CPU provider: the same faces on astronaut.png and the same
//! O-Net outputs. Needs a build with `--features cuda`, a CUDA device and the
//! onnxruntime-gpu library in `ORT_DYLIB_PATH`; skipped with the reason otherwise.
// Test code: a failed unwrap or expect is a failed test (clippy.toml allows them only
// inside #[test] functions, and these are helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use vision::device::detect;
use vision::engine::Model;
use vision::pipelines::{detect_faces, FaceModels};
use vision::{Detection, Provider, Runtime, SessionOptions, TensorF32};

/// The CPU and CUDA runtimes; `None` (the reason printed) where there is no CUDA here.
fn runtimes(test: &str, models: &[&str], media: &[&str]) -> Option<(Runtime, Runtime)> {
    let cpu = common::runtime(models, media)?;
    let cuda = if !cfg!(feature = "cuda") {
        Err("built without `--features cuda`".to_string())
    } else {
        let found = detect();
        eprintln!("device: {}", found.description);
        if found.device.starts_with("cuda") {
            cpu.with_provider(Provider::Cuda { device_id: 0 })
                .map_err(|e| format!("CUDA provider refused: {e}"))
        } else {
            Err(format!("no CUDA device: {}", found.description))
        }
    };
    match cuda {
        Ok(cuda) => Some((cpu, cuda)),
        Err(reason) => {
            // Straight to stderr, past the test harness's capture, so that `make test`
            // shows (and counts) the skip and its reason; on a line of its own, since the
            // harness may have begun its "test NAME ... " line.
            let _ = writeln!(std::io::stderr(), "\ntest skipped: {test}: {reason}");
            None
        }
    }
}

fn faces(rt: &Runtime) -> Vec<Detection> {
    let opts = SessionOptions {
        intra_threads: 1,
        warm_up: true,
        ..SessionOptions::default()
    };
    let mut models =
        FaceModels::load(rt, &common::manifest(), &common::models_dir(), &opts).unwrap();
    let img = common::load_media("astronaut.png");
    detect_faces(&mut models, img.view()).unwrap()
}

#[test]
fn cuda_provider_finds_the_same_faces_as_the_cpu_provider() {
    let Some((cpu, cuda)) = runtimes(
        "cuda_provider_finds_the_same_faces_as_the_cpu_provider",
        &["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
        &["astronaut.png"],
    ) else {
        return;
    };
    let on_cpu = faces(&cpu);
    let on_cuda = faces(&cuda);
    assert!(!on_cpu.is_empty());
    assert_eq!(
        on_cuda.len(),
        on_cpu.len(),
        "cuda {on_cuda:?}\ncpu {on_cpu:?}"
    );
    for (g, c) in on_cuda.iter().zip(&on_cpu) {
        let iou = g.bbox.iou(&c.bbox);
        let lm_err = g
            .landmarks
            .unwrap()
            .iter()
            .zip(c.landmarks.unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "face: IoU {iou:.5}, landmark diff {lm_err:.4} px, score {} vs {}",
            g.score, c.score
        );
        assert!(iou >= 0.99, "cuda box {:?} vs cpu {:?}", g.bbox, c.bbox);
        assert!(lm_err <= 0.5, "landmarks differ by {lm_err} px");
    }
}

#[test]
fn cuda_provider_computes_the_same_onet_outputs() {
    let Some((cpu, cuda)) = runtimes(
        "cuda_provider_computes_the_same_onet_outputs",
        &["mtcnn-onet"],
        &[],
    ) else {
        return;
    };
    let path = common::models_dir().join("mtcnn-onet.onnx");
    let opts = SessionOptions::default();
    let mut on_cpu = Model::load(&cpu, "mtcnn-onet", &path, &opts).unwrap();
    let mut on_cuda = Model::load(&cuda, "mtcnn-onet", &path, &opts).unwrap();
    // A batch of 8 deterministic, non-trivial 48×48 crops (this export takes NHWC).
    let n = 8 * 48 * 48 * 3;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 255) as f32 - 127.5) / 128.0)
        .collect();
    let input = TensorF32::new(vec![8, 48, 48, 3], data).unwrap();
    let a = on_cpu.run(std::slice::from_ref(&input)).unwrap();
    let b = on_cuda.run(std::slice::from_ref(&input)).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let diff = common::max_abs_diff(x, y);
        eprintln!("output {:?}: max |cpu - cuda| = {diff:e}", x.shape);
        assert!(diff < 1e-3, "outputs differ by {diff}");
    }
}
