//! Bad inputs give typed errors with messages that say what and where.

mod common;

use std::path::Path;

use vision::engine::Model;
use vision::{Provider, Runtime, SessionOptions, TensorF32, VisionError};

#[test]
fn missing_runtime_library() {
    let e = Runtime::init(Path::new("/nonexistent/libonnxruntime.so"), Provider::Cpu).unwrap_err();
    assert!(matches!(e, VisionError::RuntimeMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("scripts/provision.sh"), "{e}");
}

#[test]
fn cuda_without_feature_is_refused() {
    if cfg!(feature = "cuda") {
        return;
    }
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let e = rt
        .with_provider(Provider::Cuda { device_id: 0 })
        .unwrap_err();
    assert!(
        matches!(e, VisionError::Provider { .. }) && e.to_string().contains("cuda:0"),
        "{e}"
    );
    assert_eq!(rt.provider().to_string(), "cpu:0");
}

#[test]
fn missing_model_file() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let e = Model::load(
        &rt,
        "ghost",
        Path::new("/nonexistent/ghost.onnx"),
        &SessionOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VisionError::ModelMissing { .. }), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains("ghost") && s.contains("/nonexistent/ghost.onnx"),
        "{s}"
    );
}

#[test]
fn corrupt_model_file() {
    let Some(rt) = common::runtime(&[], &[]) else {
        return;
    };
    let file = common::scratch_file(
        "corrupt",
        "garbage.onnx",
        b"this is not an onnx model \x00\x01\x02\xff\xfe garbage",
    );
    let e = Model::load(&rt, "garbage", &file.path, &SessionOptions::default()).unwrap_err();
    assert!(matches!(e, VisionError::ModelLoad { .. }), "{e:?}");
    let s = e.to_string();
    assert!(s.contains("garbage") && s.contains("corrupt"), "{s}");
}

#[test]
fn wrong_input_shape_is_caught_before_ort() {
    let Some(rt) = common::runtime(&["mtcnn-rnet"], &[]) else {
        return;
    };
    let path = common::models_dir().join("mtcnn-rnet.onnx");
    let mut m = Model::load(&rt, "mtcnn-rnet", &path, &SessionOptions::default()).unwrap();
    assert_eq!(m.inputs()[0].shape, vec![-1, 24, 24, 3]);
    assert_eq!(m.outputs().len(), 2);
    let e = m.run(&[TensorF32::zeros(vec![1, 3, 24, 24])]).unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, VisionError::InputShape { .. }), "{e:?}");
    assert!(
        s.contains("mtcnn-rnet")
            && s.contains("input_2")
            && s.contains("[-1, 24, 24, 3]")
            && s.contains("[1, 3, 24, 24]"),
        "{s}"
    );
    let e = m.run(&[]).unwrap_err();
    assert!(
        matches!(
            e,
            VisionError::InputCount {
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{e:?}"
    );
    // the right shape works, also for a batch
    let out = m.run(&[TensorF32::zeros(vec![3, 24, 24, 3])]).unwrap();
    assert_eq!(out[0].shape, vec![3, 4]);
    assert_eq!(out[1].shape, vec![3, 2]);
    m.warm_up().unwrap();
    assert_eq!(m.provider(), Provider::Cpu);
}

#[test]
fn bad_image_buffer() {
    let e = vision::RgbView::new(&[0u8; 10], 2, 2).unwrap_err();
    assert!(e.to_string().contains("12 bytes"), "{e}");
}

#[test]
fn unknown_conv_search_names_the_variable_and_the_choices() {
    let e = "fastest".parse::<vision::ConvSearch>().unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("SMARTPIPE_CUDNN_CONV_SEARCH")
            && s.contains("fastest")
            && s.contains("heuristic, exhaustive or default"),
        "{s}"
    );
    assert_eq!(
        "Exhaustive".parse::<vision::ConvSearch>().unwrap(),
        vision::ConvSearch::Exhaustive
    );
}

#[test]
fn devices_parse_and_bad_ones_say_what_is_expected() {
    assert_eq!("cpu:0".parse::<Provider>().unwrap(), Provider::Cpu);
    assert_eq!("cpu".parse::<Provider>().unwrap(), Provider::Cpu);
    assert_eq!(
        "cuda:1".parse::<Provider>().unwrap(),
        Provider::Cuda { device_id: 1 }
    );
    assert_eq!(
        "cuda".parse::<Provider>().unwrap(),
        Provider::Cuda { device_id: 0 }
    );
    for bad in ["cuda:x", "cuda:-1", "gpu:0", "cpu:1", ""] {
        let e = bad.parse::<Provider>().unwrap_err().to_string();
        assert!(e.contains("expected cpu:0 or cuda:N"), "{bad}: {e}");
    }
}
