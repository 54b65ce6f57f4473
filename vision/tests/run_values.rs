//! A model whose manifest entry caps the input values of one run (`max_run_values`) runs a
//! big batch a few whole rows at a time, and answers exactly what one run of the whole batch
//! answers: MTCNN's R-Net on 400 crops, PP-OCR's recogniser on six long lines.

mod common;

use vision::pipelines::{FaceModels, OcrModels};
use vision::{Model, Runtime, SessionOptions, TensorF32};

/// `model` (loaded with the manifest's settings) against the same file loaded bare, on an
/// input of `shape`: the manifest's cap splits it into runs of `rows` rows, and every output
/// is the whole batch's bit for bit.
#[allow(clippy::expect_used)] // a test helper: a failed expect is a failed test
fn split_equals_whole(rt: &Runtime, model: &mut Model, shape: &[usize], rows: usize) {
    let manifest = common::manifest();
    let path = manifest
        .model_path(model.name(), &common::models_dir())
        .expect("model path");
    let mut whole =
        Model::load(rt, model.name(), &path, &SessionOptions::default()).expect("bare load");
    assert_eq!(whole.rows_per_run_for(shape), None, "bare: one run");
    assert_eq!(
        model.rows_per_run_for(shape),
        Some(rows),
        "{}: the manifest's max_run_values",
        model.name()
    );
    assert!(rows < shape[0], "the cap must split this batch");
    let n: usize = shape.iter().product();
    let input = TensorF32::new(shape.to_vec(), common::values(n, 7)).expect("input");
    let split = model
        .run(std::slice::from_ref(&input))
        .expect("run in parts");
    let one = whole.run(std::slice::from_ref(&input)).expect("one run");
    assert_eq!(split.len(), one.len());
    for (a, b) in split.iter().zip(&one) {
        assert_eq!(a.shape, b.shape);
        assert_eq!(a.shape[0], shape[0], "every row answered");
        assert!(
            a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}: outputs differ from the whole batch's (max {})",
            model.name(),
            common::max_abs_diff(a, b)
        );
    }
}

#[test]
fn rnet_crops_run_in_parts_with_the_whole_batchs_outputs() {
    let Some(rt) = common::runtime(&["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"], &[]) else {
        return;
    };
    let mut faces = FaceModels::load(
        &rt,
        &common::manifest(),
        &common::models_dir(),
        &SessionOptions::default(),
    )
    .unwrap();
    // 32,000 values hold 18 crops of 24×24×3.
    split_equals_whole(&rt, &mut faces.rnet, &[400, 24, 24, 3], 18);
}

#[test]
fn long_text_lines_run_one_at_a_time_with_the_whole_batchs_outputs() {
    let Some(rt) = common::runtime(&["ppocr-det", "ppocr-cls", "ppocr-rec"], &[]) else {
        return;
    };
    let mut ocr = OcrModels::load(
        &rt,
        &common::manifest(),
        &common::models_dir(),
        &SessionOptions::default(),
    )
    .unwrap();
    // one line of 3×48×960 is 138,240 values, over the 100,000 cap: one line a run; at 320
    // wide two lines fit.
    assert_eq!(ocr.rec.rows_per_run_for(&[6, 3, 48, 320]), Some(2));
    split_equals_whole(&rt, &mut ocr.rec, &[3, 3, 48, 960], 1);
}
