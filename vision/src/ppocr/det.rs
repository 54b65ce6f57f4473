//! PP-OCR text detection (DB): resize to a multiple of 32, normalise, and turn the probability map into
//! quadrilaterals (threshold → 2x2 dilation → connected components → min-area rectangle → box score →
//! unclip → min-area rectangle → scale back), as rapidocr_onnxruntime 1.4.4's `DBPostProcess` does.
//!
//! Known differences from the OpenCV-based original: only outer borders are used (`cv2.findContours`
//! with RETR_LIST also returns hole borders, which rarely survive the size and score filters), and the
//! pyclipper round offset is approximated by sampling arcs at the same tolerance before the min-area
//! rectangle is taken.

use crate::error::{Result, VisionError};
use crate::geometry::{
    fill_convex_polygon, min_area_rect, polygon_area, polygon_perimeter, RotatedRect,
};
use crate::manifest::DetParams;
use crate::resize::{resize_to_chw, Interp, Normalize};
use crate::tensor::{RgbView, TensorF32};

/// Four corners: top-left, top-right, bottom-right, bottom-left.
pub type Quad = [[f32; 2]; 4];

/// Network input size `(width, height)` for a `w` x `h` image (`DetPreProcess.resize`).
pub fn det_input_size(w: usize, h: usize, p: &DetParams) -> Result<(usize, usize)> {
    let limit = p.limit_side_len as f64;
    let (wf, hf) = (w as f64, h as f64);
    let ratio = if p.limit_type == "max" {
        if w.max(h) as f64 > limit {
            if h > w {
                limit / hf
            } else {
                limit / wf
            }
        } else {
            1.0
        }
    } else if (w.min(h) as f64) < limit {
        if h < w {
            limit / hf
        } else {
            limit / wf
        }
    } else {
        1.0
    };
    let rh = ((hf * ratio) as i64 as f64 / 32.0).round_ties_even() as i64 * 32;
    let rw = ((wf * ratio) as i64 as f64 / 32.0).round_ties_even() as i64 * 32;
    if rw <= 0 || rh <= 0 {
        return Err(VisionError::Image(format!(
            "{w}x{h} image is too small for text detection"
        )));
    }
    Ok((rw as usize, rh as usize))
}

/// Detector input `[1, 3, H, W]` (BGR, `(v/255 - mean) / std`).
pub fn det_preprocess(img: RgbView<'_>, p: &DetParams) -> Result<TensorF32> {
    let (w, h) = det_input_size(img.width, img.height, p)?;
    let norm = Normalize {
        bgr: p.color != "rgb",
        scale: 1.0 / 255.0,
        mean: p.mean,
        std: p.std,
    };
    let mut data = vec![0f32; 3 * w * h];
    resize_to_chw(img, w, h, Interp::Linear, &norm, &mut data, w, h)?;
    TensorF32::new(vec![1, 3, h, w], data)
}

/// Connected components (8-connectivity) of a binary mask; per component the hull-relevant pixels
/// (leftmost and rightmost pixel of each row), in raster order of each component's first pixel.
pub fn components(mask: &[bool], w: usize, h: usize) -> Vec<Vec<[f64; 2]>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let e = rows.entry(y).or_insert((x, x));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let mut pts = Vec::with_capacity(rows.len() * 2);
        for (y, (a, b)) in rows {
            pts.push([a as f64, y as f64]);
            if b != a {
                pts.push([b as f64, y as f64]);
            }
        }
        out.push(pts);
    }
    out
}

/// `get_mini_boxes`: the rectangle's corners ordered top-left, top-right, bottom-right, bottom-left.
pub fn mini_box(r: &RotatedRect) -> [[f64; 2]; 4] {
    let mut p = r.corners;
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if p[1][1] > p[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if p[3][1] > p[2][1] { (2, 3) } else { (3, 2) };
    [p[i1], p[i2], p[i3], p[i4]]
}

/// `box_score_fast`: mean probability inside the box.
pub fn box_score(pred: &[f32], w: usize, h: usize, b: &[[f64; 2]; 4]) -> f32 {
    let clampi = |v: f64, hi: usize| (v as i64).clamp(0, hi as i64 - 1);
    let xmin = clampi(b.iter().map(|p| p[0]).fold(f64::MAX, f64::min).floor(), w);
    let xmax = clampi(b.iter().map(|p| p[0]).fold(f64::MIN, f64::max).ceil(), w);
    let ymin = clampi(b.iter().map(|p| p[1]).fold(f64::MAX, f64::min).floor(), h);
    let ymax = clampi(b.iter().map(|p| p[1]).fold(f64::MIN, f64::max).ceil(), h);
    let poly: Vec<[i64; 2]> = b
        .iter()
        .map(|p| [(p[0] - xmin as f64) as i64, (p[1] - ymin as f64) as i64])
        .collect();
    let (mw, mh) = ((xmax - xmin + 1) as usize, (ymax - ymin + 1) as usize);
    let px = fill_convex_polygon(&poly, mw, mh);
    if px.is_empty() {
        return 0.0;
    }
    let sum: f64 = px
        .iter()
        .map(|&(x, y)| pred[(y + ymin as usize) * w + x + xmin as usize] as f64)
        .sum();
    (sum / px.len() as f64) as f32
}

/// `unclip`: grows the box by `area * ratio / perimeter` with round corners (pyclipper, integer
/// coordinates, arc tolerance 0.25), returning the offset polygon's points.
pub fn unclip(b: &[[f64; 2]; 4], ratio: f32) -> Vec<[f64; 2]> {
    let d = polygon_area(b) * ratio as f64 / polygon_perimeter(b).max(1e-9);
    let pts: Vec<[f64; 2]> = b.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    let tol = 0.25f64.min(d.abs() * 0.25);
    let steps = if d > 0.0 {
        (std::f64::consts::PI / (1.0 - tol / d).acos()).max(4.0)
    } else {
        4.0
    };
    let n = (steps.ceil() as usize).max(4);
    let mut out = Vec::with_capacity(pts.len() * (n + 4));
    let len = pts.len();
    for i in 0..len {
        let (a, bb) = (pts[i], pts[(i + 1) % len]);
        let (dx, dy) = (bb[0] - a[0], bb[1] - a[1]);
        let l = (dx * dx + dy * dy).sqrt();
        if l > 0.0 {
            // both normals: the hull keeps whichever points outward
            for s in [-1.0, 1.0] {
                let (nx, ny) = (s * dy / l * d, -s * dx / l * d);
                out.push([(a[0] + nx).round(), (a[1] + ny).round()]);
                out.push([(bb[0] + nx).round(), (bb[1] + ny).round()]);
            }
        }
        for k in 0..n {
            let t = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            out.push([(a[0] + d * t.cos()).round(), (a[1] + d * t.sin()).round()]);
        }
    }
    out
}

/// `order_points_clockwise`: sort by x, split left/right pairs, each sorted by y.
pub fn order_clockwise(p: &[[f32; 2]; 4]) -> Quad {
    let mut s = *p;
    s.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut l, mut r) = ([s[0], s[1]], [s[2], s[3]]);
    l.sort_by(|a, b| a[1].total_cmp(&b[1]));
    r.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [l[0], r[0], r[1], l[1]]
}

/// `sorted_boxes`: top-to-bottom, then left-to-right within 10 px rows.
pub fn sort_quads(mut q: Vec<Quad>) -> Vec<Quad> {
    q.sort_by(|a, b| {
        a[0][1]
            .total_cmp(&b[0][1])
            .then(a[0][0].total_cmp(&b[0][0]))
    });
    for i in 0..q.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (q[j + 1][0][1] - q[j][0][1]).abs() < 10.0 && q[j + 1][0][0] < q[j][0][0] {
                q.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    q
}

/// Text quads in pixels of the `src_w` x `src_h` image the detector input was made from, sorted in
/// reading order. `pred` is the detector output `[1, 1, H, W]`.
pub fn det_postprocess(
    pred: &TensorF32,
    src_w: usize,
    src_h: usize,
    p: &DetParams,
) -> Result<Vec<Quad>> {
    pred.expect_shape("PP-OCR det output", &[Some(1), Some(1), None, None])?;
    let (h, w) = (pred.shape[2], pred.shape[3]);
    let prob = &pred.data;
    let seg: Vec<bool> = prob.iter().map(|&v| v > p.thresh).collect();
    let mask = if p.use_dilation {
        // 2x2 kernel, anchor (1, 1): dst(x, y) = max over (x-1..=x, y-1..=y)
        let mut m = vec![false; seg.len()];
        for y in 0..h {
            for x in 0..w {
                m[y * w + x] = seg[y * w + x]
                    || (x > 0 && seg[y * w + x - 1])
                    || (y > 0 && seg[(y - 1) * w + x])
                    || (x > 0 && y > 0 && seg[(y - 1) * w + x - 1]);
            }
        }
        m
    } else {
        seg
    };
    let mut quads = Vec::new();
    for pts in components(&mask, w, h).into_iter().take(p.max_candidates) {
        let Some(r) = min_area_rect(&pts) else {
            continue;
        };
        if r.short_side() < p.min_size as f64 {
            continue;
        }
        let b = mini_box(&r);
        if p.box_thresh > box_score(prob, w, h, &b) {
            continue;
        }
        let Some(r2) = min_area_rect(&unclip(&b, p.unclip_ratio)) else {
            continue;
        };
        if r2.short_side() < p.min_size as f64 + 2.0 {
            continue;
        }
        let b2 = mini_box(&r2);
        let q = b2.map(|c| {
            [
                (c[0] / w as f64 * src_w as f64)
                    .round_ties_even()
                    .clamp(0.0, src_w as f64) as i64 as f32,
                (c[1] / h as f64 * src_h as f64)
                    .round_ties_even()
                    .clamp(0.0, src_h as f64) as i64 as f32,
            ]
        });
        // filter_tag_det_res
        let mut q = order_clockwise(&q);
        for c in &mut q {
            c[0] = c[0].clamp(0.0, src_w as f32 - 1.0).trunc();
            c[1] = c[1].clamp(0.0, src_h as f32 - 1.0).trunc();
        }
        let dist = |a: [f32; 2], b: [f32; 2]| {
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt() as i64
        };
        if dist(q[0], q[1]) <= 3 || dist(q[0], q[3]) <= 3 {
            continue;
        }
        quads.push(q);
    }
    Ok(sort_quads(quads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_size_rounds_to_32() {
        let p = DetParams::default();
        assert_eq!(det_input_size(384, 191, &p).unwrap(), (1472, 736));
        assert_eq!(det_input_size(1000, 800, &p).unwrap(), (992, 800));
        let max = DetParams {
            limit_type: "max".into(),
            limit_side_len: 960,
            ..p
        };
        assert_eq!(det_input_size(1920, 1080, &max).unwrap(), (960, 544));
    }

    #[test]
    fn one_rectangle_is_found_and_grown() {
        let (w, h) = (64, 32);
        let mut data = vec![0f32; w * h];
        for y in 10..20 {
            for x in 8..50 {
                data[y * w + x] = 0.9;
            }
        }
        let pred = TensorF32::new(vec![1, 1, h, w], data).unwrap();
        let q = det_postprocess(&pred, 2 * w, 2 * h, &DetParams::default()).unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        let [tl, tr, br, bl] = q[0];
        // the 42x10 blob (dilated to 43x11) grows by about 11*43*1.6/108 ≈ 7 px per side, then doubles
        assert!(
            tl[0] < 8.0 * 2.0 && tr[0] > 50.0 * 2.0 && tl[1] < 20.0 && bl[1] > 38.0,
            "{q:?}"
        );
        assert_eq!(tl[1], tr[1]);
        assert_eq!(br[0], tr[0]);
        assert!(det_postprocess(
            &TensorF32::zeros(vec![1, 2, 4, 4]),
            4,
            4,
            &DetParams::default()
        )
        .is_err());
    }

    #[test]
    fn reading_order() {
        let q = |x: f32, y: f32| [[x, y], [x + 10.0, y], [x + 10.0, y + 5.0], [x, y + 5.0]];
        let s = sort_quads(vec![q(50.0, 2.0), q(0.0, 40.0), q(0.0, 5.0)]);
        assert_eq!(s, vec![q(0.0, 5.0), q(50.0, 2.0), q(0.0, 40.0)]);
        let o = order_clockwise(&[[10.0, 5.0], [0.0, 0.0], [0.0, 5.0], [10.0, 0.0]]);
        assert_eq!(o, [[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]]);
    }
}
