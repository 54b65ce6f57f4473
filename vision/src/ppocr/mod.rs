//! PP-OCRv4 text reading, step by step (rapidocr_onnxruntime 1.4.4 defaults): whole-image preparation
//! (size limits, letterbox for very flat images), [`det`] (text quads), crops by perspective warp, and
//! [`rec`] (angle classifier + recogniser).

pub mod det;
pub mod rec;

use crate::error::Result;
use crate::geometry::BBox;
use crate::imgproc::{perspective_transform, resize_linear_rgb, warp_perspective_cubic};
use crate::tensor::{RgbImage, RgbView};

pub use det::Quad;

/// One recognised text line in original-frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    pub text: String,
    pub text_score: f32,
    /// x, y of the four corners clockwise from top-left.
    pub polygon: [f32; 8],
    pub bbox: BBox,
}

/// Whole-image limits applied before detection (rapidocr's `Global` section).
#[derive(Debug, Clone, PartialEq)]
pub struct OcrGlobal {
    pub max_side_len: usize,
    pub min_side_len: usize,
    pub min_height: usize,
    pub width_height_ratio: f64,
    pub text_score: f32,
}

impl Default for OcrGlobal {
    fn default() -> Self {
        Self {
            max_side_len: 2000,
            min_side_len: 30,
            min_height: 30,
            width_height_ratio: 8.0,
            text_score: 0.5,
        }
    }
}

/// How the prepared image relates to the original one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OcrTransform {
    pub ratio_w: f32,
    pub ratio_h: f32,
    pub pad_top: f32,
    pub raw_w: usize,
    pub raw_h: usize,
}

impl OcrTransform {
    /// Maps a quad of the prepared image back to the original (`_get_origin_points`).
    pub fn to_origin(&self, q: &Quad) -> Quad {
        q.map(|[x, y]| {
            let x = (x * self.ratio_w).max(0.0).min(self.raw_w as f32);
            let y = ((y - self.pad_top) * self.ratio_h)
                .max(0.0)
                .min(self.raw_h as f32);
            [x, y]
        })
    }
}

fn resize32(img: RgbView<'_>, ratio: f64) -> Result<(RgbImage, f32, f32)> {
    let (w, h) = (img.width as f64, img.height as f64);
    let rh = (((h * ratio) as i64 as f64 / 32.0).round_ties_even() as usize * 32).max(32);
    let rw = (((w * ratio) as i64 as f64 / 32.0).round_ties_even() as usize * 32).max(32);
    let out = resize_linear_rgb(img, rw, rh)?;
    Ok((out, (h / rh as f64) as f32, (w / rw as f64) as f32))
}

/// `RapidOCR.preprocess` + `maybe_add_letterbox`: the image detection and cropping work on.
pub fn prepare(img: RgbView<'_>, g: &OcrGlobal) -> Result<(RgbImage, OcrTransform)> {
    let (w, h) = (img.width, img.height);
    let mut t = OcrTransform {
        ratio_w: 1.0,
        ratio_h: 1.0,
        pad_top: 0.0,
        raw_w: w,
        raw_h: h,
    };
    let mut cur = img.to_owned_image();
    if w.max(h) > g.max_side_len {
        let r = g.max_side_len as f64 / w.max(h) as f64;
        let (o, rh, rw) = resize32(cur.view(), r)?;
        (cur, t.ratio_h, t.ratio_w) = (o, rh, rw);
    }
    if cur.width.min(cur.height) < g.min_side_len {
        let r = g.min_side_len as f64 / cur.width.min(cur.height) as f64;
        let (o, rh, rw) = resize32(cur.view(), r)?;
        (cur, t.ratio_h, t.ratio_w) = (o, rh, rw);
    }
    let (w, h) = (cur.width, cur.height);
    let flat = g.width_height_ratio > 0.0 && w as f64 / h as f64 > g.width_height_ratio;
    if h <= g.min_height || flat {
        let new_h = (((w as f64 / g.width_height_ratio) as usize).max(g.min_height)) * 2;
        let pad = new_h.abs_diff(h) / 2;
        let mut data = vec![0u8; w * (h + 2 * pad) * 3];
        data[pad * w * 3..(pad + h) * w * 3].copy_from_slice(&cur.data);
        cur = RgbImage::new(data, w, h + 2 * pad)?;
        t.pad_top = pad as f32;
    }
    Ok((cur, t))
}

/// `get_rotate_crop_image`: the quad warped to an upright rectangle (bicubic, replicated border),
/// turned 90° counter-clockwise when it is much taller than wide.
pub fn crop_quad(img: RgbView<'_>, q: &Quad) -> Result<RgbImage> {
    let d = |a: [f32; 2], b: [f32; 2]| {
        (((a[0] - b[0]) as f64).powi(2) + ((a[1] - b[1]) as f64).powi(2)).sqrt()
    };
    let w = d(q[0], q[1]).max(d(q[2], q[3])) as usize;
    let h = d(q[0], q[3]).max(d(q[1], q[2])) as usize;
    let (w, h) = (w.max(1), h.max(1));
    let (wf, hf) = (w as f64, h as f64);
    let dst = [[0.0, 0.0], [wf, 0.0], [wf, hf], [0.0, hf]];
    let src = q.map(|p| [p[0] as f64, p[1] as f64]);
    let m = perspective_transform(&dst, &src)?;
    let out = warp_perspective_cubic(img, &m, w, h)?;
    Ok(if h as f64 / w as f64 >= 1.5 {
        out.rotate90_ccw()
    } else {
        out
    })
}

/// Polygon and bounding box of a quad in original pixels.
pub fn quad_geometry(q: &Quad) -> ([f32; 8], BBox) {
    let poly = [
        q[0][0], q[0][1], q[1][0], q[1][1], q[2][0], q[2][1], q[3][0], q[3][1],
    ];
    let xs = q.map(|p| p[0]);
    let ys = q.map(|p| p[1]);
    let bbox = BBox::new(
        xs.iter().copied().fold(f32::MAX, f32::min),
        ys.iter().copied().fold(f32::MAX, f32::min),
        xs.iter().copied().fold(f32::MIN, f32::max),
        ys.iter().copied().fold(f32::MIN, f32::max),
    );
    (poly, bbox)
}

/// Indices of `crops` sorted by aspect ratio (width / height), as rapidocr batches them.
pub fn order_by_aspect(crops: &[RgbImage]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..crops.len()).collect();
    let r = |c: &RgbImage| c.width as f64 / c.height as f64;
    idx.sort_by(|&a, &b| r(&crops[a]).total_cmp(&r(&crops[b])));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_pads_flat_images_and_maps_back() {
        let img = RgbImage::new(vec![9; 400 * 20 * 3], 400, 20).unwrap();
        let (p, t) = prepare(img.view(), &OcrGlobal::default()).unwrap();
        // min side 20 < 30: resized to 608x32 (rounded to 32), then letterboxed (608/32 > 8)
        assert_eq!(p.width, 608);
        assert!(t.pad_top > 0.0 && p.height > 32);
        let q = t.to_origin(&[
            [0.0, t.pad_top],
            [608.0, t.pad_top],
            [608.0, t.pad_top + 32.0],
            [0.0, t.pad_top + 32.0],
        ]);
        assert!(
            (q[2][0] - 400.0).abs() < 1e-3 && (q[2][1] - 20.0).abs() < 1e-3,
            "{q:?}"
        );
    }

    #[test]
    fn crop_axis_aligned_quad() {
        let mut data = vec![0u8; 20 * 10 * 3];
        for y in 2..6 {
            for x in 4..12 {
                data[(y * 20 + x) * 3] = 200;
            }
        }
        let img = RgbImage::new(data, 20, 10).unwrap();
        let c = crop_quad(
            img.view(),
            &[[4.0, 2.0], [12.0, 2.0], [12.0, 6.0], [4.0, 6.0]],
        )
        .unwrap();
        assert_eq!((c.width, c.height), (8, 4));
        assert_eq!(c.data[0], 200);
        let tall = crop_quad(
            img.view(),
            &[[0.0, 0.0], [2.0, 0.0], [2.0, 8.0], [0.0, 8.0]],
        )
        .unwrap();
        assert_eq!((tall.width, tall.height), (8, 2));
    }
}
