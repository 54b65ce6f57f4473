//! Times MTCNN's CPU pre-processing on one frame of a raw RGB file (tools/bench, issue 14):
//! the P-Net pyramid level by level and in one pass, and the R-Net crops of synthetic boxes.
//! `prep_bench RAW_RGB WIDTH HEIGHT [ROUNDS]`; prints one JSON object.

use std::time::Instant;

use serde_json::json;
use vision::mtcnn::{self, FaceBox, MtcnnConfig};
use vision::RgbView;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: prep_bench RAW_RGB WIDTH HEIGHT [ROUNDS]");
        std::process::exit(2)
    };
    let (Some(path), Some(w), Some(h)) = (
        args.get(1),
        args.get(2).and_then(|v| v.parse::<usize>().ok()),
        args.get(3).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        usage()
    };
    let rounds: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(50);
    let data = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("prep_bench: {path}: {e}");
        std::process::exit(2)
    });
    let Some(frame) = data.get(..w * h * 3) else {
        eprintln!("prep_bench: {path} holds less than one {w}x{h} frame");
        std::process::exit(2)
    };
    let img = RgbView::new(frame, w, h).unwrap_or_else(|e| {
        eprintln!("prep_bench: {e}");
        std::process::exit(2)
    });
    let cfg = MtcnnConfig::default();
    let scales = mtcnn::pyramid_scales(w, h, &cfg);
    // the median of `rounds` calls, in ms (this VM's noise makes means wander)
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut ms: Vec<f64> = (0..rounds.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2] * 1000.0).round() / 1000.0
    };
    let mut same = true;
    let one_pass = time(&mut || {
        std::hint::black_box(mtcnn::pnet_preprocess_pyramid(img, &scales, &cfg).ok());
    });
    let by_level = time(&mut || {
        let v: Vec<_> = scales
            .iter()
            .map(|&s| mtcnn::pnet_preprocess(img, s, &cfg).ok())
            .collect();
        std::hint::black_box(v);
    });
    if let Ok(a) = mtcnn::pnet_preprocess_pyramid(img, &scales, &cfg) {
        for (t, &s) in a.iter().zip(&scales) {
            same &= mtcnn::pnet_preprocess(img, s, &cfg).ok().as_ref() == Some(t);
        }
    }
    // boxes as P-Net leaves them: squares of 12 / scale pixels over the frame
    let mut boxes = Vec::new();
    let mut seed = 7u32;
    for (k, &s) in scales.iter().enumerate() {
        let side = 12.0 / s;
        for _ in 0..(40 >> k.min(5)).max(2) {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f64::from(seed >> 8) / f64::from(1u32 << 24) * (w as f64 - side);
            let y = f64::from(seed & 0xff) / 255.0 * (h as f64 - side);
            boxes.push(FaceBox {
                x1: x.floor(),
                y1: y.floor(),
                x2: (x + side).floor(),
                y2: (y + side).floor(),
                score: 0.9,
            });
        }
    }
    let crops = time(&mut || {
        std::hint::black_box(mtcnn::rnet_preprocess(img, &boxes, &cfg).ok());
    });
    println!(
        "{}",
        json!({"frame": [w, h], "levels": scales.len(), "rounds": rounds,
               "pyramid_median_ms": {"one_pass": one_pass, "level_by_level": by_level},
               "pyramid_same_tensors": same,
               "rnet_crops": boxes.len(), "rnet_crops_median_ms": crops})
    );
}
