//! Winograd's F(4×4, 3×3) for ONNX Runtime's CPU provider. ORT runs a 3×3 convolution as a
//! direct (NCHWc) or im2col product: 9 multiply-adds per input channel, output channel and
//! output pixel. Winograd's minimal filtering (Lavin & Gray, 2016) computes each 4×4 block of
//! outputs from a 6×6 block of inputs with 36 products instead of 144, so wide convolutions
//! (VGG-, UNet-, EDSR- and waifu2x-style stacks of 3×3 layers) need 4× fewer multiplications.
//! The rewrite expresses the algorithm in ONNX operators ORT already runs well:
//!
//! 1. input transform `Bᵀ d B` of every overlapping 6×6 tile (stride 4): a grouped `Conv` with
//!    constant 6×6 kernels, 36 outputs per input channel;
//! 2. the 36 products of transformed tiles and transformed weights `G g Gᵀ` (computed here once,
//!    in f64): one batched `MatMul` of [36, Co, C] by [N, 36, C, tiles];
//! 3. output transform `Aᵀ m A` as a `MatMul` by a constant [16, 36], and `DepthToSpace` to
//!    put each tile's 4×4 outputs in place; the bias added; a `Slice` crops the tiles' overhang.
//!
//! Exact in real arithmetic; in f32 the outputs move by rounding (≈ 1e-5 relative for the
//! layers it is applied to). The engine applies it only on the CPU (cuDNN picks Winograd
//! itself) at one intra-op thread (the agent's sessions on `cpu:0`), and only where it pays:
//! `Cin·Cout / (Cin + Cout) ≥ 48` — the multiplications saved grow with `Cin·Cout`, the
//! transforms' cost with `Cin + Cout` — so 128→128, 64→256 and wider (BENCHMARKS.md, "Winograd
//! convolutions": at one thread 128→128 runs 1.19–1.79× faster, 256→256 2.07–2.44×, while
//! 64→128 ranges from 1.57× on 80² to 0.95× on 320² and 128→64 on 512² fell to 0.50×).

use super::model::Names;
use super::model::{Attribute, Graph, Node, OnnxModel, Tensor};
use super::rewrite::{drop_dead_constants, ConvParams, Index};

/// The narrowest convolution rewritten, as `Cin·Cout / (Cin + Cout)`: 48.
pub const MIN_CHANNEL_BALANCE: usize = 48;
/// Output tile side (m) and input tile side (m + 2).
const M: usize = 4;
const A: usize = M + 2;

/// The first opset whose `Slice` takes its bounds as inputs (the crop needs that).
const SLICE_INPUTS_OPSET: u64 = 10;
/// Operators whose meaning is the same from opset 7 to 10 (only types were added), so a
/// model of opset 7–9 made only of them can be raised to 10 for the rewrite's `Slice`.
const SAME_UP_TO_OPSET_10: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "Div",
    "Elu",
    "Exp",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "Log",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pad",
    "PRelu",
    "Relu",
    "Reshape",
    "Selu",
    "Shape",
    "Sigmoid",
    "Softmax",
    "SpaceToDepth",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
];

/// Rewrites every convolution that qualifies (`Cin·Cout ≥ min_balance · (Cin + Cout)`:
/// [`MIN_CHANNEL_BALANCE`] where it pays); how many. Leaves the model as it was when none
/// does, when the graph has subgraphs or external data, or when its opset is older than 7, or
/// older than 10 with an operator not known to mean the same at 10.
pub fn winograd_convs(model: &mut OnnxModel<'_>, min_balance: usize) -> usize {
    let Some(opset) = model.opset("") else {
        return 0;
    };
    let g = &model.graph;
    if !g.is_self_contained() {
        return 0;
    }
    let raise = opset < SLICE_INPUTS_OPSET;
    let raisable = || {
        model.graph.nodes.iter().all(|n| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || SAME_UP_TO_OPSET_10.contains(&n.op_type.as_str())
        })
    };
    if opset < 7 || (raise && !raisable()) {
        return 0;
    }
    let g = &mut model.graph;
    let idx = Index::of(g);
    let found: Vec<(usize, Plan)> = (0..g.nodes.len())
        .filter_map(|i| Plan::of(g, &idx, &g.nodes[i], min_balance).map(|p| (i, p)))
        .collect();
    if found.is_empty() {
        return 0;
    }
    let mut names = Names::of(g);
    for (i, plan) in found.iter().rev() {
        let conv = g.nodes.remove(*i);
        let (nodes, inits) = plan.replacement(&conv, &mut names);
        g.nodes.splice(*i..*i, nodes);
        g.initializers.extend(inits);
    }
    drop_dead_constants(g);
    if raise {
        model.set_default_opset(SLICE_INPUTS_OPSET);
    }
    found.len()
}

/// A 3×3 convolution the rewrite applies to: its constant weights, bias and padding.
struct Plan {
    params: ConvParams,
    /// Begin and end padding of height and width: [top, left, bottom, right].
    pads: [i64; 4],
}

impl Plan {
    fn of(g: &Graph<'_>, idx: &Index, n: &Node<'_>, min_balance: usize) -> Option<Plan> {
        let ints_are = |name: &str, want: &[i64]| {
            n.attr(name)
                .is_none_or(|a| a.ints().is_some_and(|v| v == want))
        };
        let single = n.attr("group").is_none_or(|a| a.int() == Some(1));
        let auto_pad = n.attr("auto_pad").and_then(Attribute::string);
        if !(n.is("Conv")
            && n.outputs.len() == 1
            && single
            && ints_are("strides", &[1, 1])
            && ints_are("dilations", &[1, 1])
            && ints_are("kernel_shape", &[3, 3])
            && matches!(auto_pad, None | Some("NOTSET") | Some("VALID")))
        {
            return None;
        }
        let pads = match n.attr("pads") {
            None => [0; 4],
            Some(a) => match a.ints()?.as_slice() {
                &[t, l, b, r] if t >= 0 && l >= 0 && b >= 0 && r >= 0 => [t, l, b, r],
                _ => return None,
            },
        };
        let params = ConvParams::of(g, idx, n)?;
        let (co, ci) = match params.dims.as_slice() {
            &[co, ci, 3, 3] => (usize::try_from(co).ok()?, usize::try_from(ci).ok()?),
            _ => return None,
        };
        (co.checked_mul(ci)? >= min_balance.checked_mul(co + ci)?).then_some(Plan { params, pads })
    }

    fn out_channels(&self) -> usize {
        self.params.dims[0] as usize
    }

    fn in_channels(&self) -> usize {
        self.params.dims[1] as usize
    }

    /// The nodes and initializers that compute `conv`'s output in its place.
    fn replacement(
        &self,
        conv: &Node<'_>,
        names: &mut Names,
    ) -> (Vec<Node<'static>>, Vec<Tensor<'static>>) {
        let (co, ci) = (self.out_channels(), self.in_channels());
        let [pt, pl, pb, pr] = self.pads;
        let x = conv.inputs[0].clone();
        let y = conv.outputs[0].clone();
        let mut b = Builder {
            base: y.clone(),
            names,
            nodes: Vec::new(),
            inits: Vec::new(),
        };
        let input_kernels = b.f32(
            "bt",
            vec![(ci * A * A) as i64, 1, A as i64, A as i64],
            &input_transform(ci),
        );
        let tiles = b.op_with(
            "Conv",
            vec![x.clone(), input_kernels],
            "tiles",
            vec![
                Attribute::new_int("group", ci as i64),
                Attribute::new_ints("kernel_shape", &[A as i64, A as i64]),
                Attribute::new_ints("strides", &[M as i64, M as i64]),
                Attribute::new_ints("pads", &[pt, pl, pb + M as i64 - 1, pr + M as i64 - 1]),
            ],
        );
        let tiles_shape = b.op("Shape", vec![tiles.clone()], "tiles_shape");
        let by_channel = b.i64("by_channel", &[0, ci as i64, (A * A) as i64, -1]);
        let by_channel = b.op("Reshape", vec![tiles, by_channel], "by_channel");
        let perm = Attribute::new_ints("perm", &[0, 2, 1, 3]);
        let by_point = b.op_with("Transpose", vec![by_channel], "by_point", vec![perm]);
        let weights = b.f32(
            "gw",
            vec![(A * A) as i64, co as i64, ci as i64],
            &weight_transform(&self.params, co, ci),
        );
        let products = b.op("MatMul", vec![weights, by_point], "products");
        let flat = b.i64("flat", &[0, (A * A) as i64, -1]);
        let products = b.op("Reshape", vec![products, flat], "products_flat");
        let at = b.f32(
            "at",
            vec![(M * M) as i64, (A * A) as i64],
            &output_transform(),
        );
        let blocks = b.op("MatMul", vec![at, products], "blocks");
        let (first, one, two, four) = (
            b.i64("d0", &[0]),
            b.i64("d1", &[1]),
            b.i64("d2", &[2]),
            b.i64("d4", &[4]),
        );
        let batch = b.op(
            "Slice",
            vec![tiles_shape.clone(), first.clone(), one],
            "batch",
        );
        let grid = b.op(
            "Slice",
            vec![tiles_shape, two.clone(), four.clone()],
            "grid",
        );
        let depth = b.i64("depth", &[(M * M * co) as i64]);
        let axis = Attribute::new_int("axis", 0);
        let blocks_shape = b.op_with(
            "Concat",
            vec![batch, depth, grid],
            "blocks_shape",
            vec![axis],
        );
        let blocks = b.op("Reshape", vec![blocks, blocks_shape], "blocks_4d");
        // DCR order (the default, and opset 1's only one): depth (p, q, channel)
        let block = Attribute::new_int("blocksize", M as i64);
        let placed = b.op_with("DepthToSpace", vec![blocks], "placed", vec![block]);
        let biased = if self.params.bias.iter().any(|&v| v != 0.0) {
            let bias = b.f32("bias", vec![co as i64, 1, 1], &self.params.bias);
            b.op("Add", vec![placed, bias], "biased")
        } else {
            placed
        };
        let x_shape = b.op("Shape", vec![x], "x_shape");
        let x_size = b.op("Slice", vec![x_shape, two, four], "x_size");
        let growth = b.i64("growth", &[pt + pb - 2, pl + pr - 2]);
        let y_size = b.op("Add", vec![x_size, growth], "y_size");
        let origin = b.i64("origin", &[0, 0]);
        let axes = b.i64("axes", &[2, 3]);
        b.nodes.push(Node::new(
            "Slice",
            vec![biased, origin, y_size, axes],
            vec![y],
        ));
        (b.nodes, b.inits)
    }
}

/// Adds the nodes and constants of one rewritten convolution under fresh names.
struct Builder<'n> {
    base: String,
    names: &'n mut Names,
    nodes: Vec<Node<'static>>,
    inits: Vec<Tensor<'static>>,
}

impl Builder<'_> {
    fn f32(&mut self, what: &str, dims: Vec<i64>, values: &[f32]) -> String {
        let name = self.names.fresh(&self.base, what);
        self.inits.push(Tensor::new_f32(name.clone(), dims, values));
        name
    }

    fn i64(&mut self, what: &str, values: &[i64]) -> String {
        let name = self.names.fresh(&self.base, what);
        self.inits.push(Tensor::new_i64(
            name.clone(),
            vec![values.len() as i64],
            values,
        ));
        name
    }

    /// A node reading `inputs`, added now; its output's name.
    fn op(&mut self, op_type: &str, inputs: Vec<String>, what: &str) -> String {
        self.op_with(op_type, inputs, what, Vec::new())
    }

    fn op_with(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        what: &str,
        attributes: Vec<Attribute<'static>>,
    ) -> String {
        let out = self.names.fresh(&self.base, what);
        let mut n = Node::new(op_type, inputs, vec![out.clone()]);
        n.attributes = attributes;
        self.nodes.push(n);
        out
    }
}

/// Bᵀ of F(4×4, 3×3) (Lavin & Gray's points 0, ±1, ±2).
const BT: [[f64; A]; A] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G: [[f64; 3]; A] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const AT: [[f64; A]; M] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// A matrix's Kronecker product with itself, row-major [R, R, C, C]: entry (i, j, r, s) is
/// m[i][r] · m[j][s], the linear map X ↦ m X mᵀ of a C×C block to an R×R one.
fn two_sided<const R: usize, const C: usize>(m: &[[f64; C]; R]) -> Vec<f32> {
    let mut out = Vec::with_capacity(R * R * C * C);
    for row_i in m {
        for row_j in m {
            for &a in row_i {
                out.extend(row_j.iter().map(|&b| (a * b) as f32));
            }
        }
    }
    out
}

/// The grouped convolution's kernels [C·36, 1, 6, 6]: output (i, j) of channel c is
/// (Bᵀ d B)[i][j], for every channel alike.
fn input_transform(channels: usize) -> Vec<f32> {
    two_sided(&BT).repeat(channels)
}

/// The transformed weights [36, Co, C]: point (i, j) of filter (o, c) is (G g Gᵀ)[i][j].
fn weight_transform(p: &ConvParams, co: usize, ci: usize) -> Vec<f32> {
    let map = two_sided(&G);
    let mut out = vec![0.0f32; A * A * co * ci];
    for (filter, g) in p.weights.chunks_exact(9).enumerate().take(co * ci) {
        for (point, row) in map.chunks_exact(9).enumerate() {
            let v: f64 = row
                .iter()
                .zip(g)
                .map(|(&m, &w)| f64::from(m) * f64::from(w))
                .sum();
            out[point * co * ci + filter] = v as f32;
        }
    }
    out
}

/// The output transform [16, 36]: output (p, q) of a tile is (Aᵀ m A)[p][q].
fn output_transform() -> Vec<f32> {
    two_sided(&AT)
}

#[cfg(test)]
#[path = "winograd_tests.rs"]
mod tests;
