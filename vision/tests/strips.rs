//! MTCNN's P-Net run in strips (the manifest's `strips` of `mtcnn-pnet`) gives the outputs of
//! the whole run bit for bit, on the largest levels of a 720p pyramid and on a batch of two;
//! a `strips` setting that does not fit the model is an error naming it.

mod common;

use vision::strips::Strips;
use vision::{Model, SessionOptions, TensorF32};

fn input(shape: Vec<usize>) -> vision::Result<TensorF32> {
    let n = shape.iter().product::<usize>();
    let data = (0..n)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    TensorF32::new(shape, data)
}

#[test]
fn pnet_in_strips_gives_the_whole_runs_outputs() {
    let name = "mtcnn-pnet";
    let Some(rt) = common::runtime(&[name], &[]) else {
        return;
    };
    let manifest = common::manifest();
    let plan = manifest.model(name).unwrap().strips;
    assert_eq!(
        plan.map(|p| (p.axis, p.field, p.stride)),
        Some((1, 12, 2)),
        "the manifest lets P-Net run in strips"
    );
    let path = manifest.model_path(name, &common::models_dir()).unwrap();
    let mut model = Model::load(&rt, name, &path, &SessionOptions::default()).unwrap();
    for shape in [
        vec![1, 768, 432, 3],
        vec![1, 545, 307, 3],
        vec![2, 387, 218, 3],
    ] {
        let x = input(shape.clone()).unwrap();
        model.set_strips(None);
        let whole = model.run(std::slice::from_ref(&x)).unwrap();
        model.set_strips(plan);
        let cut = model.run(std::slice::from_ref(&x)).unwrap();
        assert_eq!(cut.len(), whole.len());
        for (c, w) in cut.iter().zip(&whole) {
            assert_eq!(c.shape, w.shape, "{shape:?}");
            assert!(
                c.data == w.data,
                "{shape:?}: values differ from the whole run"
            );
        }
    }
    // A field that is not P-Net's: its strips give fewer rows than the setting says.
    model.set_strips(Some(Strips {
        field: 10,
        ..plan.unwrap()
    }));
    let e = model
        .run(&[input(vec![1, 768, 432, 3]).unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains(name) && e.contains("`strips`"), "{e}");
}
