//! Fast RGB8 resizes that reproduce `cv2.resize` on 8-bit images, each destination row handed to a
//! sink so that callers write it straight where they need it (an image, or normalised into a tensor
//! layout) without an intermediate image:
//!
//! - INTER_AREA (shrinking) with OpenCV's area weights (the tables of [`crate::imgproc`]) computed in
//!   f32 — OpenCV's own working type for 8-bit INTER_AREA — vertical pass first, so that the pass over
//!   every source pixel is one contiguous multiply-add per tap that the compiler vectorises, then
//!   rounded half to even. The sums run in another order than OpenCV's, so a value can differ by one
//!   level when the exact value lies within float rounding of a half (rare; tests bound it).
//! - INTER_LINEAR in OpenCV's fixed point: 11-bit coefficients, the horizontal pass in integers, and
//!   the vertical combination as OpenCV's SIMD code rounds it
//!   (`((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2 >> 2`), which makes it bit-exact with
//!   `cv2.resize` (checked against OpenCV 5.0 outputs, see the tests).

use crate::error::Result;
use crate::imgproc::{area_tab, check_size, linear_tab, AxisTab};
use crate::tensor::{RgbImage, RgbView};

/// Interpolation, with OpenCV's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// `INTER_AREA` (exact area averaging when shrinking, its linear variant otherwise).
    Area,
    /// `INTER_LINEAR` (half-pixel centres; an exact 2× shrink is done as INTER_AREA, like OpenCV).
    Linear,
}

/// The taps of one axis, flattened: destination `d` reads `idx[start[d]..start[d + 1]]`.
pub(crate) struct Taps {
    idx: Vec<usize>,
    w: Vec<f32>,
    start: Vec<usize>,
}

impl Taps {
    pub(crate) fn new(tab: &AxisTab) -> Self {
        let n: usize = tab.iter().map(Vec::len).sum();
        let mut t = Taps {
            idx: Vec::with_capacity(n),
            w: Vec::with_capacity(n),
            start: Vec::with_capacity(tab.len() + 1),
        };
        t.start.push(0);
        for taps in tab {
            for &(i, w) in taps {
                t.idx.push(i);
                t.w.push(w as f32);
            }
            t.start.push(t.idx.len());
        }
        t
    }

    #[inline]
    pub(crate) fn of(&self, d: usize) -> (&[usize], &[f32]) {
        let (a, b) = (self.start[d], self.start[d + 1]);
        (&self.idx[a..b], &self.w[a..b])
    }
}

/// Separable resize in f32 with the given tables, vertical pass first; `sink(dy, row)` per row.
fn separable_f32(
    src: RgbView<'_>,
    xt: &AxisTab,
    yt: &AxisTab,
    mut sink: impl FnMut(usize, &[f32]),
) {
    let (xt, yt) = (Taps::new(xt), Taps::new(yt));
    let stride = src.width * 3;
    let mut col = vec![0f32; stride + 1]; // + 1: see horizontal_pass
    let mut row = vec![0f32; (xt.start.len() - 1) * 3];
    for dy in 0..yt.start.len() - 1 {
        let (ys, wys) = yt.of(dy);
        for (k, (&sy, &wy)) in ys.iter().zip(wys).enumerate() {
            let s = &src.data[sy * stride..(sy + 1) * stride];
            if k == 0 {
                for (c, &v) in col.iter_mut().zip(s) {
                    *c = wy * f32::from(v);
                }
            } else {
                for (c, &v) in col.iter_mut().zip(s) {
                    *c += wy * f32::from(v);
                }
            }
        }
        horizontal_pass(&col, &xt, &mut row);
        sink(dy, &row);
    }
}

/// The horizontal pass of [`separable_f32`]: `row[dx]` = the taps of `dx` over `col`, per channel.
/// `col` holds the source row's interleaved values and one more (any value): each tap works on four
/// lanes at once, the fourth being the next pixel's first channel, computed and dropped.
#[inline(always)]
pub(crate) fn horizontal_pass(col: &[f32], xt: &Taps, row: &mut [f32]) {
    for (dx, px) in row.chunks_exact_mut(3).enumerate() {
        let (xs, wxs) = xt.of(dx);
        let mut acc = [0f32; 4];
        for (&sx, &wx) in xs.iter().zip(wxs) {
            for (a, &v) in acc.iter_mut().zip(&col[sx * 3..sx * 3 + 4]) {
                *a += wx * v;
            }
        }
        px.copy_from_slice(&acc[..3]);
    }
}

/// `INTER_RESIZE_COEF_SCALE`: linear coefficients are multiples of 1/2048.
const COEF_SCALE: f32 = 2048.0;

/// OpenCV's fixed-point linear taps of one axis: `(first source index, weight of it, weight of the
/// next)`. With `clamp` (the x axis) positions outside the image are clamped to the border with a
/// zero fraction; without it (the y axis) the fraction is kept and the caller clamps the rows.
fn fixed_linear_tab(ssize: usize, dsize: usize, clamp: bool) -> Vec<(isize, i32, i32)> {
    let scale = 1.0 / (dsize as f64 / ssize as f64);
    (0..dsize)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as isize;
            let mut fx = f - s as f32;
            if clamp {
                if s < 0 {
                    s = 0;
                    fx = 0.0;
                }
                if s >= ssize as isize - 1 {
                    s = ssize as isize - 1;
                    fx = 0.0;
                }
            }
            let w0 = ((1.0 - fx) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (fx * COEF_SCALE).round_ties_even() as i32;
            (s, w0, w1)
        })
        .collect()
}

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` of an 8-bit image in OpenCV's fixed
/// point; `sink(dy, row)` per destination row of `dw * 3` bytes.
fn linear_fixed(src: RgbView<'_>, dw: usize, dh: usize, mut sink: impl FnMut(usize, &[u8])) {
    let (sw, sh) = (src.width, src.height);
    let xt = fixed_linear_tab(sw, dw, true);
    let yt = fixed_linear_tab(sh, dh, false);
    // Horizontal pass of one source row.
    let hpass = |sy: usize, out: &mut [i32]| {
        let s = &src.data[sy * sw * 3..(sy + 1) * sw * 3];
        for (px, &(sx, a0, a1)) in out.chunks_exact_mut(3).zip(&xt) {
            let i0 = sx as usize * 3;
            let i1 = (sx as usize + 1).min(sw - 1) * 3;
            for c in 0..3 {
                px[c] = i32::from(s[i0 + c]) * a0 + i32::from(s[i1 + c]) * a1;
            }
        }
    };
    // The last two source rows passed horizontally, with their indices.
    let mut rows = [vec![0i32; dw * 3], vec![0i32; dw * 3]];
    let mut have = [usize::MAX; 2];
    let mut out = vec![0u8; dw * 3];
    for (dy, &(sy, b0, b1)) in yt.iter().enumerate() {
        let clampy = |y: isize| y.clamp(0, sh as isize - 1) as usize;
        let (y0, y1) = (clampy(sy), clampy(sy + 1));
        let slot = |y: usize, have: &mut [usize; 2], rows: &mut [Vec<i32>; 2]| -> usize {
            if let Some(k) = have.iter().position(|&h| h == y) {
                return k;
            }
            // replace the row that is not the other one needed now
            let k = if have[0] == y0 || have[0] == y1 { 1 } else { 0 };
            hpass(y, &mut rows[k]);
            have[k] = y;
            k
        };
        let k0 = slot(y0, &mut have, &mut rows);
        let k1 = slot(y1, &mut have, &mut rows);
        let (h0, h1) = (&rows[k0], &rows[k1]);
        for ((o, &a), &b) in out.iter_mut().zip(h0.iter()).zip(h1.iter()) {
            let v = (((a >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16);
            *o = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
        sink(dy, &out);
    }
}

/// Resizes `src` to `dw` × `dh` like `cv2.resize` of an 8-bit image, calling `sink(dy, row)` once per
/// destination row in order, `row` being its `dw * 3` interleaved bytes.
pub fn resize_u8_rows(
    src: RgbView<'_>,
    dw: usize,
    dh: usize,
    interp: Interp,
    mut sink: impl FnMut(usize, &[u8]),
) -> Result<()> {
    check_size(dw, dh, src.width, src.height)?;
    let (sw, sh) = (src.width, src.height);
    let area = match interp {
        Interp::Area => true,
        // OpenCV does an exact 2x shrink as INTER_AREA
        Interp::Linear => sw == 2 * dw && sh == 2 * dh,
    };
    if !area {
        linear_fixed(src, dw, dh, sink);
        return Ok(());
    }
    let (xt, yt) = if sw >= dw && sh >= dh {
        (area_tab(sw, dw), area_tab(sh, dh))
    } else {
        (linear_tab(sw, dw, true), linear_tab(sh, dh, true))
    };
    let mut bytes = vec![0u8; dw * 3];
    separable_f32(src, &xt, &yt, |dy, row| {
        for (b, &v) in bytes.iter_mut().zip(row) {
            *b = sat_u8(v);
        }
        sink(dy, &bytes);
    });
    Ok(())
}

/// Round half to even and clamp to 0..=255 (`saturate_cast<uchar>(float)`).
#[inline]
pub fn sat_u8(v: f32) -> u8 {
    // Adding 2^23 rounds a float in [0, 2^23) to the nearest integer, ties to even (the default
    // rounding mode; `round_ties_even` is a libm call per value without SSE4.1), and leaves that
    // integer in the low bits of the sum's mantissa: no float-to-int conversion, so loops of it
    // vectorise.
    const MAGIC: f32 = 8_388_608.0;
    (v.clamp(0.0, 255.0) + MAGIC).to_bits() as u8
}

/// `cv2.resize(src, (dw, dh), interpolation)` of an RGB8 image.
pub fn resize_rgb(src: RgbView<'_>, dw: usize, dh: usize, interp: Interp) -> Result<RgbImage> {
    let mut data = vec![0u8; dw * dh * 3];
    resize_u8_rows(src, dw, dh, interp, |dy, row| {
        data[dy * dw * 3..(dy + 1) * dw * 3].copy_from_slice(row);
    })?;
    RgbImage::new(data, dw, dh)
}

/// How resized u8 values become tensor values: `(u8 * scale - mean[c]) / std[c]`, channels
/// reversed (BGR) when `bgr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub bgr: bool,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Resizes `src` to `dw` × `dh` like [`resize_rgb`], normalises and writes it planar into `out`, a
/// `[3, out_h, out_w]` buffer (`dw <= out_w`, `dh <= out_h`; the rest is left as it is, i.e. the
/// caller's padding).
#[allow(clippy::too_many_arguments)]
pub fn resize_to_chw(
    src: RgbView<'_>,
    dw: usize,
    dh: usize,
    interp: Interp,
    norm: &Normalize,
    out: &mut [f32],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    if dw > out_w || dh > out_h || out.len() != 3 * out_w * out_h {
        return Err(crate::VisionError::Image(format!(
            "a {dw}x{dh} image does not fit a [3, {out_h}, {out_w}] buffer of {} values",
            out.len()
        )));
    }
    // the 256 possible values of each channel, computed once
    let mut lut = [[0f32; 256]; 3];
    for (c, l) in lut.iter_mut().enumerate() {
        for (v, o) in l.iter_mut().enumerate() {
            *o = (v as f32 * norm.scale - norm.mean[c]) / norm.std[c];
        }
    }
    let plane = out_w * out_h;
    resize_u8_rows(src, dw, dh, interp, |dy, row| {
        for (c, l) in lut.iter().enumerate() {
            let src_c = if norm.bgr { 2 - c } else { c };
            let dst = &mut out[c * plane + dy * out_w..c * plane + dy * out_w + dw];
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(3)) {
                *d = l[usize::from(px[src_c])];
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::imgproc::{resize_area, resize_linear, to_chw, ImageF64};

    /// A deterministic pseudo-random image with some smooth structure.
    pub(crate) fn image(w: usize, h: usize, seed: u32) -> RgbImage {
        let mut s = seed;
        let data = (0..w * h * 3)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (x, y) = ((i / 3) % w, (i / 3) / w);
                ((x * 3 + y * 5 + (s >> 28) as usize) % 256) as u8
            })
            .collect();
        RgbImage::new(data, w, h).expect("image")
    }

    /// Compares with the f64 resizes of `imgproc`: at most one level apart, and for INTER_AREA
    /// rarely so (INTER_LINEAR's fixed point differs from exact arithmetic more often).
    fn check(src: &RgbImage, dw: usize, dh: usize, interp: Interp) {
        let fast = resize_rgb(src.view(), dw, dh, interp).expect("fast");
        let f = ImageF64::from_rgb(src.view());
        let slow = match interp {
            Interp::Area => resize_area(&f, dw, dh),
            Interp::Linear => resize_linear(&f, dw, dh),
        }
        .expect("slow")
        .to_rgb8();
        assert_eq!((fast.width, fast.height), (dw, dh));
        let mut off = 0;
        for (a, b) in fast.data.iter().zip(&slow.data) {
            assert!(a.abs_diff(*b) <= 1, "{interp:?} {dw}x{dh}: {a} vs {b}");
            off += usize::from(a != b);
        }
        let allowed = match interp {
            Interp::Area => fast.data.len() / 1000,
            Interp::Linear => fast.data.len() / 4,
        };
        assert!(
            off <= allowed,
            "{interp:?} {dw}x{dh}: {off} of {} values differ",
            fast.data.len()
        );
    }

    #[test]
    fn close_to_the_f64_resizes() {
        let src = image(157, 93, 7);
        for (dw, dh) in [(94, 56), (67, 40), (12, 7), (78, 46), (157, 93)] {
            check(&src, dw, dh, Interp::Area);
        }
        // INTER_AREA's upscaling variant, mixed directions, linear up and down, exact 2x shrink
        for (dw, dh) in [(300, 200), (200, 50)] {
            check(&src, dw, dh, Interp::Area);
        }
        for (dw, dh) in [(400, 190), (100, 60), (157, 31)] {
            check(&src, dw, dh, Interp::Linear);
        }
        let even = image(120, 80, 3);
        check(&even, 60, 40, Interp::Linear);
    }

    #[test]
    fn linear_is_bit_exact_with_opencv() {
        // a = np.array([(i * 73 + 41) % 251 for i in range(9 * 7 * 3)], np.uint8).reshape(7, 9, 3);
        // r = cv2.resize(a, (dw, dh)) with OpenCV 5.0: sum, sum of value * flat index, row 1
        let data: Vec<u8> = (0..9 * 7 * 3)
            .map(|i| ((i * 73 + 41) % 251) as u8)
            .collect();
        let img = RgbView::new(&data, 9, 7).expect("view");
        let cases: [(usize, usize, u64, u64, &[u8]); 3] = [
            (
                23,
                16,
                138965,
                76955309,
                &[
                    35, 108, 181, 36, 105, 178, 38, 93, 166, 41, 80, 153, 89, 68, 141, 160, 55,
                    128, 221, 45, 116, 208, 47, 103, 196, 50, 91, 183, 90, 78, 171, 161, 66, 158,
                    231, 53, 146, 219, 56, 133, 206, 59, 120, 194, 92, 108, 181, 162, 96, 168, 232,
                    83, 156, 229, 70, 144, 216, 63, 131, 204, 66, 118, 191, 69, 106, 179, 69, 103,
                    176,
                ],
            ),
            (
                5,
                4,
                7555,
                222835,
                &[
                    201, 35, 95, 143, 216, 44, 85, 158, 231, 53, 101, 174, 221, 62, 116,
                ],
            ),
            (
                9,
                13,
                44204,
                7772839,
                &[
                    29, 102, 175, 75, 71, 144, 217, 38, 111, 184, 84, 80, 153, 226, 48, 120, 193,
                    93, 88, 162, 235, 57, 129, 202, 102, 97, 171,
                ],
            ),
        ];
        for (dw, dh, sum, weighted, row1) in cases {
            let r = resize_rgb(img, dw, dh, Interp::Linear).expect("resize");
            let s: u64 = r.data.iter().map(|&v| u64::from(v)).sum();
            let ws: u64 = r
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| i as u64 * u64::from(v))
                .sum();
            assert_eq!((s, ws), (sum, weighted), "{dw}x{dh}");
            assert_eq!(&r.data[dw * 3..2 * dw * 3], row1, "{dw}x{dh}");
        }
    }

    #[test]
    fn sat_u8_rounds_half_to_even_and_saturates() {
        for i in -4000..=300_000 {
            let v = i as f32 / 1024.0 - 1.0;
            assert_eq!(
                sat_u8(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
                "{v}"
            );
        }
        assert_eq!((sat_u8(0.5), sat_u8(1.5), sat_u8(2.5)), (0, 2, 2));
        assert_eq!((sat_u8(-3.0), sat_u8(1e9), sat_u8(f32::NAN)), (0, 255, 0));
        let below_half = 0.5f32 - f32::EPSILON / 4.0;
        assert_eq!(sat_u8(below_half), 0);
        assert_eq!(sat_u8(254.5), 254);
        assert_eq!(sat_u8(254.500_02), 255);
    }

    #[test]
    fn area_opencv_values() {
        // cv2.resize(c, (3, 2), INTER_AREA) of the 7x5 ramp in imgproc's tests, as uint8:
        // 44.2 60.2 76.2 / 161.8 177.8 193.8 rounded
        let data: Vec<u8> = (0..35).flat_map(|i| [(i * 7 % 256) as u8; 3]).collect();
        let img = RgbImage::new(data, 7, 5).expect("image");
        let r = resize_rgb(img.view(), 3, 2, Interp::Area).expect("resize");
        let first: Vec<u8> = r.data.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(first, vec![44, 60, 76, 162, 178, 194]);
        assert!(resize_rgb(img.view(), 0, 2, Interp::Area).is_err());
    }

    #[test]
    fn chw_equals_resize_then_to_chw() {
        let src = image(61, 29, 11);
        let norm = Normalize {
            bgr: true,
            scale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let (dw, dh, ow, oh) = (130, 48, 160, 50);
        let mut out = vec![0f32; 3 * ow * oh];
        resize_to_chw(src.view(), dw, dh, Interp::Linear, &norm, &mut out, ow, oh).expect("chw");
        let resized = resize_rgb(src.view(), dw, dh, Interp::Linear).expect("resize");
        let want = to_chw(
            resized.view(),
            true,
            norm.scale,
            norm.mean,
            norm.std,
            ow,
            oh,
        );
        assert_eq!(out, want);
        let mut small = vec![0f32; 10];
        assert!(resize_to_chw(
            src.view(),
            dw,
            dh,
            Interp::Linear,
            &norm,
            &mut small,
            ow,
            oh
        )
        .is_err());
    }
}
