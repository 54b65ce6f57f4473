//! Super-resolution tiles (waifu2x UpConv7 ×2): a frame upscaled in tiles equals the
//! whole-frame run within float rounding (the seam test), also when the model runs the tiles a
//! few at a time (`set_max_rows`).
// Test code: a failed unwrap or expect is a failed test (clippy.toml allows them only
// inside #[test] functions, and these are helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use vision::superres::{self, SuperresParams, Tiling};
use vision::{Model, RgbImage, SessionOptions, TensorF32};

fn frame(w: usize, h: usize) -> RgbImage {
    let img = common::load_media("coffee.png");
    // a w×h crop with detail everywhere (the cup's rim and the table)
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let at = ((y + 100) * img.width + 150) * 3;
        data.extend_from_slice(&img.data[at..at + w * 3]);
    }
    RgbImage::new(data, w, h).unwrap()
}

fn run(model: &mut Model, img: &RgbImage, p: &SuperresParams) -> (Tiling, TensorF32) {
    let t = superres::tiling(model.name(), img.width, img.height, p, (None, None)).unwrap();
    let x = superres::preprocess(img.view(), &t, p).unwrap();
    let y = model.run(&[x]).unwrap().remove(0);
    (t, y)
}

/// Largest |tile output − the same pixels of the whole-frame output| over every tile.
fn seam_error(model_name: &str, tile: usize, per_run: usize) {
    let Some(rt) = common::runtime(&[model_name], &["coffee.png"]) else {
        return;
    };
    let manifest = common::manifest();
    let entry = manifest.model(model_name).unwrap();
    let p = entry.superres_params().unwrap();
    let path = manifest
        .model_path(model_name, &common::models_dir())
        .unwrap();
    let opts = SessionOptions {
        intra_threads: 2,
        ..SessionOptions::default()
    };
    let mut model = Model::load(&rt, model_name, &path, &opts).unwrap();
    let img = frame(90, 62);
    let (whole_t, whole) = run(&mut model, &img, &p);
    assert_eq!(whole_t.origins.len(), 1, "the whole frame is one tile");
    let tiled_p = SuperresParams { tile, ..p.clone() };
    model.set_max_rows(Some(per_run));
    let (t, tiles) = run(&mut model, &img, &tiled_p);
    assert!(t.origins.len() >= 6, "{} tiles", t.origins.len());
    let s = p.scale;
    let (oh, ow) = (t.tile_h * s, t.tile_w * s);
    let (fh, fw) = (img.height * s, img.width * s);
    let mut max = 0f32;
    for (k, &(x0, y0)) in t.origins.iter().enumerate() {
        for c in 0..3 {
            for yy in 0..oh {
                for xx in 0..ow {
                    let a = tiles.data[((k * 3 + c) * oh + yy) * ow + xx];
                    let b = whole.data[(c * fh + y0 * s + yy) * fw + x0 * s + xx];
                    max = max.max((a - b).abs());
                }
            }
        }
    }
    assert!(
        max < 1e-4,
        "{model_name}: tiles differ from the whole frame by up to {max}"
    );
    // The stitched frames: the same pixels, but where float rounding crosses a level.
    let a = superres::postprocess(model_name, &whole, &whole_t, &p).unwrap();
    let b = superres::postprocess(model_name, &tiles, &t, &tiled_p).unwrap();
    assert_eq!((b.width, b.height), (fw, fh));
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max();
    assert!(diff <= Some(1), "stitched frames differ by {diff:?} levels");
}

#[test]
fn upconv7_tiles_equal_the_whole_frame_run() {
    seam_error("waifu2x-upconv7-x2", 24, 4);
}
