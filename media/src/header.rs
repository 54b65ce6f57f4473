//! An image's width and height read from its PNG or JPEG header, without a decoder: the
//! planner sizes slot pools from it before any worker runs. The size is the one the image
//! is shown at: an EXIF orientation that turns it a quarter (5–8, as phones tag portrait
//! photos) swaps width and height, as the workers' decoder turns the pixels upright.

use std::io::{BufReader, Read, Seek};
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
    // The rest of IHDR (5 bytes) and its CRC, then the chunks before the image data.
    r.seek_relative(9).ok()?;
    let turned = png_orientation(&mut r).is_some_and(quarter_turn);
    (w > 0 && h > 0).then_some(if turned { (h, w) } else { (w, h) })
}

/// The largest EXIF block read for its orientation (a JPEG segment is at most 64 KiB).
const EXIF_MAX_BYTES: u32 = 1 << 20;

/// Whether EXIF orientation `o` turns the image a quarter (width and height swap).
pub fn quarter_turn(o: u16) -> bool {
    (5..=8).contains(&o)
}

/// The orientation in a PNG's `eXIf` chunk, looked for up to the image data (where the
/// decoder stops reading before it decodes).
fn png_orientation(r: &mut (impl Read + Seek)) -> Option<u16> {
    loop {
        let mut head = [0u8; 8];
        r.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..8] {
            b"IDAT" | b"IEND" => return None,
            b"eXIf" if len <= EXIF_MAX_BYTES => {
                let mut exif = vec![0u8; len as usize];
                r.read_exact(&mut exif).ok()?;
                return exif_orientation(&exif);
            }
            _ => r.seek_relative(i64::from(len) + 4).ok()?,
        }
    }
}

/// The orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block, if it is one of
/// the eight EXIF defines.
pub fn exif_orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..4)? {
        [b'M', b'M', 0, 42] => true,
        [b'I', b'I', 42, 0] => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = u16_at(ifd)?;
    (0..usize::from(entries))
        .map(|k| ifd + 2 + 12 * k)
        .find(|&entry| u16_at(entry) == Some(0x0112))
        // A SHORT (type 3), one of them, held in the entry's value field.
        .filter(|&entry| u16_at(entry + 2) == Some(3) && u32_at(entry + 4) == Some(1))
        .and_then(|entry| u16_at(entry + 8))
        .filter(|o| (1..=8).contains(o))
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

/// Walk the JPEG's marker segments (after SOI) to the start of the scan: the size from the
/// first start-of-frame, the orientation from the last EXIF segment (APP1 `Exif`), wherever
/// it is before the scan, as the workers' decoder takes them.
fn jpeg_size(r: &mut impl Read) -> Option<(u32, u32)> {
    let mut size = None;
    let mut orientation = None;
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
            // End of image or start of scan.
            0xd9 | 0xda => break,
            _ => {}
        }
        let len = u16_be(r)?;
        if len < 2 {
            return None;
        }
        let mut rest = u64::from(len - 2);
        // SOF0..SOF15, but DHT (c4), JPG (c8) and DAC (cc) are not frame headers.
        if (0xc0..=0xcf).contains(&marker)
            && !matches!(marker, 0xc4 | 0xc8 | 0xcc)
            && size.is_none()
        {
            let _precision = byte(r)?;
            let h = u16_be(r)?;
            let w = u16_be(r)?;
            size = Some((u32::from(w), u32::from(h)));
            rest = rest.checked_sub(5)?;
        } else if marker == 0xe1 {
            let mut segment = vec![0u8; usize::from(len - 2)];
            r.read_exact(&mut segment).ok()?;
            if let Some(tiff) = segment.strip_prefix(b"Exif\0\0") {
                orientation = exif_orientation(tiff);
            }
            continue;
        }
        std::io::copy(&mut r.take(rest), &mut std::io::sink()).ok()?;
    }
    let (w, h) = size?;
    let turned = orientation.is_some_and(quarter_turn);
    (w > 0 && h > 0).then_some(if turned { (h, w) } else { (w, h) })
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

    /// A TIFF block (big- or little-endian) whose IFD0 holds orientation `o`.
    fn exif_with(o: u16, big: bool) -> Vec<u8> {
        let u16b = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut t = if big {
            b"MM\0*".to_vec()
        } else {
            b"II*\0".to_vec()
        };
        t.extend(u32b(8));
        t.extend(u16b(2));
        // Another tag first (ImageWidth), then Orientation.
        for (tag, kind, value) in [(0x0100u16, 3u16, 7u16), (0x0112, 3, o)] {
            t.extend(u16b(tag));
            t.extend(u16b(kind));
            t.extend(u32b(1));
            t.extend(u16b(value));
            t.extend([0, 0]);
        }
        t.extend(u32b(0));
        t
    }

    /// What the workers' decoder gives: the image turned by its EXIF orientation.
    fn decoded_upright(path: &Path) -> (u32, u32) {
        use image::ImageDecoder;
        let mut decoder = image::ImageReader::open(path)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .into_decoder()
            .unwrap();
        let orientation = decoder.orientation().unwrap();
        let mut img = image::DynamicImage::from_decoder(decoder).unwrap();
        img.apply_orientation(orientation);
        (img.width(), img.height())
    }

    /// Phones store portrait photos as landscape pixels tagged "turn a quarter": the size
    /// the planner reads must be the upright one the workers decode.
    #[test]
    fn an_exif_orientation_that_turns_a_quarter_swaps_the_size() {
        use image::ImageEncoder;
        let (w, h) = (40u32, 24u32);
        let pixels = image::RgbImage::new(w, h);
        for o in 1..=8u16 {
            for (ext, big) in [("jpg", true), ("png", false), ("jpg", false)] {
                let path = temp("exif", &format!("o{o}-{big}.{ext}"));
                let mut bytes = Vec::new();
                if ext == "jpg" {
                    let mut enc = image::codecs::jpeg::JpegEncoder::new(&mut bytes);
                    enc.set_exif_metadata(exif_with(o, big)).unwrap();
                    enc.write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
                        .unwrap();
                } else {
                    let mut enc = image::codecs::png::PngEncoder::new(&mut bytes);
                    enc.set_exif_metadata(exif_with(o, big)).unwrap();
                    enc.write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
                        .unwrap();
                }
                std::fs::write(&path, &bytes).unwrap();
                let want = if o >= 5 { (h, w) } else { (w, h) };
                assert_eq!(image_size(&path), Some(want), "{}", path.display());
                assert_eq!(decoded_upright(&path), want, "{}", path.display());
                std::fs::remove_file(&path).unwrap();
            }
        }
        // Not an orientation EXIF defines, or not TIFF: the size as stored.
        assert_eq!(exif_orientation(&exif_with(9, true)), None);
        assert_eq!(exif_orientation(b"not tiff at all"), None);
        assert_eq!(exif_orientation(&exif_with(6, true)[..20]), None);
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
