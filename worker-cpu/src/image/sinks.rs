//! Tails (PipeTail) that write frames out: `image.show` as one PNG per frame or as a
//! video through an ffmpeg child process, and `bench.sink`; each on the stage SDK's tail
//! loop.

use crate::image::mask_show::{self, MaskMode};
use crate::image::video_out::VideoWriter;
use crate::image::video_segments::SegmentedVideo;
use crate::out_files;
use crate::StageError;
use protocol::functions::params;
use protocol::messages::{Envelope, Payload};
use protocol::node::Node;
use stage::Tail;
use std::path::PathBuf;

/// A frame as a tail sees it.
pub struct FrameView<'a> {
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
}

/// Receive items until every upstream replica has ended and hand each to `on_item` with
/// its frame (if it carries one): the stage SDK's tail loop, which delivers every item
/// once and in order per source in request-guarantee apps, records the deliveries and
/// releases the shared memory.
pub fn run_tail(
    node: &mut Node,
    mut on_item: impl FnMut(&mut Tail<'_>, &Envelope, Option<FrameView<'_>>) -> Result<(), StageError>,
) -> Result<(), StageError> {
    stage::tail::run(node, |tail, item| {
        let frame = item.frame()?.map(|f| FrameView {
            width: f.width,
            height: f.height,
            rgb: f.data,
        });
        on_item(tail, item.envelope(), frame)
    })
}

/// The detection rows of an item's table part, if it has one, and the people's keypoints
/// when the table has a `keypoints` column (the `pose` family).
fn detections_of(
    payload: &Payload,
) -> (
    Vec<crate::table::detections::DetectionRow>,
    Vec<[[f32; 3]; vision::pose::KEYPOINTS]>,
) {
    let table = match payload {
        Payload::Table(bytes) => Some(bytes),
        Payload::Batch(parts) => parts.iter().find_map(|p| match p {
            Payload::Table(bytes) => Some(bytes),
            _ => None,
        }),
        _ => None,
    };
    let Some(batch) = table.and_then(|bytes| crate::table::detections::decode_ipc(bytes).ok())
    else {
        return Default::default();
    };
    let keypoints = crate::table::skeleton::keypoints_of(&batch)
        .ok()
        .flatten()
        .unwrap_or_default();
    let rows = crate::table::detections::rows_of(&batch).unwrap_or_default();
    (rows, keypoints)
}

/// The frame to write: as it is, or a copy with the item's mask blended (see
/// [`crate::image::mask_show`]) and its detections drawn on it.
fn annotated<'a>(env: &Envelope, f: &FrameView<'a>, mode: MaskMode) -> std::borrow::Cow<'a, [u8]> {
    let (rows, people) = detections_of(&env.payload);
    let mask = match mode {
        MaskMode::Blend => {
            mask_show::mask_of(&env.payload).filter(|m| mask_show::fits(m, f.width, f.height))
        }
        _ => None,
    };
    if rows.is_empty() && mask.is_none() && people.is_empty() {
        return std::borrow::Cow::Borrowed(f.rgb);
    }
    let mut copy = f.rgb.to_vec();
    if let Some(m) = &mask {
        mask_show::blend(&mut copy, m);
    }
    crate::table::skeleton::draw_skeletons(&mut copy, f.width, f.height, &people);
    crate::table::draw::draw_detections(&mut copy, f.width, f.height, &rows);
    std::borrow::Cow::Owned(copy)
}

/// One PNG of an item: its cut-out (RGBA, the mask as alpha) when asked for and the item
/// carries a mask of its frame's size, else the annotated frame.
fn write_item_png(
    file: &std::path::Path,
    env: &Envelope,
    f: &FrameView<'_>,
    mode: MaskMode,
) -> Result<(), StageError> {
    if mode == MaskMode::Cutout {
        if let Some(m) =
            mask_show::mask_of(&env.payload).filter(|m| mask_show::fits(m, f.width, f.height))
        {
            let rgba = mask_show::cutout(f.rgb, &m);
            return out_files::write_png_as(
                file,
                &rgba,
                f.width,
                f.height,
                image::ExtendedColorType::Rgba8,
            );
        }
    }
    out_files::write_png(file, &annotated(env, f, mode), f.width, f.height)
}

/// `image.show`: PNG files in `dir`, a video at `path`, or both; detections in the item
/// (a table beside the frame) are drawn on a copy of the frame.
pub fn run_show(node: &mut Node) -> Result<(), StageError> {
    let params::ImageShow {
        dir,
        path,
        fps,
        mask,
    } = crate::params(node)?;
    let mode = MaskMode::of(mask.as_deref());
    if mode == MaskMode::Cutout && (dir.is_none() || path.is_some()) {
        return Err(StageError::Unsupported(format!(
            "task '{}': image.show with mask \"cutout\" writes RGBA PNGs and needs `dir`, not a video `path`",
            node.task.name
        )));
    }
    if dir.is_none() && path.is_none() {
        return Err(StageError::Unsupported(
            "image.show needs `dir` or `path`".into(),
        ));
    }
    let dir = dir.map(PathBuf::from);
    if let Some(dir) = &dir {
        if dir.exists() && !dir.is_dir() {
            return Err(StageError::io(
                dir.display(),
                "is a file, not a folder: image.show's `dir` is the folder its PNGs go to",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir.display(), e))?;
        out_files::remove_stale_parts(dir);
    }
    let restarted = node.setup.incarnation > 0;
    let mut video = match &path {
        Some(p) => Some(VideoOut::open(node, p, fps, restarted)?),
        None => None,
    };
    let result = run_tail(node, |tail, env, frame| {
        let Some(f) = frame else { return Ok(()) };
        if let Some(dir) = &dir {
            let file = dir.join(format!("{}-{}.png", env.source, env.seq));
            write_item_png(&file, env, &f, mode)?;
        }
        if let Some(video) = &mut video {
            let pixels = annotated(env, &f, mode);
            let frame = FrameView {
                width: f.width,
                height: f.height,
                rgb: &pixels,
            };
            if video.write(env, &frame)? {
                tail.node().metrics(|m| m.frames_fitted += 1);
            }
        }
        Ok(())
    });
    match video {
        Some(v) => {
            let finished = v.finish();
            result.and(finished)
        }
        None => result,
    }
}

/// `image.show`'s video: in segments a restarted tail continues when its container
/// allows (MP4, MOV, MKV, AVI, WebM), else one file a restarted tail starts over.
enum VideoOut {
    Segmented(Box<SegmentedVideo>),
    /// The encoder, started at the first frame; `restarted`: move the earlier
    /// process's file aside when it is.
    Whole {
        path: String,
        fps: f64,
        writer: Option<VideoWriter>,
        restarted: bool,
    },
}

impl VideoOut {
    fn open(node: &Node, path: &str, fps: f64, restarted: bool) -> Result<VideoOut, StageError> {
        let Some(format) = protocol::functions::resumable_video(path) else {
            return Ok(VideoOut::Whole {
                path: path.to_string(),
                fps,
                writer: None,
                restarted,
            });
        };
        let resume = restarted.then_some(node.setup.resume.as_slice());
        let (video, recovered) =
            SegmentedVideo::open(std::path::Path::new(path), format, fps, resume)?;
        if recovered.lost > 0 {
            node.metrics(|m| m.lose(protocol::messages::LossReason::Crash, recovered.lost));
        }
        Ok(VideoOut::Segmented(Box::new(video)))
    }

    /// Write `frame`; true when it was of another size and fitted into the video's.
    fn write(&mut self, env: &Envelope, frame: &FrameView<'_>) -> Result<bool, StageError> {
        match self {
            VideoOut::Segmented(video) => video.write(&env.source, env.seq, frame),
            VideoOut::Whole {
                path,
                fps,
                writer,
                restarted,
            } => {
                let writer = match writer {
                    Some(w) => w,
                    None => {
                        // Not resumable: the earlier process's file is moved aside when
                        // this one opens its own (not before: one with nothing left to
                        // write leaves it).
                        if *restarted && !protocol::functions::streams_to_url(path) {
                            out_files::set_aside(std::path::Path::new(path.as_str()))?;
                        }
                        writer.insert(VideoWriter::start(path, frame.width, frame.height, *fps)?)
                    }
                };
                writer.write(frame)
            }
        }
    }

    fn finish(self) -> Result<(), StageError> {
        match self {
            VideoOut::Segmented(video) => video.finish(),
            VideoOut::Whole { writer, .. } => writer.map_or(Ok(()), VideoWriter::finish),
        }
    }
}

pub use protocol::blob::blob_byte;

/// `bench.sink`: check every byte of every blob; a mismatch counts as bad input.
pub fn run_bench_sink(node: &mut Node) -> Result<(), StageError> {
    let params::NoParams {} = crate::params(node)?;
    // Expected bytes per payload size, built once; compared with memcmp.
    let mut expected: Vec<u8> = Vec::new();
    stage::tail::run(node, |tail, item| {
        let intact = match item.payload() {
            Payload::Tensor { shm, .. } => {
                let bytes = item.read(shm)?;
                if expected.len() != bytes.len() {
                    expected = (0..bytes.len()).map(|i| blob_byte(i, 0)).collect();
                }
                let k = bytes.len().min(8);
                bytes[k..] == expected[k..]
                    && bytes[..k]
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == blob_byte(i, item.seq()))
            }
            _ => false,
        };
        if !intact {
            tracing::error!(seq = item.seq(), "payload corrupted in transit");
            tail.count_lost(protocol::messages::LossReason::BadInput);
        }
        Ok::<(), StageError>(())
    })
}
