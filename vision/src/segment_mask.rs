//! A segmentation mask of a frame's size (8-bit alpha, or one class index per pixel) and its
//! compact run-length form, which travels with the frame in the item (`Payload::State` beside the
//! frame and the table) from `model.postprocess` to the tails (`image.show` blends it or cuts the
//! foreground out).

use crate::error::{Result, VisionError};

/// What a mask's bytes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// 0..255 opacity of the foreground.
    Alpha,
    /// Class index per pixel (0 = background).
    Classes,
}

/// One byte per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub kind: MaskKind,
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Leading bytes of an encoded mask.
const MAGIC: &[u8; 4] = b"SPM1";
/// Largest mask decoded (the frame limit of `SMARTPIPE_MAX_PIXELS`' default).
const MAX_PIXELS: usize = 100_000_000;

impl Mask {
    /// A mask of `width` × `height` bytes.
    pub fn new(kind: MaskKind, width: usize, height: usize, data: Vec<u8>) -> Result<Mask> {
        if data.len() != width * height {
            return Err(VisionError::Image(format!(
                "mask of {width}x{height} given {} bytes",
                data.len()
            )));
        }
        Ok(Mask {
            kind,
            width,
            height,
            data,
        })
    }

    /// Whether pixel `i` belongs to the foreground (alpha ≥ 128, or any class but 0).
    pub fn is_foreground(&self, i: usize) -> bool {
        match self.kind {
            MaskKind::Alpha => self.data[i] >= 128,
            MaskKind::Classes => self.data[i] != 0,
        }
    }

    /// Opacity of pixel `i` in a cut-out: the alpha itself, or 255 for any class but 0.
    pub fn opacity(&self, i: usize) -> u8 {
        match self.kind {
            MaskKind::Alpha => self.data[i],
            MaskKind::Classes => {
                if self.data[i] != 0 {
                    255
                } else {
                    0
                }
            }
        }
    }

    /// Run-length form: magic, kind, width, height (u32 LE), then (value, LEB128 run) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(match self.kind {
            MaskKind::Alpha => 0,
            MaskKind::Classes => 1,
        });
        out.extend_from_slice(&(self.width as u32).to_le_bytes());
        out.extend_from_slice(&(self.height as u32).to_le_bytes());
        let mut i = 0;
        while i < self.data.len() {
            let v = self.data[i];
            let run = self.data[i..].iter().take_while(|&&b| b == v).count();
            out.push(v);
            let mut n = run as u64;
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            i += run;
        }
        out
    }

    /// Whether `bytes` look like an encoded mask (so other state is left alone).
    pub fn is_encoded(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// The mask of [`Mask::encode`]'s bytes; a truncated or inconsistent encoding is an error.
    pub fn decode(bytes: &[u8]) -> Result<Mask> {
        let bad = |why: &str| VisionError::Image(format!("bad encoded mask: {why}"));
        if bytes.len() < 13 || !Self::is_encoded(bytes) {
            return Err(bad("no header"));
        }
        let kind = match bytes[4] {
            0 => MaskKind::Alpha,
            1 => MaskKind::Classes,
            k => return Err(bad(&format!("kind {k}"))),
        };
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        let (width, height) = (word(5), word(9));
        let total = width
            .checked_mul(height)
            .filter(|&n| n <= MAX_PIXELS)
            .ok_or_else(|| bad("too large"))?;
        let mut data = Vec::with_capacity(total);
        let mut at = 13;
        while at < bytes.len() {
            let v = bytes[at];
            at += 1;
            let (mut run, mut shift) = (0u64, 0u32);
            loop {
                let b = *bytes.get(at).ok_or_else(|| bad("truncated run"))?;
                at += 1;
                run |= ((b & 0x7f) as u64)
                    .checked_shl(shift)
                    .ok_or_else(|| bad("run too long"))?;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 35 {
                    return Err(bad("run too long"));
                }
            }
            if data.len() as u64 + run > total as u64 {
                return Err(bad("more pixels than width × height"));
            }
            data.resize(data.len() + run as usize, v);
        }
        if data.len() != total {
            return Err(bad("fewer pixels than width × height"));
        }
        Mask::new(kind, width, height, data)
    }
}
