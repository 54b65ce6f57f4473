//! COCO object detection with `@vladmandic/human`'s CenterNet (MobileNetV3 CenterNet, 80 classes),
//! a layout of the YOLO-family decoder ([`crate::yolo::YoloLayout::Centernet`]).
//!
//! Pre-processing as the package's `centernet.ts`: the frame is stretched to `input_size` by TF's
//! legacy bilinear resize ([`crate::tf_resize`]), values 0..255 as floats, NHWC `[1, H, W, 3]`.
//! The graph itself finds the peaks and returns its top 100 as rows of `x1, y1, x2, y2, score,
//! class` in input pixels; post-processing keeps rows scoring above `score_thresh`, runs one
//! class-agnostic NMS at `nms_thresh` (the package's `tf.image.nonMaxSuppressionAsync`) and maps
//! the boxes back by `frame / input` per axis ([`crate::yolo::yolo_postprocess`]). The package
//! also stops at `maxDetected` (10) boxes; here every box that survives NMS is kept.

use crate::error::{Result, VisionError};
use crate::geometry::{BBox, Letterbox};
use crate::manifest::ModelEntry;
use crate::tensor::{RgbImage, RgbView, TensorF32};
use crate::tf_resize::{resize_bilinear_nhwc, Canvas};
use crate::yolo::{RawBox, YoloConfig};

/// Whether the entry's declared I/O can be this CenterNet's: one NHWC `[1, H, W, 3]` input (fixed
/// sizes equal to `input_size`) and `[1, N, 6]` outputs.
pub fn check_io(entry: &ModelEntry, input_size: [usize; 2]) -> std::result::Result<(), String> {
    let family = "a CenterNet model takes one [1, H, W, 3] input and returns [1, N, 6] detections";
    if entry.inputs.len() > 1 {
        return Err(format!("declares {} inputs; {family}", entry.inputs.len()));
    }
    if let Some(i) = entry.inputs.first() {
        let s = &i.shape;
        if s.len() != 4 || s[3] != 3 || !(s[0] == 1 || s[0] == -1) {
            return Err(format!(
                "input `{}` has shape {s:?}; {family} (is this model of another family?)",
                i.name
            ));
        }
        let [h, w] = input_size;
        if (s[1] != -1 && s[1] != h as i64) || (s[2] != -1 && s[2] != w as i64) {
            return Err(format!(
                "params.input_size {input_size:?} does not fit input `{}` of shape {s:?}",
                i.name
            ));
        }
    }
    if let Some(o) = entry
        .outputs
        .iter()
        .find(|o| o.shape.len() != 3 || o.shape[2] != 6)
    {
        return Err(format!(
            "output `{}` has shape {:?}; {family} (is this model of another family?)",
            o.name, o.shape
        ));
    }
    Ok(())
}

/// The network input `[1, H, W, 3]` (0..255 floats, RGB unless the params say `bgr`) and an
/// identity letterbox (the stretch is undone per axis after the model).
pub fn preprocess(img: RgbView<'_>, cfg: &YoloConfig) -> Result<(TensorF32, Letterbox)> {
    let [h, w] = cfg.input_size;
    let mut data = resize_bilinear_nhwc(img, Canvas::of(img), w, h, false)?;
    if cfg.bgr {
        for px in data.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
    }
    let lb = Letterbox {
        image: RgbImage::black(0, 0),
        ratio: 1.0,
        pad_x: 0,
        pad_y: 0,
    };
    Ok((TensorF32::new(vec![1, h, w, 3], data)?, lb))
}

/// The rows above the score threshold as boxes in input pixels (before NMS).
pub fn decode(out: &TensorF32, cfg: &YoloConfig) -> Result<Vec<RawBox>> {
    if out.shape.len() != 3 || out.shape[0] != 1 || out.shape[2] != 6 {
        return Err(VisionError::Shape {
            what: "CenterNet output".into(),
            expected: "[1, N, 6] (x1, y1, x2, y2, score, class)".into(),
            got: out.shape.clone(),
        });
    }
    let mut res = Vec::new();
    for r in out.data.chunks_exact(6) {
        if !r.iter().all(|v| v.is_finite()) || r[4] <= cfg.score_thresh || r[5] < 0.0 {
            continue;
        }
        res.push(RawBox {
            bbox: BBox::new(r[0], r[1], r[2], r[3]),
            score: r[4],
            class: r[5] as usize,
        });
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{YoloParams, YoloResize};
    use crate::yolo::{yolo_postprocess, YoloLayout};

    fn cfg() -> YoloConfig {
        let p = YoloParams {
            color: "rgb".into(),
            input_size: [64, 64],
            score_thresh: 0.2,
            nms_thresh: 0.4,
            classes: vec!["person".into(), "cup".into()],
            resize: YoloResize::Letterbox,
            ..YoloParams::default()
        };
        YoloConfig::from_params(YoloLayout::Centernet, &p)
    }

    #[test]
    fn input_is_stretched_nhwc_0_to_255() {
        let c = cfg();
        assert_eq!(c.resize, YoloResize::Stretch, "forced for CenterNet");
        let img = RgbImage::new([10, 20, 30].repeat(128 * 32), 128, 32).unwrap();
        let (t, _) = preprocess(img.view(), &c).unwrap();
        assert_eq!(t.shape, vec![1, 64, 64, 3]);
        assert_eq!(&t.data[..3], &[10.0, 20.0, 30.0]);
    }

    #[test]
    fn rows_decode_nms_across_classes_and_map_back_per_axis() {
        let c = cfg();
        let rows = [
            [8.0, 8.0, 24.0, 40.0, 0.9, 0.0],
            [9.0, 8.0, 24.0, 40.0, 0.5, 1.0], // same place, another class: suppressed
            [40.0, 40.0, 60.0, 60.0, 0.3, 1.0],
            [0.0, 0.0, 4.0, 4.0, 0.1, 0.0], // below the threshold
        ];
        let out = TensorF32::new(vec![1, 4, 6], rows.concat()).unwrap();
        let (_, lb) = preprocess(RgbImage::black(128, 32).view(), &c).unwrap();
        let d = yolo_postprocess(&out, &lb, 128, 32, &c).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].class, "person");
        assert_eq!(d[0].bbox, BBox::new(16.0, 4.0, 48.0, 20.0));
        assert_eq!((d[1].class.as_str(), d[1].score), ("cup", 0.3));
        let wrong = TensorF32::zeros(vec![1, 100, 4]);
        assert!(decode(&wrong, &c)
            .unwrap_err()
            .to_string()
            .contains("[1, N, 6]"));
    }
}
