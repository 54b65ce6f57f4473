//! `image.show`'s video: raw RGB frames piped into an ffmpeg child that encodes them
//! (H.264 for `.mp4`). A video has one frame size, the first frame's; a frame of another
//! size (a folder of landscape and portrait photos, a stream that changes resolution) is
//! fitted into it, its aspect kept and the rest black, instead of failing the tail.

use super::sinks::FrameView;
use crate::out_files;
use crate::sources::media::ffmpeg_program;
use crate::StageError;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};

/// The encoder speed of `image.show`'s videos: x264's `veryfast` instead of ffmpeg's default
/// `medium`. The encoder shares the cores with the pipeline; on the pose app's 640×360 frames
/// `medium` cost 3.6 ms of CPU per frame, about a fifth of the model's run, `veryfast` 2.2 ms
/// (and made a smaller file of the same frames at the same CRF, 157 against 197 kB for 400
/// frames). An encoder without the option (ffmpeg's `mpeg4` for `.avi`) ignores it.
const VIDEO_PRESET: &str = "veryfast";

/// The filter that pads an odd width or height by one black column or row (4:2:0 chroma needs
/// even sizes), or nothing for even sizes: the filter copies every frame even when it pads
/// nothing (0.3 ms of CPU per 640×360 frame).
fn even_size_filter(width: u32, height: u32) -> &'static [&'static str] {
    if width.is_multiple_of(2) && height.is_multiple_of(2) {
        &[]
    } else {
        &["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
    }
}

/// An ffmpeg child encoding raw RGB frames from its stdin.
pub struct VideoWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    path: String,
    width: u32,
    height: u32,
    /// Frames of another size fitted into this one so far.
    fitted: u64,
}

impl VideoWriter {
    /// An encoder writing the file at `path` (its container by extension), or streaming to
    /// the URL `path` (H.264 tuned for latency, in the protocol's muxer:
    /// [`protocol::functions::streamed_video`]).
    pub fn start(path: &str, width: u32, height: u32, fps: f64) -> Result<VideoWriter, StageError> {
        match protocol::functions::streamed_video(path).map_err(StageError::Input)? {
            Some(muxer) => VideoWriter::spawn(
                path,
                width,
                height,
                fps,
                &["-c:v", "libx264", "-tune", "zerolatency", "-f", muxer],
                false,
            ),
            None => VideoWriter::spawn(path, width, height, fps, &[], false),
        }
    }

    /// An encoder writing a Matroska segment of `codec` at `path` (see
    /// [`super::video_segments`]). It runs in a process group of its own, so that a hung
    /// tail killed with its group leaves it to end the segment at the end of its input.
    pub fn start_segment(
        path: &str,
        width: u32,
        height: u32,
        fps: f64,
        codec: &str,
    ) -> Result<VideoWriter, StageError> {
        VideoWriter::spawn(
            path,
            width,
            height,
            fps,
            // Short clusters, flushed: an encoder killed itself leaves what it encoded
            // readable (Matroska otherwise holds up to 5 s of frames in memory).
            &[
                "-c:v",
                codec,
                "-cluster_time_limit",
                "200",
                "-flush_packets",
                "1",
                "-f",
                "matroska",
            ],
            true,
        )
    }

    fn spawn(
        path: &str,
        width: u32,
        height: u32,
        fps: f64,
        encoding: &[&str],
        own_group: bool,
    ) -> Result<VideoWriter, StageError> {
        let streamed = protocol::functions::streams_to_url(path);
        if let Some(parent) = std::path::Path::new(path).parent().filter(|_| !streamed) {
            std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent.display(), e))?;
        }
        let size = format!("{width}x{height}");
        let rate = format!("{fps}");
        let mut command = Process::new(ffmpeg_program());
        command
            .args([
                "-nostdin", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            ])
            .args(["-s", &size, "-r", &rate, "-i", "-"])
            .args(even_size_filter(width, height))
            .args(["-pix_fmt", "yuv420p", "-preset", VIDEO_PRESET])
            .args(encoding)
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let mut child = command
            .spawn()
            .map_err(|e| StageError::Ffmpeg(format!("cannot start {}: {e}", ffmpeg_program())))?;
        let stdin = child.stdin.take();
        if let Some(pipe) = &stdin {
            crate::pipes::widen(pipe, width as usize * height as usize * 3);
        }
        Ok(VideoWriter {
            child,
            stdin,
            path: path.to_string(),
            width,
            height,
            fitted: 0,
        })
    }

    /// Close the encoder's input and leave it to end its file on its own (not waited
    /// for), as it does when the tail is killed.
    #[cfg(test)]
    pub fn abandon(mut self) {
        drop(self.stdin.take());
    }

    /// The encoder's process id.
    pub fn encoder_pid(&self) -> u32 {
        self.child.id()
    }

    /// Encode frame `f`; true when it was of another size and fitted into the video's.
    pub fn write(&mut self, f: &FrameView<'_>) -> Result<bool, StageError> {
        let fitted;
        let fitted_now = (f.width, f.height) != (self.width, self.height);
        let pixels = if !fitted_now {
            f.rgb
        } else {
            if self.fitted == 0 {
                tracing::warn!(
                    video = %self.path,
                    "a frame of {}x{} is fitted into the video's {}x{} (aspect kept, black around it); so is every other frame of another size",
                    f.width, f.height, self.width, self.height
                );
            }
            self.fitted += 1;
            fitted = fit_into(f, self.width, self.height)?;
            &fitted[..]
        };
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| StageError::Ffmpeg("encoder input closed".into()))?;
        match stdin.write_all(pixels) {
            Ok(()) => Ok(fitted_now),
            Err(e) => {
                // The encoder stopped reading: why it stopped is in its stderr and
                // exit status (a full disk shows as a broken pipe here).
                let (status, complaints) = self.stop();
                Err(self.failure(&format!("writing to ffmpeg: {e}"), &status, &complaints))
            }
        }
    }

    /// Close the encoder's input and wait for it: its exit status and complaints.
    fn stop(&mut self) -> (String, String) {
        drop(self.stdin.take());
        let mut complaints = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut complaints);
        }
        let status = match self.child.wait() {
            Ok(s) if s.success() => String::new(),
            Ok(s) => s.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        };
        (status, complaints.trim().to_string())
    }

    /// The error of an encoding that failed: a full disk (ffmpeg's own "No space left on
    /// device", or the output's filesystem out of space) is named as such.
    fn failure(&self, what: &str, status: &str, complaints: &str) -> StageError {
        let out = std::path::Path::new(&self.path);
        let why = if out_files::full_disk_at(out, complaints) {
            format!("the disk is full (ENOSPC: No space left on device; {what})")
        } else {
            what.to_string()
        };
        let said = protocol::text::shown_up_to(complaints, 2000);
        StageError::Ffmpeg(format!(
            "encoding {} failed: {why}; ffmpeg ended with {}: {said}",
            self.path,
            if status.is_empty() { "success" } else { status }
        ))
    }

    pub fn finish(mut self) -> Result<(), StageError> {
        if self.fitted > 0 {
            tracing::info!(
                video = %self.path,
                frames = self.fitted,
                "frames of another size than the first were fitted into {}x{}",
                self.width,
                self.height
            );
        }
        if self.stdin.is_none() {
            // Already stopped by a failed write, which reported why.
            return Ok(());
        }
        let (status, complaints) = self.stop();
        if status.is_empty() {
            Ok(())
        } else {
            Err(self.failure("ffmpeg failed", &status, &complaints))
        }
    }
}

/// `f` scaled to fit `width` × `height` with its aspect kept (area averaging when it
/// shrinks, bilinear when it grows), centred on black.
pub fn fit_into(f: &FrameView<'_>, width: u32, height: u32) -> Result<Vec<u8>, StageError> {
    let (w, h) = (f64::from(f.width), f64::from(f.height));
    let scale = (f64::from(width) / w).min(f64::from(height) / h);
    let fw = ((w * scale).round() as u32).clamp(1, width);
    let fh = ((h * scale).round() as u32).clamp(1, height);
    let bad =
        |e: vision::VisionError| StageError::Input(format!("fitting a frame into the video: {e}"));
    let src = vision::RgbView::new(f.rgb, f.width as usize, f.height as usize).map_err(bad)?;
    let interp = if scale < 1.0 {
        vision::resize::Interp::Area
    } else {
        vision::resize::Interp::Linear
    };
    let scaled = vision::resize::resize_rgb(src, fw as usize, fh as usize, interp).map_err(bad)?;
    let (x0, y0) = ((width - fw) / 2, (height - fh) / 2);
    let mut out = vec![0u8; width as usize * height as usize * 3];
    let row = fw as usize * 3;
    for y in 0..fh as usize {
        let at = ((y0 as usize + y) * width as usize + x0 as usize) * 3;
        out[at..at + row].copy_from_slice(&scaled.data[y * row..(y + 1) * row]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        rgb.repeat((w * h) as usize)
    }

    fn pixel(buf: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * width + x) * 3) as usize;
        [buf[at], buf[at + 1], buf[at + 2]]
    }

    #[test]
    fn a_frame_of_another_size_is_fitted_with_its_aspect_kept_on_black() {
        let red = [200, 10, 10];
        // Wide into square: black above and below.
        let wide = solid(4, 2, red);
        let out = fit_into(
            &FrameView {
                width: 4,
                height: 2,
                rgb: &wide,
            },
            4,
            4,
        )
        .unwrap();
        assert_eq!(out.len(), 4 * 4 * 3);
        for x in 0..4 {
            assert_eq!(pixel(&out, 4, x, 0), [0, 0, 0]);
            assert_eq!(pixel(&out, 4, x, 1), red);
            assert_eq!(pixel(&out, 4, x, 2), red);
            assert_eq!(pixel(&out, 4, x, 3), [0, 0, 0]);
        }
        // Tall and larger into small and wide: shrunk, black left and right.
        let tall = solid(20, 40, red);
        let out = fit_into(
            &FrameView {
                width: 20,
                height: 40,
                rgb: &tall,
            },
            8,
            4,
        )
        .unwrap();
        assert_eq!(pixel(&out, 8, 0, 2), [0, 0, 0]);
        assert_eq!(pixel(&out, 8, 3, 0), red);
        assert_eq!(pixel(&out, 8, 4, 3), red);
        assert_eq!(pixel(&out, 8, 7, 2), [0, 0, 0]);
        // A sliver keeps at least one pixel.
        let sliver = solid(1000, 1, red);
        let out = fit_into(
            &FrameView {
                width: 1000,
                height: 1,
                rgb: &sliver,
            },
            10,
            10,
        )
        .unwrap();
        assert_eq!(pixel(&out, 10, 5, 4), red);
    }

    /// Even sizes are encoded as they are, odd ones padded by one black row or column (4:2:0
    /// chroma): every frame is in the file either way.
    #[test]
    fn odd_frame_sizes_are_padded_to_even_and_even_ones_kept() {
        let dir = std::env::temp_dir().join(format!("smartpipe-video-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (w, h, expect) in [(32, 18, (32, 18)), (33, 17, (34, 18)), (20, 15, (20, 16))] {
            let path = dir.join(format!("{w}x{h}.mp4"));
            let mut video = VideoWriter::start(path.to_str().unwrap(), w, h, 10.0).unwrap();
            let rgb = solid(w, h, [30, 160, 90]);
            for _ in 0..3 {
                let fitted = video
                    .write(&FrameView {
                        width: w,
                        height: h,
                        rgb: &rgb,
                    })
                    .unwrap();
                assert!(!fitted);
            }
            video.finish().unwrap();
            let (vw, vh, frames) =
                crate::sources::media::probe_video(path.to_str().unwrap()).unwrap();
            assert_eq!((vw, vh, frames), (expect.0, expect.1, Some(3)), "{w}x{h}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
