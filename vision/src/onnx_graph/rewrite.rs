//! Graph rewrites made before ONNX Runtime sees a model. ORT fuses many patterns itself, but not
//! the ones PaddlePaddle's exporter writes for PP-OCR's backbones (PP-LCNetV3 and its kin), where
//! every convolution is followed by up to eight element-wise passes over its output:
//!
//! 1. **affine into conv**: `Conv → Mul(c) → Add(c)` with constant scalar or per-channel `c`
//!    (the "learnable affine blocks") is folded into the convolution's weights and bias;
//! 2. **hard swish**: `x · clip(x + 3, 0, 6) / 6`, written as Add, Clip, Mul and Div, becomes
//!    `x · HardSigmoid(x)` with α = 1/6, β = ½ (which ORT then runs in its blocked layout);
//! 3. **affine into pointwise conv**: `a · s + t` with constant scalars, read only by 1×1
//!    convolutions without padding, is folded into those convolutions (`W·s`, `b + t·ΣW`);
//! 4. **transposes moved up**: `Transpose(x ∘ c)` with a constant `c` becomes
//!    `Transpose(x) ∘ Transpose(c)` (TensorFlow models' NHWC input normalisation, which ORT
//!    broadcasts slowly over an innermost axis of 3: [`super::transpose`]).
//!
//! Each is exact in real arithmetic; in f32 the outputs move by rounding only (PP-OCRv4's
//! detector and recogniser: < 1e-4, `tools/bench/rewrite_ops.py`; the same texts,
//! `tests/rewrite.rs`). Graphs with subgraphs (`If`, `Loop`, `Scan`) or external data are left
//! alone. BENCHMARKS.md (Models, run 5) has what it saves: 0.68× the time for det and rec.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::model::{Attribute, Graph, GraphError, Names, Node, OnnxModel, Tensor};

/// What the rewriter changed in one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// `Mul`/`Add` by constants folded into the convolution they follow.
    pub affine_into_conv: usize,
    /// Add-Clip-Mul-Div hard swishes rewritten as HardSigmoid and Mul.
    pub hard_swish: usize,
    /// `a · s + t` pairs folded into the 1×1 convolutions that read them.
    pub affine_into_pointwise: usize,
    /// Chains of `Mul`/`Add` by constants written as depthwise 1×1 convolutions (CPU only:
    /// [`super::depthwise`]).
    pub affine_as_depthwise: usize,
    /// `PRelu`s written as Relu, Mul and Add (CPU only: [`super::prelu`]).
    pub prelu_as_relu: usize,
    /// Element-wise operations by constants that a `Transpose` was moved above
    /// ([`super::transpose`]: a TensorFlow model's NHWC input normalisation).
    pub transposes_moved: usize,
    /// 3×3 convolutions computed by Winograd's F(4×4, 3×3) (CPU only:
    /// [`super::winograd_convs`]).
    pub winograd: usize,
    /// Float16 tensors and casts widened to float32 (CPU only: [`super::fp16_to_fp32`]).
    pub fp16_widened: usize,
}

impl RewriteReport {
    pub fn total(&self) -> usize {
        self.affine_into_conv
            + self.hard_swish
            + self.affine_into_pointwise
            + self.transposes_moved
            + self.affine_as_depthwise
            + self.prelu_as_relu
            + self.winograd
            + self.fp16_widened
    }
}

impl fmt::Display for RewriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "affine_into_conv={} hard_swish={} affine_into_pointwise={} transposes_moved={} affine_as_depthwise={} prelu_as_relu={} winograd={} fp16_widened={}",
            self.affine_into_conv,
            self.hard_swish,
            self.affine_into_pointwise,
            self.transposes_moved,
            self.affine_as_depthwise,
            self.prelu_as_relu,
            self.winograd,
            self.fp16_widened
        )
    }
}

/// Rewrites an `.onnx` file's bytes: `None` when nothing matched or the graph is one the
/// rewriter leaves alone (subgraphs, external data); an error when the bytes are not ONNX.
pub fn rewrite(bytes: &[u8]) -> Result<Option<(Vec<u8>, RewriteReport)>, GraphError> {
    let mut model = OnnxModel::parse(bytes)?;
    Ok(rewrite_model(&mut model).map(|report| (model.encode(), report)))
}

/// [`rewrite`] of a parsed model, in place: what it changed, `None` when it left the model as
/// it was (nothing matched, subgraphs, external data).
pub fn rewrite_model(model: &mut OnnxModel<'_>) -> Option<RewriteReport> {
    let g = &mut model.graph;
    if !g.is_self_contained() {
        return None;
    }
    let mut report = RewriteReport::default();
    let mut names = Names::of(g);
    report.affine_into_conv = until_none(|| fold_affine_into_conv(g, &mut names));
    report.hard_swish = until_none(|| hard_swish(g));
    report.affine_into_pointwise = until_none(|| fold_affine_into_pointwise(g, &mut names));
    report.transposes_moved = super::transpose::transposes_above_constant_ops(g, &mut names);
    if report.total() == 0 {
        return None;
    }
    drop_dead_constants(g);
    Some(report)
}

/// What the agent on the CPU does to a model before ORT loads it, in this order: float16
/// widened to float32 ([`super::fp16_to_fp32`]: the rewrites read f32 constants only),
/// [`rewrite_model`], affine chains left between convolutions as depthwise 1×1 convolutions
/// ([`super::depthwise`]), `PRelu` as Relu, Mul and Add ([`super::prelu`], opset 7 on), and with
/// `winograd_min` Winograd's convolutions of the layers at least that balanced
/// ([`super::winograd_convs`]). What it changed (all zeros: nothing).
pub fn rewrite_for_cpu(model: &mut OnnxModel<'_>, winograd_min: Option<usize>) -> RewriteReport {
    let fp16_widened = super::fp16_to_fp32(model);
    let mut report = rewrite_model(model).unwrap_or_default();
    report.fp16_widened = fp16_widened;
    let broadcasts = model
        .opset("")
        .is_some_and(|v| v >= super::prelu::BROADCAST_OPSET);
    if model.graph.is_self_contained() {
        let g = &mut model.graph;
        let mut names = Names::of(g);
        report.affine_as_depthwise = super::depthwise::affines_as_depthwise(g, &mut names);
        if broadcasts {
            report.prelu_as_relu = super::prelu::prelu_as_relus(g, &mut names);
        }
        if report.affine_as_depthwise + report.prelu_as_relu > 0 {
            drop_dead_constants(g);
        }
    }
    if let Some(min) = winograd_min {
        report.winograd = super::winograd_convs(model, min);
    }
    report
}

/// Runs a pass until it finds nothing more; what it did in all. Each scan applies every match
/// it finds, and a match can make another (`a·s+t` twice before a 1×1 convolution: the second
/// pair is folded first, which leaves the first read by the convolution), so one scan is not
/// always enough.
fn until_none(mut pass: impl FnMut() -> usize) -> usize {
    let mut total = 0;
    loop {
        match pass() {
            0 => return total,
            n => total += n,
        }
    }
}

/// Who reads each tensor, and which tensors the graph exposes.
pub(super) struct Index {
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
    /// Where each constant tensor is defined.
    constants: HashMap<String, ConstAt>,
}

#[derive(Clone, Copy)]
enum ConstAt {
    Initializer(usize),
    Node(usize),
}

impl Index {
    pub(super) fn of(g: &Graph<'_>) -> Index {
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for input in n.inputs.iter().filter(|s| !s.is_empty()) {
                let c = consumers.entry(input.clone()).or_default();
                if c.last() != Some(&i) {
                    c.push(i);
                }
            }
        }
        let mut constants = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if let (true, Some(out)) = (n.is("Constant"), n.outputs.first()) {
                constants.insert(out.clone(), ConstAt::Node(i));
            }
        }
        for (i, t) in g.initializers.iter().enumerate() {
            constants.insert(t.name.clone(), ConstAt::Initializer(i));
        }
        // A graph input can be fed at run time, whatever its initializer says.
        for input in &g.inputs {
            constants.remove(input);
        }
        Index {
            consumers,
            graph_outputs: g.outputs.iter().cloned().collect(),
            constants,
        }
    }

    /// The one node that reads `name`, when no other node and no graph output does.
    pub(super) fn sole_consumer(&self, name: &str) -> Option<usize> {
        match self.consumers.get(name).map(Vec::as_slice) {
            Some(&[i]) if !self.graph_outputs.contains(name) => Some(i),
            _ => None,
        }
    }

    fn consumers(&self, name: &str) -> &[usize] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }
}

/// A constant float tensor: an initializer the caller cannot override, or a `Constant`'s value.
pub(super) struct Const {
    pub(super) dims: Vec<i64>,
    pub(super) values: Vec<f32>,
}

pub(super) fn constant(g: &Graph<'_>, idx: &Index, name: &str) -> Option<Const> {
    let values = |t: &Tensor<'_>| {
        t.f32_values().map(|values| Const {
            dims: t.dims.clone(),
            values,
        })
    };
    match *idx.constants.get(name)? {
        ConstAt::Initializer(i) => values(g.initializers.get(i)?),
        ConstAt::Node(i) => values(&g.nodes.get(i)?.attr("value")?.tensor()?),
    }
}

/// The dims of a constant tensor (any element type), without reading its values.
pub(super) fn constant_dims(g: &Graph<'_>, idx: &Index, name: &str) -> Option<Vec<i64>> {
    match *idx.constants.get(name)? {
        ConstAt::Initializer(i) => Some(g.initializers.get(i)?.dims.clone()),
        ConstAt::Node(i) => Some(g.nodes.get(i)?.attr("value")?.tensor()?.dims),
    }
}

fn scalar(g: &Graph<'_>, idx: &Index, name: &str) -> Option<f32> {
    constant(g, idx, name).and_then(|c| (c.values.len() == 1).then(|| c.values[0]))
}

/// Of a binary node's two inputs, the one that is not `x`.
pub(super) fn other_input<'n>(n: &'n Node<'_>, x: &str) -> Option<&'n str> {
    match n.inputs.as_slice() {
        [a, b] if a == x && b != x => Some(b),
        [a, b] if b == x && a != x => Some(a),
        _ => None,
    }
}

/// `c` as one value per output channel of a convolution whose output has `rank` axes and
/// `channels` channels, when multiplying or adding it changes nothing but per-channel values
/// (a scalar, or shaped `[C, 1, …]` up to the output's rank).
pub(super) fn per_channel(c: &Const, rank: usize, channels: usize) -> Option<Vec<f32>> {
    if c.dims.len() > rank {
        return None;
    }
    let pad = rank - c.dims.len();
    let fits = (0..rank).all(|axis| {
        let d = if axis < pad { 1 } else { c.dims[axis - pad] };
        d == 1 || (axis == 1 && d == channels as i64)
    });
    match c.values.len() {
        1 if fits => Some(vec![c.values[0]; channels]),
        n if fits && n == channels => Some(c.values.clone()),
        _ => None,
    }
}

/// A convolution's constant weights and bias (zeros when it has none), as owned values.
pub(super) struct ConvParams {
    pub(super) dims: Vec<i64>,
    pub(super) weights: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

impl ConvParams {
    pub(super) fn of(g: &Graph<'_>, idx: &Index, conv: &Node<'_>) -> Option<ConvParams> {
        let w = constant(g, idx, conv.inputs.get(1)?)?;
        let channels = usize::try_from(*w.dims.first()?).ok()?;
        if w.dims.len() < 3 || channels == 0 || w.values.len() % channels != 0 {
            return None;
        }
        let bias = match conv.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => constant(g, idx, b)?.values,
            None => vec![0.0; channels],
        };
        (bias.len() == channels).then_some(ConvParams {
            dims: w.dims,
            weights: w.values,
            bias,
        })
    }

    fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Weights per output channel.
    fn block(&self) -> usize {
        self.weights.len() / self.channels()
    }

    /// Adds the weights and bias as new initializers and points the convolution at them.
    fn install(self, g: &mut Graph<'_>, conv: usize, names: &mut Names) {
        let base = g.nodes[conv].outputs.first().cloned().unwrap_or_default();
        let (w, b) = (names.fresh(&base, "w"), names.fresh(&base, "b"));
        let channels = self.channels() as i64;
        g.initializers
            .push(Tensor::new_f32(w.clone(), self.dims, &self.weights));
        g.initializers
            .push(Tensor::new_f32(b.clone(), vec![channels], &self.bias));
        let inputs = &mut g.nodes[conv].inputs;
        inputs.truncate(1);
        inputs.extend([w, b]);
    }
}

/// Removes the nodes at `indices` (any order).
fn remove_nodes(g: &mut Graph<'_>, mut indices: Vec<usize>) {
    indices.sort_unstable();
    for i in indices.into_iter().rev() {
        g.nodes.remove(i);
    }
}

/// Rewrite 1: every `Conv → Mul/Add(constant) → …` chain, folded; how many Mul/Add went.
fn fold_affine_into_conv(g: &mut Graph<'_>, names: &mut Names) -> usize {
    let idx = Index::of(g);
    let mut removed = Vec::new();
    for ci in 0..g.nodes.len() {
        let conv = &g.nodes[ci];
        let Some(first) = conv.outputs.first().and_then(|y| idx.sole_consumer(y)) else {
            continue;
        };
        let affine = |n: &Node<'_>| n.is("Mul") || n.is("Add");
        if !conv.is("Conv") || conv.inputs.len() < 2 || !affine(&g.nodes[first]) {
            continue;
        }
        let Some(mut p) = ConvParams::of(g, &idx, conv) else {
            continue;
        };
        let mut y = conv.outputs[0].clone();
        let mut chain = Vec::new();
        while let Some(ui) = idx.sole_consumer(&y) {
            let op = &g.nodes[ui];
            let c = other_input(op, &y).and_then(|c| constant(g, &idx, c));
            let c = c.and_then(|c| per_channel(&c, p.dims.len(), p.channels()));
            let (Some(c), true, [out]) = (c, affine(op), op.outputs.as_slice()) else {
                break;
            };
            let block = p.block();
            for (o, &v) in c.iter().enumerate() {
                if op.is("Mul") {
                    p.weights[o * block..(o + 1) * block]
                        .iter_mut()
                        .for_each(|w| *w *= v);
                    p.bias[o] *= v;
                } else {
                    p.bias[o] += v;
                }
            }
            y = out.clone();
            chain.push(ui);
        }
        if !chain.is_empty() {
            p.install(g, ci, names);
            g.nodes[ci].outputs[0] = y;
            removed.extend(chain);
        }
    }
    let n = removed.len();
    remove_nodes(g, removed);
    n
}

/// `Clip`'s bounds: its `min`/`max` inputs (opset ≥ 11) or attributes (older opsets).
fn clip_bounds(g: &Graph<'_>, idx: &Index, clip: &Node<'_>) -> (Option<f32>, Option<f32>) {
    let bound = |i: usize, attr: &str| match clip.inputs.get(i).filter(|s| !s.is_empty()) {
        Some(name) => scalar(g, idx, name),
        None => clip.attr(attr).and_then(Attribute::float),
    };
    (bound(1, "min"), bound(2, "max"))
}

/// Rewrite 2: every Add-Clip-Mul-Div hard swish; how many.
fn hard_swish(g: &mut Graph<'_>) -> usize {
    let idx = Index::of(g);
    let mut removed = Vec::new();
    for ai in 0..g.nodes.len() {
        let add = &g.nodes[ai];
        if !add.is("Add") || add.inputs.len() != 2 || add.outputs.len() != 1 {
            continue;
        }
        let x = match (
            scalar(g, &idx, &add.inputs[0]),
            scalar(g, &idx, &add.inputs[1]),
        ) {
            (_, Some(3.0)) => add.inputs[0].clone(),
            (Some(3.0), _) => add.inputs[1].clone(),
            _ => continue,
        };
        let a_out = add.outputs[0].clone();
        let Some(ci) = idx.sole_consumer(&a_out) else {
            continue;
        };
        let clip = &g.nodes[ci];
        if !clip.is("Clip") || clip.inputs.first() != Some(&a_out) {
            continue;
        }
        if clip_bounds(g, &idx, clip) != (Some(0.0), Some(6.0)) {
            continue;
        }
        let Some(mi) = clip.outputs.first().and_then(|c| idx.sole_consumer(c)) else {
            continue;
        };
        let mul = &g.nodes[mi];
        if !mul.is("Mul") || other_input(mul, &clip.outputs[0]) != Some(x.as_str()) {
            continue;
        }
        let Some(di) = mul.outputs.first().and_then(|m| idx.sole_consumer(m)) else {
            continue;
        };
        let div = &g.nodes[di];
        let m_out = &mul.outputs[0];
        let sixth = match (div.is("Div"), div.is("Mul"), other_input(div, m_out)) {
            (true, _, Some(k)) if div.inputs[0] == *m_out => scalar(g, &idx, k) == Some(6.0),
            (_, true, Some(k)) => {
                scalar(g, &idx, k).is_some_and(|v| (v - 1.0 / 6.0).abs() <= f32::EPSILON)
            }
            _ => false,
        };
        if !sixth || div.outputs.len() != 1 {
            continue;
        }
        let out = div.outputs[0].clone();
        let mut sigmoid = Node::new("HardSigmoid", vec![x.clone()], vec![a_out.clone()]);
        sigmoid.attributes = vec![
            Attribute::new_float("alpha", 1.0 / 6.0),
            Attribute::new_float("beta", 0.5),
        ];
        g.nodes[ai] = sigmoid;
        g.nodes[mi] = Node::new("Mul", vec![x, a_out], vec![out]);
        removed.extend([ci, di]);
    }
    let n = removed.len() / 2;
    remove_nodes(g, removed);
    n
}

/// The weights and bias of `n` when it reads `y` as its input and is a 1×1 convolution
/// without padding, with constant weights.
fn pointwise_reader(g: &Graph<'_>, idx: &Index, n: &Node<'_>, y: &str) -> Option<ConvParams> {
    let no_pads = n
        .attr("pads")
        .is_none_or(|a| a.ints().is_some_and(|p| p.iter().all(|&v| v == 0)));
    let auto_pad = n.attr("auto_pad").and_then(Attribute::string);
    let reads_y =
        n.inputs.first().map(String::as_str) == Some(y) && !n.inputs[1..].iter().any(|i| i == y);
    if !(n.is("Conv")
        && reads_y
        && no_pads
        && matches!(auto_pad, None | Some("NOTSET") | Some("VALID")))
    {
        return None;
    }
    ConvParams::of(g, idx, n).filter(|p| p.dims[2..].iter().all(|&d| d == 1))
}

/// Rewrite 3: every `a · s + t` read only by 1×1 convolutions, folded into them; how many.
fn fold_affine_into_pointwise(g: &mut Graph<'_>, names: &mut Names) -> usize {
    let idx = Index::of(g);
    let mut removed = Vec::new();
    for mi in 0..g.nodes.len() {
        let mul = &g.nodes[mi];
        if !mul.is("Mul") || mul.inputs.len() != 2 || mul.outputs.len() != 1 {
            continue;
        }
        let (a, s) = match (
            scalar(g, &idx, &mul.inputs[0]),
            scalar(g, &idx, &mul.inputs[1]),
        ) {
            (None, Some(s)) => (mul.inputs[0].clone(), s),
            (Some(s), None) => (mul.inputs[1].clone(), s),
            _ => continue,
        };
        let Some(ai) = idx.sole_consumer(&mul.outputs[0]) else {
            continue;
        };
        let add = &g.nodes[ai];
        let Some(t) = add
            .is("Add")
            .then(|| other_input(add, &mul.outputs[0]))
            .flatten()
        else {
            continue;
        };
        let Some(t) = scalar(g, &idx, t) else {
            continue;
        };
        let Some(y) = add.outputs.first().filter(|_| add.outputs.len() == 1) else {
            continue;
        };
        let readers = idx.consumers(y);
        if readers.is_empty() || idx.graph_outputs.contains(y) {
            continue;
        }
        let params: Option<Vec<ConvParams>> = readers
            .iter()
            .map(|&k| pointwise_reader(g, &idx, &g.nodes[k], y))
            .collect();
        let Some(params) = params else {
            continue;
        };
        for (&k, mut p) in readers.iter().zip(params) {
            let block = p.block();
            for o in 0..p.channels() {
                let ws = &mut p.weights[o * block..(o + 1) * block];
                p.bias[o] += t * ws.iter().sum::<f32>();
                ws.iter_mut().for_each(|w| *w *= s);
            }
            p.install(g, k, names);
            g.nodes[k].inputs[0] = a.clone();
        }
        removed.extend([mi, ai]);
    }
    let n = removed.len() / 2;
    remove_nodes(g, removed);
    n
}

/// Drops what the rewrites left unread: `Constant` nodes, initializers (not graph inputs) and
/// the value infos of tensors that are gone.
pub(super) fn drop_dead_constants(g: &mut Graph<'_>) {
    let idx = Index::of(g);
    let read = |name: &String| !idx.consumers(name).is_empty() || idx.graph_outputs.contains(name);
    g.nodes
        .retain(|n| !n.is("Constant") || n.outputs.iter().any(read));
    let inputs: HashSet<String> = g.inputs.iter().cloned().collect();
    g.initializers
        .retain(|t| read(&t.name) || inputs.contains(&t.name));
    let mut live: HashSet<String> = inputs;
    live.extend(g.initializers.iter().map(|t| t.name.clone()));
    live.extend(g.nodes.iter().flat_map(|n| n.outputs.iter().cloned()));
    g.retain_value_infos(|name| live.contains(name));
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
