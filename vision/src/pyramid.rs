//! Several INTER_AREA resizes of one RGB8 image in a single pass over its rows, for image pyramids
//! such as MTCNN's (nine levels of a 720p frame, each resized from the frame itself).
//!
//! Resizing level by level reads and converts every source row to f32 once per level it touches
//! (≈ 11 times per row for MTCNN's pyramid of a 720p frame). Here each source row is converted once
//! and added into every level's open destination rows. The arithmetic of each level is the one of
//! [`crate::resize::resize_u8_rows`] with [`Interp::Area`](crate::resize::Interp::Area): the same
//! f32 products, summed in the same order (a destination row's taps in ascending source rows), then
//! the same horizontal pass and rounding, so every level is bit-identical to resizing it alone.

use crate::error::{Result, VisionError};
use crate::imgproc::{area_tab, check_size, linear_tab, AxisTab};
use crate::resize::{horizontal_pass, sat_u8, Taps};
use crate::tensor::RgbView;

/// One destination row's use of one source row: `acc[dy] (=|+=) weight * source_row`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    source_row: usize,
    dest_row: usize,
    weight: f32,
    first: bool,
    last: bool,
}

/// The state of one level during the pass.
struct Level {
    width: usize,
    x_taps: Taps,
    /// Every vertical tap, ordered by source row (stable: a destination row's taps keep their order).
    taps: Vec<Tap>,
    next_tap: usize,
    /// Accumulator of each destination row that is open (has seen its first tap, not its last).
    open: Vec<Option<usize>>,
    buffers: Vec<Vec<f32>>,
    free: Vec<usize>,
}

impl Level {
    fn new(sw: usize, sh: usize, dw: usize, dh: usize) -> Result<Self> {
        check_size(dw, dh, sw, sh)?;
        let (xt, yt): (AxisTab, AxisTab) = if sw >= dw && sh >= dh {
            (area_tab(sw, dw), area_tab(sh, dh))
        } else {
            (linear_tab(sw, dw, true), linear_tab(sh, dh, true))
        };
        let mut taps = Vec::with_capacity(yt.iter().map(Vec::len).sum());
        for (dest_row, row_taps) in yt.iter().enumerate() {
            if row_taps.is_empty() {
                return Err(VisionError::Image(format!(
                    "resizing {sw}x{sh} to {dw}x{dh}: destination row {dest_row} has no source row"
                )));
            }
            for (k, &(source_row, weight)) in row_taps.iter().enumerate() {
                taps.push(Tap {
                    source_row,
                    dest_row,
                    weight: weight as f32,
                    first: k == 0,
                    last: k + 1 == row_taps.len(),
                });
            }
        }
        taps.sort_by_key(|t| t.source_row);
        Ok(Self {
            width: dw,
            x_taps: Taps::new(&xt),
            taps,
            next_tap: 0,
            open: vec![None; dh],
            buffers: Vec::new(),
            free: Vec::new(),
        })
    }

    /// Adds `row` (source row `sy`, as f32) into this level's open rows; finished rows go through
    /// the horizontal pass into `sink(dy, bytes)`.
    #[inline(always)]
    fn add_row(
        &mut self,
        sy: usize,
        row: &[f32],
        out_f32: &mut Vec<f32>,
        out_u8: &mut Vec<u8>,
        mut sink: impl FnMut(usize, &[u8]),
    ) {
        while let Some(&tap) = self.taps.get(self.next_tap) {
            if tap.source_row != sy {
                break;
            }
            self.next_tap += 1;
            let slot = match self.open[tap.dest_row] {
                Some(slot) => slot,
                None => {
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.buffers.push(vec![0f32; row.len()]);
                        self.buffers.len() - 1
                    });
                    self.open[tap.dest_row] = Some(slot);
                    slot
                }
            };
            let acc = &mut self.buffers[slot];
            add_scaled_row(acc, tap.weight, row, tap.first);
            if tap.last {
                out_f32.resize(self.width * 3, 0.0);
                out_u8.resize(self.width * 3, 0);
                horizontal_pass(acc, &self.x_taps, out_f32);
                for (b, &v) in out_u8.iter_mut().zip(out_f32.iter()) {
                    *b = sat_u8(v);
                }
                sink(tap.dest_row, out_u8);
                self.open[tap.dest_row] = None;
                self.free.push(slot);
            }
        }
    }
}

/// `acc = weight * row` (`first`) or `acc += weight * row`: a product and a sum per value, never
/// fused, so that every instruction set gives the same bits.
#[inline(always)]
fn add_scaled_row(acc: &mut [f32], weight: f32, row: &[f32], first: bool) {
    if first {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = weight * v;
        }
    } else {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += weight * v;
        }
    }
}

/// Resizes `src` to each of `sizes` like `resize_u8_rows(src, w, h, Interp::Area, ..)` would,
/// calling `sink(level, dy, row)` with each destination row (`w * 3` interleaved bytes). Rows of a
/// level come in order; levels interleave.
pub fn resize_u8_area_levels(
    src: RgbView<'_>,
    sizes: &[(usize, usize)],
    mut sink: impl FnMut(usize, usize, &[u8]),
) -> Result<()> {
    let mut levels = sizes
        .iter()
        .map(|&(dw, dh)| Level::new(src.width, src.height, dw, dh))
        .collect::<Result<Vec<_>>>()?;
    if levels.is_empty() {
        return Ok(());
    }
    // The build targets baseline x86-64 (SSE2); the same code compiled for AVX-512 or AVX2 runs
    // where the CPU has them. Products and sums are never fused, so the bits are the same.
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { one_pass_avx512(src, &mut levels, &mut sink) };
            return Ok(());
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { one_pass_avx2(src, &mut levels, &mut sink) };
            return Ok(());
        }
    }
    one_pass(src, &mut levels, &mut sink);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn one_pass_avx512(
    src: RgbView<'_>,
    levels: &mut [Level],
    sink: &mut impl FnMut(usize, usize, &[u8]),
) {
    one_pass(src, levels, sink);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn one_pass_avx2(
    src: RgbView<'_>,
    levels: &mut [Level],
    sink: &mut impl FnMut(usize, usize, &[u8]),
) {
    one_pass(src, levels, sink);
}

/// Every source row, converted to f32 once, into every level.
#[inline(always)]
fn one_pass(src: RgbView<'_>, levels: &mut [Level], sink: &mut impl FnMut(usize, usize, &[u8])) {
    let stride = src.width * 3;
    let mut row = vec![0f32; stride + 1]; // + 1: see resize::horizontal_pass
    let (mut out_f32, mut out_u8) = (Vec::new(), Vec::new());
    for (sy, bytes) in src.data.chunks_exact(stride).enumerate() {
        for (f, &b) in row.iter_mut().zip(bytes) {
            *f = f32::from(b);
        }
        for (k, level) in levels.iter_mut().enumerate() {
            level.add_row(sy, &row, &mut out_f32, &mut out_u8, |dy, r| sink(k, dy, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::tests::image;
    use crate::resize::{resize_u8_rows, Interp};
    use crate::tensor::RgbImage;

    fn one_by_one(src: &RgbImage, sizes: &[(usize, usize)]) -> Vec<Vec<u8>> {
        sizes
            .iter()
            .map(|&(w, h)| {
                let mut out = vec![0u8; w * h * 3];
                resize_u8_rows(src.view(), w, h, Interp::Area, |dy, r| {
                    out[dy * w * 3..(dy + 1) * w * 3].copy_from_slice(r);
                })
                .expect("resize");
                out
            })
            .collect()
    }

    fn all_at_once(src: &RgbImage, sizes: &[(usize, usize)]) -> Vec<Vec<u8>> {
        let mut outs: Vec<Vec<u8>> = sizes.iter().map(|&(w, h)| vec![1u8; w * h * 3]).collect();
        let mut seen: Vec<Vec<bool>> = sizes.iter().map(|&(_, h)| vec![false; h]).collect();
        resize_u8_area_levels(src.view(), sizes, |k, dy, r| {
            let w = sizes[k].0;
            assert!(!seen[k][dy], "level {k} row {dy} given twice");
            seen[k][dy] = true;
            outs[k][dy * w * 3..(dy + 1) * w * 3].copy_from_slice(r);
        })
        .expect("levels");
        for (k, s) in seen.iter().enumerate() {
            assert!(s.iter().all(|&b| b), "level {k}: a row never came");
        }
        outs
    }

    #[test]
    fn every_level_equals_its_own_resize_bit_for_bit() {
        let src = image(157, 93, 11);
        // shrinks by odd factors, an exact 2x, 1x, a 1-pixel level and enlargements
        let sizes = [
            (94, 56),
            (67, 40),
            (157, 93),
            (79, 47),
            (12, 7),
            (1, 1),
            (200, 120),
            (157, 31),
        ];
        assert_eq!(all_at_once(&src, &sizes), one_by_one(&src, &sizes));
    }

    #[test]
    fn the_mtcnn_pyramid_of_a_wide_frame_is_bit_identical() {
        let src = image(320, 180, 5);
        let cfg = crate::mtcnn::MtcnnConfig::default();
        let sizes: Vec<_> = crate::mtcnn::pyramid_scales(320, 180, &cfg)
            .iter()
            .map(|&s| crate::mtcnn::scaled_size(320, 180, s))
            .collect();
        assert!(sizes.len() >= 5, "{sizes:?}");
        assert_eq!(all_at_once(&src, &sizes), one_by_one(&src, &sizes));
    }

    #[test]
    fn the_baseline_code_gives_the_bits_of_the_code_this_cpu_runs() {
        let src = image(131, 77, 3);
        let sizes = [(79, 46), (56, 33), (13, 8)];
        let mut levels: Vec<Level> = sizes
            .iter()
            .map(|&(w, h)| Level::new(131, 77, w, h).expect("level"))
            .collect();
        let mut baseline: Vec<Vec<u8>> = sizes.iter().map(|&(w, h)| vec![0; w * h * 3]).collect();
        one_pass(src.view(), &mut levels, &mut |k, dy, r: &[u8]| {
            let w = sizes[k].0;
            baseline[k][dy * w * 3..(dy + 1) * w * 3].copy_from_slice(r);
        });
        assert_eq!(baseline, all_at_once(&src, &sizes));
    }

    #[test]
    fn an_empty_size_is_an_error() {
        let src = image(10, 10, 1);
        assert!(resize_u8_area_levels(src.view(), &[(5, 5), (0, 3)], |_, _, _| {}).is_err());
    }
}
