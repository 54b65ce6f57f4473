//! Image operations that reproduce OpenCV's behaviour closely enough to match the Python references:
//! `cv2.resize` with INTER_AREA and INTER_LINEAR, `cv2.warpPerspective` with INTER_CUBIC and replicated
//! borders, plus plain conversions. Images here are interleaved f32/f64 buffers with `c` channels.

use crate::error::{Result, VisionError};
use crate::tensor::{RgbImage, RgbView};

/// An interleaved multi-channel f64 image (used for the float crops of MTCNN).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF64 {
    pub data: Vec<f64>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

impl ImageF64 {
    /// Zeros.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self {
            data: vec![0.0; width * height * channels],
            width,
            height,
            channels,
        }
    }

    /// Converts an RGB8 image.
    pub fn from_rgb(img: RgbView<'_>) -> Self {
        Self {
            data: img.data.iter().map(|&v| v as f64).collect(),
            width: img.width,
            height: img.height,
            channels: 3,
        }
    }

    /// Rounds and saturates to RGB8 (`cv2`'s `saturate_cast<uchar>`); needs 3 channels.
    pub fn to_rgb8(&self) -> RgbImage {
        RgbImage {
            data: self.data.iter().map(|&v| sat_u8(v)).collect(),
            width: self.width,
            height: self.height,
        }
    }
}

/// Round half to even and clamp to 0..=255, like OpenCV's `saturate_cast<uchar>(float)`.
#[inline]
pub fn sat_u8(v: f64) -> u8 {
    let r = v.round_ties_even();
    r.clamp(0.0, 255.0) as u8
}

pub(crate) fn check_size(dw: usize, dh: usize, sw: usize, sh: usize) -> Result<()> {
    if dw == 0 || dh == 0 || sw == 0 || sh == 0 {
        return Err(VisionError::Image(format!(
            "cannot resize {sw}x{sh} to {dw}x{dh}"
        )));
    }
    Ok(())
}

/// One (source index, weight) list per destination index along one axis.
pub(crate) type AxisTab = Vec<Vec<(usize, f64)>>;

/// `computeResizeAreaTab`: exact area weights for shrinking `ssize` to `dsize` (scale = ssize/dsize >= 1).
pub(crate) fn area_tab(ssize: usize, dsize: usize) -> AxisTab {
    let scale = ssize as f64 / dsize as f64;
    (0..dsize)
        .map(|dx| {
            let fsx1 = dx as f64 * scale;
            let fsx2 = fsx1 + scale;
            let cell = scale.min(ssize as f64 - fsx1);
            let sx2 = (fsx2.floor() as isize).min(ssize as isize - 1);
            let sx1 = (fsx1.ceil() as isize).min(sx2);
            let mut w = Vec::new();
            if sx1 as f64 - fsx1 > 1e-3 && sx1 >= 1 {
                w.push(((sx1 - 1) as usize, (sx1 as f64 - fsx1) / cell));
            }
            for sx in sx1..sx2 {
                w.push((sx as usize, 1.0 / cell));
            }
            if fsx2 - sx2 as f64 > 1e-3 {
                w.push((sx2 as usize, (fsx2 - sx2 as f64).min(1.0).min(cell) / cell));
            }
            w
        })
        .collect()
}

/// Linear weights as `cv::resize` computes them; `area_mode` is INTER_AREA's upscaling variant.
pub(crate) fn linear_tab(ssize: usize, dsize: usize, area_mode: bool) -> AxisTab {
    let inv_scale = dsize as f64 / ssize as f64;
    let scale = 1.0 / inv_scale;
    (0..dsize)
        .map(|dx| {
            let (mut sx, mut fx);
            if area_mode {
                sx = (dx as f64 * scale).floor() as isize;
                fx = ((dx + 1) as f64 - (sx + 1) as f64 * inv_scale) as f32;
                fx = if fx <= 0.0 { 0.0 } else { fx - fx.floor() };
            } else {
                let f = ((dx as f64 + 0.5) * scale - 0.5) as f32;
                sx = f.floor() as isize;
                fx = f - sx as f32;
            }
            if sx < 0 {
                sx = 0;
                fx = 0.0;
            }
            if sx >= ssize as isize - 1 {
                sx = ssize as isize - 1;
                fx = 0.0;
            }
            let sx = sx as usize;
            let next = (sx + 1).min(ssize - 1);
            vec![(sx, 1.0 - fx as f64), (next, fx as f64)]
        })
        .collect()
}

fn separable(src: &ImageF64, xt: &AxisTab, yt: &AxisTab) -> ImageF64 {
    let c = src.channels;
    let (dw, dh) = (xt.len(), yt.len());
    // horizontal pass for every source row, then the vertical combination
    let mut rows = vec![0.0f64; src.height * dw * c];
    for y in 0..src.height {
        let srow = &src.data[y * src.width * c..(y + 1) * src.width * c];
        let drow = &mut rows[y * dw * c..(y + 1) * dw * c];
        for (dx, taps) in xt.iter().enumerate() {
            for &(sx, w) in taps {
                for k in 0..c {
                    drow[dx * c + k] += w * srow[sx * c + k];
                }
            }
        }
    }
    let mut out = ImageF64::zeros(dw, dh, c);
    for (dy, taps) in yt.iter().enumerate() {
        let drow = &mut out.data[dy * dw * c..(dy + 1) * dw * c];
        for &(sy, w) in taps {
            let srow = &rows[sy * dw * c..(sy + 1) * dw * c];
            for (d, s) in drow.iter_mut().zip(srow) {
                *d += w * s;
            }
        }
    }
    out
}

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_AREA)` on a float image.
pub fn resize_area(src: &ImageF64, dw: usize, dh: usize) -> Result<ImageF64> {
    check_size(dw, dh, src.width, src.height)?;
    if src.width >= dw && src.height >= dh {
        Ok(separable(
            src,
            &area_tab(src.width, dw),
            &area_tab(src.height, dh),
        ))
    } else {
        Ok(separable(
            src,
            &linear_tab(src.width, dw, true),
            &linear_tab(src.height, dh, true),
        ))
    }
}

/// `cv2.resize(window, (dw, dh), interpolation=cv2.INTER_AREA)` where `window` is the `tw` × `th`
/// float image whose pixel (tx, ty) is `img` at (x0 + tx, y0 + ty), or 0 outside `img`: the same
/// sums, in the same order, as cropping into an [`ImageF64`] first and [`resize_area`], without the
/// crop's copy.
#[allow(clippy::too_many_arguments)]
pub fn resize_area_window(
    img: RgbView<'_>,
    x0: i64,
    y0: i64,
    tw: usize,
    th: usize,
    dw: usize,
    dh: usize,
) -> Result<ImageF64> {
    check_size(dw, dh, tw, th)?;
    let (xt, yt) = if tw >= dw && th >= dh {
        (area_tab(tw, dw), area_tab(th, dh))
    } else {
        (linear_tab(tw, dw, true), linear_tab(th, dh, true))
    };
    let (w, h) = (img.width as i64, img.height as i64);
    // the horizontal taps inside the image, as byte offsets in a row: `off[lo[dx]..lo[dx + 1]]`
    let mut off = Vec::with_capacity(xt.iter().map(Vec::len).sum());
    let mut wts = Vec::with_capacity(off.capacity());
    let mut lo = Vec::with_capacity(dw + 1);
    lo.push(0);
    for taps in &xt {
        for &(tx, wt) in taps {
            let sx = x0 + tx as i64;
            if (0..w).contains(&sx) {
                off.push(sx as usize * 3);
                wts.push(wt);
            }
        }
        lo.push(off.len());
    }
    // horizontal pass for every window row inside the image (rows outside stay zero)
    let mut rows = vec![0.0f64; th * dw * 3];
    let row_bytes = img.width * 3;
    for (ty, drow) in rows.chunks_exact_mut(dw * 3).enumerate() {
        let sy = y0 + ty as i64;
        if !(0..h).contains(&sy) {
            continue;
        }
        let srow = &img.data[sy as usize * row_bytes..(sy as usize + 1) * row_bytes];
        for (px, range) in drow.chunks_exact_mut(3).zip(lo.windows(2)) {
            let mut acc = [0.0f64; 3];
            for (&o, &wt) in off[range[0]..range[1]].iter().zip(&wts[range[0]..range[1]]) {
                let p = &srow[o..o + 3];
                acc[0] += wt * f64::from(p[0]);
                acc[1] += wt * f64::from(p[1]);
                acc[2] += wt * f64::from(p[2]);
            }
            px.copy_from_slice(&acc);
        }
    }
    let mut out = ImageF64::zeros(dw, dh, 3);
    for (drow, taps) in out.data.chunks_exact_mut(dw * 3).zip(&yt) {
        for &(ty, wt) in taps {
            let srow = &rows[ty * dw * 3..(ty + 1) * dw * 3];
            for (d, s) in drow.iter_mut().zip(srow) {
                *d += wt * s;
            }
        }
    }
    Ok(out)
}

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` on a float image.
pub fn resize_linear(src: &ImageF64, dw: usize, dh: usize) -> Result<ImageF64> {
    check_size(dw, dh, src.width, src.height)?;
    // OpenCV switches to INTER_AREA for an exact 2x shrink
    if src.width == 2 * dw && src.height == 2 * dh {
        return resize_area(src, dw, dh);
    }
    Ok(separable(
        src,
        &linear_tab(src.width, dw, false),
        &linear_tab(src.height, dh, false),
    ))
}

/// RGB8 INTER_AREA resize with `saturate_cast` rounding (the f32 fast path of [`crate::resize`]).
pub fn resize_area_rgb(src: RgbView<'_>, dw: usize, dh: usize) -> Result<RgbImage> {
    crate::resize::resize_rgb(src, dw, dh, crate::resize::Interp::Area)
}

/// RGB8 INTER_LINEAR resize with rounding (the f32 fast path of [`crate::resize`]).
pub fn resize_linear_rgb(src: RgbView<'_>, dw: usize, dh: usize) -> Result<RgbImage> {
    crate::resize::resize_rgb(src, dw, dh, crate::resize::Interp::Linear)
}

/// Solves the 3x3 homography H (row-major, h33 = 1) with H * from[i] ~ to[i] for four point pairs.
pub fn perspective_transform(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Result<[f64; 9]> {
    let mut a = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (from[i], to[i]);
        a[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting on the 8x9 augmented matrix.
    for col in 0..8 {
        let piv = (col..8)
            .max_by(|&r1, &r2| a[r1][col].abs().total_cmp(&a[r2][col].abs()))
            .unwrap_or(col);
        if a[piv][col].abs() < 1e-12 {
            return Err(VisionError::Param {
                name: "quad".into(),
                msg: format!("degenerate perspective transform from {from:?} to {to:?}"),
            });
        }
        a.swap(col, piv);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut h = [0.0; 9];
    for (i, v) in h.iter_mut().take(8).enumerate() {
        *v = a[i][8] / a[i][i];
    }
    h[8] = 1.0;
    Ok(h)
}

fn cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// `cv2.warpPerspective(img, M, (dw, dh), flags=INTER_CUBIC, borderMode=BORDER_REPLICATE)` where
/// `dst_to_src` maps destination pixels to source pixels (the inverse of OpenCV's `M`). Source
/// positions are quantised to 1/32 pixel like OpenCV's remap tables.
pub fn warp_perspective_cubic(
    img: RgbView<'_>,
    dst_to_src: &[f64; 9],
    dw: usize,
    dh: usize,
) -> Result<RgbImage> {
    check_size(dw, dh, img.width, img.height)?;
    let m = dst_to_src;
    let (w, h) = (img.width as isize, img.height as isize);
    let mut out = vec![0u8; dw * dh * 3];
    for y in 0..dh {
        for x in 0..dw {
            let (xf, yf) = (x as f64, y as f64);
            let wz = m[6] * xf + m[7] * yf + m[8];
            let wz = if wz != 0.0 { 32.0 / wz } else { 0.0 };
            let fx = ((m[0] * xf + m[1] * yf + m[2]) * wz)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i64;
            let fy = ((m[3] * xf + m[4] * yf + m[5]) * wz)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i64;
            let (sx, sy) = ((fx >> 5) as isize, (fy >> 5) as isize);
            let cx = cubic_coeffs((fx & 31) as f32 / 32.0);
            let cy = cubic_coeffs((fy & 31) as f32 / 32.0);
            for c in 0..3 {
                let mut acc = 0.0f32;
                for (j, wy) in cy.iter().enumerate() {
                    let yy = (sy + j as isize - 1).clamp(0, h - 1) as usize;
                    for (i, wx) in cx.iter().enumerate() {
                        let xx = (sx + i as isize - 1).clamp(0, w - 1) as usize;
                        acc += wy * wx * img.at(xx, yy, c) as f32;
                    }
                }
                out[(y * dw + x) * 3 + c] = sat_u8(acc as f64);
            }
        }
    }
    RgbImage::new(out, dw, dh)
}

/// Planar CHW f32 tensor data from an RGB8 image: `(v * scale - mean[c]) / std[c]`, channels in BGR order
/// when `bgr`, written into a `[3, out_h, out_w]` buffer (zero padded on the right/bottom).
pub fn to_chw(
    img: RgbView<'_>,
    bgr: bool,
    scale: f32,
    mean: [f32; 3],
    std: [f32; 3],
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; 3 * out_w * out_h];
    for c in 0..3 {
        let src_c = if bgr { 2 - c } else { c };
        for y in 0..img.height.min(out_h) {
            for x in 0..img.width.min(out_w) {
                let v = img.at(x, y, src_c) as f32;
                out[c * out_w * out_h + y * out_w + x] = (v * scale - mean[c]) / std[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> f64) -> ImageF64 {
        let mut img = ImageF64::zeros(w, h, 1);
        for y in 0..h {
            for x in 0..w {
                img.data[y * w + x] = f(x, y);
            }
        }
        img
    }

    #[test]
    fn area_shrink_by_two_averages_blocks() {
        let img = gray(4, 2, |x, y| (x + 4 * y) as f64);
        let r = resize_area(&img, 2, 1).unwrap();
        assert_eq!(
            r.data,
            vec![(0.0 + 1.0 + 4.0 + 5.0) / 4.0, (2.0 + 3.0 + 6.0 + 7.0) / 4.0]
        );
    }

    #[test]
    fn area_fractional_shrink_keeps_constant_and_mean() {
        let img = gray(5, 5, |_, _| 7.0);
        let r = resize_area(&img, 3, 3).unwrap();
        assert!(r.data.iter().all(|v| (v - 7.0).abs() < 1e-9));
        // a ramp keeps its mean under area averaging
        let img = gray(10, 1, |x, _| x as f64);
        let r = resize_area(&img, 3, 1).unwrap();
        let mean: f64 = r.data.iter().sum::<f64>() / 3.0;
        assert!((mean - 4.5).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn linear_upscale_matches_opencv_half_pixel_rule() {
        // cv2.resize(np.array([[0, 10]], float), (4, 1)) == [0, 2.5, 7.5, 10]
        let img = gray(2, 1, |x, _| 10.0 * x as f64);
        let r = resize_linear(&img, 4, 1).unwrap();
        assert_eq!(r.data, vec![0.0, 2.5, 7.5, 10.0]);
        // INTER_AREA upscaling of the same (OpenCV gives [0, 0, 10, 10])
        let r = resize_area(&img, 4, 1).unwrap();
        assert_eq!(r.data, vec![0.0, 0.0, 10.0, 10.0]);
        assert!(resize_linear(&img, 0, 1).is_err());
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn matches_opencv_outputs() {
        // values printed by cv2 5.0 for c = (np.arange(35) * 7 % 256).reshape(5, 7) as float64
        let c = gray(7, 5, |x, y| ((x + 7 * y) * 7 % 256) as f64);
        let r = resize_area(&c, 3, 2).unwrap();
        close(&r.data, &[44.2, 60.2, 76.2, 161.8, 177.8, 193.8]);
        let r = resize_area(&c, 9, 8).unwrap();
        close(
            &r.data[27..36],
            &[88.2, 93.2, 98.2, 103.2, 109.2, 115.2, 120.2, 125.2, 130.2],
        );
        let r = resize_area(&c, 9, 4).unwrap();
        close(
            &r.data[9..18],
            &[68.6, 73.6, 78.6, 83.6, 89.6, 95.6, 100.6, 105.6, 110.6],
        );
        let r = resize_area(&gray(10, 1, |x, _| x as f64), 3, 1).unwrap();
        close(&r.data, &[1.2, 4.5, 7.8]);
        // uint8 INTER_LINEAR 7x5 -> 11x9, row 4 (OpenCV uses fixed point; allow 1 level)
        let r = resize_linear(&c, 11, 9).unwrap();
        let want = [
            98.0, 101.0, 106.0, 110.0, 115.0, 119.0, 123.0, 128.0, 132.0, 137.0, 140.0,
        ];
        for (x, y) in r.data[44..55].iter().zip(want) {
            assert!((x.round() - y).abs() <= 1.0, "{x} vs {y}");
        }
    }

    #[test]
    fn window_resize_equals_crop_then_resize() {
        let data: Vec<u8> = (0..23 * 17 * 3).map(|i| (i * 37 % 253) as u8).collect();
        let img = RgbView::new(&data, 23, 17).unwrap();
        // inside, over every border, larger than the image, and smaller than the output
        for (x0, y0, tw, th, size) in [
            (3, 2, 12, 12, 5),
            (-4, -3, 10, 9, 4),
            (15, 10, 14, 11, 6),
            (-2, -2, 30, 25, 24),
            (5, 5, 3, 4, 8),
        ] {
            let mut crop = ImageF64::zeros(tw, th, 3);
            for ty in 0..th {
                for tx in 0..tw {
                    let (sx, sy) = (x0 + tx as i64, y0 + ty as i64);
                    if sx >= 0 && sy >= 0 && sx < 23 && sy < 17 {
                        for c in 0..3 {
                            crop.data[(ty * tw + tx) * 3 + c] =
                                f64::from(img.at(sx as usize, sy as usize, c));
                        }
                    }
                }
            }
            let want = resize_area(&crop, size, size).unwrap();
            let got = resize_area_window(img, x0, y0, tw, th, size, size).unwrap();
            assert_eq!(got, want, "window ({x0}, {y0}) {tw}x{th} -> {size}");
        }
        assert!(resize_area_window(img, 0, 0, 0, 3, 2, 2).is_err());
    }

    #[test]
    fn homography_identity_and_scale() {
        let sq = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        let big = [[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]];
        let h = perspective_transform(&sq, &big).unwrap();
        assert!((h[0] - 2.0).abs() < 1e-9 && (h[4] - 2.0).abs() < 1e-9 && h[2].abs() < 1e-9);
        let degenerate = [[0.0, 0.0]; 4];
        assert!(perspective_transform(&degenerate, &big).is_err());
    }

    #[test]
    fn warp_identity_copies() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|v| (v * 7 % 256) as u8).collect();
        let img = RgbImage::new(data, 4, 3).unwrap();
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let out = warp_perspective_cubic(img.view(), &id, 4, 3).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn chw_bgr_normalises() {
        let img = RgbImage::new(vec![255, 0, 51], 1, 1).unwrap();
        let v = to_chw(img.view(), true, 1.0 / 255.0, [0.5; 3], [0.5; 3], 2, 1);
        assert_eq!(v.len(), 6);
        assert!((v[0] - (0.2 - 0.5) / 0.5).abs() < 1e-6); // B first
        assert!((v[4] - 1.0).abs() < 1e-6); // R last
        assert_eq!(v[1], 0.0); // padding
    }
}
