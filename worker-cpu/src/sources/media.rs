//! Media helpers shared by the stages and the supervisor's planner: listing image
//! files, decoding them, probing videos and finding ffmpeg.

use crate::StageError;
use protocol::limits::Limits;
use std::io::{BufRead, Seek, SeekFrom};
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

/// Decode an image file to packed RGB8, refusing (before decoding anything) one whose
/// header claims more pixels than `limits` allow.
pub fn decode_rgb(path: &Path, limits: &Limits) -> Result<(u32, u32, Vec<u8>), StageError> {
    // A cut-off JPEG decodes (grey below the cut): refuse it as bad input instead.
    if let Some(why) =
        crate::sources::jpeg_end::truncated(path).map_err(|e| StageError::io(path.display(), e))?
    {
        return Err(StageError::io(path.display(), why));
    }
    let file = std::fs::File::open(path).map_err(|e| StageError::io(path.display(), e))?;
    let format = image::ImageFormat::from_path(path).ok();
    decode_image(
        &path.display().to_string(),
        std::io::BufReader::new(file),
        format,
        limits,
    )
}

/// An image reader over `input`: the format its bytes show, else `format`.
fn reader<R: BufRead + Seek>(
    input: R,
    format: Option<image::ImageFormat>,
) -> std::io::Result<image::ImageReader<R>> {
    let mut r = image::ImageReader::new(input);
    if let Some(f) = format {
        r.set_format(f);
    }
    r.with_guessed_format()
}

/// Decode PNG or JPEG bytes from `input` (`name` says where they come from in errors) to
/// packed RGB8. The header's size is checked against the pixel limit first, and the
/// decoder's own allocations are capped at 8 bytes per allowed pixel (16-bit RGBA), so
/// no header can make it allocate beyond the limit.
pub fn decode_image<R: BufRead + Seek>(
    name: &str,
    mut input: R,
    format: Option<image::ImageFormat>,
    limits: &Limits,
) -> Result<(u32, u32, Vec<u8>), StageError> {
    let bad = |e: &dyn std::fmt::Display| StageError::io(name, format!("cannot decode image: {e}"));
    let (w, h) = reader(&mut input, format)
        .map_err(|e| bad(&e))?
        .into_dimensions()
        .map_err(|e| bad(&e))?;
    limits
        .check_frame(name, u64::from(w), u64::from(h))
        .map_err(|e| StageError::Input(e.to_string()))?;
    input.seek(SeekFrom::Start(0)).map_err(|e| bad(&e))?;
    let mut decoder = reader(&mut input, format).map_err(|e| bad(&e))?;
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(w);
    caps.max_image_height = Some(h);
    caps.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    decoder.limits(caps);
    let rgb = decoder.decode().map_err(|e| bad(&e))?.into_rgb8();
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
