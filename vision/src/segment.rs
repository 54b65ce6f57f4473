//! The `segmentation` family: pre-processing (resize to the network input, per-channel
//! `(x − mean) / std`, NCHW) and post-processing of the two output layouts:
//!
//! - `alpha`: a single-channel alpha/mask `[N,1,H,W]` in 0..1 (ISNet, UNet-like matting nets),
//!   turned into 8-bit alpha and resized back to the frame;
//! - `logits`: multi-class scores `[N,C,H,W]` (DeepLab/FCN layout), arg-max per pixel at the
//!   network's resolution, the class map resized back to the frame (nearest).
//!
//! Both give a [`Mask`] of the frame's size and one [`Region`] per class present (area in pixels,
//! box, mean score). The resize is the bilinear of `@imgly/background-removal-node` 1.4.5
//! (`tensorResizeBilinear`: source = destination × scale, no half-pixel shift, rounded to 8 bits),
//! so ISNet's masks match the package's own pre/post-processing.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};
use crate::geometry::BBox;
use crate::tensor::{RgbView, TensorF32};

pub use crate::segment_mask::{Mask, MaskKind};

/// Parameters of a segmentation model (manifest `params`, overridable per task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentParams {
    /// `alpha` ([N,1,H,W] in 0..1) or `logits` ([N,C,H,W], arg-max).
    pub output: String,
    /// Network input `[height, width]`.
    pub input_size: [usize; 2],
    /// Channel order fed to the network: `rgb` or `bgr`.
    pub color: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Class names: one (the foreground) for `alpha`, C for `logits` (index 0 = background).
    pub classes: Vec<String>,
    /// `alpha` ≥ threshold counts as foreground in the table (area, box).
    pub threshold: f32,
    /// Frames with a side shorter than this are refused as too small for the model.
    pub min_side: usize,
}

impl Default for SegmentParams {
    fn default() -> Self {
        Self {
            output: "alpha".into(),
            input_size: [1024, 1024],
            color: "rgb".into(),
            mean: [128.0; 3],
            std: [256.0; 3],
            classes: vec!["foreground".into()],
            threshold: 0.5,
            min_side: 8,
        }
    }
}

impl SegmentParams {
    /// Checks the values serde cannot: names the field and what is wrong.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !matches!(self.output.as_str(), "alpha" | "logits") {
            return Err(format!(
                "output: `{}` is not `alpha` or `logits`",
                self.output
            ));
        }
        if !matches!(self.color.as_str(), "rgb" | "bgr") {
            return Err(format!("color: `{}` is not `rgb` or `bgr`", self.color));
        }
        if self.input_size.iter().any(|&d| d == 0 || d > 8192) {
            return Err(format!(
                "input_size {:?}: each side must be 1..8192",
                self.input_size
            ));
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err("std: must be finite and non-zero".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("threshold {}: must be within 0..1", self.threshold));
        }
        if self.output == "alpha" && self.classes.len() != 1 {
            return Err("classes: an `alpha` model has exactly one class (its foreground)".into());
        }
        if self.classes.len() > 256 {
            return Err("classes: at most 256".into());
        }
        Ok(())
    }

    fn is_alpha(&self) -> bool {
        self.output == "alpha"
    }
}

/// One class present in a mask: its pixels in the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub class: String,
    /// Class index (0 for an alpha mask's foreground).
    pub index: usize,
    /// Pixels of the frame.
    pub area: u64,
    /// Mean alpha (alpha) or mean soft-max probability (logits) over the class's pixels.
    pub score: f32,
    /// Box in frame pixels (`x2`, `y2` exclusive).
    pub bbox: BBox,
}

/// Per-axis taps of the package's bilinear: (lower index, upper index, fraction).
fn taps(src: usize, dst: usize) -> Vec<(usize, usize, f64)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let s = d as f64 * scale;
            let lo = s.floor().max(0.0) as usize;
            let hi = (s.ceil() as usize).min(src - 1);
            (lo.min(src - 1), hi, s - lo as f64)
        })
        .collect()
}

/// Bilinear resize of interleaved 8-bit pixels (`channels` per pixel) as
/// `@imgly/background-removal-node`'s `tensorResizeBilinear` does it.
pub fn resize_bilinear_u8(
    src: &[u8],
    (sw, sh): (usize, usize),
    channels: usize,
    (dw, dh): (usize, usize),
) -> Result<Vec<u8>> {
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 || src.len() != sw * sh * channels {
        return Err(VisionError::Image(format!(
            "cannot resize {sw}x{sh}x{channels} ({} bytes) to {dw}x{dh}",
            src.len()
        )));
    }
    let (tx, ty) = (taps(sw, dw), taps(sh, dh));
    let mut out = vec![0u8; dw * dh * channels];
    for (y, &(y1, y2, dy)) in ty.iter().enumerate() {
        let (r1, r2) = (y1 * sw * channels, y2 * sw * channels);
        let row = &mut out[y * dw * channels..(y + 1) * dw * channels];
        for (x, &(x1, x2, dx)) in tx.iter().enumerate() {
            for c in 0..channels {
                let p1 = src[r1 + x1 * channels + c] as f64;
                let p2 = src[r1 + x2 * channels + c] as f64;
                let p3 = src[r2 + x1 * channels + c] as f64;
                let p4 = src[r2 + x2 * channels + c] as f64;
                let v = (1.0 - dx) * (1.0 - dy) * p1
                    + dx * (1.0 - dy) * p2
                    + (1.0 - dx) * dy * p3
                    + dx * dy * p4;
                // JavaScript's Math.round: half up.
                row[x * channels + c] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

/// The network input `[1,3,H,W]` for a frame; refuses frames smaller than `min_side`.
pub fn preprocess(img: RgbView<'_>, p: &SegmentParams) -> Result<TensorF32> {
    if img.width < p.min_side || img.height < p.min_side {
        return Err(VisionError::Image(format!(
            "frame {}x{} is too small for the model: each side must be at least {} px (params.min_side)",
            img.width, img.height, p.min_side
        )));
    }
    let [h, w] = p.input_size;
    let resized = resize_bilinear_u8(img.data, (img.width, img.height), 3, (w, h))?;
    let plane = w * h;
    let mut data = vec![0f32; 3 * plane];
    let order: [usize; 3] = if p.color == "bgr" {
        [2, 1, 0]
    } else {
        [0, 1, 2]
    };
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for (c, &src_c) in order.iter().enumerate() {
            data[c * plane + i] = (px[src_c] as f32 - p.mean[c]) / p.std[c];
        }
    }
    TensorF32::new(vec![1, 3, h, w], data)
}

/// The mask and regions of a frame from the model's first output.
pub fn postprocess(
    out: &TensorF32,
    frame_w: usize,
    frame_h: usize,
    p: &SegmentParams,
) -> Result<(Mask, Vec<Region>)> {
    let shape = &out.shape;
    let want_c = if p.is_alpha() { 1 } else { p.classes.len() };
    let ok = shape.len() == 4 && shape[0] == 1 && shape[2] > 0 && shape[3] > 0;
    if !ok || (p.is_alpha() && shape[1] != 1) || (!p.is_alpha() && shape[1] < 2) {
        let layout = if p.is_alpha() {
            "[1,1,H,W] (alpha)"
        } else {
            "[1,C,H,W] with C ≥ 2 (logits)"
        };
        return Err(VisionError::Shape {
            what: "segmentation output".into(),
            expected: layout.into(),
            got: shape.clone(),
        });
    }
    if !p.classes.is_empty() && shape[1] != want_c {
        return Err(VisionError::Shape {
            what: "segmentation output".into(),
            expected: format!("{want_c} channel(s), one per class of params.classes"),
            got: shape.clone(),
        });
    }
    let (mh, mw) = (shape[2], shape[3]);
    if p.is_alpha() {
        // The package's convertFloat32ToUint8: Uint8Array assignment truncates.
        let alpha: Vec<u8> = out.data[..mh * mw]
            .iter()
            .map(|&v| (v as f64 * 255.0).clamp(0.0, 255.0) as u8)
            .collect();
        let data = resize_bilinear_u8(&alpha, (mw, mh), 1, (frame_w, frame_h))?;
        let mask = Mask::new(MaskKind::Alpha, frame_w, frame_h, data)?;
        let regions = alpha_regions(&mask, p);
        return Ok((mask, regions));
    }
    let (classes, probs) = argmax(out, shape[1], mh * mw);
    let data = resize_nearest(&classes, (mw, mh), (frame_w, frame_h));
    let mask = Mask::new(MaskKind::Classes, frame_w, frame_h, data)?;
    let regions = class_regions(&mask, &classes, &probs, shape[1], p);
    Ok((mask, regions))
}

/// Arg-max class and its soft-max probability per pixel of a `[1,C,H,W]` tensor.
fn argmax(out: &TensorF32, c: usize, plane: usize) -> (Vec<u8>, Vec<f32>) {
    let mut classes = vec![0u8; plane];
    let mut probs = vec![0f32; plane];
    for i in 0..plane {
        let (mut best, mut best_v) = (0usize, f32::NEG_INFINITY);
        for k in 0..c {
            let v = out.data[k * plane + i];
            if v > best_v {
                (best, best_v) = (k, v);
            }
        }
        let sum: f32 = (0..c)
            .map(|k| (out.data[k * plane + i] - best_v).exp())
            .sum();
        classes[i] = best as u8;
        probs[i] = if sum.is_finite() && sum > 0.0 {
            1.0 / sum
        } else {
            0.0
        };
    }
    (classes, probs)
}

/// Nearest-neighbour resize of a one-byte-per-pixel map (pixel centres aligned).
fn resize_nearest(src: &[u8], (sw, sh): (usize, usize), (dw, dh): (usize, usize)) -> Vec<u8> {
    let xs: Vec<usize> = (0..dw)
        .map(|x| (((x as f64 + 0.5) * sw as f64 / dw as f64) as usize).min(sw - 1))
        .collect();
    let mut out = Vec::with_capacity(dw * dh);
    for y in 0..dh {
        let sy = (((y as f64 + 0.5) * sh as f64 / dh as f64) as usize).min(sh - 1);
        out.extend(xs.iter().map(|&sx| src[sy * sw + sx]));
    }
    out
}

/// Area, box and pixel-sum accumulators per class.
#[derive(Clone)]
struct Acc {
    area: u64,
    sum: f64,
    x1: usize,
    y1: usize,
    x2: usize,
    y2: usize,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            area: 0,
            sum: 0.0,
            x1: usize::MAX,
            y1: usize::MAX,
            x2: 0,
            y2: 0,
        }
    }
    fn add(&mut self, x: usize, y: usize, v: f64) {
        self.area += 1;
        self.sum += v;
        self.x1 = self.x1.min(x);
        self.y1 = self.y1.min(y);
        self.x2 = self.x2.max(x + 1);
        self.y2 = self.y2.max(y + 1);
    }
    fn region(&self, class: String, index: usize, score: f32) -> Region {
        Region {
            class,
            index,
            area: self.area,
            score,
            bbox: BBox::new(
                self.x1 as f32,
                self.y1 as f32,
                self.x2 as f32,
                self.y2 as f32,
            ),
        }
    }
}

fn alpha_regions(mask: &Mask, p: &SegmentParams) -> Vec<Region> {
    let cut = (p.threshold * 255.0).ceil() as u8;
    let mut acc = Acc::new();
    for (i, &a) in mask.data.iter().enumerate() {
        if a >= cut && a > 0 {
            acc.add(i % mask.width, i / mask.width, a as f64 / 255.0);
        }
    }
    if acc.area == 0 {
        return Vec::new();
    }
    let score = (acc.sum / acc.area as f64) as f32;
    vec![acc.region(p.classes[0].clone(), 0, score)]
}

fn class_regions(
    mask: &Mask,
    classes: &[u8],
    probs: &[f32],
    c: usize,
    p: &SegmentParams,
) -> Vec<Region> {
    let mut accs = vec![Acc::new(); c];
    for (i, &k) in mask.data.iter().enumerate() {
        accs[k as usize].add(i % mask.width, i / mask.width, 0.0);
    }
    // Scores at the network's resolution: mean probability of each class where it wins.
    let mut sums = vec![(0f64, 0u64); c];
    for (&k, &pr) in classes.iter().zip(probs) {
        sums[k as usize].0 += pr as f64;
        sums[k as usize].1 += 1;
    }
    accs.iter()
        .enumerate()
        .filter(|(_, a)| a.area > 0)
        .map(|(k, a)| {
            let name = p
                .classes
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("class{k}"));
            let (s, n) = sums[k];
            a.region(name, k, if n > 0 { (s / n as f64) as f32 } else { 0.0 })
        })
        .collect()
}

/// The colour of class `k` (the PASCAL VOC palette DeepLab and FCN use); class 0 is black.
pub fn palette(k: usize) -> [u8; 3] {
    let (mut c, mut rgb) = (k, [0u8; 3]);
    for shift in (0..8).rev() {
        for (j, ch) in rgb.iter_mut().enumerate() {
            *ch |= (((c >> j) & 1) as u8) << shift;
        }
        c >>= 3;
        if c == 0 {
            break;
        }
    }
    rgb
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
