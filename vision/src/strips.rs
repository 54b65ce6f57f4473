//! Running a fully convolutional model on a large input in strips along one spatial axis
//! ([`Strips`], the manifest's `strips` of a model): each strip covers exactly the input
//! rows its output rows see, the outputs are joined along the same axis, and the result
//! is the whole run's, bit for bit (every output value is computed from the same inputs in
//! the same order). A strip's activations stay in cache where the whole input's do not:
//! MTCNN's P-Net on a 720p pyramid, cut into strips of at most 300,000 input values, ran
//! 6 % faster on average, alone and under a second process's load
//! (`tools/bench/pnet_strips.py`, BENCHMARKS.md).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::error::{Result, VisionError};
use crate::tensor::{TensorF32, TensorView};

/// How a model may be cut: along input `axis`, an output row sees `field` input rows, and
/// consecutive output rows are `stride` input rows apart (the network's whole receptive
/// field and stride along that axis, with no padding before the first row). Inputs of more
/// than `max_values` values per batch row run in strips of about that size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strips {
    pub axis: usize,
    pub field: usize,
    pub stride: usize,
    #[serde(default = "default_max_values")]
    pub max_values: usize,
}

fn default_max_values() -> usize {
    300_000
}

/// Where strip `k` of a cut lies along the axis: input rows `start..end`, and the output
/// rows it must give (`None` for the last strip, which runs to the input's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    rows: Option<usize>,
}

impl Strips {
    /// The strips (two or more) of an input of `shape`, or `None` when it runs whole (small
    /// enough, too short along the axis for two strips, or a setting that cannot cut
    /// anything).
    fn spans(&self, shape: &[usize]) -> Option<Vec<Span>> {
        let len = *shape.get(self.axis)?;
        if self.axis == 0 || self.stride == 0 || self.field < self.stride || len < self.field {
            return None;
        }
        let per_row: usize = shape.get(1..)?.iter().product();
        let parts = per_row.div_ceil(self.max_values.max(1));
        let out_rows = (len - self.field) / self.stride + 1;
        let rows = out_rows.div_ceil(parts);
        if parts < 2 || rows == 0 || rows >= out_rows {
            return None;
        }
        let mut spans = Vec::new();
        let mut start = 0;
        loop {
            let end = start + self.stride * (rows - 1) + self.field;
            let next = start + self.stride * rows;
            // The last strip runs to the end, and is never shorter than the field.
            if end >= len || len - next < self.field {
                spans.push(Span {
                    start,
                    end: len,
                    rows: None,
                });
                // One strip would be the whole input, copied for nothing.
                return (spans.len() > 1).then_some(spans);
            }
            spans.push(Span {
                start,
                end,
                rows: Some(rows),
            });
            start = next;
        }
    }
}

/// `(outer, len, inner)` of `shape` around `axis`: the tensor is `outer` blocks of `len`
/// rows of `inner` values.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Rows `start..end` of `t` along `axis`: the shape and the values, borrowed from `t` when
/// they lie together there (one block before the axis: a batch of one), else copied.
fn slice<'a>(
    t: TensorView<'a>,
    axis: usize,
    start: usize,
    end: usize,
) -> Result<(Vec<usize>, Cow<'a, [f32]>)> {
    let (outer, len, inner) = around(t.shape, axis);
    let mut shape = t.shape.to_vec();
    shape[axis] = end - start;
    let rows = |o: usize| {
        let block = o * len * inner;
        t.data
            .get(block + start * inner..block + end * inner)
            .ok_or_else(|| VisionError::Shape {
                what: "a strip's input".into(),
                expected: format!("{} values for shape {:?}", outer * len * inner, t.shape),
                got: vec![t.data.len()],
            })
    };
    if outer == 1 {
        return Ok((shape, Cow::Borrowed(rows(0)?)));
    }
    let mut data = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        data.extend_from_slice(rows(o)?);
    }
    Ok((shape, Cow::Owned(data)))
}

/// `parts` joined along `axis` (their other dimensions must agree).
fn join(parts: &[TensorF32], axis: usize) -> Result<TensorF32> {
    let Some(first) = parts.first() else {
        return TensorF32::new(vec![0], vec![]);
    };
    let mut shape = first.shape.clone();
    let mismatch = |p: &TensorF32| {
        p.shape.len() != shape.len()
            || p.shape
                .iter()
                .zip(&shape)
                .enumerate()
                .any(|(d, (a, b))| d != axis && a != b)
    };
    if axis >= shape.len() || parts.iter().any(mismatch) {
        return Err(VisionError::Shape {
            what: format!("strip outputs joined along axis {axis}"),
            expected: format!("{shape:?} but for that axis"),
            got: parts
                .iter()
                .find(|p| mismatch(p))
                .map_or(vec![], |p| p.shape.clone()),
        });
    }
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let (outer, _, inner) = around(&shape, axis);
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for p in parts {
            let rows = p.shape[axis] * inner;
            data.extend_from_slice(&p.data[o * rows..(o + 1) * rows]);
        }
    }
    TensorF32::new(shape, data)
}

/// Runs `input` through `run` in the strips `plan` cuts it into (whole when it cuts
/// nothing) and joins each output along the axis. `model` names the model in errors: an
/// interior strip that does not give its expected rows means the setting does not fit the
/// model.
pub(crate) fn run_in_strips(
    model: &str,
    plan: &Strips,
    input: TensorView<'_>,
    mut run: impl FnMut(TensorView<'_>) -> Result<Vec<TensorF32>>,
) -> Result<Vec<TensorF32>> {
    let Some(spans) = plan.spans(input.shape) else {
        return run(input);
    };
    let mut parts: Vec<Vec<TensorF32>> = Vec::with_capacity(spans.len());
    for span in &spans {
        let (shape, data) = slice(input, plan.axis, span.start, span.end)?;
        let outputs = run(TensorView {
            shape: &shape,
            data: &data,
        })?;
        if let Some(rows) = span.rows {
            if let Some(bad) = outputs
                .iter()
                .find(|o| o.shape.get(plan.axis) != Some(&rows))
            {
                return Err(VisionError::Run {
                    model: model.to_string(),
                    msg: format!(
                        "its `strips` setting (axis {}, field {}, stride {}) does not fit the model: \
                         input rows {}..{} gave an output of shape {:?}, expected {rows} rows on that axis",
                        plan.axis, plan.field, plan.stride, span.start, span.end, bad.shape
                    ),
                });
            }
        }
        parts.push(outputs);
    }
    crate::chunked::join_outputs(parts, |pieces| join(pieces, plan.axis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Strips = Strips {
        axis: 1,
        field: 12,
        stride: 2,
        max_values: 600,
    };

    /// A stand-in for a fully convolutional net over `[n, len, w]`: output row r (for every
    /// batch row and column) is the sum of input rows 2r..2r+12 weighted by their offset;
    /// a second output holds each output row's sum.
    fn net(x: &TensorF32) -> Result<Vec<TensorF32>> {
        let (n, len, w) = (x.shape[0], x.shape[1], x.shape[2]);
        let rows = (len - 12) / 2 + 1;
        let mut out = vec![0f32; n * rows * w];
        for b in 0..n {
            for r in 0..rows {
                for c in 0..w {
                    out[(b * rows + r) * w + c] = (0..12)
                        .map(|k| (k + 1) as f32 * x.data[(b * len + 2 * r + k) * w + c])
                        .sum();
                }
            }
        }
        let sums = out.chunks(w).map(|row| row.iter().sum()).collect();
        Ok(vec![
            TensorF32::new(vec![n, rows, w], out)?,
            TensorF32::new(vec![n, rows, 1], sums)?,
        ])
    }

    fn input(n: usize, len: usize, w: usize) -> TensorF32 {
        let data = (0..n * len * w).map(|i| ((i * 37) % 101) as f32).collect();
        TensorF32::new(vec![n, len, w], data).unwrap()
    }

    #[test]
    fn strips_give_the_whole_run_for_every_length_and_batch() {
        for (n, len) in [
            (1, 100),
            (1, 101),
            (2, 77),
            (1, 12),
            (3, 45),
            (1, 13),
            (2, 301),
        ] {
            let x = input(n, len, 15);
            let cut = PLAN.spans(&x.shape).is_some();
            assert_eq!(
                cut,
                len * 15 > 600,
                "n {n}, len {len}: cut only when too big"
            );
            let got = run_in_strips("m", &PLAN, x.view(), |v| net(&v.to_tensor()?)).unwrap();
            assert_eq!(got, net(&x).unwrap(), "n {n}, len {len}");
        }
    }

    #[test]
    fn interior_strips_cover_exactly_the_rows_their_outputs_see() {
        // (start, end, output rows a strip must give; none for the last).
        let spans = |shape: &[usize]| {
            PLAN.spans(shape).map(|s| {
                s.iter()
                    .map(|s| (s.start, s.end, s.rows))
                    .collect::<Vec<_>>()
            })
        };
        // 1500 values per row over 600: three strips of 15 output rows of 45 in all.
        assert_eq!(
            spans(&[1, 100, 15]),
            Some(vec![(0, 40, Some(15)), (30, 70, Some(15)), (60, 100, None)])
        );
        // 101 rows: a fourth strip would start at 90 with 11 rows, fewer than the field, so
        // the third runs to the end.
        assert_eq!(
            spans(&[1, 101, 15]),
            Some(vec![(0, 40, Some(15)), (30, 70, Some(15)), (60, 101, None)])
        );
        assert_eq!(spans(&[1, 100, 5]), None, "small enough to run whole");
        assert_eq!(spans(&[1, 10, 500]), None, "shorter than the field");
    }

    #[test]
    fn a_setting_that_does_not_fit_the_model_is_an_error_naming_it() {
        let wrong = Strips { field: 10, ..PLAN };
        let x = input(1, 100, 15);
        let e = run_in_strips("mtcnn-pnet", &wrong, x.view(), |v| net(&v.to_tensor()?))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mtcnn-pnet") && e.contains("`strips`"), "{e}");
    }
}
