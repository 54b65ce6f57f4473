//! TensorFlow's (and TF.js's) legacy bilinear resize, `resizeBilinear(x, size)` with
//! `alignCorners = false` and `halfPixelCenters = false`: source = destination × (in / out), no
//! half-pixel shift, neighbours `floor` and `ceil` clamped to the last pixel. The TF.js models of
//! `@vladmandic/human` (MoveNet, CenterNet) are fed through it, so their pre-processing here does
//! the same (in f64 like the JavaScript CPU backend, stored as f32), optionally on a frame padded
//! with zeros first (MoveNet's square padding) without building the padded copy.

use crate::error::{Result, VisionError};
use crate::tensor::RgbView;

/// Where the frame sits in a zero-padded canvas of `width` × `height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Columns of zeros left of the frame.
    pub pad_x: usize,
    /// Rows of zeros above the frame.
    pub pad_y: usize,
}

impl Canvas {
    /// The frame alone.
    pub fn of(img: RgbView<'_>) -> Self {
        Self {
            width: img.width,
            height: img.height,
            pad_x: 0,
            pad_y: 0,
        }
    }
}

/// Source positions (floor, ceil, fraction) of each destination index.
fn taps(src: usize, dst: usize) -> Vec<(usize, usize, f64)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let s = scale * d as f64;
            let lo = s.floor().max(0.0);
            let hi = s.ceil().min(src as f64 - 1.0);
            (lo as usize, hi as usize, s - lo)
        })
        .collect()
}

/// The canvas resized to `out_w` × `out_h` as NHWC RGB floats (`[out_h][out_w][3]`); with
/// `truncate`, each value is cast to an integer as `tf.cast(x, 'int32')` does (towards zero).
/// Each canvas row a destination row reads is taken as a whole (the frame's own row where the
/// canvas adds no columns, else a copy with zeros around it), so the inner loop reads four
/// bytes at precomputed offsets; every value is [`blend`]'s arithmetic, in f64.
pub fn resize_bilinear_nhwc(
    img: RgbView<'_>,
    canvas: Canvas,
    out_w: usize,
    out_h: usize,
    truncate: bool,
) -> Result<Vec<f32>> {
    check_sizes(img, canvas, out_w, out_h)?;
    let xs: Vec<(usize, usize, f64)> = taps(canvas.width, out_w)
        .into_iter()
        .map(|(x0, x1, fx)| (x0 * 3, x1 * 3, fx))
        .collect();
    let ys = taps(canvas.height, out_h);
    let rows = CanvasRows::new(img, canvas);
    let (mut top, mut bottom) = (Vec::new(), Vec::new());
    let mut out = vec![0f32; out_w * out_h * 3];
    for (&(y0, y1, fy), dst) in ys.iter().zip(out.chunks_exact_mut(out_w * 3)) {
        if rows.is_padding(y0) && rows.is_padding(y1) {
            continue; // every tap reads zero: the row stays 0.0
        }
        let (r0, r1) = (rows.row(y0, &mut top), rows.row(y1, &mut bottom));
        for (&(x0, x1, fx), px) in xs.iter().zip(dst.chunks_exact_mut(3)) {
            for (c, v) in px.iter_mut().enumerate() {
                let b = blend([r0[x0 + c], r0[x1 + c], r1[x0 + c], r1[x1 + c]], fx, fy);
                *v = if truncate { b.trunc() } else { b };
            }
        }
    }
    Ok(out)
}

/// TF's bilinear blend of the four taps `[top-left, top-right, bottom-left, bottom-right]`,
/// in f64 like the JavaScript backend, stored as f32.
#[inline(always)]
fn blend(taps: [u8; 4], fx: f64, fy: f64) -> f32 {
    let [a, b, c, d] = taps.map(f64::from);
    let top = a + (b - a) * fx;
    let bottom = c + (d - c) * fx;
    (top + (bottom - top) * fy) as f32
}

fn check_sizes(img: RgbView<'_>, canvas: Canvas, out_w: usize, out_h: usize) -> Result<()> {
    if out_w == 0 || out_h == 0 || img.width == 0 || img.height == 0 {
        return Err(VisionError::Param {
            name: "size".into(),
            msg: format!(
                "cannot resize a {}x{} frame to {out_w}x{out_h}",
                img.width, img.height
            ),
        });
    }
    if canvas.pad_x + img.width > canvas.width || canvas.pad_y + img.height > canvas.height {
        return Err(VisionError::Param {
            name: "canvas".into(),
            msg: format!(
                "{canvas:?} does not hold a {}x{} frame",
                img.width, img.height
            ),
        });
    }
    Ok(())
}

/// The canvas's rows as RGB bytes, `canvas.width * 3` each.
struct CanvasRows<'a> {
    img: RgbView<'a>,
    canvas: Canvas,
    zeros: Vec<u8>,
}

impl<'a> CanvasRows<'a> {
    fn new(img: RgbView<'a>, canvas: Canvas) -> Self {
        let zeros = vec![0u8; canvas.width * 3];
        Self { img, canvas, zeros }
    }

    /// The frame's row at canvas row `y`, `None` where the canvas pads the frame.
    fn frame_row(&self, y: usize) -> Option<usize> {
        y.checked_sub(self.canvas.pad_y)
            .filter(|&fy| fy < self.img.height)
    }

    fn is_padding(&self, y: usize) -> bool {
        self.frame_row(y).is_none()
    }

    /// Canvas row `y`: zeros where it is padding, else the frame's row itself when the canvas
    /// adds no columns, or `buf` filled with it and zeros around it.
    fn row<'s>(&'s self, y: usize, buf: &'s mut Vec<u8>) -> &'s [u8] {
        let Some(fy) = self.frame_row(y) else {
            return &self.zeros;
        };
        let stride = self.img.width * 3;
        let frame_row = &self.img.data[fy * stride..(fy + 1) * stride];
        if self.canvas.width == self.img.width {
            return frame_row;
        }
        buf.clear();
        buf.extend_from_slice(&self.zeros);
        let left = self.canvas.pad_x * 3;
        buf[left..left + stride].copy_from_slice(frame_row);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::RgbImage;

    /// The first, per-tap implementation: every tap through a bounds-checking closure.
    fn per_tap_reference(
        img: RgbView<'_>,
        canvas: Canvas,
        out_w: usize,
        out_h: usize,
        truncate: bool,
    ) -> Result<Vec<f32>> {
        check_sizes(img, canvas, out_w, out_h)?;
        let px = |x: usize, y: usize, c: usize| -> f64 {
            if x < canvas.pad_x || y < canvas.pad_y {
                return 0.0;
            }
            let (fx, fy) = (x - canvas.pad_x, y - canvas.pad_y);
            if fx >= img.width || fy >= img.height {
                return 0.0;
            }
            f64::from(img.at(fx, fy, c))
        };
        let xs = taps(canvas.width, out_w);
        let ys = taps(canvas.height, out_h);
        let mut out = Vec::with_capacity(out_w * out_h * 3);
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                for c in 0..3 {
                    let top = px(x0, y0, c) + (px(x1, y0, c) - px(x0, y0, c)) * fx;
                    let bottom = px(x0, y1, c) + (px(x1, y1, c) - px(x0, y1, c)) * fx;
                    let v = (top + (bottom - top) * fy) as f32;
                    out.push(if truncate { v.trunc() } else { v });
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn row_wise_resize_equals_the_per_tap_one_bit_for_bit() {
        // Frames of pseudo-random bytes, padded in either direction or not, scaled down and up.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut byte = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        };
        let cases = [
            (64, 36, 14, 0, 32, 32),
            (36, 64, 0, 14, 256, 256),
            (50, 50, 0, 0, 17, 23),
            (7, 3, 2, 5, 40, 9),
            (640, 360, 0, 140, 256, 256),
        ];
        for (w, h, pad_x, pad_y, out_w, out_h) in cases {
            let img = RgbImage::new((0..w * h * 3).map(|_| byte()).collect(), w, h).unwrap();
            let canvas = Canvas {
                width: w + 2 * pad_x,
                height: h + 2 * pad_y,
                pad_x,
                pad_y,
            };
            for truncate in [false, true] {
                let fast = resize_bilinear_nhwc(img.view(), canvas, out_w, out_h, truncate);
                let slow = per_tap_reference(img.view(), canvas, out_w, out_h, truncate);
                let (fast, slow) = (fast.unwrap(), slow.unwrap());
                let same = fast
                    .iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && fast.len() == slow.len(),
                    "{w}x{h} in {canvas:?} to {out_w}x{out_h}"
                );
            }
        }
    }

    #[test]
    fn legacy_taps_have_no_half_pixel_shift() {
        // 4 → 2: destination 1 reads source 2 exactly (TF's legacy mode), not 2.5 (cv2).
        let t = taps(4, 2);
        assert_eq!(t, vec![(0, 0, 0.0), (2, 2, 0.0)]);
        // 2 → 4: 0, 0.5, 1, 1.5 → the last clamps its ceil to pixel 1.
        let t = taps(2, 4);
        assert_eq!(t[1], (0, 1, 0.5));
        assert_eq!(t[3], (1, 1, 0.5));
    }

    #[test]
    fn padding_is_zero_and_values_truncate() {
        // A 2×1 frame of (100, 201) grey in a 2×2 canvas, one row of padding on top.
        let img = RgbImage::new(vec![100, 100, 100, 201, 201, 201], 2, 1).unwrap();
        let canvas = Canvas {
            width: 2,
            height: 2,
            pad_x: 0,
            pad_y: 1,
        };
        let out = resize_bilinear_nhwc(img.view(), canvas, 4, 2, true).unwrap();
        // Row 0 is padding; row 1: 100, 150.5 → 150, 201, 201.
        assert!(out[..12].iter().all(|&v| v == 0.0));
        let row1: Vec<f32> = out[12..].chunks(3).map(|p| p[0]).collect();
        assert_eq!(row1, vec![100.0, 150.0, 201.0, 201.0]);
        let bad = Canvas { width: 1, ..canvas };
        assert!(resize_bilinear_nhwc(img.view(), bad, 4, 2, true).is_err());
    }
}
