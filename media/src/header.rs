//! An image's width and height read from its PNG or JPEG header, without a decoder: the
//! planner sizes slot pools from it before any worker runs.

use std::io::{BufReader, Read};
use std::path::Path;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Width and height of a PNG or JPEG file from its header (the format from its first
/// bytes); `None` for anything else or a header cut short.
pub fn image_size(path: &Path) -> Option<(u32, u32)> {
    let mut r = BufReader::new(crate::open_regular(path).ok()?);
    let mut start = [0u8; 8];
    r.read_exact(&mut start[..2]).ok()?;
    if start[..2] == [0xff, 0xd8] {
        return jpeg_size(&mut r);
    }
    r.read_exact(&mut start[2..]).ok()?;
    if start != PNG_SIGNATURE {
        return None;
    }
    // The first chunk is IHDR: length (4), type (4), width (4), height (4), big-endian.
    let mut ihdr = [0u8; 16];
    r.read_exact(&mut ihdr).ok()?;
    if &ihdr[4..8] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
    let h = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
    (w > 0 && h > 0).then_some((w, h))
}

fn byte(r: &mut impl Read) -> Option<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).ok()?;
    Some(b[0])
}

fn u16_be(r: &mut impl Read) -> Option<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b).ok()?;
    Some(u16::from_be_bytes(b))
}

/// Walk the JPEG's marker segments (after SOI) to the first start-of-frame.
fn jpeg_size(r: &mut impl Read) -> Option<(u32, u32)> {
    loop {
        if byte(r)? != 0xff {
            return None;
        }
        let mut marker = byte(r)?;
        while marker == 0xff {
            marker = byte(r)?; // fill bytes
        }
        match marker {
            // Markers without a length: TEM, RSTn, SOI.
            0x01 | 0xd0..=0xd8 => continue,
            // End of image or start of scan before any frame header.
            0xd9 | 0xda => return None,
            _ => {}
        }
        let len = u16_be(r)?;
        if len < 2 {
            return None;
        }
        // SOF0..SOF15, but DHT (c4), JPG (c8) and DAC (cc) are not frame headers.
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let _precision = byte(r)?;
            let h = u16_be(r)?;
            let w = u16_be(r)?;
            return (w > 0 && h > 0).then_some((u32::from(w), u32::from(h)));
        }
        std::io::copy(&mut r.take(u64::from(len - 2)), &mut std::io::sink()).ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(test: &str, name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("media-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn reads_the_size_the_decoder_sees_for_png_and_jpeg() {
        for (w, h) in [(1, 1), (640, 360), (17, 999)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
            for ext in ["png", "jpg"] {
                let path = temp("sizes", &format!("i-{w}x{h}.{ext}"));
                img.save(&path).unwrap();
                assert_eq!(image_size(&path), Some((w, h)), "{}", path.display());
                assert_eq!(image_size(&path), image::image_dimensions(&path).ok());
                std::fs::remove_file(&path).unwrap();
            }
        }
    }

    #[test]
    fn other_files_and_cut_headers_have_no_size() {
        let text = temp("others", "t.png");
        std::fs::write(&text, b"not an image at all").unwrap();
        assert_eq!(image_size(&text), None);
        let cut = temp("others", "cut.jpg");
        std::fs::write(&cut, [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J']).unwrap();
        assert_eq!(image_size(&cut), None);
        assert_eq!(image_size(Path::new("/no/such/image.png")), None);
        std::fs::remove_file(&text).unwrap();
        std::fs::remove_file(&cut).unwrap();
    }
}
