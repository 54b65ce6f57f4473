//! `source.video`: the frames an ffmpeg child decodes from a file or URL, read from its
//! pipe straight into the output pool's slots. A stream that stops sending (a camera gone,
//! a server that keeps the connection open and says nothing) ends after `read_timeout_s`
//! instead of holding the app for ever, and a drain asked meanwhile is obeyed at once; a
//! live stream that ends or stops is opened again (`reconnect`), and a restarted head of one
//! goes on with what it sends then.

use super::{check_commands, frame, Emitter, Pacer};
use crate::sources::media::{ffmpeg_program, media_error, probe_video_info};
use crate::StageError;
use protocol::functions::params;
use protocol::messages::LossReason;
use protocol::node::Node;
use stage::head::Flow;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Child, ChildStdout, Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often commands (a drain) are looked at while the source waits for a frame.
const COMMAND_CHECK: Duration = Duration::from_millis(50);

/// The ffmpeg filter that fits a frame of any size into `width`×`height`: scaled down or
/// up with its aspect kept, centred, the rest black.
fn fit_filter(width: u32, height: u32) -> String {
    format!(
        "scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2"
    )
}

/// How reading one frame from the decoder's pipe went.
#[derive(Clone, Copy)]
enum FrameRead {
    Whole,
    /// The stream ended, `got` bytes into the frame (0: between two frames).
    Ended {
        got: usize,
    },
    /// Nothing came for the read timeout, `got` bytes into the frame.
    Stalled {
        got: usize,
    },
}

impl FrameRead {
    /// How the video ended, if this read ended it.
    fn end(self) -> Option<End> {
        match self {
            FrameRead::Whole => None,
            FrameRead::Ended { got: 0 } => Some(End::Done),
            FrameRead::Ended { .. } => Some(End::CutFrame),
            FrameRead::Stalled { got } => Some(End::Stalled { got }),
        }
    }
}

/// Whether `fd` has something to read before `deadline` (`None`: wait for ever).
fn readable_before(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, StageError> {
    loop {
        let left = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let ready = media::readable_within(fd, left)
            .map_err(|e| StageError::Ffmpeg(format!("waiting for the decoder's frames: {e}")))?;
        if ready {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// Read one whole frame into `buf`, each read within `stall_after` of the one before.
fn read_frame(
    pipe: &mut ChildStdout,
    buf: &mut [u8],
    path: &str,
    stall_after: Option<Duration>,
) -> Result<FrameRead, StageError> {
    let mut got = 0;
    while got < buf.len() {
        let deadline = stall_after.map(|s| Instant::now() + s);
        if !readable_before(pipe.as_fd(), deadline)? {
            return Ok(FrameRead::Stalled { got });
        }
        match pipe.read(&mut buf[got..]) {
            Ok(0) => return Ok(FrameRead::Ended { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StageError::Ffmpeg(format!("reading frames of {path}: {e}"))),
        }
    }
    Ok(FrameRead::Whole)
}

/// What waiting for the next frame's first bytes came to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Awaited {
    /// Bytes (or the stream's end) to read.
    Ready,
    /// A drain was asked while the source waited.
    Drain,
    /// Nothing came for `stall_after`.
    Stalled,
}

/// Wait for the decoder's next frame, looking at commands meanwhile: a live stream can
/// keep the source waiting longer than a drain may take.
fn await_frame(
    node: &mut Node,
    pipe: &ChildStdout,
    stall_after: Option<Duration>,
) -> Result<Awaited, StageError> {
    let started = Instant::now();
    loop {
        let left = stall_after.map_or(COMMAND_CHECK, |s| {
            s.saturating_sub(started.elapsed()).min(COMMAND_CHECK)
        });
        if readable_before(pipe.as_fd(), Some(Instant::now() + left))? {
            return Ok(Awaited::Ready);
        }
        if check_commands(node)? == Flow::Drain {
            return Ok(Awaited::Drain);
        }
        if stall_after.is_some_and(|s| started.elapsed() >= s) {
            return Ok(Awaited::Stalled);
        }
    }
}

/// How the frames of a video came to an end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Its last frame, or a limit.
    Done,
    /// A drain was asked (ffmpeg is stopped, whatever it would say).
    Drained,
    /// The stream ended in the middle of a frame (a truncated file).
    CutFrame,
    /// Nothing came for the read timeout (`got`: bytes of a frame begun).
    Stalled { got: usize },
}

/// The number of the first frame this process reads. A file (or a recording served over
/// HTTP) is read from its start, and a restarted head skips what the tails have by reading
/// it again, in step. A live stream read again starts at what is happening now: its first
/// frame is the first the tails lack, instead of frames read and thrown away for as long
/// as the stream had run before (an hour of a camera's frames after an hour's run). What
/// the camera sent while the source was down was never read and cannot be sent.
fn first_frame_number(emitter: &Emitter, path: &str, live: bool) -> u64 {
    let resume_from = emitter.head.resume_from();
    if live && resume_from > 0 {
        tracing::warn!(
            "{path} is a live stream: this restarted source numbers its first frame {resume_from}, \
             the first the tails lack; what the stream sent while the source was down was not read"
        );
        resume_from
    } else {
        0
    }
}

/// The ffmpeg child decoding the video (one connection to a stream) into raw RGB frames.
struct Decoder {
    child: Child,
    stdout: ChildStdout,
    /// ffmpeg's complaints, collected on a thread so a full pipe never blocks it.
    complaints: std::thread::JoinHandle<String>,
}

impl Decoder {
    /// Decode `path` from `start_s` seconds in, at `width`×`height`, at most `frames` frames.
    fn start(
        path: &str,
        start_s: f64,
        frames: Option<u64>,
        (width, height): (u32, u32),
    ) -> Result<Decoder, StageError> {
        let mut cmd = Process::new(ffmpeg_program());
        cmd.args(["-nostdin", "-v", "error"]);
        if start_s > 0.0 {
            // Before the input: a seek to the key frame before it, then frames are decoded
            // and dropped up to the exact time (ffmpeg's accurate seek).
            cmd.args(["-ss", &start_s.to_string()]);
        }
        // The frames upright, as a player shows them: ffmpeg turns a video with a display
        // rotation (a phone's portrait clip) and the probe gave the turned size. Each frame
        // once, not padded to a constant rate (a variable-rate video's frames would be
        // repeated).
        cmd.args(["-i", path]);
        if let Some(n) = frames {
            cmd.args(["-frames:v", &n.to_string()]);
        }
        cmd.args(["-fps_mode", "passthrough"]);
        // Every frame at the probed (first) size: a stream that changes resolution mid-way
        // has its later frames fitted into it, aspect kept and black around, as `image.show`
        // fits frames into its video (without the filter ffmpeg stretched them to fit).
        // Frames of the probed size pass through unchanged, at no cost.
        cmd.args(["-vf", &fit_filter(width, height)]);
        cmd.args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A head killed with -9 otherwise left its ffmpeg running: one listening on a UDP
        // stream kept the port, and the restarted head could not bind it ("Address already
        // in use"), which failed the app. This thread lives as long as the source reads.
        protocol::child::die_with_this_process(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| StageError::Ffmpeg(format!("cannot start {}: {e}", ffmpeg_program())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| StageError::Ffmpeg("no stdout pipe".into()))?;
        crate::pipes::widen(&stdout, width as usize * height as usize * 3);
        let stderr = child.stderr.take();
        let complaints = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        Ok(Decoder {
            child,
            stdout,
            complaints,
        })
    }

    /// Stop ffmpeg (it may still be decoding: a limit, a drain, a stall) and say how it
    /// ended and what it complained of.
    fn stop(self) -> Result<(ExitStatus, String), StageError> {
        let Decoder {
            mut child,
            stdout,
            complaints,
        } = self;
        drop(stdout);
        let _ = child.kill();
        let status = child
            .wait()
            .map_err(|e| StageError::Ffmpeg(e.to_string()))?;
        Ok((status, complaints.join().unwrap_or_default()))
    }
}

/// What reading a video's frames needs besides the node and the head.
struct Reading {
    /// The video as messages name it (a URL's secrets masked: `media::shown`).
    shown: String,
    width: u32,
    height: u32,
    limit: Option<u64>,
    stall_after: Option<Duration>,
    /// Where frames read but not sent go (a best-effort source behind its pace).
    scratch: Vec<u8>,
}

impl Reading {
    fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Read the decoder's frames into the pool, numbering them from `seq` on, until the
    /// decoder ends, the limit is reached or a drain is asked; says how it ended.
    fn frames(
        &mut self,
        node: &mut Node,
        emitter: &mut Emitter,
        pacer: &mut Pacer,
        decoder: &mut Decoder,
        seq: &mut u64,
    ) -> Result<End, StageError> {
        let len = self.frame_bytes();
        // The decoder's first frame comes after it has connected and analysed the stream
        // (ffmpeg reads 5 s of a live MPEG-TS first): that one may take as long as a probe.
        let mut allowance = self.stall_after.map(|s| s.max(media::probe_deadline()));
        loop {
            if self.limit.is_some_and(|n| *seq >= n) {
                return Ok(End::Done);
            }
            if pacer.wait(node, *seq)? == Flow::Drain {
                return Ok(End::Drained);
            }
            let awaited = await_frame(node, &decoder.stdout, allowance)?;
            allowance = self.stall_after;
            match awaited {
                Awaited::Ready => {}
                Awaited::Drain => return Ok(End::Drained),
                Awaited::Stalled => return Ok(End::Stalled { got: 0 }),
            }
            // Behind its pace: the frame is read (ffmpeg decodes every frame) but not sent.
            let has_next = self.limit.is_none_or(|n| *seq + 1 < n);
            if let Some(reason) = emitter.stale(node, *seq, pacer, has_next) {
                self.scratch.resize(len, 0);
                let read = read_frame(
                    &mut decoder.stdout,
                    &mut self.scratch,
                    &self.shown,
                    self.stall_after,
                )?;
                if let Some(ended) = read.end() {
                    return Ok(ended);
                }
                emitter.head.lose(node, *seq, reason)?;
                *seq += 1;
                if check_commands(node)? == Flow::Drain {
                    return Ok(End::Drained);
                }
                continue;
            }
            let mut read = Ok(FrameRead::Whole);
            let emitted = emitter.emit(
                node,
                *seq,
                pacer.due(),
                len,
                |buf| {
                    read = read_frame(&mut decoder.stdout, buf, &self.shown, self.stall_after);
                    match read {
                        Ok(FrameRead::Whole) => Ok(()),
                        // Tell the emitter not to send a half-read frame, or one that failed.
                        _ => Err(StageError::Input(String::new())),
                    }
                },
                frame(self.width, self.height),
            );
            if let Some(ended) = read?.end() {
                return Ok(ended);
            }
            if emitted? == Flow::Drain {
                return Ok(End::Drained);
            }
            *seq += 1;
        }
    }
}

/// The first wait before a lost live stream is opened again; it doubles while the stream
/// gives no frame, up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Wait `pause` before reconnecting, looking at commands: `Flow::Drain` when a drain came.
fn pause_obeying_commands(node: &mut Node, pause: Duration) -> Result<Flow, StageError> {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if check_commands(node)? == Flow::Drain {
            return Ok(Flow::Drain);
        }
        std::thread::sleep(COMMAND_CHECK.min(until.saturating_duration_since(Instant::now())));
    }
    Ok(Flow::Go)
}

/// `source.video`: the frames ffmpeg decodes from a file or URL. A live stream of a live
/// protocol (RTSP, UDP, …) that ends or goes silent is opened again, with a growing pause,
/// until a drain: a camera's hiccup does not end a 24/7 app (`reconnect: false` ends it).
pub fn video(node: &mut Node) -> Result<(), StageError> {
    let params::SourceVideo {
        path,
        limit,
        fps,
        read_timeout_s,
        reconnect,
        start_s,
        probed,
    } = crate::params(node)?;
    let info = match probed {
        // The supervisor's planner probed this URL, or this file as it still is.
        Some(probed) if probed.holds_for(&path) => probed,
        _ => {
            let info = probe_video_info(&path).map_err(media_error)?;
            params::ProbedStream {
                width: info.width,
                height: info.height,
                live: info.is_live(&path),
                file: None,
            }
        }
    };
    let reconnect = reconnect.unwrap_or_else(|| media::is_live_protocol(&path));
    // Messages name the video without a URL's secrets (a camera's password).
    let shown = media::shown(&path);
    let mut reading = Reading {
        stall_after: (read_timeout_s > 0.0).then(|| Duration::from_secs_f64(read_timeout_s)),
        shown: shown.clone(),
        width: info.width,
        height: info.height,
        limit,
        scratch: Vec::new(),
    };
    let mut emitter = Emitter::new(node)?;
    let mut seq = first_frame_number(&emitter, &shown, info.live);
    let mut pacer = Pacer::new(node, fps);
    let mut pause = RECONNECT_FIRST;
    let (end, status, complaints) = loop {
        let frames_left = limit.map(|n| n.saturating_sub(seq));
        let mut decoder = Decoder::start(&path, start_s, frames_left, (info.width, info.height))?;
        emitter.cost.watch_child(decoder.child.id());
        let first = seq;
        let end = reading.frames(node, &mut emitter, &mut pacer, &mut decoder, &mut seq)?;
        let (status, complaints) = decoder.stop()?;
        let lost_stream = end != End::Drained && limit.is_none_or(|n| seq < n);
        if !(reconnect && lost_stream) {
            break (end, status, complaints);
        }
        if seq > first {
            pause = RECONNECT_FIRST;
        }
        node.metrics(|m| m.reconnects += 1);
        let how = match end {
            End::Stalled { .. } => format!("sent nothing for {read_timeout_s} s"),
            _ => "ended".to_string(),
        };
        tracing::warn!(
            "{shown}: the stream {how} after {seq} frames in all ({} this time); opening it again in {:.0?} (reconnect){}",
            seq - first,
            pause,
            match complaints.trim() {
                "" => String::new(),
                said => format!("; ffmpeg said: {}", said.replace(&path, &shown)),
            }
        );
        if pause_obeying_commands(node, pause)? == Flow::Drain {
            break (End::Drained, status, complaints);
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    };
    node.note_emitted_total(&emitter.source, seq);
    finish(node, &shown, seq, end, read_timeout_s)?;
    let detail = complaints.trim().replace(&path, &shown);
    match end {
        End::Done | End::CutFrame if seq == 0 && (!status.success() || !detail.is_empty()) => {
            return Err(StageError::Input(format!(
                "{shown}: ffmpeg decoded no frame: {detail}"
            )));
        }
        // Stopped on purpose: a drain's ffmpeg was killed, so its status says nothing.
        End::Drained => {}
        _ if !detail.is_empty() => {
            tracing::warn!("{shown}: ffmpeg reported problems after {seq} frames: {detail}");
        }
        _ => {}
    }
    tracing::info!(frames = seq, "{shown}: video ended");
    Ok(())
}

/// Count and say how the video ended when it ended early: a frame cut short is a bad
/// input; a stream that went silent is noted for the summary (`read_stalls`), and one
/// that never sent a frame is an error naming it.
fn finish(
    node: &mut Node,
    path: &str,
    frames: u64,
    end: End,
    read_timeout_s: f64,
) -> Result<(), StageError> {
    let cut = match end {
        End::Done | End::Drained => false,
        End::CutFrame => true,
        End::Stalled { got } => {
            if frames == 0 && got == 0 {
                let waited = read_timeout_s.max(media::probe_deadline().as_secs_f64());
                return Err(StageError::Input(format!(
                    "{path}: no frame came within {waited} s (a first frame may take the longer of read_timeout_s and SMARTPIPE_PROBE_TIMEOUT_S): a stream that sends nothing, or a camera or server that is not there"
                )));
            }
            node.metrics(|m| m.read_stalls += 1);
            tracing::warn!(
                "{path}: no frame came for {read_timeout_s} s after {frames} frames (read_timeout_s): the stream is taken for ended"
            );
            got > 0
        }
    };
    if cut {
        tracing::warn!("{path}: the last frame was cut short (truncated video?)");
        node.metrics(|m| m.lose(LossReason::BadInput, 1));
    }
    Ok(())
}
