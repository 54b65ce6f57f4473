//! Plain data types at the crate's boundary: a dense f32 tensor and RGB8 images.

use crate::error::{Result, VisionError};
use std::borrow::Cow;

/// A dense row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Whether `len` values fill `shape` exactly; the error names `what`.
fn check_len(what: &str, shape: &[usize], len: usize) -> Result<()> {
    let n = shape.iter().product::<usize>();
    if n != len {
        return Err(VisionError::Shape {
            what: what.into(),
            expected: format!("{n} elements for shape {shape:?}"),
            got: vec![len],
        });
    }
    Ok(())
}

/// A dense row-major f32 tensor's shape and values, borrowed from wherever they lie (a
/// [`TensorF32`], a slot of shared memory), so that a run reads them in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl TensorView<'_> {
    /// Checks that the values fill the shape exactly, as [`TensorF32::new`] does.
    pub fn check(&self, what: &str) -> Result<()> {
        check_len(what, self.shape, self.data.len())
    }

    /// The values copied into a tensor of their own (checked like [`TensorF32::new`]).
    pub fn to_tensor(&self) -> Result<TensorF32> {
        TensorF32::new(self.shape.to_vec(), self.data.to_vec())
    }
}

/// The f32 values of little-endian `bytes` (4 each; a trailing part is dropped): borrowed
/// where they lie when they are aligned f32 of this machine's byte order (a slot of shared
/// memory places tensors 64-byte aligned), else copied out.
pub fn f32s_of_le(bytes: &[u8]) -> Cow<'_, [f32]> {
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            return Cow::Borrowed(values);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// What a post-processing step reads its outputs as: an owned [`TensorF32`] or a
/// [`TensorView`] of values lying elsewhere (a slot of shared memory, read in place).
pub trait AsTensorView {
    fn as_view(&self) -> TensorView<'_>;
}

impl AsTensorView for TensorF32 {
    fn as_view(&self) -> TensorView<'_> {
        self.view()
    }
}

impl AsTensorView for TensorView<'_> {
    fn as_view(&self) -> TensorView<'_> {
        *self
    }
}

impl TensorF32 {
    /// The tensor as a borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: &self.data,
        }
    }

    /// Builds a tensor, checking that `data` holds exactly the product of `shape` elements.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_len("tensor data", &shape, data.len())?;
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product::<usize>();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Checks the rank and every dimension given as `Some` against `self.shape`.
    pub fn expect_shape(&self, what: &str, dims: &[Option<usize>]) -> Result<()> {
        let ok = self.shape.len() == dims.len()
            && self
                .shape
                .iter()
                .zip(dims)
                .all(|(s, d)| d.is_none_or(|d| d == *s));
        if ok && self.data.len() == self.shape.iter().product::<usize>() {
            return Ok(());
        }
        let expected = dims
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(VisionError::Shape {
            what: what.to_string(),
            expected: format!("[{expected}]"),
            got: self.shape.clone(),
        })
    }

    /// Concatenates tensors of equal trailing shape along the first (batch) axis.
    pub fn concat_batch(parts: &[TensorF32]) -> Result<TensorF32> {
        let Some(first) = parts.first() else {
            return Err(VisionError::Shape {
                what: "batch".into(),
                expected: "at least one tensor".into(),
                got: vec![],
            });
        };
        let tail = first.shape.get(1..).unwrap_or(&[]).to_vec();
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut n = 0;
        for p in parts {
            if p.shape.is_empty() || p.shape[1..] != tail[..] {
                return Err(VisionError::Shape {
                    what: "batch item".into(),
                    expected: format!("[?, {tail:?}]"),
                    got: p.shape.clone(),
                });
            }
            n += p.shape[0];
            data.extend_from_slice(&p.data);
        }
        let mut shape = vec![n];
        shape.extend(tail);
        Ok(TensorF32 { shape, data })
    }
}

/// A borrowed, tightly packed RGB8 image (row-major, 3 bytes per pixel).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

impl<'a> RgbView<'a> {
    /// Checks that `data` holds `width * height * 3` bytes and the image is not empty.
    pub fn new(data: &'a [u8], width: usize, height: usize) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(VisionError::Image(format!("empty image {width}x{height}")));
        }
        let need = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| VisionError::Image(format!("image {width}x{height} too large")))?;
        if data.len() != need {
            return Err(VisionError::Image(format!(
                "{width}x{height} RGB8 needs {need} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            width,
            height,
        })
    }

    /// Pixel (x, y) channel c; callers keep x < width, y < height, c < 3.
    #[inline]
    pub fn at(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * 3 + c]
    }

    /// Copies into an owned image.
    pub fn to_owned_image(&self) -> RgbImage {
        RgbImage {
            data: self.data.to_vec(),
            width: self.width,
            height: self.height,
        }
    }
}

/// An owned RGB8 image, same layout as [`RgbView`].
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl RgbImage {
    /// Checks the buffer size like [`RgbView::new`].
    pub fn new(data: Vec<u8>, width: usize, height: usize) -> Result<Self> {
        RgbView::new(&data, width, height)?;
        Ok(Self {
            data,
            width,
            height,
        })
    }

    /// A black image; `width` and `height` must not be 0 for it to be usable as a view.
    pub fn black(width: usize, height: usize) -> Self {
        Self {
            data: vec![0; width * height * 3],
            width,
            height,
        }
    }

    /// Borrows as a view.
    pub fn view(&self) -> RgbView<'_> {
        RgbView {
            data: &self.data,
            width: self.width,
            height: self.height,
        }
    }

    /// The same image turned by 180 degrees.
    pub fn rotate180(&self) -> RgbImage {
        let mut data = Vec::with_capacity(self.data.len());
        for px in self.data.chunks_exact(3).rev() {
            data.extend_from_slice(px);
        }
        RgbImage {
            data,
            width: self.width,
            height: self.height,
        }
    }

    /// The same image turned 90 degrees counter-clockwise (numpy `rot90`).
    pub fn rotate90_ccw(&self) -> RgbImage {
        let (w, h) = (self.width, self.height);
        let mut data = vec![0u8; self.data.len()];
        // new image is h wide, w tall; new(x', y') = old(w - 1 - y', x')
        for ny in 0..w {
            for nx in 0..h {
                let (ox, oy) = (w - 1 - ny, nx);
                let s = (oy * w + ox) * 3;
                let d = (ny * h + nx) * 3;
                data[d..d + 3].copy_from_slice(&self.data[s..s + 3]);
            }
        }
        RgbImage {
            data,
            width: h,
            height: w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_checks_len() {
        assert!(TensorF32::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let e = TensorF32::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(e.to_string().contains("6 elements"), "{e}");
    }

    #[test]
    fn concat_and_expect() {
        let a = TensorF32::zeros(vec![1, 2, 2]);
        let b = TensorF32::zeros(vec![2, 2, 2]);
        let c = TensorF32::concat_batch(&[a, b]).unwrap();
        assert_eq!(c.shape, vec![3, 2, 2]);
        assert!(c.expect_shape("c", &[None, Some(2), Some(2)]).is_ok());
        assert!(c.expect_shape("c", &[None, Some(3), Some(2)]).is_err());
        assert!(TensorF32::concat_batch(&[TensorF32::zeros(vec![1, 3])]).is_ok());
        assert!(TensorF32::concat_batch(&[]).is_err());
    }

    #[test]
    fn image_checks_and_rotations() {
        assert!(RgbView::new(&[0; 5], 1, 2).is_err());
        assert!(RgbView::new(&[], 0, 0).is_err());
        let img = RgbImage::new((0..18).collect(), 3, 2).unwrap();
        let r = img.rotate180();
        assert_eq!(&r.data[0..3], &[15, 16, 17]);
        assert_eq!(r.rotate180(), img);
        let q = img.rotate90_ccw();
        assert_eq!((q.width, q.height), (2, 3));
        // top-left of the rotated image is the old top-right pixel
        assert_eq!(&q.data[0..3], &[6, 7, 8]);
        assert_eq!(q.rotate90_ccw().rotate90_ccw().rotate90_ccw(), img);
    }
}
