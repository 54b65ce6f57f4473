//! Transposes moved above the element-wise operations by constants that feed them. Models
//! converted from TensorFlow (tf2onnx: MoveNet, CenterNet) normalise their NHWC input —
//! `(x − mean) · scale − 1` with one value per channel, shaped [1, 1, 1, C] — and only then
//! transpose it to NCHW for the first convolution. ONNX Runtime's CPU kernels broadcast a
//! constant over an innermost axis of 3 a few elements at a time (MoveNet at 256²: 0.76 ms for
//! the `Sub`, 0.74 ms for the `Mul`, 5 % of the model at one thread), while after the
//! transpose the same constant, shaped [1, C, 1, 1], is applied plane by plane.
//!
//! `Transpose(x ∘ c) = Transpose(x) ∘ Transpose(c)` exactly, for `∘` one of Add, Sub, Mul,
//! Div and `c` a constant of at most `x`'s rank (left-padded with ones to it), so the
//! rewrite moves the `Transpose` above each such operation in turn, transposing the constant
//! with it. Outputs are bit for bit the same. It needs `x`'s rank to equal the permutation's
//! length, which it reads from the graph input's declared shape through the operations
//! between (see [`rank_of`]); where it cannot tell, the graph stays as it is.

use std::collections::HashMap;

use super::model::{Graph, Names, Node, Tensor};
use super::rewrite::{constant, Const, Index};

/// Element-wise binary operations whose constant operand can be transposed with them.
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div"];
/// Element-wise operations of one tensor input (the rank of their output is their input's).
const UNARY: &[&str] = &[
    "Abs", "Cast", "Ceil", "Clip", "Exp", "Floor", "Identity", "Log", "Neg", "Relu", "Round",
    "Sigmoid", "Sqrt", "Tanh",
];
/// How far back [`rank_of`] follows a tensor.
const RANK_DEPTH: usize = 32;

/// Moves every `Transpose` whose input is made by an element-wise operation by a constant,
/// read by nothing else, above that operation, until none is left; how many were moved.
pub(super) fn transposes_above_constant_ops(g: &mut Graph<'_>, names: &mut Names) -> usize {
    let mut moved = 0;
    // Each move renumbers nodes: the index is made again for the next one. A valid graph has
    // fewer moves than nodes; the bound keeps a malformed one (a cycle) from looping.
    let most = g.nodes.len();
    while let Some(found) = next_move(g).filter(|_| moved < most) {
        move_above(g, names, found);
        moved += 1;
    }
    moved
}

/// A transpose to move above the operation that makes its input.
struct Move {
    transpose: usize,
    op: usize,
    perm: Vec<usize>,
    /// The operation's tensor operand, and its constant one.
    x: String,
    c: Const,
}

/// The next transpose to move, if any.
fn next_move(g: &Graph<'_>) -> Option<Move> {
    let idx = Index::of(g);
    let producers = producers(g);
    g.nodes.iter().enumerate().find_map(|(ti, t)| {
        let perm = permutation(t)?;
        let y = t.inputs.first()?;
        let &oi = producers.get(y.as_str())?;
        let op = &g.nodes[oi];
        let (x, c) = constant_operand(g, &idx, op)?;
        let fits = idx.sole_consumer(y) == Some(ti)
            && op.outputs.len() == 1
            && c.dims.len() <= perm.len()
            && rank_of(g, &idx, &producers, x, RANK_DEPTH) == Some(perm.len());
        fits.then(|| Move {
            transpose: ti,
            op: oi,
            perm,
            x: x.to_string(),
            c,
        })
    })
}

/// A default-domain `Transpose`'s explicit permutation (none given means reversed axes,
/// left alone) when it is one.
fn permutation(t: &Node<'_>) -> Option<Vec<usize>> {
    if !t.is("Transpose") || !t.domain.is_empty() || t.inputs.len() != 1 {
        return None;
    }
    let perm: Vec<usize> = t
        .attr("perm")?
        .ints()?
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<_, _>>()
        .ok()?;
    let mut seen = vec![false; perm.len()];
    for &axis in &perm {
        if std::mem::replace(seen.get_mut(axis)?, true) {
            return None;
        }
    }
    Some(perm)
}

/// Of an element-wise binary operation, its tensor operand and its constant one.
fn constant_operand<'n>(g: &Graph<'_>, idx: &Index, op: &'n Node<'_>) -> Option<(&'n str, Const)> {
    if !BINARY.contains(&op.op_type.as_str()) || !op.domain.is_empty() {
        return None;
    }
    let [a, b] = op.inputs.as_slice() else {
        return None;
    };
    match (constant(g, idx, a), constant(g, idx, b)) {
        (None, Some(c)) => Some((a, c)),
        (Some(c), None) => Some((b, c)),
        _ => None,
    }
}

/// The node that makes each tensor.
fn producers<'g>(g: &'g Graph<'_>) -> HashMap<&'g str, usize> {
    let mut out = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in &n.outputs {
            out.insert(o.as_str(), i);
        }
    }
    out
}

/// How many axes tensor `name` has, where the graph says: a graph input's declared shape, a
/// constant's, through element-wise operations and transposes; none when it cannot tell.
fn rank_of(
    g: &Graph<'_>,
    idx: &Index,
    producers: &HashMap<&str, usize>,
    name: &str,
    depth: usize,
) -> Option<usize> {
    if let Some(c) = constant(g, idx, name) {
        return Some(c.dims.len());
    }
    if g.inputs.iter().any(|i| i == name) {
        return g.input_rank(name);
    }
    let n = &g.nodes[*producers.get(name)?];
    let depth = depth.checked_sub(1)?;
    if !n.domain.is_empty() {
        return None;
    }
    let rank = |input: &str| rank_of(g, idx, producers, input, depth);
    match n.op_type.as_str() {
        op if UNARY.contains(&op) => rank(n.inputs.first()?),
        op if BINARY.contains(&op) => match n.inputs.as_slice() {
            [a, b] => Some(rank(a)?.max(rank(b)?)),
            _ => None,
        },
        "Transpose" => permutation(n).map(|p| p.len()),
        _ => None,
    }
}

/// Swaps `Transpose(op(x, c))` into `op(Transpose(x), Transpose(c))`: the transpose reads `x`
/// and writes a fresh tensor, the operation reads that and the transposed constant and writes
/// what the transpose wrote; the transpose is put where the operation was, so the nodes stay
/// in topological order. (The operation's old output is gone: `rewrite_model`'s
/// `drop_dead_constants` drops its value info.)
fn move_above(g: &mut Graph<'_>, names: &mut Names, m: Move) {
    let out = g.nodes[m.transpose].outputs[0].clone();
    let moved = names.fresh(&out, "moved");
    let constant_at = usize::from(g.nodes[m.op].inputs[0] == m.x);
    let transposed = names.fresh(&g.nodes[m.op].inputs[constant_at], "transposed");
    let (dims, values) = transposed_constant(&m.c, &m.perm);
    g.initializers
        .push(Tensor::new_f32(transposed.clone(), dims, &values));
    let mut t = g.nodes.remove(m.transpose);
    t.inputs[0] = m.x;
    t.outputs[0] = moved.clone();
    let n = &mut g.nodes[m.op];
    n.inputs[1 - constant_at] = moved;
    n.inputs[constant_at] = transposed;
    n.outputs[0] = out;
    g.nodes.insert(m.op, t);
}

/// `c` left-padded with ones to the permutation's rank, then transposed by it.
fn transposed_constant(c: &Const, perm: &[usize]) -> (Vec<i64>, Vec<f32>) {
    let rank = perm.len();
    let mut dims = vec![1i64; rank - c.dims.len()];
    dims.extend(&c.dims);
    let out_dims: Vec<i64> = perm.iter().map(|&a| dims[a]).collect();
    // strides of the padded constant, row-major
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1].max(0) as usize;
    }
    let mut values = Vec::with_capacity(c.values.len());
    let mut at = vec![0usize; rank];
    for _ in 0..c.values.len() {
        let src: usize = at
            .iter()
            .zip(perm)
            .map(|(&i, &axis)| i * strides[axis])
            .sum();
        values.push(c.values.get(src).copied().unwrap_or(0.0));
        // next index of the output, last axis fastest
        for a in (0..rank).rev() {
            at[a] += 1;
            if (at[a] as i64) < out_dims[a] {
                break;
            }
            at[a] = 0;
        }
    }
    (out_dims, values)
}

#[cfg(test)]
#[path = "transpose_tests.rs"]
mod tests;
