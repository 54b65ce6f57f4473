//! Running a model on a large batch a few rows at a time: a model given a row cap
//! ([`Model::set_max_rows`]) splits a bigger batch along its first axis, runs each part and
//! concatenates the outputs, so the memory of one run stays bounded (a super-resolution
//! frame's tiles run `tiles_per_run` at a time however large the frame).

use crate::engine::Model;
use crate::error::Result;
use crate::tensor::TensorF32;

/// Runs `model` on `input` in parts of at most `max_rows` rows; the outputs concatenated.
pub(crate) fn run_rows(
    model: &mut Model,
    input: &TensorF32,
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
        let mut shape = input.shape.clone();
        shape[0] = n;
        let chunk = TensorF32::new(shape, input.data[at * per_row..(at + n) * per_row].to_vec())?;
        parts.push(model.run(std::slice::from_ref(&chunk))?);
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
