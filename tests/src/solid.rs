//! Videos of `image.gen`'s `solid` pattern, whose frames are told apart by colour: which
//! frames a video holds, in order.

use crate::video_rgb;
use std::path::Path;

/// Frame `seq` of `image.gen`'s `solid` pattern, which tells it apart from the 127 others
/// around it.
pub fn solid(seq: u64) -> [u8; 3] {
    let s = seq as usize;
    [(s * 40) as u8, (s * 90) as u8, (s * 150) as u8]
}

/// The `image.gen` seq of each frame of the solid-coloured video at `file`, by colour,
/// modulo 128 (ffmpeg decodes it).
pub fn solid_seqs(file: &Path, width: usize, height: usize) -> Vec<u64> {
    video_rgb(file)
        .chunks_exact(width * height * 3)
        .map(|frame| {
            let at = (height / 2 * width + width / 2) * 3;
            let px = &frame[at..at + 3];
            (0..128u64)
                .min_by_key(|&k| {
                    let c = solid(k);
                    (0..3)
                        .map(|i| (i32::from(c[i]) - i32::from(px[i])).pow(2))
                        .sum::<i32>()
                })
                .unwrap_or(u64::MAX)
        })
        .collect()
}
