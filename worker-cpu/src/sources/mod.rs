//! Heads (PipeHead): sources that write each item once into their output pool and
//! send its reference downstream. When the pool is full a guaranteed app waits (the
//! source slows down); a best-effort app sheds the item and counts it.

pub mod head_cost;
pub mod jpeg_end;
pub mod media;
mod video;

pub use video::video;

use crate::sources::head_cost::CpuMeter;
use crate::sources::media::{decode_rgb, list_images, media_error};
use crate::StageError;
use protocol::clock::now_ns;
use protocol::functions::params;
use protocol::limits::{Limits, MAX_RATE, MIN_RATE};
use protocol::messages::{DType, LossReason, Payload, PixelFormat};
use protocol::node::Node;
use protocol::shm::ShmRef;
use stage::head::{Emitted, Flow, Head};
use std::time::{Duration, Instant};

/// Writes items of one source into the output pool: the stage SDK's head (slot policy,
/// resume-from, shed counting), with this worker's CPU meter.
struct Emitter {
    head: Head,
    source: String,
    /// CPU time per item (with a decoder child's), noted as the head's busy time.
    cost: CpuMeter,
    /// Whether the log said yet that the source fell behind its pace.
    said_behind: bool,
}

/// When an item due at `due` arrived: then, or now for an unpaced source, so time it
/// spent waiting for the pipeline counts in its latency.
fn arrival_ns(due: Option<Instant>) -> u64 {
    let late = due.map_or(Duration::ZERO, |d| {
        Instant::now().saturating_duration_since(d)
    });
    now_ns().saturating_sub(late.as_nanos() as u64)
}

impl Emitter {
    fn new(node: &Node) -> Result<Emitter, StageError> {
        let head = Head::new(node)?;
        Ok(Emitter {
            source: head.source().to_string(),
            head,
            cost: CpuMeter::new(),
            said_behind: false,
        })
    }

    /// Best effort: whether item `seq` is stale (`Head::skip_late`: past the latency
    /// quota, or a newer item is due while the source catches up with its pace; the
    /// last, `has_next` false, has none). It is then counted and the caller skips it
    /// unread, so what the source sends is fresh instead of what every stage below
    /// would drop.
    fn skip_late(
        &mut self,
        node: &mut Node,
        seq: u64,
        pacer: &Pacer,
        has_next: bool,
    ) -> Result<bool, StageError> {
        let due = pacer.due();
        let newer_due = has_next && pacer.newer_due(seq);
        let late = self.head.skip_late(node, seq, arrival_ns(due), newer_due)?;
        if late {
            self.say_behind(node, seq, due);
        }
        Ok(late)
    }

    /// [`Emitter::skip_late`]'s verdict, not counted: for a stream source, which reads
    /// the item first and counts it (`Head::lose`) only once it is known to exist.
    fn stale(
        &mut self,
        node: &Node,
        seq: u64,
        pacer: &Pacer,
        has_next: bool,
    ) -> Option<LossReason> {
        let due = pacer.due();
        let newer_due = has_next && pacer.newer_due(seq);
        let stale = self.head.stale(node, seq, arrival_ns(due), newer_due);
        if stale.is_some() {
            self.say_behind(node, seq, due);
        }
        stale
    }

    /// Say once in the log that items are counted lost for the source's own delay.
    fn say_behind(&mut self, node: &Node, seq: u64, due: Option<Instant>) {
        if self.said_behind {
            return;
        }
        self.said_behind = true;
        let late_ms = due.map_or(0, |d| {
            Instant::now().saturating_duration_since(d).as_millis()
        });
        tracing::warn!(
            source = %self.source,
            seq,
            "the source is behind its pace: item {seq} was due {late_ms} ms ago, past the \
             latency quota of {} ms; items that late are counted lost as 'deadline' and not \
             sent (its fps, or the app's request rate, is more than it can make)",
            node.setup.deadline_ms
        );
    }

    /// Emit item `seq` of `len` bytes filled by `fill`. When shed, `fill` still runs on
    /// a scratch buffer so stream sources stay in step. The item is stamped with its
    /// arrival: when it was due at the paced rate (`due`), or now for an unpaced source,
    /// so time it spent waiting for the pipeline counts in its latency.
    fn emit(
        &mut self,
        node: &mut Node,
        seq: u64,
        due: Option<Instant>,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), StageError>,
        payload: impl FnOnce(ShmRef) -> Payload,
    ) -> Result<Flow, StageError> {
        let emitted = self
            .head
            .emit(node, seq, arrival_ns(due), len, fill, payload);
        if matches!(emitted, Ok(Emitted::Late)) {
            self.say_behind(node, seq, due);
        }
        if !matches!(emitted, Ok(Emitted::Replayed)) {
            // What this item cost (read, decode, write, send), whether sent or shed.
            node.note_busy(self.cost.take().as_nanos() as u64);
        }
        emitted?;
        check_commands(node)
    }
}

fn check_commands(node: &mut Node) -> Result<Flow, StageError> {
    stage::head::commands(node)
}

fn frame(width: u32, height: u32) -> impl FnOnce(ShmRef) -> Payload {
    move |shm| Payload::Frame {
        shm,
        width,
        height,
        format: PixelFormat::Rgb8,
    }
}

/// The colour of frame `seq` of `image.gen`'s `solid` pattern: each of 128 consecutive
/// frames has its own, at least 35 apart (RGB distance).
pub fn solid_colour(seq: u64) -> [u8; 3] {
    let s = seq as usize;
    [(s * 40) as u8, (s * 90) as u8, (s * 150) as u8]
}

/// Draw one synthetic frame; `seq` moves the picture so consecutive frames differ.
pub fn draw_pattern(pattern: &str, width: u32, height: u32, seq: u64, out: &mut [u8]) {
    let (w, s) = (width as usize, seq as usize);
    match pattern {
        "checker" => {
            for (i, px) in out.chunks_exact_mut(3).enumerate() {
                let (x, y) = (i % w, i / w);
                let on = ((x + s) / 16 + y / 16) % 2 == 0;
                px.fill(if on { 230 } else { 25 });
            }
        }
        "noise" => {
            let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for b in out.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
        }
        "solid" => {
            let c = solid_colour(seq);
            for px in out.chunks_exact_mut(3) {
                px.copy_from_slice(&c);
            }
        }
        _ => {
            let h = height.max(1) as usize;
            for (i, px) in out.chunks_exact_mut(3).enumerate() {
                let (x, y) = (i % w, i / w);
                px[0] = ((x + s) * 255 / w.max(1)) as u8;
                px[1] = (y * 255 / h) as u8;
                px[2] = (s * 7) as u8;
            }
        }
    }
}

/// `image.gen`: synthetic frames until `count` are sent or the head is drained.
pub fn generate(node: &mut Node) -> Result<(), StageError> {
    let params::ImageGen {
        width,
        height,
        count,
        fps,
        pattern,
    } = crate::params(node)?;
    let len = width as usize * height as usize * 3;
    synthetic(
        node,
        count,
        fps,
        len,
        |seq, buf| draw_pattern(&pattern, width, height, seq, buf),
        |shm| frame(width, height)(shm),
    )
}

/// A source that makes its items itself: `count` items of `len` bytes at `fps`.
fn synthetic(
    node: &mut Node,
    count: u64,
    fps: f64,
    len: usize,
    fill: impl Fn(u64, &mut [u8]),
    payload: impl Fn(ShmRef) -> Payload,
) -> Result<(), StageError> {
    let mut emitter = Emitter::new(node)?;
    let mut pacer = Pacer::new(node, fps);
    for seq in 0..count {
        if pacer.wait(node, seq)? == Flow::Drain {
            break;
        }
        if emitter.skip_late(node, seq, &pacer, seq + 1 < count)? {
            if check_commands(node)? == Flow::Drain {
                break;
            }
            continue;
        }
        let flow = emitter.emit(
            node,
            seq,
            pacer.due(),
            len,
            |buf| {
                fill(seq, buf);
                Ok(())
            },
            &payload,
        )?;
        if flow == Flow::Drain {
            break;
        }
    }
    Ok(())
}

/// Paces a source at `fps` items per second (0 = as fast as it goes).
struct Pacer {
    fps: f64,
    start: Instant,
    /// The item paced from: the first this process sends (a restarted head resumes
    /// there, at once), or the first after the rate last changed.
    first: u64,
    /// When the item [`Pacer::wait`] last waited for was due (None: not paced).
    due: Option<Instant>,
}

/// Why [`pace`] returned.
#[derive(PartialEq)]
enum Paced {
    Due,
    Drain,
    /// The supervisor set a new rate: the due time is stale.
    RateChanged,
}

impl Pacer {
    fn new(node: &Node, fps: f64) -> Pacer {
        Pacer {
            fps: pacable(fps),
            start: Instant::now(),
            first: node.resume_from(&node.task.name),
            due: None,
        }
    }

    /// When the last item waited for was due: its arrival time (None when unpaced).
    fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether the item after `seq` is due already (the source is behind its pace).
    fn newer_due(&self, seq: u64) -> bool {
        if self.fps <= 0.0 || seq < self.first {
            return false;
        }
        let ahead = (seq + 1 - self.first) as f64 / self.fps;
        self.start.elapsed().as_secs_f64() >= ahead
    }

    /// Wait until item `seq` is due, still answering commands. A new rate
    /// (`SetRate`) applies from `seq` on.
    fn wait(&mut self, node: &mut Node, seq: u64) -> Result<Flow, StageError> {
        loop {
            if let Some(fps) = node.take_rate_change() {
                self.fps = pacable(fps);
                self.start = Instant::now();
                self.first = self.first.max(seq);
            }
            self.due = None;
            if self.fps <= 0.0 || seq < self.first {
                return Ok(Flow::Go);
            }
            // At most ~31 years ahead: a rate the clock cannot express waits, never panics.
            let wait = ((seq - self.first) as f64 / self.fps).min(1e9);
            let due = self
                .start
                .checked_add(Duration::from_secs_f64(wait))
                .unwrap_or(self.start);
            self.due = Some(due);
            match pace(node, due)? {
                Paced::Due => return Ok(Flow::Go),
                Paced::Drain => return Ok(Flow::Drain),
                Paced::RateChanged => {}
            }
        }
    }
}

/// A rate the pacer can keep: 0 (unpaced) for anything not a positive number, else
/// within [`MIN_RATE`]..=[`MAX_RATE`] (validation and the control API refuse the rest;
/// this keeps a head alive whatever reaches it).
fn pacable(fps: f64) -> f64 {
    if fps > 0.0 {
        fps.clamp(MIN_RATE, MAX_RATE)
    } else {
        0.0
    }
}

/// Wait until `due`, still answering commands.
fn pace(node: &mut Node, due: Instant) -> Result<Paced, StageError> {
    loop {
        let now = Instant::now();
        if now >= due {
            return Ok(Paced::Due);
        }
        std::thread::sleep((due - now).min(Duration::from_millis(20)));
        if check_commands(node)? == Flow::Drain {
            return Ok(Paced::Drain);
        }
        if node.rate_changed() {
            return Ok(Paced::RateChanged);
        }
    }
}

/// `bench.blob`: opaque payloads of a given size.
pub fn blobs(node: &mut Node) -> Result<(), StageError> {
    let params::BenchBlob { bytes, count, fps } = crate::params(node)?;
    let pattern: Vec<u8> = (0..bytes)
        .map(|i| crate::image::sinks::blob_byte(i, 0))
        .collect();
    synthetic(
        node,
        count,
        fps,
        bytes,
        |seq, buf| {
            buf.copy_from_slice(&pattern);
            for (i, b) in buf.iter_mut().enumerate().take(8) {
                *b = crate::image::sinks::blob_byte(i, seq);
            }
        },
        |shm| Payload::Tensor {
            shm,
            dtype: DType::U8,
            shape: vec![bytes as u32],
        },
    )
}

/// `source.images`: one frame per image file, in file-name order.
pub fn images(node: &mut Node) -> Result<(), StageError> {
    let params::SourceImages { path, fps } = crate::params(node)?;
    let files = list_images(&path).map_err(media_error)?;
    let limits = Limits::from_env().map_err(|e| StageError::Input(e.to_string()))?;
    let mut emitter = Emitter::new(node)?;
    let mut pacer = Pacer::new(node, fps);
    for (seq, file) in files.iter().enumerate() {
        let seq = seq as u64;
        if pacer.wait(node, seq)? == Flow::Drain {
            break;
        }
        if emitter.skip_late(node, seq, &pacer, seq + 1 < files.len() as u64)? {
            if check_commands(node)? == Flow::Drain {
                break;
            }
            continue;
        }
        let slot = emitter.head.slot_size();
        let too_big = |w: u32, h: u32| {
            let bytes = u64::from(w) * u64::from(h) * 3;
            (bytes > slot).then(|| {
                StageError::Input(format!(
                    "{w}x{h} ({bytes} bytes) does not fit the {slot}-byte slots planned from the folder's images (the file changed after the app was planned?)"
                ))
            })
        };
        // The header first, so a file grown since planning is not decoded for nothing (one
        // past the pixel limit is refused by the decoder's own check, which says so).
        let grown = ::media::image_size(file)
            .filter(|&(w, h)| limits.check_frame("", u64::from(w), u64::from(h)).is_ok())
            .and_then(|(w, h)| too_big(w, h));
        let checked = match grown {
            Some(e) => Err(e),
            None => decode_rgb(file, &limits)
                .and_then(|(w, h, rgb)| too_big(w, h).map_or(Ok((w, h, rgb)), Err)),
        };
        let (w, h, rgb) = match checked {
            Ok(decoded) => decoded,
            Err(e) => {
                // A corrupt file is skipped and counted; the app goes on.
                tracing::warn!(file = %file.display(), seq, "skipping image: {e}");
                emitter.head.lose(node, seq, LossReason::BadInput)?;
                if check_commands(node)? == Flow::Drain {
                    break;
                }
                continue;
            }
        };
        let flow = emitter.emit(
            node,
            seq,
            pacer.due(),
            rgb.len(),
            |buf| {
                buf.copy_from_slice(&rgb);
                Ok(())
            },
            frame(w, h),
        )?;
        if flow == Flow::Drain {
            break;
        }
    }
    Ok(())
}
