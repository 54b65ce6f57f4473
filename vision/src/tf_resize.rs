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
pub fn resize_bilinear_nhwc(
    img: RgbView<'_>,
    canvas: Canvas,
    out_w: usize,
    out_h: usize,
    truncate: bool,
) -> Result<Vec<f32>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::RgbImage;

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
