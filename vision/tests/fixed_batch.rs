//! A model whose batch axis is fixed (MoveNet MultiPose: `[1, H, W, 3]`) still runs a batch
//! of several items, as a stage batching its queue sends it: one run per row, the outputs
//! joined along the batch axis, equal to the rows run one by one.

mod common;

use vision::{Model, SessionOptions, TensorF32};

#[test]
fn a_fixed_batch_model_runs_a_bigger_batch_row_by_row() {
    let model_name = "movenet-multipose";
    let Some(rt) = common::runtime(&[model_name], &[]) else {
        return;
    };
    let manifest = common::manifest();
    let path = manifest
        .model_path(model_name, &common::models_dir())
        .unwrap();
    let mut model = Model::load(&rt, model_name, &path, &SessionOptions::default()).unwrap();
    assert_eq!(
        model.rows_per_run(),
        Some(1),
        "its batch axis is fixed at 1"
    );
    let side = 64;
    let row = side * side * 3;
    let data: Vec<f32> = (0..2 * row).map(|i| ((i * 7919) % 256) as f32).collect();
    let both = TensorF32::new(vec![2, side, side, 3], data.clone()).unwrap();
    let out = model.run(&[both]).unwrap();
    for (k, rows) in [&data[..row], &data[row..]].into_iter().enumerate() {
        let one = TensorF32::new(vec![1, side, side, 3], rows.to_vec()).unwrap();
        let alone = model.run(&[one]).unwrap();
        for (joined, single) in out.iter().zip(&alone) {
            assert_eq!(joined.shape[0], 2);
            let n = single.data.len();
            assert_eq!(&joined.data[k * n..(k + 1) * n], single.data.as_slice());
        }
    }
}
