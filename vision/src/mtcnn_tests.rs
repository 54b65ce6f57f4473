use super::*;

#[test]
fn pnet_input_is_the_rounded_area_resize_transposed() {
    let data: Vec<u8> = (0..97 * 61 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let img = RgbView::new(&data, 97, 61).expect("view");
    let cfg = MtcnnConfig::default();
    let scales = pyramid_scales(97, 61, &cfg);
    let all = pnet_preprocess_pyramid(img, &scales, &cfg).expect("pyramid");
    assert_eq!(all.len(), scales.len());
    for (t, &s) in all.iter().zip(&scales) {
        let (w, h) = scaled_size(97, 61, s);
        assert_eq!(t.shape, vec![1, w, h, 3]);
        let r = crate::resize::resize_rgb(img, w, h, Interp::Area).expect("resize");
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let want = (f32::from(r.data[(y * w + x) * 3 + c]) - 127.5) * 0.0078125;
                    assert_eq!(
                        t.data[(x * h + y) * 3 + c],
                        want,
                        "scale {s} ({x}, {y}, {c})"
                    );
                }
            }
        }
        assert_eq!(*t, pnet_preprocess(img, s, &cfg).expect("one scale"));
    }
}

#[test]
fn pyramid_written_as_bytes_equals_its_tensors() {
    let data: Vec<u8> = (0..203 * 117 * 3).map(|i| (i * 13 % 255) as u8).collect();
    let img = RgbView::new(&data, 203, 117).expect("view");
    let cfg = MtcnnConfig::default();
    let pyramid = PnetPyramid::new(img, &pyramid_scales(203, 117, &cfg), &cfg).expect("new");
    let tensors = pyramid.tensors().expect("tensors");
    let shapes = pyramid.shapes();
    assert_eq!(tensors.len(), shapes.len());
    for (k, (t, shape)) in tensors.iter().zip(&shapes).enumerate() {
        assert_eq!(&t.shape, shape);
        // Aligned to f32 (as in a slot: written as f32) and one byte off (byte by byte).
        let mut buffer = vec![0u8; t.data.len() * 4 + 4];
        let aligned = buffer.as_ptr().align_offset(4);
        for at in [aligned, aligned + 1] {
            let bytes = &mut buffer[at..at + t.data.len() * 4];
            pyramid.write_le(k, bytes).expect("write");
            let back: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(back, t.data, "level {k}, {at} bytes into the buffer");
        }
        assert!(pyramid
            .write_le(k, &mut buffer[..t.data.len() * 4 - 4])
            .is_err());
    }
    assert!(pyramid.write_le(shapes.len(), &mut []).is_err());
}

#[test]
fn crops_copy_the_box_pixels() {
    // a 6x5 image whose pixel (x, y) is 10 * y + x in every channel; the box (2, 2)..(4, 4)
    // (1-based, inclusive) is pixels 1..=3 of rows 1..=3, shrunk 3x3 -> 24x24 is INTER_AREA's
    // upscaling variant, whose corners keep the corner pixels
    let data: Vec<u8> = (0..30)
        .flat_map(|i| [(10 * (i / 6) + i % 6) as u8; 3])
        .collect();
    let img = RgbView::new(&data, 6, 5).expect("view");
    let b = FaceBox {
        x1: 2.0,
        y1: 2.0,
        x2: 4.0,
        y2: 4.0,
        score: 1.0,
    };
    let t = rnet_preprocess(img, &[b], &MtcnnConfig::default()).expect("crop");
    let at = |x: usize, y: usize| t.data[(x * 24 + y) * 3] / 0.0078125 + 127.5;
    assert!((at(0, 0) - 11.0).abs() < 1e-3, "{}", at(0, 0));
    assert!((at(23, 0) - 13.0).abs() < 1e-3, "{}", at(23, 0));
    assert!((at(0, 23) - 31.0).abs() < 1e-3, "{}", at(0, 23));
    assert!((at(23, 23) - 33.0).abs() < 1e-3, "{}", at(23, 23));
}

#[test]
fn scales_for_512() {
    let s = pyramid_scales(512, 512, &MtcnnConfig::default());
    assert!((s[0] - 0.6).abs() < 1e-12);
    assert!((s[1] - 0.6 * 0.709).abs() < 1e-12);
    // 512 * 0.6 * 0.709^k >= 12  ⇔ k <= 9
    assert_eq!(s.len(), 10);
    assert!(pyramid_scales(10, 10, &MtcnnConfig::default()).is_empty());
}

#[test]
fn pnet_decode_maps_cells_to_pixels() {
    // 2x3 grid (W'=2, H'=3); a single hit at column 1, row 2 → the flipud quirk reads reg at column 0
    let (gw, gh) = (2, 3);
    let mut prob = vec![0f32; gw * gh * 2];
    let mut reg = vec![0f32; gw * gh * 4];
    prob[(gh + 2) * 2 + 1] = 0.9;
    reg[2 * 4] = 0.25; // column 0, row 2, dx1
    let outs = [
        TensorF32::new(vec![1, gw, gh, 4], reg).unwrap(),
        TensorF32::new(vec![1, gw, gh, 2], prob).unwrap(),
    ];
    let c = pnet_postprocess(&outs, 0.5, &MtcnnConfig::default()).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].bbox.x1, c[0].bbox.y1, c[0].bbox.x2, c[0].bbox.y2),
        (6.0, 10.0, 28.0, 32.0)
    );
    assert_eq!(c[0].reg[0], 0.25);
    let f = pnet_finalize(&c, &MtcnnConfig::default());
    // regression: x1 = 6 + 0.25 * 22 = 11.5; squaring to side 22: 11.5 + 16.5 / 2 - 11 = 8.75 → 8
    assert_eq!(
        (f[0].x1, f[0].y1, f[0].x2, f[0].y2),
        (8.0, 10.0, 30.0, 32.0)
    );
}

#[test]
fn bad_output_shapes_are_errors() {
    let outs = [TensorF32::zeros(vec![1, 4, 4, 3])];
    let e = pnet_postprocess(&outs, 1.0, &MtcnnConfig::default()).unwrap_err();
    assert!(e.to_string().contains("P-Net regression"), "{e}");
    let boxes = [FaceBox::default(); 2];
    let outs = [TensorF32::zeros(vec![3, 4]), TensorF32::zeros(vec![3, 2])];
    assert!(rnet_postprocess(&boxes, &outs, &MtcnnConfig::default()).is_err());
}

#[test]
fn crops_pad_outside_the_image() {
    let img = crate::tensor::RgbImage::new(vec![255; 4 * 4 * 3], 4, 4).unwrap();
    let b = FaceBox {
        x1: -1.0,
        y1: -1.0,
        x2: 2.0,
        y2: 2.0,
        score: 1.0,
    };
    let t = rnet_preprocess(img.view(), &[b], &MtcnnConfig::default()).unwrap();
    assert_eq!(t.shape, vec![1, 24, 24, 3]);
    // top-left is zero padding → (0 - 127.5) / 128, bottom-right is white → (255 - 127.5) / 128
    assert!((t.data[0] + 0.99609375).abs() < 1e-6);
    assert!((t.data[t.len() - 1] - 0.99609375).abs() < 1e-6);
}
