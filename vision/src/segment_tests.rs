use super::*;

fn alpha_params() -> SegmentParams {
    SegmentParams {
        input_size: [4, 4],
        min_side: 3,
        ..SegmentParams::default()
    }
}

#[test]
fn resize_matches_the_packages_bilinear() {
    // 2x1 → 4x1: source x = 0, 0.5, 1, 1.5 (clamped to the last pixel).
    let out = resize_bilinear_u8(&[0, 100], (2, 1), 1, (4, 1)).unwrap();
    assert_eq!(out, vec![0, 50, 100, 100]);
    // 4x1 → 2x1 picks pixels 0 and 2 (no half-pixel shift).
    let out = resize_bilinear_u8(&[10, 20, 30, 40], (4, 1), 1, (2, 1)).unwrap();
    assert_eq!(out, vec![10, 30]);
    // Rounds half up, like Math.round: 0.5 * 1 + 0.5 * 2 = 1.5 → 2.
    let out = resize_bilinear_u8(&[1, 2], (2, 1), 1, (4, 1)).unwrap();
    assert_eq!(out[1], 2);
    assert!(resize_bilinear_u8(&[1, 2, 3], (2, 1), 1, (4, 1)).is_err());
}

#[test]
fn preprocess_normalises_and_refuses_tiny_frames() {
    let px = [128u8, 0, 255].repeat(16);
    let img = RgbView::new(&px, 4, 4).unwrap();
    let t = preprocess(img, &alpha_params()).unwrap();
    assert_eq!(t.shape, vec![1, 3, 4, 4]);
    assert_eq!(t.data[0], 0.0);
    assert_eq!(t.data[16], -0.5);
    assert_eq!(t.data[32], 127.0 / 256.0);
    let small = RgbView::new(&px[..12], 2, 2).unwrap();
    let e = preprocess(small, &alpha_params()).unwrap_err().to_string();
    assert!(e.contains("2x2") && e.contains("too small"), "{e}");
}

#[test]
fn alpha_output_gives_mask_and_one_region() {
    // 2x2 alpha: right column foreground.
    let out = TensorF32::new(vec![1, 1, 2, 2], vec![0.0, 1.0, 0.0, 1.0]).unwrap();
    let (mask, regions) = postprocess(&out, 4, 4, &alpha_params()).unwrap();
    assert_eq!(mask.kind, MaskKind::Alpha);
    assert_eq!((mask.width, mask.height), (4, 4));
    // Columns map to source x = 0, 0.5, 1, 1.5 → 0, 128 (127.5 rounded up), 255, 255.
    assert_eq!(&mask.data[..4], &[0, 128, 255, 255]);
    assert_eq!(regions.len(), 1);
    let r = &regions[0];
    assert_eq!((r.class.as_str(), r.area), ("foreground", 12));
    assert_eq!(
        (r.bbox.x1, r.bbox.y1, r.bbox.x2, r.bbox.y2),
        (1.0, 0.0, 4.0, 4.0)
    );
    let empty = TensorF32::new(vec![1, 1, 2, 2], vec![0.0; 4]).unwrap();
    assert!(postprocess(&empty, 4, 4, &alpha_params())
        .unwrap()
        .1
        .is_empty());
}

#[test]
fn logits_are_arg_maxed_into_classes() {
    let p = SegmentParams {
        output: "logits".into(),
        classes: vec!["bg".into(), "cat".into(), "dog".into()],
        ..alpha_params()
    };
    // 2x2, three classes: pixel 0 bg, 1 cat, 2 and 3 dog.
    let data = vec![
        5.0, 0.0, 0.0, 0.0, // bg
        0.0, 5.0, 0.0, 0.0, // cat
        0.0, 0.0, 5.0, 5.0, // dog
    ];
    let out = TensorF32::new(vec![1, 3, 2, 2], data).unwrap();
    let (mask, regions) = postprocess(&out, 4, 4, &p).unwrap();
    assert_eq!(mask.kind, MaskKind::Classes);
    assert_eq!(&mask.data[..4], &[0, 0, 1, 1]);
    assert_eq!(&mask.data[8..12], &[2, 2, 2, 2]);
    let names: Vec<_> = regions.iter().map(|r| (r.class.as_str(), r.area)).collect();
    assert_eq!(names, vec![("bg", 4), ("cat", 4), ("dog", 8)]);
    assert!(regions[1].score > 0.98);
    // A channel count that is not the class count is named.
    let two = TensorF32::new(vec![1, 2, 2, 2], vec![0.0; 8]).unwrap();
    let e = postprocess(&two, 4, 4, &p).unwrap_err().to_string();
    assert!(e.contains("3 channel(s)"), "{e}");
    // An alpha model's output given to the logits layout, and the other way round.
    let a = TensorF32::new(vec![1, 1, 2, 2], vec![0.0; 4]).unwrap();
    assert!(postprocess(&a, 4, 4, &p).is_err());
    let e = postprocess(&out, 4, 4, &alpha_params())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1,1,H,W]"), "{e}");
}

#[test]
fn masks_round_trip_and_bad_encodings_are_errors() {
    let data: Vec<u8> = (0..300 * 7).map(|i| ((i / 150) % 3) as u8 * 100).collect();
    let m = Mask::new(MaskKind::Classes, 300, 7, data).unwrap();
    let bytes = m.encode();
    assert!(bytes.len() < 100, "{}", bytes.len());
    assert_eq!(Mask::decode(&bytes).unwrap(), m);
    assert!(Mask::decode(&bytes[..bytes.len() - 1]).is_err());
    assert!(Mask::decode(b"SPM1").is_err());
    let mut more = bytes.clone();
    more.extend_from_slice(&[1, 5]);
    assert!(Mask::decode(&more).is_err());
}

#[test]
fn palette_is_pascal_vocs() {
    assert_eq!(palette(0), [0, 0, 0]);
    assert_eq!(palette(1), [128, 0, 0]);
    assert_eq!(palette(2), [0, 128, 0]);
    assert_eq!(palette(15), [192, 128, 128]);
}

#[test]
fn params_are_checked() {
    assert!(SegmentParams::default().check().is_ok());
    let bad = SegmentParams {
        output: "mask".into(),
        ..SegmentParams::default()
    };
    assert!(bad.check().unwrap_err().contains("output"));
    let bad = SegmentParams {
        classes: vec![],
        ..SegmentParams::default()
    };
    assert!(bad.check().unwrap_err().contains("classes"));
}
