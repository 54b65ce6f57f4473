//! Whether a JPEG file is whole: a JPEG cut off before its end-of-image marker still
//! decodes (the missing rows come out grey), so without this check a truncated file
//! would be delivered as a full frame. Such a file is bad input: skipped and counted.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How far before the end of the file the end-of-image marker may be (some writers pad
/// or append a little after it).
const TAIL: u64 = 4096;

/// Why the JPEG file at `path` is cut off, or `None` when it is whole or not a JPEG.
pub fn truncated(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = ::media::open_regular(path)?;
    let mut magic = [0u8; 2];
    if f.read(&mut magic)? < 2 || magic != [0xFF, 0xD8] {
        return Ok(None);
    }
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL).max(2);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take(TAIL).read_to_end(&mut tail)?;
    Ok(if ends_whole(&tail) {
        None
    } else {
        Some(format!(
            "truncated JPEG: no end-of-image marker in its {len} bytes (the file is cut off)"
        ))
    })
}

/// The last bytes of a JPEG hold its end-of-image marker (FF D9).
fn ends_whole(tail: &[u8]) -> bool {
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(dir: &Path) -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let path = dir.join("whole.jpg");
        img.save(&path).expect("save jpeg");
        std::fs::read(&path).expect("read jpeg")
    }

    #[test]
    fn a_whole_jpeg_passes_and_a_cut_one_is_named_truncated() {
        let dir = std::env::temp_dir().join(format!("jpeg-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bytes = jpeg(&dir);
        assert_eq!(truncated(&dir.join("whole.jpg")).expect("read"), None);
        let cut = dir.join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
        let why = truncated(&cut).expect("read").expect("cut off");
        assert!(why.contains("truncated JPEG"), "{why}");
        // Not a JPEG at all: not this check's business.
        let png = dir.join("x.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n").expect("write");
        assert_eq!(truncated(&png).expect("read"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
