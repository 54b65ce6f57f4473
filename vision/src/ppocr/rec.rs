//! PP-OCR angle classification and text recognition (rapidocr_onnxruntime 1.4.4): crops resized to
//! height 48 keeping the aspect ratio, zero-padded on the right; cls flips crops read as "180" with
//! score > 0.9; rec decodes CTC greedily with the dictionary stored in the model's metadata.

use crate::error::{Result, VisionError};
use crate::manifest::{ClsParams, RecParams};
use crate::resize::{resize_to_chw, Interp, Normalize};
use crate::tensor::{RgbImage, TensorF32};

/// Writes `img` resized to height `h` (width from its aspect ratio, at most `max_w`), normalised to
/// `(v / 255 - 0.5) / 0.5`, into `out` (`[3, h, max_w]`, zero padded on the right).
fn resize_norm(img: &RgbImage, h: usize, max_w: usize, bgr: bool, out: &mut [f32]) -> Result<()> {
    let ratio = img.width as f64 / img.height as f64;
    let want = (h as f64 * ratio).ceil() as usize;
    let rw = want.clamp(1, max_w);
    let norm = Normalize {
        bgr,
        scale: 1.0 / 255.0,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    resize_to_chw(img.view(), rw, h, Interp::Linear, &norm, out, max_w, h)
}

/// `[N, 3, h, w]` from the crops, each resized by [`resize_norm`].
fn batch(crops: &[&RgbImage], h: usize, w: usize, bgr: bool) -> Result<TensorF32> {
    let mut data = vec![0f32; crops.len() * 3 * h * w];
    if !data.is_empty() {
        for (c, out) in crops.iter().zip(data.chunks_exact_mut(3 * h * w)) {
            resize_norm(c, h, w, bgr, out)?;
        }
    }
    TensorF32::new(vec![crops.len(), 3, h, w], data)
}

/// Classifier input `[N, 3, 48, 192]`.
pub fn cls_preprocess(crops: &[&RgbImage], p: &ClsParams) -> Result<TensorF32> {
    let [_, h, w] = p.image_shape;
    batch(crops, h, w, p.color != "rgb")
}

/// Per crop: `(label index, score)` from the classifier output `[N, labels]`.
pub fn cls_postprocess(out: &TensorF32, n: usize, p: &ClsParams) -> Result<Vec<(usize, f32)>> {
    out.expect_shape("PP-OCR cls output", &[Some(n), Some(p.labels.len())])?;
    Ok(out
        .data
        .chunks_exact(p.labels.len())
        .map(|row| {
            let best = first_max(row);
            (best, row[best])
        })
        .collect())
}

/// The index of the first maximum of `row` (numpy's `argmax`; 0 for an empty row).
fn first_max(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// True when the classifier says the crop is upside down (label "180" above the threshold).
pub fn cls_is_rotated(result: (usize, f32), p: &ClsParams) -> bool {
    p.labels.get(result.0).is_some_and(|l| l.contains("180")) && result.1 > p.thresh
}

/// Recogniser input `[N, 3, 48, W]`, W = 48 × the widest aspect ratio in the batch (at least 320).
pub fn rec_preprocess(crops: &[&RgbImage], p: &RecParams) -> Result<TensorF32> {
    let [_, h, w0] = p.image_shape;
    let mut max_ratio = w0 as f64 / h as f64;
    for c in crops {
        max_ratio = max_ratio.max(c.width as f64 / c.height as f64);
    }
    let w = (h as f64 * max_ratio) as usize;
    batch(crops, h, w, p.color != "rgb")
}

/// Splits like Python's `str.splitlines()`.
fn splitlines(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(std::mem::take(&mut cur));
            }
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The CTC dictionary from the model's `character` metadata: "blank", the listed characters, " ".
pub fn dictionary_from_metadata(value: &str) -> Vec<String> {
    let mut d = vec!["blank".to_string()];
    d.extend(splitlines(value));
    d.push(" ".to_string());
    d
}

/// Greedy CTC decoding of the recogniser output `[N, T, C]`: per row `(text, mean max probability)`.
pub fn rec_postprocess(out: &TensorF32, dict: &[String]) -> Result<Vec<(String, f32)>> {
    out.expect_shape("PP-OCR rec output", &[None, None, Some(dict.len())])
        .map_err(|e| match e {
            VisionError::Shape { got, .. } => VisionError::Shape {
                what: "PP-OCR rec output".into(),
                expected: format!(
                    "[N, T, {}] (dictionary size incl. blank and space)",
                    dict.len()
                ),
                got,
            },
            e => e,
        })?;
    let (t, c) = (out.shape[1], out.shape[2]);
    Ok(out
        .data
        .chunks_exact(t * c.max(1))
        .map(|row| {
            ctc_greedy(
                row.chunks_exact(c).map(|step| {
                    let best = first_max(step);
                    (best, step[best])
                }),
                dict,
            )
        })
        .collect())
}

/// [`rec_postprocess`] of the recogniser's output through the top-1 head
/// ([`crate::onnx_graph::top1_head`]): `[N, T, 2]`, each step `[best class index, its
/// probability]`. An index outside the dictionary is an error.
pub fn rec_postprocess_top1(out: &TensorF32, dict: &[String]) -> Result<Vec<(String, f32)>> {
    out.expect_shape("PP-OCR rec output (top-1 head)", &[None, None, Some(2)])?;
    let t = out.shape[1];
    let bad = out.data.chunks_exact(2).find(|step| {
        !(step[0] >= 0.0 && step[0].fract() == 0.0 && (step[0] as usize) < dict.len())
    });
    if let Some(step) = bad {
        return Err(VisionError::Values {
            what: "PP-OCR rec output (top-1 head)".into(),
            msg: format!(
                "index {} is not a class index below {} (the dictionary's size)",
                step[0],
                dict.len()
            ),
        });
    }
    Ok(out
        .data
        .chunks_exact(2 * t.max(1))
        .map(|row| {
            let steps = row.chunks_exact(2).map(|step| (step[0] as usize, step[1]));
            ctc_greedy(steps, dict)
        })
        .collect())
}

/// One line from its steps' best classes and their probabilities: repeats and blanks (0)
/// dropped, the score the mean probability of the characters kept.
fn ctc_greedy(steps: impl Iterator<Item = (usize, f32)>, dict: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut conf = Vec::new();
    let mut prev = usize::MAX;
    for (best, prob) in steps {
        if best != 0 && best != prev {
            text.push_str(&dict[best]);
            conf.push(prob as f64);
        }
        prev = best;
    }
    let score = if conf.is_empty() {
        0.0
    } else {
        conf.iter().sum::<f64>() / conf.len() as f64
    };
    (text, score as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_greedy_decoding() {
        let dict = dictionary_from_metadata("a\nb");
        assert_eq!(dict, vec!["blank", "a", "b", " "]);
        // steps: a a blank a b b ' '
        let idx = [1, 1, 0, 1, 2, 2, 3];
        let mut data = vec![0.0f32; idx.len() * 4];
        for (t, &i) in idx.iter().enumerate() {
            data[t * 4 + i] = 0.5 + 0.05 * t as f32;
        }
        let out = TensorF32::new(vec![1, idx.len(), 4], data).unwrap();
        let r = rec_postprocess(&out, &dict).unwrap();
        assert_eq!(r[0].0, "aab ");
        let mean = (0.5 + 0.65 + 0.7 + 0.8) / 4.0;
        assert!((r[0].1 - mean).abs() < 1e-6);
        // all blank → empty text, score 0
        let blank =
            TensorF32::new(vec![1, 2, 4], vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(
            rec_postprocess(&blank, &dict).unwrap()[0],
            (String::new(), 0.0)
        );
        assert!(rec_postprocess(&TensorF32::zeros(vec![1, 2, 5]), &dict).is_err());

        // The same steps through the top-1 head: [index, probability] per step.
        let top1: Vec<f32> = idx
            .iter()
            .enumerate()
            .flat_map(|(t, &i)| [i as f32, 0.5 + 0.05 * t as f32])
            .collect();
        let head = TensorF32::new(vec![1, idx.len(), 2], top1).unwrap();
        assert_eq!(rec_postprocess_top1(&head, &dict).unwrap(), r);
        let outside = TensorF32::new(vec![1, 1, 2], vec![4.0, 0.9]).unwrap();
        let err = rec_postprocess_top1(&outside, &dict)
            .unwrap_err()
            .to_string();
        assert!(err.contains("index 4") && err.contains("below 4"), "{err}");
        let fraction = TensorF32::new(vec![1, 1, 2], vec![1.5, 0.9]).unwrap();
        assert!(rec_postprocess_top1(&fraction, &dict).is_err());
        assert!(rec_postprocess_top1(&TensorF32::zeros(vec![1, 2, 4]), &dict).is_err());
    }

    #[test]
    fn splitlines_like_python() {
        assert_eq!(splitlines("a\r\nb\rc\n"), vec!["a", "b", "c"]);
        assert_eq!(splitlines("x\n\ny"), vec!["x", "", "y"]);
    }

    #[test]
    fn shapes_and_padding() {
        let wide = RgbImage::new(vec![255; 100 * 10 * 3], 100, 10).unwrap();
        let small = RgbImage::new(vec![0; 20 * 10 * 3], 20, 10).unwrap();
        let t = rec_preprocess(&[&wide, &small], &RecParams::default()).unwrap();
        assert_eq!(t.shape, vec![2, 3, 48, 480]);
        let c = cls_preprocess(&[&wide, &small], &ClsParams::default()).unwrap();
        assert_eq!(c.shape, vec![2, 3, 48, 192]);
        // the small crop is 96 px wide, then zero padding
        let row = &c.data[3 * 48 * 192..3 * 48 * 192 + 192];
        assert_eq!(row[95], -1.0);
        assert_eq!(row[96], 0.0);
        let p = ClsParams::default();
        let out = TensorF32::new(vec![2, 2], vec![0.05, 0.95, 0.6, 0.4]).unwrap();
        let r = cls_postprocess(&out, 2, &p).unwrap();
        assert!(cls_is_rotated(r[0], &p) && !cls_is_rotated(r[1], &p));
    }
}
