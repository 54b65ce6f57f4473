//! Skeletons on frames: a table with a `keypoints` column (17 × (x, y, score) per row, COCO
//! order, as the `pose` family emits) gets each person's bones drawn between keypoints that both
//! score above [`KEYPOINT_SCORE`], and those keypoints marked. Left limbs, right limbs and the
//! trunk/face have their own colours. A missing column draws nothing; a column of another type or
//! length is an error naming it.

use super::TableError;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, RecordBatch};
use vision::pose::{BONES, KEYPOINTS};

/// Keypoints at or below this score are not drawn (MoveNet's `minConfidence`).
pub const KEYPOINT_SCORE: f32 = 0.3;

const LEFT: [u8; 3] = [255, 160, 0];
const RIGHT: [u8; 3] = [0, 200, 255];
const MIDDLE: [u8; 3] = [255, 255, 255];

fn colour(a: usize, b: usize) -> [u8; 3] {
    // COCO: odd indices are left parts, even (but the nose) right ones.
    match (a % 2, b % 2, a == 0 || b == 0) {
        (_, _, true) => MIDDLE,
        (1, 1, _) => LEFT,
        (0, 0, _) => RIGHT,
        _ => MIDDLE,
    }
}

/// The keypoints of each row (`None` when the table has no `keypoints` column).
pub fn keypoints_of(batch: &RecordBatch) -> Result<Option<Vec<[[f32; 3]; KEYPOINTS]>>, TableError> {
    let Ok(i) = batch.schema_ref().index_of("keypoints") else {
        return Ok(None);
    };
    let bad = || TableError::Column {
        column: "keypoints".into(),
        detail: format!(
            "is {}, expected a list of {} float32 (17 × x, y, score)",
            batch.column(i).data_type(),
            KEYPOINTS * 3
        ),
    };
    let list = batch.column(i).as_fixed_size_list_opt().ok_or_else(bad)?;
    if list.value_length() as usize != KEYPOINTS * 3 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(list.len());
    for row in 0..list.len() {
        let mut kps = [[f32::NAN; 3]; KEYPOINTS];
        if !list.is_null(row) {
            let cell = list.value(row);
            let v = cell.as_primitive_opt::<Float32Type>().ok_or_else(bad)?;
            for (k, kp) in kps.iter_mut().enumerate() {
                *kp = [v.value(3 * k), v.value(3 * k + 1), v.value(3 * k + 2)];
            }
        }
        out.push(kps);
    }
    Ok(Some(out))
}

/// Draw the skeleton of every person of `people` on a packed RGB8 frame.
pub fn draw_skeletons(rgb: &mut [u8], width: u32, height: u32, people: &[[[f32; 3]; KEYPOINTS]]) {
    let mut segments = Vec::new();
    let mut points = Vec::new();
    for kps in people {
        let seen = |k: usize| kps[k][2] > KEYPOINT_SCORE;
        for &(a, b) in &BONES {
            if seen(a) && seen(b) {
                segments.push(((kps[a][0], kps[a][1]), (kps[b][0], kps[b][1]), colour(a, b)));
            }
        }
        for (k, kp) in kps.iter().enumerate() {
            if seen(k) {
                points.push(((kp[0], kp[1]), colour(k, k)));
            }
        }
    }
    super::draw::draw_segments(rgb, width, height, &segments, &points);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bones_join_confident_keypoints_only() {
        let (w, h) = (40u32, 40u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let mut kps = [[0.0f32, 0.0, 0.0]; KEYPOINTS];
        kps[5] = [5.0, 10.0, 0.9]; // left shoulder
        kps[7] = [5.0, 30.0, 0.9]; // left elbow: bone 5-7 drawn
        kps[6] = [30.0, 10.0, 0.9]; // right shoulder: bone 5-6 drawn
        kps[8] = [30.0, 30.0, 0.1]; // right elbow, not confident: bone 6-8 not drawn
        draw_skeletons(&mut rgb, w, h, &[kps]);
        let at = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        assert_eq!(at(5, 20), LEFT);
        assert_eq!(at(18, 10), MIDDLE);
        assert_eq!(at(30, 20), [0, 0, 0]);
    }
}
