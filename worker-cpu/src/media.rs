//! Media helpers shared by the stages and the supervisor's planner: listing image
//! files, decoding them, probing videos and finding ffmpeg.

use crate::StageError;
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a `source.images` path: a folder (its PNG/JPEG files) or a
/// glob, sorted by name.
pub fn list_images(path: &str) -> Result<Vec<PathBuf>, StageError> {
    let p = Path::new(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| StageError::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && is_image(f))
            .collect()
    } else if path.contains(['*', '?', '[']) {
        glob::glob(path)
            .map_err(|e| StageError::io(path, format!("bad glob pattern: {e}")))?
            .filter_map(Result::ok)
            .filter(|f| f.is_file())
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        return Err(StageError::io(path, "no such file or folder"));
    };
    files.sort();
    if files.is_empty() {
        return Err(StageError::io(path, "no PNG or JPEG files found"));
    }
    Ok(files)
}

/// Width and height of an image file from its header, without decoding it.
pub fn image_size(path: &Path) -> Option<(u32, u32)> {
    image::image_dimensions(path).ok()
}

/// Decode an image file to packed RGB8.
pub fn decode_rgb(path: &Path) -> Result<(u32, u32, Vec<u8>), StageError> {
    // A cut-off JPEG decodes (grey below the cut): refuse it as bad input instead.
    if let Some(why) =
        crate::jpeg_end::truncated(path).map_err(|e| StageError::io(path.display(), e))?
    {
        return Err(StageError::io(path.display(), why));
    }
    let img = image::open(path)
        .map_err(|e| StageError::io(path.display(), format!("cannot decode image: {e}")))?;
    let rgb = img.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}

/// The ffmpeg program: `SMARTPIPE_FFMPEG` or `ffmpeg` on PATH.
pub fn ffmpeg_program() -> String {
    std::env::var("SMARTPIPE_FFMPEG").unwrap_or_else(|_| "ffmpeg".into())
}

fn ffprobe_program() -> String {
    std::env::var("SMARTPIPE_FFPROBE").unwrap_or_else(|_| "ffprobe".into())
}

/// Width, height and (if known) frame count of the first video stream.
pub fn probe_video(path: &str) -> Result<(u32, u32, Option<u64>), StageError> {
    let out = Command::new(ffprobe_program())
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,nb_frames",
            "-of",
            "csv=p=0",
            path,
        ])
        .output()
        .map_err(|e| {
            StageError::Ffmpeg(format!("cannot run ffprobe (is ffmpeg installed?): {e}"))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    let fields: Vec<&str> = first.split(',').collect();
    let parsed = match fields.as_slice() {
        [w, h, rest @ ..] => w
            .parse::<u32>()
            .ok()
            .zip(h.parse::<u32>().ok())
            .map(|(w, h)| {
                let frames = rest.first().and_then(|n| n.parse::<u64>().ok());
                (w, h, frames)
            }),
        _ => None,
    };
    match parsed {
        Some((w, h, frames)) if out.status.success() && w > 0 && h > 0 => Ok((w, h, frames)),
        _ => Err(StageError::Input(format!(
            "{path}: not a readable video ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
