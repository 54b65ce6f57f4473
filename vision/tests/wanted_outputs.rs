//! A model loaded for some of its outputs (`SessionOptions::outputs`, the manifest's declared
//! outputs on the agent) is cut to them: the nodes only the others need are not in the session
//! (ONNX Runtime runs every node of a graph, whatever a run asks for), the wanted outputs are
//! the same, and names the graph does not output are still refused by `keep_outputs`.

mod common;

use vision::engine::Model;
use vision::onnx_graph::{Node, OnnxModel};
use vision::{SessionOptions, TensorF32};

/// x → Relu → a (wanted); a → Exp → b → Sigmoid → c (a side output no one wants).
fn two_outputs() -> Vec<u8> {
    OnnxModel::build(
        13,
        &[("x", &[-1, 4])],
        &["a", "c"],
        vec![
            Node::new("Relu", vec!["x".into()], vec!["a".into()]),
            Node::new("Exp", vec!["a".into()], vec!["b".into()]),
            Node::new("Sigmoid", vec!["b".into()], vec!["c".into()]),
        ],
        vec![],
    )
    .encode()
}

fn wanting(outputs: &[&str]) -> SessionOptions {
    SessionOptions {
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        ..SessionOptions::default()
    }
}

#[test]
fn a_model_loaded_for_some_outputs_runs_only_the_nodes_they_need() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("wanted", "two.onnx", &two_outputs());
    let x = TensorF32::new(vec![2, 4], vec![-1.0, 0.5, 2.0, -3.0, 4.0, 0.0, -0.5, 1.5]).unwrap();

    let mut all = Model::load(&rt, "two", &file.path, &wanting(&[])).unwrap();
    assert_eq!(all.nodes_pruned(), 0);
    assert_eq!(all.outputs().len(), 2);
    let full = all.run(std::slice::from_ref(&x)).unwrap();

    let mut some = Model::load(&rt, "two", &file.path, &wanting(&["a"])).unwrap();
    assert_eq!(some.nodes_pruned(), 2, "Exp and Sigmoid only made `c`");
    let names: Vec<&str> = some.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    some.keep_outputs(&["a".to_string()]).unwrap();
    let out = some.run(std::slice::from_ref(&x)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0], full[0], "the wanted output is the whole graph's");

    // Without the rewrites the file loads as it is and ONNX Runtime's selection leaves `c` out.
    let as_is = SessionOptions {
        graph_rewrites: false,
        ..wanting(&["a"])
    };
    let mut selected = Model::load(&rt, "two", &file.path, &as_is).unwrap();
    assert_eq!(selected.nodes_pruned(), 0);
    selected.keep_outputs(&["a".to_string()]).unwrap();
    assert_eq!(
        selected.run(std::slice::from_ref(&x)).unwrap(),
        vec![full[0].clone()]
    );
}

#[test]
fn a_wanted_name_the_graph_does_not_output_is_refused_naming_it() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file("wanted-bad", "two.onnx", &two_outputs());
    let mut m = Model::load(&rt, "two", &file.path, &wanting(&["a", "d"])).unwrap();
    assert_eq!(
        m.nodes_pruned(),
        0,
        "nothing is cut for a name that is not there"
    );
    let err = m
        .keep_outputs(&["a".to_string(), "d".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model `two`") && err.contains("output `d`"),
        "{err}"
    );
}
