//! Sessions that share the process's CPU arena (`SessionOptions::shared_arena`, as the
//! agent's sessions on `cpu:0` do) give the same outputs as a session with an arena of its
//! own, also while two of them run at once on inputs of changing shapes (MTCNN's P-Net on
//! the levels of an image pyramid).

mod common;

use vision::{Model, SessionOptions, TensorF32};

/// A deterministic input `[1, w, h, 3]` (P-Net's transposed layout), values in -1..1.
fn level(w: usize, h: usize, seed: usize) -> vision::Result<TensorF32> {
    let data = (0..w * h * 3)
        .map(|i| (((i + seed) * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    TensorF32::new(vec![1, w, h, 3], data)
}

#[test]
fn sessions_sharing_one_arena_match_a_session_with_its_own() {
    let name = "mtcnn-pnet";
    let Some(rt) = common::runtime(&[name], &[]) else {
        return;
    };
    let path = common::manifest()
        .model_path(name, &common::models_dir())
        .unwrap();
    let own = SessionOptions::default();
    let shared = SessionOptions {
        shared_arena: true,
        ..SessionOptions::default()
    };
    let mut alone = Model::load(&rt, name, &path, &own).unwrap();
    let sizes = [
        (300, 170),
        (213, 121),
        (151, 86),
        (107, 61),
        (76, 43),
        (54, 31),
    ];
    let inputs: Vec<TensorF32> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(w, h))| level(w, h, k).unwrap())
        .collect();
    let expected: Vec<Vec<TensorF32>> = inputs
        .iter()
        .map(|x| alone.run(std::slice::from_ref(x)).unwrap())
        .collect();
    // Two sessions on the shared arena (a third load registers nothing again), each on
    // its own thread, over the levels in opposite orders so that their runs overlap with
    // different shapes.
    let _third = Model::load(&rt, name, &path, &shared).unwrap();
    let outputs: Vec<Vec<Vec<TensorF32>>> = std::thread::scope(|s| {
        let runs: Vec<_> = [false, true]
            .into_iter()
            .map(|reverse| {
                let (rt, path, shared, inputs) = (&rt, &path, &shared, &inputs);
                s.spawn(move || {
                    let mut m = Model::load(rt, name, path, shared).unwrap();
                    let mut order: Vec<usize> = (0..inputs.len()).collect();
                    if reverse {
                        order.reverse();
                    }
                    let mut out = vec![Vec::new(); inputs.len()];
                    for _ in 0..3 {
                        for &k in &order {
                            out[k] = m.run(std::slice::from_ref(&inputs[k])).unwrap();
                        }
                    }
                    out
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in &outputs {
        for (k, (got, want)) in out.iter().zip(&expected).enumerate() {
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.shape, w.shape, "level {k}");
                assert_eq!(g.data, w.data, "level {k}: same values as an own arena");
            }
        }
    }
}
