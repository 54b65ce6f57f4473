//! Tests of `manifest`.

use super::*;

const PKG: &str = r#"{"name":"p","version":"1","file":"p.whl","sha256":"00"}"#;

fn doc(models: &str) -> String {
    format!(
        r#"{{"version":1,"runtime":{{"name":"onnxruntime","package":{PKG},"member":"m","file":"f","sha256":"00"}},"models":[{models}]}}"#
    )
}

#[test]
fn repo_manifest_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/models.json");
    let m = Manifest::load(&path).unwrap();
    for name in [
        "mtcnn-pnet",
        "mtcnn-rnet",
        "mtcnn-onet",
        "ppocr-det",
        "ppocr-cls",
        "ppocr-rec",
        "yolox-ddddocr",
    ] {
        let e = m.model(name).unwrap();
        assert!(!e.inputs.is_empty() && !e.outputs.is_empty(), "{name}");
    }
    assert_eq!(
        m.model("ppocr-det").unwrap().det_params().unwrap(),
        DetParams::default()
    );
    assert_eq!(
        m.model("ppocr-rec").unwrap().rec_params().unwrap(),
        RecParams::default()
    );
    assert_eq!(
        m.model("ppocr-cls").unwrap().cls_params().unwrap(),
        ClsParams::default()
    );
    assert_eq!(
        m.model("mtcnn-onet")
            .unwrap()
            .mtcnn_params()
            .unwrap()
            .threshold,
        0.7
    );
    assert_eq!(
        m.model_path("ppocr-det", Path::new("/x")).unwrap(),
        PathBuf::from("/x/ppocr-det.onnx")
    );
    assert!(matches!(m.model("nope"), Err(VisionError::UnknownModel(_))));
    let isnet = m.model("isnet").unwrap();
    assert_eq!(isnet.family, Family::Segmentation);
    assert_eq!(isnet.licence.as_deref(), Some("AGPL-3.0"));
    assert_eq!(isnet.members.len(), 22);
    assert_eq!(isnet.segment_params().unwrap().mean, [128.0; 3]);
}

#[test]
fn chunked_members_and_segmentation_params_are_checked() {
    let npm = r#"{"name":"@a/b","version":"1","kind":"npm","file":"b-1.tgz","sha256":"00"}"#;
    let ok = doc(&format!(
        r#"{{"name":"s","family":"segmentation","package":{npm},"members":["p/1","p/2"],"licence":"MIT"}}"#
    ));
    assert!(Manifest::parse(&ok, Path::new("m")).is_ok());
    let both = doc(&format!(
        r#"{{"name":"s","family":"segmentation","package":{npm},"member":"x","members":["p/1"]}}"#
    ));
    let e = Manifest::parse(&both, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`member` or `members`"), "{e}");
    let bad = doc(r#"{"name":"s","family":"segmentation","path":"a","params":{"output":"mask"}}"#);
    let e = Manifest::parse(&bad, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("entry `s`") && e.contains("output"), "{e}");
    let unknown = doc(r#"{"name":"s","family":"segmentation","path":"a","params":{"palete":[]}}"#);
    let e = Manifest::parse(&unknown, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("palete"), "{e}");
}

#[test]
fn unknown_field_is_named() {
    let text = doc(r#"{"name":"a","family":"yolox","path":"a.onnx","colour":"x"}"#);
    let e = Manifest::parse(&text, Path::new("/m/models.json")).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("models[0]") && s.contains("colour"), "{s}");
}

#[test]
fn bad_param_is_named() {
    let text =
        doc(r#"{"name":"a","family":"yolox","path":"a.onnx","params":{"nms_thresh":"high"}}"#);
    let s = Manifest::parse(&text, Path::new("m.json"))
        .unwrap_err()
        .to_string();
    assert!(
        s.contains("entry `a`") && s.contains("params.nms_thresh"),
        "{s}"
    );
    let text = doc(r#"{"name":"a","family":"mtcnn","path":"a.onnx","params":{"treshold":0.5}}"#);
    let s = Manifest::parse(&text, Path::new("m.json"))
        .unwrap_err()
        .to_string();
    assert!(s.contains("treshold"), "{s}");
    let text =
        doc(r#"{"name":"f","family":"yolov8","path":"f.onnx","params":{"resize":"squash"}}"#);
    let s = Manifest::parse(&text, Path::new("m.json"))
        .unwrap_err()
        .to_string();
    assert!(
        s.contains("entry `f`") && s.contains("params.resize") && s.contains("stretch"),
        "{s}"
    );
}

#[test]
fn local_path_and_source_rules() {
    let text = doc(r#"{"name":"mine","family":"yolov8","path":"models/mine.onnx"}"#);
    let m = Manifest::parse(&text, Path::new("/apps/models.json")).unwrap();
    assert_eq!(
        m.model_path("mine", Path::new("/unused")).unwrap(),
        PathBuf::from("/apps/models/mine.onnx")
    );
    let both = doc(&format!(
        r#"{{"name":"a","family":"yolox","path":"a","package":{PKG},"member":"x"}}"#
    ));
    assert!(Manifest::parse(&both, Path::new("m"))
        .unwrap_err()
        .to_string()
        .contains("not both"));
    let none = doc(r#"{"name":"a","family":"yolox"}"#);
    assert!(Manifest::parse(&none, Path::new("m")).is_err());
    let dup =
        doc(r#"{"name":"a","family":"yolox","path":"a"},{"name":"a","family":"yolox","path":"b"}"#);
    assert!(Manifest::parse(&dup, Path::new("m"))
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let fam = doc(r#"{"name":"a","family":"resnet","path":"a"}"#);
    assert!(Manifest::parse(&fam, Path::new("m"))
        .unwrap_err()
        .to_string()
        .contains("family"));
}

#[test]
fn values_that_would_hang_or_exhaust_memory_are_refused_naming_the_field() {
    // Each made a step loop for ever (P-Net's pyramid, the DB box expansion) or ask for
    // hundreds of GB; a batch of 0 made no batch at all.
    for (family, params, field) in [
        (
            "mtcnn",
            r#"{"stage":"pnet","min_face_size":0}"#,
            "params.min_face_size",
        ),
        (
            "mtcnn",
            r#"{"stage":"pnet","min_face_size":0.001}"#,
            "params.min_face_size",
        ),
        (
            "mtcnn",
            r#"{"stage":"pnet","scale_factor":1.0}"#,
            "params.scale_factor",
        ),
        (
            "mtcnn",
            r#"{"stage":"pnet","scale_factor":0}"#,
            "params.scale_factor",
        ),
        ("mtcnn", r#"{"stage":"xnet"}"#, "params.stage"),
        (
            "mtcnn",
            r#"{"stage":"pnet","layout":"ABCD"}"#,
            "params.layout",
        ),
        (
            "mtcnn",
            r#"{"stage":"pnet","threshold":5}"#,
            "params.threshold",
        ),
        (
            "ppocr-det",
            r#"{"limit_side_len":100000}"#,
            "params.limit_side_len",
        ),
        (
            "ppocr-det",
            r#"{"unclip_ratio":1e9}"#,
            "params.unclip_ratio",
        ),
        (
            "ppocr-det",
            r#"{"max_candidates":0}"#,
            "params.max_candidates",
        ),
        ("ppocr-cls", r#"{"batch":0}"#, "params.batch"),
        ("ppocr-rec", r#"{"batch":0}"#, "params.batch"),
        (
            "ppocr-rec",
            r#"{"image_shape":[3,0,320]}"#,
            "params.image_shape",
        ),
    ] {
        let text = doc(&format!(
            r#"{{"name":"m","family":"{family}","path":"m.onnx","params":{params}}}"#
        ));
        let s = Manifest::parse(&text, Path::new("m.json"))
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("entry `m`") && s.contains(field),
            "{params}: {s}"
        );
    }
    let ok = doc(r#"{"name":"m","family":"mtcnn","path":"m.onnx","params":{"stage":"rnet"}}"#);
    Manifest::parse(&ok, Path::new("m.json")).expect("the defaults are in range");
}

#[test]
fn a_native_tail_is_read_by_name_and_an_unknown_one_is_named() {
    let text =
        doc(r#"{"name":"p","family":"pose","path":"p.onnx","native_tail":"movenet-multipose"}"#);
    let m = Manifest::parse(&text, Path::new("m.json")).expect("a known tail");
    assert_eq!(
        m.model("p").expect("entry").native_tail,
        Some(crate::native_tail::NativeTail::MovenetMultipose)
    );
    let text = doc(r#"{"name":"p","family":"pose","path":"p.onnx","native_tail":"openpose"}"#);
    let s = Manifest::parse(&text, Path::new("m.json"))
        .expect_err("no such tail")
        .to_string();
    assert!(
        s.contains("models[0]") && s.contains("openpose") && s.contains("movenet-multipose"),
        "{s}"
    );
    let text = doc(
        r#"{"name":"p","family":"pose","path":"p.onnx","native_tail":"movenet-multipose","strips":{"axis":1,"field":12,"stride":2}}"#,
    );
    let s = Manifest::parse(&text, Path::new("m.json"))
        .expect_err("strips of a decoded tail")
        .to_string();
    assert!(s.contains("strips") && s.contains("native_tail"), "{s}");
}

#[test]
fn own_arena_is_off_unless_an_entry_asks_and_must_be_a_boolean() {
    let m = Manifest::parse(
        &doc(r#"{"name":"m","family":"mtcnn","path":"m.onnx","params":{"stage":"pnet"},"own_arena":true}"#),
        Path::new("m.json"),
    )
    .expect("own arena");
    assert!(m.model("m").expect("entry").own_arena);
    let m = Manifest::parse(
        &doc(r#"{"name":"m","family":"mtcnn","path":"m.onnx","params":{"stage":"pnet"}}"#),
        Path::new("m.json"),
    )
    .expect("default");
    assert!(!m.model("m").expect("entry").own_arena);
    let s = Manifest::parse(
        &doc(r#"{"name":"m","family":"mtcnn","path":"m.onnx","params":{"stage":"pnet"},"own_arena":"yes"}"#),
        Path::new("m.json"),
    )
    .expect_err("not a boolean")
    .to_string();
    assert!(s.contains("models[0].own_arena"), "{s}");
}
