//! Image decoding for the stages, and the media helpers of the `media` crate (listing
//! image files, header sizes, probing videos, finding ffmpeg) under their old paths. The
//! supervisor's planner uses `media` directly, without linking this crate.

use crate::StageError;
use image::ImageDecoder;
use protocol::limits::Limits;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::Path;

pub use ::media::{ffmpeg_program, image_size, list_images, probe_video, probe_video_info};

/// A media helper's error as the stage's: the texts and variants they had when the
/// helpers lived here.
pub fn media_error(e: ::media::MediaError) -> StageError {
    match e {
        ::media::MediaError::Io { path, detail } => StageError::Io { path, detail },
        ::media::MediaError::Ffmpeg(detail) => StageError::Ffmpeg(detail),
        ::media::MediaError::NotVideo(detail) => StageError::Input(detail),
    }
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
    let file = ::media::open_regular(path).map_err(|e| StageError::io(path.display(), e))?;
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
/// packed RGB8, turned upright by the EXIF orientation the file has (as viewers, browsers
/// and OpenCV's `imread` show it; `media::image_size` gives the same size). The header's
/// size is checked against the pixel limit first, and the decoder's own allocations are
/// capped at 8 bytes per allowed pixel (16-bit RGBA), so no header can make it allocate
/// beyond the limit.
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
    let mut decoder = decoder.into_decoder().map_err(|e| bad(&e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}
