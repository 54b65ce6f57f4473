//! Running a model on a large batch a few rows at a time: a model given a row cap
//! ([`Model::set_max_rows`]) splits a bigger batch along its first axis, runs each part and
//! concatenates the outputs, so the memory of one run stays bounded (a super-resolution
//! frame's tiles run `tiles_per_run` at a time however large the frame). A cap on a run's
//! input values ([`Model::set_max_run_values`]) does the same for speed: each row is
//! computed on its own, so the outputs are the whole batch's bit for bit, and a few rows'
//! activations stay in cache where a whole batch's do not (MTCNN's R-Net on 400 crops,
//! PP-OCR's recogniser on six long lines; BENCHMARKS.md "Session 32").

use crate::engine::Model;
use crate::error::Result;
use crate::tensor::{TensorF32, TensorView};

/// The most rows of an input of `shape` one run takes: at most `max_rows`, and at most as
/// many as fit in `max_values` input values (at least one); `None`: the whole batch.
pub(crate) fn rows_for(
    max_rows: Option<usize>,
    max_values: Option<usize>,
    shape: &[usize],
) -> Option<usize> {
    let per_row: usize = shape.get(1..).unwrap_or(&[]).iter().product();
    let by_values = max_values.map(|v| (v / per_row.max(1)).max(1));
    match (max_rows, by_values) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `model` on `input` in parts of at most `max_rows` rows; the outputs concatenated.
pub(crate) fn run_rows(
    model: &mut Model,
    input: TensorView<'_>,
    max_rows: usize,
) -> Result<Vec<TensorF32>> {
    let rows = input.shape.first().copied().unwrap_or(0);
    let per_row = input
        .shape
        .get(1..)
        .unwrap_or(&[])
        .iter()
        .product::<usize>();
    let mut parts: Vec<Vec<TensorF32>> = Vec::new();
    let mut at = 0;
    while at < rows {
        let n = max_rows.max(1).min(rows - at);
        let mut shape = input.shape.to_vec();
        shape[0] = n;
        // (Model::run_one checked that the values fill the shape.)
        parts.push(model.run_part(TensorView {
            shape: &shape,
            data: &input.data[at * per_row..(at + n) * per_row],
        })?);
        at += n;
    }
    join_outputs(parts, TensorF32::concat_batch)
}

/// The outputs of several runs of one model over the parts of an input, each output's
/// pieces joined by `join` (output k of every run, in run order).
pub(crate) fn join_outputs(
    mut parts: Vec<Vec<TensorF32>>,
    join: impl Fn(&[TensorF32]) -> Result<TensorF32>,
) -> Result<Vec<TensorF32>> {
    let outputs = parts.first().map_or(0, Vec::len);
    (0..outputs)
        .map(|k| {
            let pieces: Vec<TensorF32> = parts
                .iter_mut()
                .map(|p| std::mem::replace(&mut p[k], TensorF32::zeros(vec![0])))
                .collect();
            join(&pieces)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::rows_for;

    #[test]
    fn a_value_cap_runs_whole_rows_and_never_fewer_than_one() {
        // R-Net crops of 24×24×3 = 1,728 values: 64,000 values hold 37 of them.
        assert_eq!(rows_for(None, Some(64_000), &[400, 24, 24, 3]), Some(37));
        // A row larger than the cap still runs, alone.
        assert_eq!(rows_for(None, Some(64_000), &[6, 3, 48, 1200]), Some(1));
        // A row cap and a value cap: the smaller wins.
        assert_eq!(rows_for(Some(4), Some(64_000), &[400, 24, 24, 3]), Some(4));
        assert_eq!(
            rows_for(Some(100), Some(64_000), &[400, 24, 24, 3]),
            Some(37)
        );
        assert_eq!(rows_for(Some(4), None, &[400, 24, 24, 3]), Some(4));
        assert_eq!(rows_for(None, None, &[400, 24, 24, 3]), None);
        // A shapeless input counts as one value a row.
        assert_eq!(rows_for(None, Some(10), &[]), Some(10));
    }
}
