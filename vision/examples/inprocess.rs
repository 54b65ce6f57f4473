//! In-process reference loops for `tools/bench/models.sh` (issue 3): the same ONNX Runtime calls the
//! pipeline makes, in one process, with no IPC, so that the multi-process pipeline's overhead can be
//! measured against it. Prints one JSON object on stdout.
//!
//! ```text
//! inprocess faces RAW_RGB WIDTH HEIGHT FRAMES [THREADS]  # detect_faces over frames decoded up front
//! inprocess ocr THREADS IMAGE...                          # read_text over images decoded up front
//! inprocess load MODEL[,MODEL…] [THREADS]                 # load the models (with warm-up) in one process, exit
//! inprocess none                                          # ONNX Runtime initialised, no model
//! ```
//!
//! Environment: ORT_DYLIB_PATH (required), SMARTPIPE_MANIFEST (default apps/models.json),
//! SMARTPIPE_MODELS_DIR (default .smartpipe/models), SMARTPIPE_DEVICE (`cuda:N` runs on the CUDA
//! provider; build with `--features cuda`), SMARTPIPE_CUDNN_CONV_SEARCH, SMARTPIPE_ORT_MEM_PATTERN,
//! SMARTPIPE_ORT_PROFILE, SMARTPIPE_GRAPH_REWRITES (vision::SessionOptions::with_env). Models are
//! loaded like the GPU agent loads them: `intra_threads` = THREADS (default 2, the agent uses the machine's cores), warm-up on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use vision::manifest::Manifest;
use vision::pipelines::{detect_faces, read_text, FaceModels, OcrModels};
use vision::{Model, Provider, RgbImage, Runtime, SessionOptions};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(default),
    }
}

/// VmRSS and VmHWM of this process, in KiB.
fn memory() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    json!({"vm_rss_kb": field("VmRSS:"), "vm_hwm_kb": field("VmHWM:")})
}

fn die(msg: String) -> ! {
    eprintln!("inprocess: {msg}");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(format!("argument {i} ({what}) missing or invalid")))
}

/// A second, untimed-for-throughput pass with the steps of `detect_faces` timed one by one:
/// milliseconds per frame spent in pre-processing, ORT and post-processing, per net.
fn profile_faces(m: &mut FaceModels, frames: &[RgbImage]) -> Value {
    use vision::mtcnn;
    let mut t = [0f64; 9]; // [pnet pre, ort, post, rnet ..., onet ...]
    let mut rnet_boxes = 0usize;
    let mut clock = Instant::now();
    let mut lap = |slot: usize, t: &mut [f64; 9]| {
        t[slot] += clock.elapsed().as_secs_f64() * 1e3;
        clock = Instant::now();
    };
    let cfg = m.config.clone();
    macro_rules! ok {
        ($e:expr) => {
            $e.unwrap_or_else(|e| die(e.to_string()))
        };
    }
    for f in frames {
        let img = f.view();
        lap(8, &mut t);
        let mut cands = Vec::new();
        let scales = mtcnn::pyramid_scales(img.width, img.height, &cfg);
        let inputs = ok!(mtcnn::pnet_preprocess_pyramid(img, &scales, &cfg));
        lap(0, &mut t);
        for (input, scale) in inputs.into_iter().zip(scales) {
            let out = ok!(m.pnet.run(&[input]));
            lap(1, &mut t);
            cands.extend(ok!(mtcnn::pnet_postprocess(&out, scale, &cfg)));
            lap(2, &mut t);
        }
        let boxes = mtcnn::pnet_finalize(&cands, &cfg);
        lap(2, &mut t);
        if boxes.is_empty() {
            continue;
        }
        rnet_boxes += boxes.len();
        let input = ok!(mtcnn::rnet_preprocess(img, &boxes, &cfg));
        lap(3, &mut t);
        let out = ok!(m.rnet.run(&[input]));
        lap(4, &mut t);
        let boxes = ok!(mtcnn::rnet_postprocess(&boxes, &out, &cfg));
        lap(5, &mut t);
        if boxes.is_empty() {
            continue;
        }
        let input = ok!(mtcnn::onet_preprocess(img, &boxes, &cfg));
        lap(6, &mut t);
        let out = ok!(m.onet.run(&[input]));
        lap(7, &mut t);
        ok!(mtcnn::onet_postprocess(
            &boxes, &out, img.width, img.height, &cfg
        ));
        lap(8, &mut t);
    }
    let n = frames.len().max(1) as f64;
    let r = |v: f64| (v / n * 100.0).round() / 100.0;
    json!({"pnet_pre": r(t[0]), "pnet_ort": r(t[1]), "pnet_post": r(t[2]),
           "rnet_pre": r(t[3]), "rnet_ort": r(t[4]), "rnet_post": r(t[5]),
           "onet_pre": r(t[6]), "onet_ort": r(t[7]), "onet_post": r(t[8]),
           "rnet_boxes_per_frame": rnet_boxes as f64 / n})
}

/// A second pass over the images with the steps of `read_text` timed one by one: milliseconds per
/// image spent in pre-processing, ORT and post-processing, per model (crops count as cls pre).
fn profile_ocr(m: &mut OcrModels, images: &[(String, RgbImage)]) -> Value {
    use vision::ppocr::{self, det, rec};
    let mut t = [0f64; 9]; // det pre, ort, post; cls pre, ort, post; rec pre, ort, post
    let mut clock = Instant::now();
    let mut lap = |slot: usize, t: &mut [f64; 9]| {
        t[slot] += clock.elapsed().as_secs_f64() * 1e3;
        clock = Instant::now();
    };
    macro_rules! ok {
        ($e:expr) => {
            $e.unwrap_or_else(|e| die(e.to_string()))
        };
    }
    let first = |v: Vec<vision::TensorF32>| {
        v.into_iter()
            .next()
            .unwrap_or_else(|| die("a model returned no output".into()))
    };
    for (_, img) in images {
        lap(8, &mut t);
        let (prep, _) = ok!(ppocr::prepare(img.view(), &m.global));
        let input = ok!(det::det_preprocess(prep.view(), &m.det_params));
        lap(0, &mut t);
        let out = first(ok!(m.det.run(&[input])));
        lap(1, &mut t);
        let quads = ok!(det::det_postprocess(
            &out,
            prep.width,
            prep.height,
            &m.det_params
        ));
        lap(2, &mut t);
        let mut crops: Vec<RgbImage> = quads
            .iter()
            .map(|q| ok!(ppocr::crop_quad(prep.view(), q)))
            .collect();
        let order = ppocr::order_by_aspect(&crops);
        for batch in order.chunks(m.cls_params.batch.max(1)) {
            lap(5, &mut t);
            let imgs: Vec<&RgbImage> = batch.iter().map(|&i| &crops[i]).collect();
            let input = ok!(rec::cls_preprocess(&imgs, &m.cls_params));
            lap(3, &mut t);
            let out = first(ok!(m.cls.run(&[input])));
            lap(4, &mut t);
            let res = ok!(rec::cls_postprocess(&out, batch.len(), &m.cls_params));
            for (&i, r) in batch.iter().zip(res) {
                if rec::cls_is_rotated(r, &m.cls_params) {
                    crops[i] = crops[i].rotate180();
                }
            }
        }
        for batch in ppocr::order_by_aspect(&crops).chunks(m.rec_params.batch.max(1)) {
            lap(8, &mut t);
            let imgs: Vec<&RgbImage> = batch.iter().map(|&i| &crops[i]).collect();
            let input = ok!(rec::rec_preprocess(&imgs, &m.rec_params));
            lap(6, &mut t);
            let out = first(ok!(m.rec.run(&[input])));
            lap(7, &mut t);
            ok!(rec::rec_postprocess(&out, &m.dictionary));
        }
        lap(8, &mut t);
    }
    let n = images.len().max(1) as f64;
    let r = |v: f64| (v / n * 100.0).round() / 100.0;
    json!({"det_pre": r(t[0]), "det_ort": r(t[1]), "det_post": r(t[2]),
           "cls_pre": r(t[3]), "cls_ort": r(t[4]), "cls_post": r(t[5]),
           "rec_pre": r(t[6]), "rec_ort": r(t[7]), "rec_post": r(t[8])})
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    // The agent's device choice: `$SMARTPIPE_DEVICE` (`cuda:N` needs `--features cuda`).
    let provider: Provider = std::env::var("SMARTPIPE_DEVICE")
        .unwrap_or_else(|_| "cpu:0".into())
        .parse()
        .unwrap_or_else(|e: vision::VisionError| die(e.to_string()));
    let rt = Runtime::from_env(provider).unwrap_or_else(|e| die(e.to_string()));
    let env_opts = SessionOptions::default()
        .with_env()
        .unwrap_or_else(|e| die(e.to_string()));
    let manifest = Manifest::load(&env_path("SMARTPIPE_MANIFEST", "apps/models.json"))
        .unwrap_or_else(|e| die(e.to_string()));
    let models_dir = env_path("SMARTPIPE_MODELS_DIR", ".smartpipe/models");
    let opts = |threads: usize| SessionOptions {
        intra_threads: threads,
        warm_up: true,
        ..env_opts.clone()
    };
    let out = match mode.as_str() {
        "faces" => {
            let raw: String = arg(&args, 1, "raw rgb24 file");
            let (w, h, n): (usize, usize, usize) = (
                arg(&args, 2, "width"),
                arg(&args, 3, "height"),
                arg(&args, 4, "frames"),
            );
            let threads: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(2);
            let bytes = std::fs::read(&raw).unwrap_or_else(|e| die(format!("{raw}: {e}")));
            let size = w * h * 3;
            if bytes.len() < size * n {
                die(format!(
                    "{raw} holds {} frames, {n} asked",
                    bytes.len() / size
                ));
            }
            let frames: Vec<RgbImage> = bytes
                .chunks_exact(size)
                .take(n)
                .map(|c| RgbImage::new(c.to_vec(), w, h).unwrap_or_else(|e| die(e.to_string())))
                .collect();
            drop(bytes);
            let t0 = Instant::now();
            let mut models = FaceModels::load(&rt, &manifest, &models_dir, &opts(threads))
                .unwrap_or_else(|e| die(e.to_string()));
            let load_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut counts = Vec::with_capacity(n);
            for f in &frames {
                let faces =
                    detect_faces(&mut models, f.view()).unwrap_or_else(|e| die(e.to_string()));
                counts.push(faces.len());
            }
            let loop_s = t1.elapsed().as_secs_f64();
            let memory = memory();
            let profile = profile_faces(&mut models, &frames);
            json!({"mode": "faces", "frames": n, "threads": threads, "load_s": load_s,
                   "loop_s": loop_s, "fps": n as f64 / loop_s, "faces_per_frame": counts,
                   "memory": memory, "profile_ms_per_frame": profile})
        }
        "ocr" => {
            let threads: usize = arg(&args, 1, "threads");
            let images: Vec<(String, RgbImage)> = args[2..]
                .iter()
                .map(|p| {
                    let img = image::open(p)
                        .unwrap_or_else(|e| die(format!("{p}: {e}")))
                        .to_rgb8();
                    let (w, h) = (img.width() as usize, img.height() as usize);
                    let img =
                        RgbImage::new(img.into_raw(), w, h).unwrap_or_else(|e| die(e.to_string()));
                    (p.clone(), img)
                })
                .collect();
            let t0 = Instant::now();
            let mut models = OcrModels::load(&rt, &manifest, &models_dir, &opts(threads))
                .unwrap_or_else(|e| die(e.to_string()));
            let load_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut texts = Vec::new();
            for (p, img) in &images {
                let lines =
                    read_text(&mut models, img.view()).unwrap_or_else(|e| die(e.to_string()));
                texts.push(json!({"image": p,
                                  "texts": lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>()}));
            }
            let loop_s = t1.elapsed().as_secs_f64();
            let memory = memory();
            let profile = profile_ocr(&mut models, &images);
            json!({"mode": "ocr", "images": images.len(), "threads": threads, "load_s": load_s,
                   "loop_s": loop_s, "per_s": images.len() as f64 / loop_s, "results": texts,
                   "memory": memory, "profile_ms_per_image": profile})
        }
        "load" => {
            let names: String = arg(&args, 1, "model name(s), comma-separated");
            let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
            let t0 = Instant::now();
            let models: Vec<Model> = names
                .split(',')
                .map(|name| {
                    let path = manifest
                        .model_path(name, &models_dir)
                        .unwrap_or_else(|e| die(e.to_string()));
                    Model::load(&rt, name, &path, &opts(threads))
                        .unwrap_or_else(|e| die(e.to_string()))
                })
                .collect();
            let load_s = t0.elapsed().as_secs_f64();
            let mem = memory();
            drop(models);
            json!({"mode": "load", "model": names, "threads": threads, "load_s": load_s, "memory": mem})
        }
        "none" => json!({"mode": "none", "memory": memory()}),
        other => die(format!(
            "unknown mode `{other}`: faces | ocr | load | none (see the file's header)"
        )),
    };
    println!("{out}");
}
