//! Affine operations by constants written as depthwise 1×1 convolutions, for ONNX Runtime's CPU
//! provider. ORT runs a model's convolutions in a blocked layout (NCHWc) but a `Mul` or `Add`
//! by a scalar or per-channel constant in the plain one, so each such operation between two
//! convolutions costs a pass of its own and two reorders of the whole tensor around it. A chain
//!
//! `x · s₁ + t₁ · s₂ …` (scalars or one value per channel)
//!
//! is one affine map per channel, `x · s + t`, which is a depthwise 1×1 convolution with weights
//! `s` and bias `t` (`group` = channels): ORT keeps that in the blocked layout with the
//! convolutions around it. PP-OCRv4 has them where its learnable affine blocks follow an
//! activation and feed a padded convolution, which [`super::rewrite`]'s folds must leave (the
//! padding would see `t`, not 0): 17 in the recogniser, 14 in the detector, which then run
//! 1.08× and 1.07× as fast at one thread (BENCHMARKS.md, "Session 29").
//!
//! Exact in real arithmetic; in f32 a chain's constants are combined and the convolution may
//! fuse the multiply and add, so outputs move by rounding only. Only tensors whose channel
//! count is known from the convolution that made them, and a multiple of 16 (ORT's block on
//! AVX-512; 8 on AVX2): a depthwise convolution over a channel count ORT must pad is slower
//! than the operations it replaces.

use std::collections::HashMap;

use super::model::{Attribute, Graph, Names, Node, Tensor};
use super::rewrite::{constant, constant_dims, other_input, per_channel, Index};

/// Channel counts the rewrite takes: multiples of this.
pub(super) const CHANNEL_BLOCK: usize = 16;

/// How far back [`Layouts`] looks through element-wise operations for a convolution.
const MAX_DEPTH: usize = 32;

/// Unary operations whose output has their input's shape.
const SAME_SHAPE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "Softplus",
    "Softsign",
    "Abs",
    "Neg",
    "Identity",
];

/// Rank and channel count of tensors, read from the convolutions that made them through
/// element-wise operations; `None` where that is not known.
struct Layouts<'g, 'a> {
    g: &'g Graph<'a>,
    idx: &'g Index,
    producers: HashMap<&'g str, usize>,
    known: HashMap<String, Option<(usize, usize)>>,
}

impl<'g, 'a> Layouts<'g, 'a> {
    fn of(g: &'g Graph<'a>, idx: &'g Index) -> Layouts<'g, 'a> {
        let mut producers = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for out in &n.outputs {
                producers.insert(out.as_str(), i);
            }
        }
        Layouts {
            g,
            idx,
            producers,
            known: HashMap::new(),
        }
    }

    /// `(rank, channels)` of `name`.
    fn layout(&mut self, name: &str, depth: usize) -> Option<(usize, usize)> {
        if let Some(&known) = self.known.get(name) {
            return known;
        }
        let found = if depth == 0 {
            None
        } else {
            self.derive(name, depth - 1)
        };
        self.known.insert(name.to_string(), found);
        found
    }

    fn derive(&mut self, name: &str, depth: usize) -> Option<(usize, usize)> {
        let (g, idx) = (self.g, self.idx);
        let n = &g.nodes[*self.producers.get(name)?];
        if n.outputs.len() != 1 && !n.is("BatchNormalization") {
            return None;
        }
        if n.is("Conv") {
            let dims = constant_dims(g, idx, n.inputs.get(1)?)?;
            let channels = usize::try_from(*dims.first()?).ok()?;
            return (dims.len() >= 3).then_some((dims.len(), channels));
        }
        if n.is("BatchNormalization") || SAME_SHAPE.iter().any(|op| n.is(op)) {
            return self.layout(n.inputs.first()?, depth);
        }
        if !["Mul", "Add", "Sub", "Div"].iter().any(|op| n.is(op)) || n.inputs.len() != 2 {
            return None;
        }
        let (a, b) = (&n.inputs[0], &n.inputs[1]);
        let (x, c) = match (constant(g, idx, a), constant(g, idx, b)) {
            (None, None) => {
                let la = self.layout(a, depth)?;
                return (self.layout(b, depth)? == la).then_some(la);
            }
            (Some(c), None) => (b, c),
            (None, Some(c)) => (a, c),
            (Some(_), Some(_)) => return None,
        };
        let (rank, channels) = self.layout(x, depth)?;
        per_channel(&c, rank, channels).map(|_| (rank, channels))
    }
}

/// One affine operation's constant as per-channel values, with the tensor it applies to.
fn affine_step(
    g: &Graph<'_>,
    idx: &Index,
    n: &Node<'_>,
    x: &str,
    rank: usize,
    channels: usize,
) -> Option<Step> {
    let c = other_input(n, x)?;
    let values = per_channel(&constant(g, idx, c)?, rank, channels)?;
    match () {
        _ if n.is("Mul") => Some(Step::Scale(values)),
        _ if n.is("Add") => Some(Step::Shift(values)),
        _ if n.is("Sub") && n.inputs[0] == x => {
            Some(Step::Shift(values.iter().map(|v| -v).collect()))
        }
        _ => None,
    }
}

enum Step {
    Scale(Vec<f32>),
    Shift(Vec<f32>),
}

/// Every chain of `Mul`/`Add`/`Sub` by scalar or per-channel constants on a 4-D tensor with a
/// multiple of [`CHANNEL_BLOCK`] channels, written as one depthwise 1×1 convolution; how many.
pub(super) fn affines_as_depthwise(g: &mut Graph<'_>, names: &mut Names) -> usize {
    let idx = Index::of(g);
    let mut layouts = Layouts::of(g, &idx);
    let mut replaced: Vec<(usize, Node<'static>, Vec<Tensor<'static>>)> = Vec::new();
    let mut removed = Vec::new();
    let mut taken = vec![false; g.nodes.len()];
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if taken[i] || n.outputs.len() != 1 || n.inputs.len() != 2 {
            continue;
        }
        let Some(x) = n
            .inputs
            .iter()
            .find(|s| constant_dims(g, &idx, s).is_none())
        else {
            continue;
        };
        let Some((4, channels)) = layouts.layout(x, MAX_DEPTH) else {
            continue;
        };
        if channels == 0 || channels % CHANNEL_BLOCK != 0 {
            continue;
        }
        let (mut scale, mut shift) = (vec![1.0f32; channels], vec![0.0f32; channels]);
        let (mut at, mut y, mut chain) = (i, x.clone(), Vec::new());
        while let Some(step) = affine_step(g, &idx, &g.nodes[at], &y, 4, channels) {
            match step {
                Step::Scale(s) => {
                    for ((a, b), v) in scale.iter_mut().zip(shift.iter_mut()).zip(&s) {
                        *a *= v;
                        *b *= v;
                    }
                }
                Step::Shift(t) => shift.iter_mut().zip(&t).for_each(|(b, v)| *b += v),
            }
            chain.push(at);
            y = g.nodes[at].outputs[0].clone();
            match idx.sole_consumer(&y) {
                Some(next) if !taken[next] && g.nodes[next].outputs.len() == 1 => at = next,
                _ => break,
            }
        }
        if chain.is_empty() {
            continue;
        }
        let (w, b) = (names.fresh(&y, "dw_scale"), names.fresh(&y, "dw_shift"));
        let c = channels as i64;
        let constants = vec![
            Tensor::new_f32(w.clone(), vec![c, 1, 1, 1], &scale),
            Tensor::new_f32(b.clone(), vec![c], &shift),
        ];
        let mut conv = Node::new("Conv", vec![x.clone(), w, b], vec![y]);
        conv.attributes = vec![
            Attribute::new_int("group", c),
            Attribute::new_ints("kernel_shape", &[1, 1]),
        ];
        for &k in &chain {
            taken[k] = true;
        }
        replaced.push((chain[0], conv, constants));
        removed.extend_from_slice(&chain[1..]);
    }
    let count = replaced.len();
    for (at, conv, constants) in replaced {
        g.nodes[at] = conv;
        g.initializers.extend(constants);
    }
    removed.sort_unstable();
    for k in removed.into_iter().rev() {
        g.nodes.remove(k);
    }
    count
}

#[cfg(test)]
#[path = "depthwise_tests.rs"]
mod tests;
