//! What `image.show` does with a segmentation mask that travels with a frame (an encoded
//! [`Mask`] in a `Payload::State` part of the item, from the segmentation family's
//! post-processing): `mask: "blend"` (the default) tints the mask over the frame — the
//! foreground's alpha in green, each class in its PASCAL VOC palette colour — and
//! `mask: "cutout"` writes the frame as an RGBA PNG whose alpha is the mask (the
//! foreground cut out); `mask: "none"` leaves the frame as it is.

use protocol::messages::Payload;
use vision::segment::{palette, Mask, MaskKind};

/// How `image.show` renders an item's mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    Blend,
    Cutout,
    None,
}

impl MaskMode {
    /// The mode of the `mask` parameter (checked by validation; unknown = blend).
    pub fn of(param: Option<&str>) -> MaskMode {
        match param {
            Some("cutout") => MaskMode::Cutout,
            Some("none") => MaskMode::None,
            _ => MaskMode::Blend,
        }
    }
}

/// The mask an item carries, if any (a malformed one is reported and left out).
pub fn mask_of(payload: &Payload) -> Option<Mask> {
    let bytes = match payload {
        Payload::Batch(parts) => parts.iter().find_map(|p| match p {
            Payload::State(s) if Mask::is_encoded(s) => Some(s),
            _ => None,
        }),
        _ => None,
    }?;
    Mask::decode(bytes)
        .inspect_err(|e| tracing::warn!("image.show: {e}; the frame is written without it"))
        .ok()
}

/// Whether `mask` fits a `width` × `height` frame.
pub fn fits(mask: &Mask, width: u32, height: u32) -> bool {
    mask.width == width as usize && mask.height == height as usize
}

/// Tints `rgb` (a frame of the mask's size) with the mask: half the class colour where a class
/// other than the background is, the foreground's alpha × half green for an alpha mask.
pub fn blend(rgb: &mut [u8], mask: &Mask) {
    for (i, px) in rgb.chunks_exact_mut(3).enumerate().take(mask.data.len()) {
        let (colour, a) = match mask.kind {
            MaskKind::Alpha => ([0u8, 255, 0], mask.data[i] as f32 / 255.0 * 0.5),
            MaskKind::Classes if mask.data[i] != 0 => (palette(mask.data[i] as usize), 0.5),
            MaskKind::Classes => continue,
        };
        for (c, v) in px.iter_mut().enumerate() {
            *v = (*v as f32 * (1.0 - a) + colour[c] as f32 * a).round() as u8;
        }
    }
}

/// The frame as RGBA with the mask's opacity as alpha.
pub fn cutout(rgb: &[u8], mask: &Mask) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 4);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        out.extend_from_slice(px);
        out.push(if i < mask.data.len() {
            mask.opacity(i)
        } else {
            0
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutout_and_blend_follow_the_mask() {
        let mask = Mask::new(MaskKind::Alpha, 2, 1, vec![0, 255]).unwrap();
        let rgb = [100u8, 100, 100, 100, 100, 100];
        assert_eq!(
            cutout(&rgb, &mask),
            vec![100, 100, 100, 0, 100, 100, 100, 255]
        );
        let mut tinted = rgb;
        blend(&mut tinted, &mask);
        assert_eq!(tinted, [100, 100, 100, 50, 178, 50]);
        let classes = Mask::new(MaskKind::Classes, 2, 1, vec![0, 1]).unwrap();
        let mut tinted = rgb;
        blend(&mut tinted, &classes);
        assert_eq!(tinted, [100, 100, 100, 114, 50, 50]);
        assert_eq!(cutout(&rgb, &classes)[7], 255);
    }

    #[test]
    fn mask_is_found_beside_the_frame() {
        let mask = Mask::new(MaskKind::Alpha, 1, 1, vec![7]).unwrap();
        let item = Payload::Batch(vec![
            Payload::State(b"{}".to_vec()),
            Payload::State(mask.encode()),
        ]);
        assert_eq!(mask_of(&item), Some(mask));
        assert_eq!(
            mask_of(&Payload::Batch(vec![Payload::State(b"SPM1x".to_vec())])),
            None
        );
    }
}
