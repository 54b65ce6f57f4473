//! The largest frame a source emits (its images' headers, or ffprobe of its video), remembered per
//! process while the source's files keep their sizes and modification times. `supervisor plan`
//! builds the static plan several times per command (its own table, each strategy, admission,
//! brute force) and the daemon plans every app it starts: without the memo each build spawned
//! ffprobe again, or read every image header of a folder again.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use protocol::functions::params::FileStamp;
use protocol::functions::{self, Builtin};
use protocol::limits::Limits;

use media::{image_size, list_images, probe_video_info};

/// Width × height of the largest frame `function` (`source.images` or `source.video`) reads
/// from `path`; an error says why the source cannot be read. Images over the pixel limit
/// are left out (the head refuses them as bad input, naming their sizes): one bomb in a
/// folder must not size the pool of every other image.
pub fn largest_frame(function: &str, path: &str, limits: &Limits) -> Result<(u64, u64), String> {
    probed(function, path, limits).map(|p| p.frame)
}

/// Frames per second of the video at `path` (a `source.video`'s), when ffprobe finds a
/// rate; from the same probe as its frame size.
pub fn video_frame_rate(path: &str, limits: &Limits) -> Option<f64> {
    probed(SOURCE_VIDEO, path, limits).ok()?.frame_rate
}

/// The frames the video file a `source.video` reads announces (ffprobe's frame count), from
/// the same probe as its frame size (the file is probed again if it changed since): `None`
/// for a file that keeps no count or is read from a time on (`start_s`: the frames left are
/// not known exactly), and for a network stream, which is not probed for one: a live stream
/// has none, each probe is another connection (an RTSP handshake), and a second listener on
/// a UDP stream's port cannot bind it while the source reads it.
pub fn announced_frames(source: &protocol::functions::params::SourceVideo) -> Option<u64> {
    if media::is_url(&source.path) || source.start_s > 0.0 {
        return None;
    }
    // The pixel limit leaves out images of a folder, not frames of a video: any will do.
    probed(SOURCE_VIDEO, &source.path, &Limits::default())
        .ok()?
        .frames
}

const SOURCE_VIDEO: &str = "source.video";

/// What this process's planner found of the video at `path`, for a head started or
/// restarted for it to take instead of probing again (ffprobe is most of a head's start):
/// a URL as the planner probed it (`None` when it has not), a file with its stamp (the
/// head probes a file that changed since; `None` when it changed during the probe).
pub fn probed_stream(path: &str) -> Option<protocol::functions::params::ProbedStream> {
    use protocol::functions::params::ProbedStream;
    let key = (SOURCE_VIDEO.to_string(), path.to_string());
    let (probed, file) = if media::is_url(path) {
        (memo().known(&key)?, None)
    } else {
        // The file as probed: stamped before and after the (memoised) probe, so that a file
        // changed meanwhile is not passed with a probe of its old self.
        let before = FileStamp::of(path)?;
        let probed = probed(SOURCE_VIDEO, path, &Limits::default()).ok()?;
        (FileStamp::of(path) == Some(before)).then_some((probed, Some(before)))?
    };
    let (width, height) = probed.frame;
    Some(ProbedStream {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        live: probed.live,
        file,
    })
}

fn probed(function: &str, path: &str, limits: &Limits) -> Result<Probed, String> {
    let files = match function {
        _ if is_images(function) => list_images(path).map_err(|e| e.to_string())?,
        _ => vec![PathBuf::from(path)],
    };
    let key = (function.to_string(), path.to_string());
    let print = probe_print(function, &files, limits);
    memo().get_or_probe(key, print, || probe(function, path, &files, limits))
}

/// What a probe's result depends on: the files, and for a folder of images the pixel limit
/// (another limit leaves out other images). A video's probe does not depend on the limit.
fn probe_print(function: &str, files: &[PathBuf], limits: &Limits) -> u64 {
    let limit = if is_images(function) {
        limits.max_pixels.rotate_left(17)
    } else {
        0
    };
    fingerprint(files) ^ limit
}

fn is_images(function: &str) -> bool {
    functions::builtin(function) == Some(Builtin::SourceImages)
}

fn probe(function: &str, path: &str, files: &[PathBuf], limits: &Limits) -> Result<Probed, String> {
    if is_images(function) {
        let largest = files
            .iter()
            .filter_map(|f| image_size(f))
            .map(|(w, h)| (u64::from(w), u64::from(h)))
            .filter(|(w, h)| limits.check_frame("", *w, *h).is_ok())
            .max_by_key(|(w, h)| u128::from(*w) * u128::from(*h));
        return Ok(Probed::frame(largest.unwrap_or((1, 1))));
    }
    let info = probe_video_info(path).map_err(|e| e.to_string())?;
    Ok(Probed {
        frame: (u64::from(info.width), u64::from(info.height)),
        frame_rate: info.frame_rate,
        frames: info.frames,
        live: info.is_live(path),
    })
}

/// The files' paths and stamps (sizes and modification times), hashed.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        FileStamp::of(f).hash(&mut h);
    }
    h.finish()
}

/// A source: its function and path.
type Key = (String, String);
/// Width × height of a frame.
type Frame = (u64, u64);

/// What a probe of a source found: its largest frame, and a video's frame rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Probed {
    frame: Frame,
    frame_rate: Option<f64>,
    /// The frames a video file announces.
    frames: Option<u64>,
    /// A live stream (see `media::VideoInfo::is_live`).
    live: bool,
}

impl Probed {
    fn frame(frame: Frame) -> Probed {
        Probed {
            frame,
            frame_rate: None,
            frames: None,
            live: false,
        }
    }
}

/// Probe results by source, with the fingerprint of the files they were probed from.
#[derive(Default)]
struct Memo(Mutex<HashMap<Key, (u64, Probed)>>);

impl Memo {
    /// What was probed of `key`, whatever the files' state now (a URL has no files).
    fn known(&self, key: &Key) -> Option<Probed> {
        let memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.get(key).map(|(_, probed)| *probed)
    }

    fn get_or_probe(
        &self,
        key: Key,
        fingerprint: u64,
        probe: impl FnOnce() -> Result<Probed, String>,
    ) -> Result<Probed, String> {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(fp, frame)) = lock().get(&key) {
            if fp == fingerprint {
                return Ok(frame);
            }
        }
        // Probe without the lock (ffprobe takes a while); errors are not remembered.
        let frame = probe()?;
        lock().insert(key, (fingerprint, frame));
        Ok(frame)
    }
}

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Memo::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_source_is_probed_again_only_when_its_files_change() {
        let memo = Memo::default();
        let probes = Cell::new(0);
        let probe = |frame| {
            probes.set(probes.get() + 1);
            Ok(Probed::frame(frame))
        };
        let got = |probed: Result<Probed, String>| probed.map(|p| p.frame);
        let key = || ("source.video".to_string(), "a.mp4".to_string());
        assert_eq!(
            got(memo.get_or_probe(key(), 1, || probe((640, 480)))),
            Ok((640, 480))
        );
        assert_eq!(
            got(memo.get_or_probe(key(), 1, || probe((1, 1)))),
            Ok((640, 480))
        );
        assert_eq!(probes.get(), 1);
        assert_eq!(
            got(memo.get_or_probe(key(), 2, || probe((1280, 720)))),
            Ok((1280, 720))
        );
        assert_eq!(probes.get(), 2);
        let failed = memo.get_or_probe(("x".into(), "y".into()), 1, || Err("gone".into()));
        assert_eq!(got(failed), Err("gone".to_string()));
        assert_eq!(
            got(memo.get_or_probe(("x".into(), "y".into()), 1, || probe((2, 2)))),
            Ok((2, 2)),
            "an error is not remembered"
        );
    }

    #[test]
    fn a_videos_probe_serves_every_pixel_limit_an_image_folders_does_not() {
        let files = [PathBuf::from("/nonexistent/a.mp4")];
        let small = Limits {
            max_pixels: 1_000,
            ..Limits::default()
        };
        let video = |l: &Limits| probe_print(SOURCE_VIDEO, &files, l);
        assert_eq!(video(&small), video(&Limits::default()));
        let images = |l: &Limits| probe_print("source.images", &files, l);
        assert_ne!(images(&small), images(&Limits::default()));
    }

    #[test]
    fn the_fingerprint_follows_a_files_size() {
        let dir = std::env::temp_dir().join(format!("source-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v.mp4");
        std::fs::write(&f, b"short").unwrap();
        let before = fingerprint(std::slice::from_ref(&f));
        assert_eq!(before, fingerprint(std::slice::from_ref(&f)));
        std::fs::write(&f, b"a longer video").unwrap();
        assert_ne!(before, fingerprint(std::slice::from_ref(&f)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
