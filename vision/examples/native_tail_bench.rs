//! MoveNet MultiPose whole against cut at its heads with the native decoder
//! ([`vision::native_tail`]): both sessions as the agent on `cpu:0` loads them (one intra-op
//! thread, spinning off, the graph rewrites), alternating runs on the same input, the median
//! ms per run of each and the largest difference between their outputs.
//!
//! ```text
//! native_tail_bench MODEL.onnx IMAGE.png [ROUNDS]
//! ```
//! The image is pre-processed as the pose family does (padded square, 256²).

use std::process::ExitCode;
use std::time::Instant;

use vision::native_tail::NativeTail;
use vision::pose::{self, PoseParams};
use vision::{Model, Provider, RgbImage, Runtime, SessionOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("native_tail_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, image, rounds) = match args.as_slice() {
        [m, i] => (m, i, 50),
        [m, i, r] => (m, i, r.parse()?),
        _ => return Err("usage: native_tail_bench MODEL.onnx IMAGE.png [ROUNDS]".into()),
    };
    let rt = Runtime::from_env(Provider::Cpu)?;
    let opts = SessionOptions {
        intra_spinning: false,
        ..SessionOptions::default()
    };
    let path = std::path::Path::new(model);
    let mut whole = Model::load(&rt, "whole", path, &opts)?;
    let tail_opts = SessionOptions {
        native_tail: Some(NativeTail::MovenetMultipose),
        ..opts
    };
    let mut native = Model::load(&rt, "native", path, &tail_opts)?;
    let img = image::open(image)?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let img = RgbImage::new(img.into_raw(), w, h)?;
    let (input, _) = pose::preprocess(img.view(), &PoseParams::default())?;
    let input = std::slice::from_ref(&input);
    let (mut a_ms, mut b_ms, mut diff) = (Vec::new(), Vec::new(), 0f32);
    for round in 0..rounds + 3 {
        let t = Instant::now();
        let a = whole.run(input)?;
        let ta = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let b = native.run(input)?;
        let tb = t.elapsed().as_secs_f64() * 1e3;
        if round >= 3 {
            a_ms.push(ta);
            b_ms.push(tb);
        }
        for (x, y) in a[0].data.iter().zip(&b[0].data) {
            diff = diff.max((x - y).abs());
        }
    }
    let (a, b) = (median(a_ms), median(b_ms));
    println!(
        "{{\"whole_ms\": {a:.3}, \"native_tail_ms\": {b:.3}, \"speedup\": {:.3}, \"max_abs_diff\": {diff:e}, \"rounds\": {rounds}}}",
        a / b
    );
    Ok(())
}
