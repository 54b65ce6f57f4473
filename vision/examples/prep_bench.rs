//! Times MTCNN's CPU pre-processing on one frame of a raw RGB file (issue 14): P-Net's pyramid
//! written into a stage's slot level by level (resized alone, then copied) and in one pass
//! (written straight in, as the pipeline's stage does), in interleaved rounds, and the R-Net
//! crops of synthetic boxes; and MoveNet's input for the pose app.
//! `prep_bench RAW_RGB WIDTH HEIGHT [ROUNDS]`; prints one JSON object.

use std::time::Instant;

use serde_json::json;
use vision::mtcnn::{self, FaceBox, MtcnnConfig};
use vision::pose::{self, PoseParams};
use vision::RgbView;

/// The frame file's bytes, the frame's size and the rounds, from the command line; exits with
/// a message on bad arguments.
fn read_args() -> (Vec<u8>, usize, usize, usize) {
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
    if data.len() < w * h * 3 {
        eprintln!("prep_bench: {path} holds less than one {w}x{h} frame");
        std::process::exit(2)
    }
    (data, w, h, rounds)
}

/// Boxes as P-Net leaves them: squares of 12 / scale pixels over a `w`×`h` frame, fewer for
/// the smaller levels.
fn synthetic_boxes(scales: &[f64], w: usize, h: usize) -> Vec<FaceBox> {
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
    boxes
}

fn main() {
    let (data, w, h, rounds) = read_args();
    let frame = &data[..w * h * 3];
    let img = RgbView::new(frame, w, h).unwrap_or_else(|e| {
        eprintln!("prep_bench: {e}");
        std::process::exit(2)
    });
    let cfg = MtcnnConfig::default();
    let scales = mtcnn::pyramid_scales(w, h, &cfg);
    // The stage's work for one frame, both ways, into one buffer as the stage's slot:
    // level by level (each level resized alone into a tensor, then copied in as bytes), and
    // in one pass written straight in (what `model.preprocess` of mtcnn-pnet does now).
    let sizes: Vec<usize> = scales
        .iter()
        .map(|&s| {
            let (lw, lh) = mtcnn::scaled_size(w, h, s);
            lw * lh * 3 * 4
        })
        .collect();
    let mut slot = vec![0u8; sizes.iter().sum()];
    let by_level = |slot: &mut [u8]| -> Option<()> {
        let mut at = 0;
        for &s in &scales {
            let t = mtcnn::pnet_preprocess(img, s, &cfg).ok()?;
            for (d, v) in slot[at..at + t.data.len() * 4]
                .chunks_exact_mut(4)
                .zip(&t.data)
            {
                d.copy_from_slice(&v.to_le_bytes());
            }
            at += t.data.len() * 4;
        }
        Some(())
    };
    let one_pass = |slot: &mut [u8]| -> Option<()> {
        let pyramid = mtcnn::PnetPyramid::new(img, &scales, &cfg).ok()?;
        let mut at = 0;
        for (k, &len) in sizes.iter().enumerate() {
            pyramid.write_le(k, &mut slot[at..at + len]).ok()?;
            at += len;
        }
        Some(())
    };
    let mut other = slot.clone();
    let same = by_level(&mut slot).is_some() && one_pass(&mut other).is_some() && slot == other;
    // interleaved rounds, the order swapped every round, so that a slow spell hurts both
    let (mut t_level, mut t_pass) = (Vec::new(), Vec::new());
    for r in 0..rounds.max(1) {
        for side in [r % 2, 1 - r % 2] {
            let t = Instant::now();
            if side == 0 {
                std::hint::black_box(by_level(&mut slot));
                t_level.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                std::hint::black_box(one_pass(&mut slot));
                t_pass.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    // the median of `rounds` calls, in ms (this VM's noise makes means wander)
    let median = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2] * 1000.0).round() / 1000.0
    };
    let time = |f: &mut dyn FnMut()| {
        f();
        median(
            (0..rounds.max(1))
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let boxes = synthetic_boxes(&scales, w, h);
    let crops = time(&mut || {
        std::hint::black_box(mtcnn::rnet_preprocess(img, &boxes, &cfg).ok());
    });
    // MoveNet's input (pose app): the frame padded to a square, 256², truncated
    let pose_params = PoseParams::default();
    let movenet = time(&mut || {
        std::hint::black_box(pose::preprocess(img, &pose_params).ok());
    });
    println!(
        "{}",
        json!({"frame": [w, h], "levels": scales.len(), "rounds": rounds,
               "movenet_pre_median_ms": movenet,
               "pyramid_into_slot_median_ms": {"one_pass": median(t_pass), "level_by_level": median(t_level)},
               "pyramid_same_bytes": same,
               "rnet_crops": boxes.len(), "rnet_crops_median_ms": crops})
    );
}
