//! `image.show`'s video in segments that a restarted tail continues, so that a killed
//! tail's video holds every frame once, in order, as an uninterrupted run's does.
//!
//! An MP4 is readable only once its index is written at the end and cannot be cut back
//! to a frame, so each process of the tail encodes into a Matroska segment of its own in
//! `<path>.segments/` (`0.mkv`, `1.mkv`…), which a killed writer leaves readable up to
//! the frames it holds. Beside each, `k.frames` lists the frames sent to its encoder: a
//! header (size, the encoder's pid), then `[seq, "source"]` per frame, written before the
//! frame goes down the pipe. A restarted tail waits for the earlier encoder (it outlives
//! the tail and ends its segment when its input ends), counts the segment's frames, and
//! skips the replayed frames the segment already holds; at the end the segments are
//! joined without re-encoding (ffmpeg's concat demuxer, stream copy) into the file, and
//! the folder is removed.

use super::sinks::FrameView;
use super::video_out::VideoWriter;
use crate::out_files::{self, beside, temporary_for, written_whole_at};
use crate::StageError;
use protocol::functions::{ResumableVideo, VIDEO_SEGMENTS_SUFFIX};
use protocol::messages::SourceTotal;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a restarted tail waits for the earlier process's encoder to end its segment
/// before it kills it (it ends as soon as it has encoded what was in its pipe).
const ENCODER_END_WAIT: Duration = Duration::from_secs(60);

/// The first line of a segment's frame list.
#[derive(Debug, Serialize, Deserialize)]
struct SegmentHeader {
    width: u32,
    height: u32,
    /// The pid of the ffmpeg writing the segment, and its start time (clock ticks after
    /// boot, /proc's `starttime`), which tells it from a later process of that pid.
    encoder: u32,
    #[serde(default)]
    encoder_started: u64,
}

/// The segment the current process writes.
struct OpenSegment {
    writer: VideoWriter,
    file: PathBuf,
    frames_list: std::fs::File,
    frames: u64,
}

/// A video written in segments (see the module's text).
pub struct SegmentedVideo {
    path: PathBuf,
    /// Where the joined file goes: `path`, or the file its symbolic link names.
    target: PathBuf,
    folder: PathBuf,
    format: ResumableVideo,
    fps: f64,
    /// The video's frame size: the first segment's, or the first frame's.
    size: Option<(u32, u32)>,
    /// Frames the earlier processes' segments hold.
    earlier: HashSet<(String, u64)>,
    /// Segments holding frames, in order.
    segments: Vec<PathBuf>,
    next_index: u32,
    current: Option<OpenSegment>,
    /// A restarted tail whose earlier process had joined the file already.
    joined_before: bool,
}

/// What a restarted tail found of the earlier processes' segments.
#[derive(Debug, Default, PartialEq)]
pub struct Recovered {
    /// Frames in the segments.
    pub frames: u64,
    /// Frames acknowledged as delivered that their segment does not hold (its encoder
    /// was killed before it encoded them).
    pub lost: u64,
}

impl SegmentedVideo {
    /// Open the video at `path`. A first process starts afresh (a folder of segments
    /// left by an earlier run is removed); a restarted one (`resume`: what was
    /// acknowledged per source) continues the earlier processes' segments.
    pub fn open(
        path: &Path,
        format: ResumableVideo,
        fps: f64,
        resume: Option<&[SourceTotal]>,
    ) -> Result<(SegmentedVideo, Recovered), StageError> {
        // A folder at the path is refused now, not after the run.
        let target = written_whole_at(path)?;
        let folder = beside(path, VIDEO_SEGMENTS_SUFFIX);
        let mut video = SegmentedVideo {
            path: path.to_path_buf(),
            target,
            folder: folder.clone(),
            format,
            fps,
            size: None,
            earlier: HashSet::new(),
            segments: Vec::new(),
            next_index: 0,
            current: None,
            joined_before: false,
        };
        let io = |e: std::io::Error| StageError::io(folder.display(), e);
        let mut recovered = Recovered::default();
        match resume {
            Some(acknowledged) if folder.is_dir() => {
                recovered = video.recover(acknowledged)?;
            }
            Some(_) if path.is_file() => {
                tracing::info!(video = %path.display(), "the earlier process of this tail joined its video");
                video.joined_before = true;
            }
            _ => {
                match std::fs::symlink_metadata(&folder) {
                    // An earlier run's segments: this run starts the video over.
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&folder).map_err(|e| {
                        StageError::io(
                            folder.display(),
                            format!(
                                "an earlier run's segments of this video cannot be removed: {}",
                                out_files::describe(&e)
                            ),
                        )
                    })?,
                    Ok(_) => std::fs::remove_file(&folder).map_err(io)?,
                    Err(_) => {}
                }
                std::fs::create_dir_all(&folder).map_err(io)?;
            }
        }
        Ok((video, recovered))
    }

    /// The earlier processes' segments: each one's frames, counted once its encoder
    /// ended; its frame list cut back to them.
    fn recover(&mut self, acknowledged: &[SourceTotal]) -> Result<Recovered, StageError> {
        let mut lists: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.folder)
            .map_err(|e| StageError::io(self.folder.display(), e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let index = name.strip_suffix(".frames")?.parse::<u32>().ok()?;
                Some((index, e.path()))
            })
            .collect();
        lists.sort();
        let mut recovered = Recovered::default();
        for (index, list) in lists {
            let segment = self.folder.join(format!("{index}.mkv"));
            let (header, mut frames) = read_frames_list(&list)?;
            if header.encoder != 0 {
                wait_for_encoder(header.encoder, header.encoder_started, &segment);
            }
            let held = ::media::count_video_packets(&segment).map_err(crate::media::media_error)?;
            let held = usize::try_from(held)
                .unwrap_or(usize::MAX)
                .min(frames.len());
            let acked = |(source, seq): &(String, u64)| {
                acknowledged
                    .iter()
                    .any(|t| &t.source == source && *seq < t.total)
            };
            let lost = frames[held..].iter().filter(|f| acked(f)).count() as u64;
            if lost > 0 {
                tracing::error!(
                    segment = %segment.display(),
                    "the earlier encoder ended its segment without {lost} frame(s) that were acknowledged as delivered: they are lost"
                );
            }
            frames.truncate(held);
            write_frames_list(&list, &header, &frames)?;
            self.size.get_or_insert((header.width, header.height));
            recovered.frames += frames.len() as u64;
            recovered.lost += lost;
            if !frames.is_empty() {
                self.segments.push(segment);
            }
            self.earlier.extend(frames);
            self.next_index = self.next_index.max(index + 1);
        }
        if recovered.frames > 0 {
            tracing::warn!(
                video = %self.path.display(),
                "this tail was restarted: its video goes on after the {} frames the earlier process(es) encoded; the frames sent again that those hold are skipped",
                recovered.frames
            );
        }
        Ok(recovered)
    }

    /// Segments holding frames so far.
    pub fn segments_held(&self) -> usize {
        self.segments.len()
    }

    /// Write one frame of item `seq` of `source`, unless an earlier segment holds it;
    /// true when it was of another size and fitted into the video's.
    pub fn write(
        &mut self,
        source: &str,
        seq: u64,
        frame: &FrameView<'_>,
    ) -> Result<bool, StageError> {
        if self.earlier.contains(&(source.to_string(), seq)) {
            return Ok(false);
        }
        if self.joined_before {
            // Frames after the file was joined (not expected: all was acknowledged).
            out_files::set_aside(&self.path)?;
            self.joined_before = false;
            std::fs::create_dir_all(&self.folder)
                .map_err(|e| StageError::io(self.folder.display(), e))?;
        }
        let segment = match &mut self.current {
            Some(s) => s,
            None => {
                let opened = self.start_segment(frame)?;
                self.current.insert(opened)
            }
        };
        let line = serde_json::to_string(&(seq, source))
            .map_err(|e| StageError::Input(format!("listing a frame: {e}")))?;
        segment
            .frames_list
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| frames_list_error(&segment.file, &e))?;
        let fitted = segment.writer.write(frame)?;
        segment.frames += 1;
        Ok(fitted)
    }

    fn start_segment(&mut self, first: &FrameView<'_>) -> Result<OpenSegment, StageError> {
        let (width, height) = *self.size.get_or_insert((first.width, first.height));
        let index = self.next_index;
        self.next_index += 1;
        let file = self.folder.join(format!("{index}.mkv"));
        let writer = VideoWriter::start_segment(
            &file.display().to_string(),
            width,
            height,
            self.fps,
            self.format.codec,
        )?;
        let encoder = writer.encoder_pid();
        let header = SegmentHeader {
            width,
            height,
            encoder,
            encoder_started: running_since(encoder).unwrap_or(0),
        };
        let list = self.folder.join(format!("{index}.frames"));
        let mut frames_list =
            std::fs::File::create(&list).map_err(|e| frames_list_error(&file, &e))?;
        let line = serde_json::to_string(&header)
            .map_err(|e| StageError::Input(format!("listing a segment: {e}")))?;
        frames_list
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| frames_list_error(&file, &e))?;
        Ok(OpenSegment {
            writer,
            file,
            frames_list,
            frames: 0,
        })
    }

    /// End the current segment and join every segment into the file (under a temporary
    /// name, then renamed); the folder is removed. No frames at all: no file.
    pub fn finish(mut self) -> Result<(), StageError> {
        if let Some(segment) = self.current.take() {
            segment.writer.finish()?;
            if segment.frames > 0 {
                self.segments.push(segment.file);
            }
        }
        if self.joined_before {
            return Ok(());
        }
        if !self.segments.is_empty() {
            self.join()?;
        }
        // Out of the way in one step: a tail killed while removing it must not find a
        // folder missing some lists and join the rest over the joined file.
        let removed = beside(
            &self.path,
            &format!("{VIDEO_SEGMENTS_SUFFIX}.removing-{}", std::process::id()),
        );
        std::fs::rename(&self.folder, &removed)
            .map_err(|e| StageError::io(self.folder.display(), e))?;
        std::fs::remove_dir_all(&removed).map_err(|e| StageError::io(removed.display(), e))
    }

    fn join(&self) -> Result<(), StageError> {
        let target = &self.target;
        let list = self.folder.join("segments.ffconcat");
        let mut text = String::from("ffconcat version 1.0\n");
        for segment in &self.segments {
            // Bare names, read from the folder: a full path with a newline (or `?`, `#`,
            // read as a URL) breaks the list.
            let name = segment.file_name().unwrap_or_default().to_string_lossy();
            text.push_str(&format!("file '{name}'\n"));
        }
        std::fs::write(&list, text).map_err(|e| StageError::io(list.display(), e))?;
        let temporary = temporary_for(target);
        // The joined file is about as large as the segments, which stay until it is
        // whole: refused before ffmpeg fills the disk half-way.
        let needed: u64 = self
            .segments
            .iter()
            .filter_map(|s| std::fs::metadata(s).ok())
            .map(|m| m.len())
            .sum();
        if let Some(free) = out_files::free_bytes(target).filter(|&free| free < needed) {
            return Err(StageError::Ffmpeg(format!(
                "joining the segments of {} needs about {needed} bytes on its disk and {free} are free: {}",
                self.path.display(),
                self.manual_join_hint()
            )));
        }
        let ffmpeg = crate::sources::media::ffmpeg_program();
        let out = std::process::Command::new(&ffmpeg)
            .args([
                "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
            ])
            .arg("segments.ffconcat")
            .args(["-c", "copy", "-f", self.format.muxer])
            .arg(std::path::absolute(&temporary).unwrap_or_else(|_| temporary.clone()))
            .current_dir(&self.folder)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| StageError::Ffmpeg(format!("cannot start {ffmpeg}: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&temporary);
            let complaints = String::from_utf8_lossy(&out.stderr);
            let why = if out_files::full_disk_at(target, &complaints) {
                "the disk is full (ENOSPC: No space left on device); "
            } else {
                ""
            };
            return Err(StageError::Ffmpeg(format!(
                "joining the segments of {} failed: {why}{}; {}",
                self.path.display(),
                protocol::text::shown_up_to(complaints.trim(), 2000),
                self.manual_join_hint()
            )));
        }
        std::fs::rename(&temporary, target).map_err(|e| {
            StageError::io(
                target.display(),
                format!(
                    "moving the joined video from {} failed: {}",
                    temporary.display(),
                    out_files::describe(&e)
                ),
            )
        })
    }
}

impl SegmentedVideo {
    /// Where the frames are when the join failed, and how to join them later.
    fn manual_join_hint(&self) -> String {
        format!(
            "the frames are kept in {} (Matroska segments, in the order segments.ffconcat lists them); once there is room, `supervisor finish-outputs` with the app's file joins them into the file",
            self.folder.display()
        )
    }
}

#[cfg(test)]
impl SegmentedVideo {
    /// What a SIGKILL of the tail does to its segment: the encoder's input ends (it
    /// encodes what it got and ends the segment) and nothing else happens.
    pub(crate) fn killed(mut self) {
        if let Some(segment) = self.current.take() {
            segment.writer.abandon();
        }
    }
}

fn frames_list_error(segment: &Path, e: &std::io::Error) -> StageError {
    StageError::io(
        segment.with_extension("frames").display(),
        out_files::describe(e),
    )
}

/// A segment's frame list: its header and frames; a last line cut short by a kill is
/// left out (its frame never reached the encoder whole).
fn read_frames_list(list: &Path) -> Result<(SegmentHeader, Vec<(String, u64)>), StageError> {
    let text = std::fs::read_to_string(list).map_err(|e| StageError::io(list.display(), e))?;
    let mut lines = text.lines();
    let header: SegmentHeader = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            StageError::io(
                list.display(),
                "has no readable header: the segment's frames cannot be known",
            )
        })?;
    let frames = lines
        .map_while(|l| serde_json::from_str::<(u64, String)>(l).ok())
        .map(|(seq, source)| (source, seq))
        .collect();
    Ok((header, frames))
}

/// Write a segment's frame list anew (header with no encoder left, then its frames)
/// under a temporary name, then rename it.
fn write_frames_list(
    list: &Path,
    header: &SegmentHeader,
    frames: &[(String, u64)],
) -> Result<(), StageError> {
    let done = SegmentHeader {
        encoder: 0,
        ..*header
    };
    let mut text = serde_json::to_string(&done).unwrap_or_default();
    text.push('\n');
    for (source, seq) in frames {
        text.push_str(&serde_json::to_string(&(seq, source)).unwrap_or_default());
        text.push('\n');
    }
    let temporary = temporary_for(list);
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, list))
        .map_err(|e| StageError::io(list.display(), out_files::describe(&e)))
}

/// When process `pid` started (/proc's `starttime`), if it runs (a zombie has ended).
fn running_since(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then starttime as the 20th field.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Wait until the ffmpeg `pid` (started at `started`) writing `segment` has ended (an
/// earlier process's encoder ends its segment when its input, the killed tail's pipe,
/// ends); killed if it has not within [`ENCODER_END_WAIT`] (the segment then holds what
/// it wrote). A process of that pid started at another time is another one.
fn wait_for_encoder(pid: u32, started: u64, segment: &Path) {
    // `started` 0: not read when the encoder started; the pid alone then.
    let writing = || running_since(pid).is_some_and(|t| started == 0 || t == started);
    let waiting = Instant::now();
    while writing() {
        if waiting.elapsed() > ENCODER_END_WAIT {
            tracing::error!(pid, segment = %segment.display(), "the earlier encoder has not ended its segment: killed");
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let killed = Instant::now();
            while writing() && killed.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sources::{draw_pattern, solid_colour};

    fn write_frames(video: &mut SegmentedVideo, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            let mut rgb = vec![0; 32 * 24 * 3];
            draw_pattern("solid", 32, 24, seq, &mut rgb);
            let frame = FrameView {
                width: 32,
                height: 24,
                rgb: &rgb,
            };
            video.write("cam", seq, &frame).unwrap();
        }
    }

    /// The seq of each frame of the video at `path`, by its colour.
    fn seqs_of(path: &Path) -> Vec<u64> {
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .chunks_exact(32 * 24 * 3)
            .map(|frame| {
                let at = (12 * 32 + 16) * 3;
                let px = &frame[at..at + 3];
                (0..128u64)
                    .min_by_key(|&k| {
                        let c = solid_colour(k);
                        (0..3)
                            .map(|i| (i32::from(c[i]) - i32::from(px[i])).pow(2))
                            .sum::<i32>()
                    })
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// A tail killed after frames 0..10 went to its encoder, of which 0..6 were
    /// acknowledged: the restarted tail gets 6.. again, skips the four its earlier
    /// segment holds, and the joined video holds every frame once, in order.
    #[test]
    fn a_restarted_tail_continues_its_video_without_losing_or_repeating_a_frame() {
        // A folder name that a concat list of full paths could not hold (a newline) or
        // that ffmpeg would read as a URL (`?`, `#`).
        let dir = std::env::temp_dir().join(format!(
            "smartpipe-segments-{} new\nline '#?",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.mp4");
        let format = protocol::functions::resumable_video("out.mp4").unwrap();
        let (mut first, recovered) = SegmentedVideo::open(&path, format, 10.0, None).unwrap();
        assert_eq!(recovered, Recovered::default());
        write_frames(&mut first, 0..10);
        first.killed();

        let acknowledged = [SourceTotal {
            source: "cam".into(),
            total: 6,
        }];
        let (mut second, recovered) =
            SegmentedVideo::open(&path, format, 10.0, Some(&acknowledged)).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                frames: 10,
                lost: 0
            }
        );
        write_frames(&mut second, 6..16);
        second.killed();

        // Killed again before anything new was acknowledged; then it ends.
        let (mut third, recovered) =
            SegmentedVideo::open(&path, format, 10.0, Some(&acknowledged)).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                frames: 16,
                lost: 0
            }
        );
        write_frames(&mut third, 6..20);
        third.finish().unwrap();

        assert_eq!(seqs_of(&path), (0..20).collect::<Vec<_>>());
        assert!(
            !beside(&path, VIDEO_SEGMENTS_SUFFIX).exists(),
            "the segments are removed once joined"
        );

        // Restarted after it had joined the file: the file stays as it is.
        let (again, recovered) =
            SegmentedVideo::open(&path, format, 10.0, Some(&acknowledged)).unwrap();
        assert_eq!(recovered, Recovered::default());
        again.finish().unwrap();
        assert_eq!(seqs_of(&path).len(), 20);

        // A new run starts over, whatever an earlier run left.
        let (mut fresh, _) = SegmentedVideo::open(&path, format, 10.0, None).unwrap();
        write_frames(&mut fresh, 0..3);
        fresh.finish().unwrap();
        assert_eq!(seqs_of(&path), vec![0, 1, 2]);
    }
}
