//! CPU bodies (CPUBody): one item in, one item out. `core.forward` passes the
//! shared-memory reference on and copies nothing; image ops read the input slot and
//! write their result once into their own pool.

use crate::StageError;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use protocol::clock::now_ns;
use protocol::functions::params;
use protocol::messages::{Command, Envelope, LossReason, Payload, PixelFormat};
use protocol::node::{Event, Node, NodeError};
use std::time::Duration;

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

/// Run a body until every upstream replica has ended its stream.
fn run(node: &mut Node, mut op: Op) -> Result<(), StageError> {
    loop {
        match node.next(Duration::from_millis(200))? {
            Event::Item(env) => {
                let recv = now_ns();
                let started = std::time::Instant::now();
                op.handle(node, env, recv)?;
                let busy = started.elapsed().as_nanos() as u64;
                node.note_busy(busy);
            }
            Event::End => return Ok(()),
            Event::Command(Command::Stop) => return Err(NodeError::Stopped.into()),
            _ => {}
        }
    }
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
    fn handle(&mut self, node: &mut Node, env: Envelope, recv: u64) -> Result<(), StageError> {
        if let Op::Forward = self {
            return Ok(node.forward(env, recv)?);
        }
        let Payload::Frame {
            shm,
            width: src_w,
            height: src_h,
            format: PixelFormat::Rgb8,
        } = env.payload
        else {
            tracing::warn!(source = %env.source, seq = env.seq, "'{}' takes frames; item dropped", node.task.function);
            return Ok(node.lose(&env, LossReason::BadInput)?);
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
                        seq = env.seq,
                        "crop {x},{y} lies outside the {src_w}x{src_h} frame; item dropped"
                    );
                    return Ok(node.lose(&env, LossReason::BadInput)?);
                }
                (w, h, Some((x, y)))
            }
            Op::Forward => unreachable!("handled above"),
        };
        let pool = node.output_pool()?;
        let Some(mut writer) = node.output_slot(&pool)? else {
            return Ok(node.lose(&env, LossReason::Shed)?);
        };
        let out_len = out_w as usize * out_h as usize * 3;
        {
            let src = node.pool(shm.pool)?.read(&shm).map_err(NodeError::from)?;
            let dst = writer.bytes_mut();
            if dst.len() < out_len || src.len() < src_w as usize * src_h as usize * 3 {
                return Err(StageError::Input(format!(
                    "frame {} of '{}': sizes do not match the planned slots",
                    env.seq, env.source
                )));
            }
            let dst = &mut dst[..out_len];
            match (self, crop) {
                (Op::Resize { resizer, .. }, _) => {
                    resize_rgb(resizer, src, src_w, src_h, dst, out_w, out_h)?
                }
                (_, Some((x, y))) => crop_rgb(src, src_w, x, y, dst, out_w, out_h),
                _ => unreachable!("crop always has an origin"),
            }
        }
        let out = writer.commit(out_len as u64).map_err(NodeError::from)?;
        node.release(&env.payload)?;
        let next = Envelope {
            payload: Payload::Frame {
                shm: out,
                width: out_w,
                height: out_h,
                format: PixelFormat::Rgb8,
            },
            ..env
        };
        Ok(node.send(next, recv)?)
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
