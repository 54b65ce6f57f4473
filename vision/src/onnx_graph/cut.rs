//! A graph cut short: the tensors a native decoder reads ([`crate::native_tail`]) become the
//! graph's outputs, and every node that only the old outputs needed goes, so ONNX Runtime runs
//! the network's trunk and heads and leaves the decoding to code that does it in one pass.

use std::collections::{HashMap, HashSet};

use super::model::{GraphError, OnnxModel};
use super::rewrite::drop_dead_constants;

/// Makes `outputs` (tensors some node of the graph makes) the model's outputs, in that order,
/// and drops the nodes, constants and shape annotations none of them needs. Returns how many
/// nodes went. A name no node makes, or a graph with subgraphs, is an error.
pub fn cut_at(model: &mut OnnxModel<'_>, outputs: &[String]) -> Result<usize, GraphError> {
    let g = &mut model.graph;
    if g.has_subgraph() {
        return Err(GraphError::Unsupported(
            "a graph with subgraphs (If, Loop, Scan) is not cut".into(),
        ));
    }
    let maker: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    if let Some(missing) = outputs.iter().find(|o| !maker.contains_key(o.as_str())) {
        return Err(GraphError::Unsupported(format!(
            "no node of the graph makes tensor `{missing}`"
        )));
    }
    let mut needed: HashSet<usize> = HashSet::new();
    let mut stack: Vec<usize> = outputs.iter().map(|o| maker[o.as_str()]).collect();
    while let Some(i) = stack.pop() {
        if needed.insert(i) {
            stack.extend(
                g.nodes[i]
                    .inputs
                    .iter()
                    .filter_map(|input| maker.get(input.as_str()).copied()),
            );
        }
    }
    let before = g.nodes.len();
    let mut index = 0;
    g.nodes.retain(|_| {
        let keep = needed.contains(&index);
        index += 1;
        keep
    });
    g.set_float_outputs(outputs);
    drop_dead_constants(g);
    Ok(before - g.nodes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_graph::{Node, Tensor};

    /// x → Relu → a → Neg → b (the old output); a → Sigmoid → c; a cut at [c, a] keeps Relu
    /// and Sigmoid only, and drops the constant only Neg's sibling read.
    #[test]
    fn a_cut_keeps_what_the_new_outputs_need_and_nothing_else() {
        let mut model = OnnxModel::build(
            13,
            &[("x", &[-1])],
            &["b"],
            vec![
                Node::new("Relu", vec!["x".into()], vec!["a".into()]),
                Node::new("Add", vec!["a".into(), "k".into()], vec!["b".into()]),
                Node::new("Sigmoid", vec!["a".into()], vec!["c".into()]),
            ],
            vec![Tensor::new_f32("k".into(), vec![1], &[1.0])],
        );
        let removed = cut_at(&mut model, &["c".to_string(), "a".to_string()]).expect("cut");
        assert_eq!(removed, 1);
        let ops: Vec<&str> = model
            .graph
            .nodes
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops, ["Relu", "Sigmoid"]);
        assert_eq!(model.graph.outputs, ["c", "a"]);
        assert!(
            model.graph.initializers.is_empty(),
            "`k` is read by nothing now"
        );
        let again = OnnxModel::parse(&model.encode()).map(|m| m.graph.outputs.clone());
        assert_eq!(again.expect("re-read"), ["c", "a"]);
    }

    #[test]
    fn a_tensor_no_node_makes_is_named_in_the_error() {
        let mut model = OnnxModel::build(
            13,
            &[("x", &[-1])],
            &["a"],
            vec![Node::new("Relu", vec!["x".into()], vec!["a".into()])],
            vec![],
        );
        let err = cut_at(&mut model, &["nowhere".to_string()]).expect_err("no such tensor");
        assert!(err.to_string().contains("`nowhere`"), "{err}");
    }
}
