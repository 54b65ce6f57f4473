//! MoveNet MultiPose with its tail decoded natively (the manifest's `native_tail`) answers what
//! the whole converted graph answers: the same six candidates, keypoints, boxes and scores, to
//! within f32 rounding of `exp`, on the astronaut (one person), the astronaut beside its mirror
//! image (two people, a wide input) and noise (candidates with empty or odd boxes).

mod common;

use vision::native_tail::NativeTail;
use vision::pose::{self, PoseParams};
use vision::{Model, SessionOptions, TensorF32};

const POSE: &str = "movenet-multipose";

/// The astronaut as the pose family's pre-processing makes it, `[1, 256, 256, 3]`.
#[allow(clippy::expect_used)] // a test helper: a failed expect is a failed test
fn astronaut() -> TensorF32 {
    let img = common::load_media("astronaut.png");
    pose::preprocess(img.view(), &PoseParams::default())
        .expect("pre-processing")
        .0
}

/// `t` (`[1, S, S, 3]`) beside its mirror image: `[1, S, 2S, 3]`.
fn beside_its_mirror(t: &TensorF32) -> TensorF32 {
    let s = t.shape[1];
    let mut data = Vec::with_capacity(2 * t.data.len());
    for row in t.data.chunks(3 * s) {
        data.extend_from_slice(row);
        data.extend(row.chunks(3).rev().flatten());
    }
    TensorF32 {
        shape: vec![1, s, 2 * s, 3],
        data,
    }
}

#[test]
fn the_native_tail_answers_what_the_whole_graph_answers() {
    let Some(rt) = common::runtime(&[POSE], &["astronaut.png"]) else {
        return;
    };
    let path = common::manifest()
        .model_path(POSE, &common::models_dir())
        .expect("model path");
    let mut whole = Model::load(&rt, POSE, &path, &SessionOptions::default()).expect("whole");
    let native_opts = SessionOptions {
        native_tail: Some(NativeTail::MovenetMultipose),
        ..SessionOptions::default()
    };
    let mut native = Model::load(&rt, POSE, &path, &native_opts).expect("cut at the heads");
    let names = |m: &Model| {
        m.outputs()
            .iter()
            .map(|o| o.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&native),
        names(&whole),
        "the decoder's outputs keep the graph's names"
    );

    let one = astronaut();
    let noise = TensorF32 {
        shape: vec![1, 160, 224, 3],
        data: common::values(160 * 224 * 3, 11)
            .into_iter()
            .map(|v| ((v + 1.0) * 127.5).trunc())
            .collect(),
    };
    for (what, input) in [
        ("astronaut", one.clone()),
        ("two people", beside_its_mirror(&one)),
        ("noise", noise),
    ] {
        let a = whole.run(std::slice::from_ref(&input)).expect("whole run");
        let b = native
            .run(std::slice::from_ref(&input))
            .expect("native run");
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].shape, [1, 6, 56], "{what}");
        let diff = common::max_abs_diff(&a[0], &b[0]);
        assert!(
            diff <= 1e-6,
            "{what}: the native tail is {diff} from the graph's"
        );
        if what != "noise" {
            let people = |t: &TensorF32| t.data.chunks(56).filter(|r| r[55] > 0.3).count();
            let expected = if what == "astronaut" { 1 } else { 2 };
            assert_eq!(people(&b[0]), expected, "{what}: people above 0.3");
        }
    }
}

#[test]
fn a_graph_that_is_not_movenet_fails_to_load_with_the_reason() {
    let Some(rt) = common::runtime(&["mtcnn-rnet"], &[]) else {
        return;
    };
    let path = common::manifest()
        .model_path("mtcnn-rnet", &common::models_dir())
        .expect("model path");
    let opts = SessionOptions {
        native_tail: Some(NativeTail::MovenetMultipose),
        ..SessionOptions::default()
    };
    let err = Model::load(&rt, "mtcnn-rnet", &path, &opts).expect_err("no MoveNet heads");
    let msg = err.to_string();
    assert!(
        msg.contains("mtcnn-rnet") && msg.contains("native tail `movenet-multipose`"),
        "{msg}"
    );
}
