//! Shared geometry: boxes, IoU, NMS, convex hull, minimum-area rectangles, polygon rasterisation and
//! letterboxing.

use crate::error::Result;
use crate::imgproc::resize_linear_rgb;
use crate::tensor::{RgbImage, RgbView};

/// An axis-aligned box in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }
    /// Width (never negative).
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    /// Height (never negative).
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    /// Area (never negative).
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    /// Intersection over union (continuous coordinates, 0 when both are empty).
    pub fn iou(&self, o: &BBox) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
    /// Clamped to `[0, w] x [0, h]`.
    pub fn clamp(&self, w: f32, h: f32) -> BBox {
        BBox::new(
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
            self.x2.clamp(0.0, w),
            self.y2.clamp(0.0, h),
        )
    }
}

/// Overlap measure for [`nms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// intersection / union
    Union,
    /// intersection / smaller area (MTCNN's 'Min')
    Min,
}

/// Greedy non-maximum suppression; returns kept indices, best score first. `plus_one` uses the
/// `(x2 - x1 + 1)` pixel convention of the MTCNN/YOLOX numpy code. A box is dropped when its overlap
/// with a kept box is `> thresh`. Ties keep the later index first (numpy `argsort` + take-last).
pub fn nms(
    boxes: &[BBox],
    scores: &[f32],
    thresh: f32,
    overlap: Overlap,
    plus_one: bool,
) -> Vec<usize> {
    let n = boxes.len().min(scores.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let p = if plus_one { 1.0 } else { 0.0 };
    let area = |b: &BBox| (b.x2 - b.x1 + p) * (b.y2 - b.y1 + p);
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = &boxes[i];
        order.retain(|&j| {
            let bj = &boxes[j];
            let w = (bi.x2.min(bj.x2) - bi.x1.max(bj.x1) + p).max(0.0);
            let h = (bi.y2.min(bj.y2) - bi.y1.max(bj.y1) + p).max(0.0);
            let inter = w * h;
            let o = match overlap {
                Overlap::Union => inter / (area(bi) + area(bj) - inter),
                Overlap::Min => inter / area(bi).min(area(bj)),
            };
            o <= thresh
        });
    }
    keep
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in image coordinates, without repeats.
pub fn convex_hull(points: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let mut p: Vec<[f64; 2]> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[f64; 2]> = Vec::with_capacity(2 * p.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 {
            Box::new(p.iter())
        } else {
            Box::new(p.iter().rev())
        };
        for &q in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0
            {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop();
    }
    hull
}

/// A rotated rectangle: its four corners and side lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    pub corners: [[f64; 2]; 4],
    pub width: f64,
    pub height: f64,
}

impl RotatedRect {
    /// The shorter side (`min(cv2.minAreaRect(...)[1])`).
    pub fn short_side(&self) -> f64 {
        self.width.min(self.height)
    }
}

/// Minimum-area enclosing rectangle of a point set (`cv2.minAreaRect` + `cv2.boxPoints`), by rotating
/// calipers over the convex hull. `None` for an empty set.
pub fn min_area_rect(points: &[[f64; 2]]) -> Option<RotatedRect> {
    let hull = convex_hull(points);
    match hull.len() {
        0 => return None,
        1 => {
            let p = hull[0];
            return Some(RotatedRect {
                corners: [p; 4],
                width: 0.0,
                height: 0.0,
            });
        }
        _ => {}
    }
    let mut best: Option<(f64, RotatedRect)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        let (ux, uy) = (dx / len, dy / len); // edge direction
        let (vx, vy) = (-uy, ux); // normal
        let (mut umin, mut umax, mut vmin, mut vmax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let u = p[0] * ux + p[1] * uy;
            let v = p[0] * vx + p[1] * vy;
            umin = umin.min(u);
            umax = umax.max(u);
            vmin = vmin.min(v);
            vmax = vmax.max(v);
        }
        let area = (umax - umin) * (vmax - vmin);
        if best.as_ref().is_none_or(|(a, _)| area < *a - 1e-9) {
            let pt = |u: f64, v: f64| [u * ux + v * vx, u * uy + v * vy];
            best = Some((
                area,
                RotatedRect {
                    corners: [
                        pt(umin, vmin),
                        pt(umax, vmin),
                        pt(umax, vmax),
                        pt(umin, vmax),
                    ],
                    width: umax - umin,
                    height: vmax - vmin,
                },
            ));
        }
    }
    best.map(|(_, r)| r)
}

/// Shoelace area of a polygon (absolute value).
pub fn polygon_area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    let s: f64 = (0..n)
        .map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1])
        .sum();
    s.abs() / 2.0
}

/// Perimeter of a closed polygon.
pub fn polygon_perimeter(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n)
        .map(|i| {
            let (a, b) = (p[i], p[(i + 1) % n]);
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
        })
        .sum()
}

/// Pixels `(x, y)` covered by a convex polygon with integer vertices, boundary included (like
/// `cv2.fillPoly`), clipped to `[0, w) x [0, h)`.
pub fn fill_convex_polygon(poly: &[[i64; 2]], w: usize, h: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if poly.is_empty() || w == 0 || h == 0 {
        return out;
    }
    let ymin = poly.iter().map(|p| p[1]).min().unwrap_or(0).max(0);
    let ymax = poly
        .iter()
        .map(|p| p[1])
        .max()
        .unwrap_or(-1)
        .min(h as i64 - 1);
    let n = poly.len();
    for y in ymin..=ymax {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for i in 0..n {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let (y0, y1) = (a[1].min(b[1]), a[1].max(b[1]));
            if y < y0 || y > y1 {
                continue;
            }
            if a[1] == b[1] {
                lo = lo.min(a[0].min(b[0]) as f64);
                hi = hi.max(a[0].max(b[0]) as f64);
            } else {
                let t = (y - a[1]) as f64 / (b[1] - a[1]) as f64;
                let x = a[0] as f64 + t * (b[0] - a[0]) as f64;
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if lo > hi {
            continue;
        }
        let x0 = lo.round().max(0.0) as i64;
        let x1 = (hi.round() as i64).min(w as i64 - 1);
        for x in x0..=x1 {
            out.push((x as usize, y as usize));
        }
    }
    out
}

/// Result of [`letterbox`]: the padded image and how to map boxes back.
#[derive(Debug, Clone)]
pub struct Letterbox {
    pub image: RgbImage,
    /// Resize ratio applied to the source.
    pub ratio: f32,
    /// Offset of the resized image inside the padded one.
    pub pad_x: usize,
    pub pad_y: usize,
}

impl Letterbox {
    /// Maps a box in letterboxed pixels back to source pixels.
    pub fn unmap(&self, b: &BBox) -> BBox {
        let (px, py, r) = (self.pad_x as f32, self.pad_y as f32, self.ratio);
        BBox::new(
            (b.x1 - px) / r,
            (b.y1 - py) / r,
            (b.x2 - px) / r,
            (b.y2 - py) / r,
        )
    }
}

/// Resizes `img` by `min(w/iw, h/ih)` keeping the aspect ratio (INTER_LINEAR) and pads to `w` x `h` with
/// `pad`; `centered` puts the image in the middle (YOLOv5/v8), otherwise at the top-left (YOLOX).
pub fn letterbox(
    img: RgbView<'_>,
    w: usize,
    h: usize,
    pad: u8,
    centered: bool,
) -> Result<Letterbox> {
    let r = (h as f64 / img.height as f64).min(w as f64 / img.width as f64);
    let nw = ((img.width as f64 * r) as usize).clamp(1, w);
    let nh = ((img.height as f64 * r) as usize).clamp(1, h);
    let resized = resize_linear_rgb(img, nw, nh)?;
    let (px, py) = if centered {
        ((w - nw) / 2, (h - nh) / 2)
    } else {
        (0, 0)
    };
    let mut out = RgbImage {
        data: vec![pad; w * h * 3],
        width: w,
        height: h,
    };
    for y in 0..nh {
        let s = y * nw * 3;
        let d = ((y + py) * w + px) * 3;
        out.data[d..d + nw * 3].copy_from_slice(&resized.data[s..s + nw * 3]);
    }
    Ok(Letterbox {
        image: out,
        ratio: r as f32,
        pad_x: px,
        pad_y: py,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_basic() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert!((a.iou(&BBox::new(5.0, 0.0, 15.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
        assert_eq!(BBox::default().iou(&BBox::default()), 0.0);
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let b = [
            BBox::new(0.0, 0.0, 10.0, 10.0),
            BBox::new(1.0, 1.0, 11.0, 11.0),
            BBox::new(50.0, 50.0, 60.0, 60.0),
            BBox::new(2.0, 2.0, 5.0, 5.0),
        ];
        let s = [0.8, 0.9, 0.5, 0.7];
        assert_eq!(nms(&b, &s, 0.5, Overlap::Union, false), vec![1, 3, 2]);
        // 'Min' overlap suppresses the small box inside the big one
        assert_eq!(nms(&b, &s, 0.5, Overlap::Min, false), vec![1, 2]);
        assert!(nms(&[], &[], 0.5, Overlap::Union, true).is_empty());
    }

    #[test]
    fn hull_and_min_rect() {
        let pts = [[0.0, 0.0], [4.0, 0.0], [4.0, 2.0], [0.0, 2.0], [2.0, 1.0]];
        assert_eq!(convex_hull(&pts).len(), 4);
        let r = min_area_rect(&pts).unwrap();
        assert!((r.width * r.height - 8.0).abs() < 1e-9 && (r.short_side() - 2.0).abs() < 1e-9);
        // a diamond: its min-area rect is the rotated square of side sqrt(2)
        let d = [[1.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 1.0]];
        let r = min_area_rect(&d).unwrap();
        assert!((r.width * r.height - 2.0).abs() < 1e-9, "{r:?}");
        assert!(min_area_rect(&[]).is_none());
        assert_eq!(min_area_rect(&[[3.0, 3.0]]).unwrap().short_side(), 0.0);
    }

    #[test]
    fn polygon_measures_and_fill() {
        let sq = [[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]];
        assert_eq!(polygon_area(&sq), 12.0);
        assert_eq!(polygon_perimeter(&sq), 14.0);
        let px = fill_convex_polygon(&[[1, 1], [3, 1], [3, 2], [1, 2]], 10, 10);
        assert_eq!(px.len(), 6);
        assert!(fill_convex_polygon(&[[-5, -5], [20, -5], [20, 20], [-5, 20]], 4, 4).len() == 16);
    }

    #[test]
    fn letterbox_maps_back() {
        let img = RgbImage::new(vec![200; 20 * 10 * 3], 20, 10).unwrap();
        let lb = letterbox(img.view(), 8, 8, 114, false).unwrap();
        assert_eq!(lb.ratio, 0.4);
        assert_eq!(lb.image.data[0], 200);
        assert_eq!(lb.image.data[(7 * 8) * 3], 114); // bottom-left is padding
        let b = lb.unmap(&BBox::new(0.0, 0.0, 8.0, 4.0));
        assert_eq!(b, BBox::new(0.0, 0.0, 20.0, 10.0));
        let c = letterbox(img.view(), 8, 8, 0, true).unwrap();
        assert_eq!(c.pad_y, 2);
    }
}

/// One detected object in original-frame pixels (a row of a detection table).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class: String,
    pub score: f32,
    pub bbox: BBox,
    /// MTCNN: five (x, y) pairs: left eye, right eye, nose, left mouth corner, right mouth corner.
    pub landmarks: Option<[f32; 10]>,
}
