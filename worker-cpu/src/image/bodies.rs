//! CPU bodies (CPUBody): one item in, one item out. `core.forward` passes the
//! shared-memory reference on and copies nothing; image ops read the input slot and
//! write their result once into their own pool.

use crate::StageError;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use protocol::functions::params;
use protocol::messages::{LossReason, Payload, PixelFormat};
use protocol::node::Node;
use stage::{Body, Emit, Item};

/// `core.forward`: pass every item on untouched.
pub fn run_forward(node: &mut Node) -> Result<(), StageError> {
    let params::NoParams {} = crate::params(node)?;
    run(node, Op::Forward)
}

/// `image.resize`: bilinear resize of every frame.
pub fn run_resize(node: &mut Node) -> Result<(), StageError> {
    let params::ImageResize { width, height } = crate::params(node)?;
    let resizer = Box::new(Resizer::new());
    run(
        node,
        Op::Resize {
            width,
            height,
            resizer,
        },
    )
}

/// `image.crop`: a rectangle of every frame (clipped to it).
pub fn run_crop(node: &mut Node) -> Result<(), StageError> {
    let params::ImageCrop {
        x,
        y,
        width,
        height,
    } = crate::params(node)?;
    run(
        node,
        Op::Crop {
            x,
            y,
            width,
            height,
        },
    )
}

/// Run a body until every upstream replica has ended its stream, on the stage SDK's
/// body loop (items release their slots when dropped; sends count the holds).
fn run(node: &mut Node, mut op: Op) -> Result<(), StageError> {
    stage::body::run(node, None, |body, item| op.handle(body, item))
}

enum Op {
    Forward,
    Resize {
        width: u32,
        height: u32,
        resizer: Box<Resizer>,
    },
    Crop {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
}

impl Op {
    fn handle(&mut self, body: &mut Body<'_>, item: Item) -> Result<(), StageError> {
        if let Op::Forward = self {
            return body.forward(item);
        }
        let Payload::Frame {
            shm,
            width: src_w,
            height: src_h,
            format: PixelFormat::Rgb8,
        } = *item.payload()
        else {
            tracing::warn!(source = %item.source(), seq = item.seq(), "'{}' takes frames; item dropped", body.node().task.function);
            return body.lose(item, LossReason::BadInput);
        };
        let (out_w, out_h, crop) = match *self {
            Op::Resize { width, height, .. } => (width, height, None),
            Op::Crop {
                x,
                y,
                width,
                height,
            } => {
                let w = width.min(src_w.saturating_sub(x));
                let h = height.min(src_h.saturating_sub(y));
                if w == 0 || h == 0 {
                    tracing::warn!(
                        seq = item.seq(),
                        "crop {x},{y} lies outside the {src_w}x{src_h} frame; item dropped"
                    );
                    return body.lose(item, LossReason::BadInput);
                }
                (w, h, Some((x, y)))
            }
            Op::Forward => unreachable!("handled above"),
        };
        let written = {
            let src = item.read(&shm)?;
            if src.len() < src_w as usize * src_h as usize * 3 {
                return Err(StageError::Input(format!(
                    "frame {} of '{}': sizes do not match the planned slots",
                    item.seq(),
                    item.source()
                )));
            }
            let mut failed = None;
            let written = body.write_frame(out_w, out_h, |dst| {
                match (&mut *self, crop) {
                    (Op::Resize { resizer, .. }, _) => {
                        if let Err(e) = resize_rgb(resizer, src, src_w, src_h, dst, out_w, out_h) {
                            failed = Some(e);
                        }
                    }
                    (_, Some((x, y))) => crop_rgb(src, src_w, x, y, dst, out_w, out_h),
                    _ => unreachable!("crop always has an origin"),
                }
                Ok(())
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            written
        };
        let Ok(written) = written else {
            return body.lose(item, LossReason::Shed);
        };
        let Some(frame) = written.frame_payload() else {
            unreachable!("written as a frame");
        };
        // The input frame is not part of the payload: it is released by the send.
        body.send(Emit::of(item).payload(frame).written(written))
    }
}

/// Bilinear resize of packed RGB8.
pub fn resize_rgb(
    resizer: &mut Resizer,
    src: &[u8],
    src_w: u32,
    src_h: u32,
    dst: &mut [u8],
    dst_w: u32,
    dst_h: u32,
) -> Result<(), StageError> {
    let bad = |e: &dyn std::fmt::Display| {
        StageError::Input(format!("resize {src_w}x{src_h} → {dst_w}x{dst_h}: {e}"))
    };
    let src_img = ImageRef::new(
        src_w,
        src_h,
        &src[..src_w as usize * src_h as usize * 3],
        PixelType::U8x3,
    )
    .map_err(|e| bad(&e))?;
    let mut dst_img =
        Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8x3).map_err(|e| bad(&e))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&src_img, &mut dst_img, &options)
        .map_err(|e| bad(&e))
}

/// Copy a `w`×`h` rectangle at (`x`, `y`) out of a packed RGB8 frame `src_w` wide.
pub fn crop_rgb(src: &[u8], src_w: u32, x: u32, y: u32, dst: &mut [u8], w: u32, h: u32) {
    let row = w as usize * 3;
    for r in 0..h as usize {
        let from = ((y as usize + r) * src_w as usize + x as usize) * 3;
        dst[r * row..(r + 1) * row].copy_from_slice(&src[from..from + row]);
    }
}
