//! MoveNet MultiPose's decoding, done natively from the network's six heads instead of by the
//! 266 small operators the TF.js graph ends with ([`crate::native_tail`]). ONNX Runtime spends
//! about a tenth of the model's time on them (one pass per operator over `[H, W, 6, 17]`
//! tensors); this does the same arithmetic in one pass over each candidate's box, in the same
//! order of f32 operations, so the answer is the graph's up to `exp`'s last bit
//! (`vision/tests/pose_native_tail.rs` compares the two on real frames).
//!
//! What the graph computes, on the heads at a quarter of the input's resolution (H × W):
//! 1. **centres**: the sigmoid centre heatmap keeps only its 5 × 5 local maxima (within
//!    1.01e-6) and the six best become the candidates (ties: the lower index first);
//! 2. per candidate at cell (y, x): keypoint k is regressed to `(y + dy_k, x + dx_k)`, and its
//!    box is `(y + oy, x + ox) ± scale / 2`, clipped to the grid;
//! 3. per candidate and keypoint: the cell of the box maximising
//!    `heatmap_k · exp(−d² / (0.3 · min(H, W)))`, d the distance to the regressed point (the
//!    first such cell in raster order; cell 0 when nothing in the box scores above 0);
//! 4. the keypoint's score is the largest of that value over all six candidates' boxes at the
//!    cell; its position the cell plus the offset head's sub-cell offset, over the grid size;
//! 5. the person's score is the centre score times the mean of the keypoint scores above
//!    0.127 (those below count as 0 and are not counted).

use crate::error::{Result, VisionError};
use crate::pose::{KEYPOINTS, ROW};

/// Candidates the graph always answers (its `TopK`).
pub const PEOPLE: usize = 6;
/// The centre heatmap's non-maximum suppression window.
const NMS_WINDOW: usize = 5;
/// How close to its window's maximum a centre must be to count as one (the graph's f32
/// constant 1.0132789611816406e-6, written as its shortest decimal).
const NMS_TOLERANCE: f32 = 1.013_279e-6;
/// The keypoint weighting's spread, times min(H, W) (the graph's constant).
const SPREAD: f32 = 0.300_048_83;
/// Keypoint scores at or below this do not count towards the person's score.
const KEYPOINT_THRESHOLD: f32 = 0.126_953_12;
/// Input pixels per head cell.
const STRIDE: f32 = 4.0;

/// One image's heads, NCHW planes of `height × width` cells: the centre heatmap after its
/// sigmoid (1 plane), the keypoint heatmaps after theirs (17), the keypoint regression (34:
/// dy, dx per keypoint), the keypoint offsets (34: y, x), the box scale (2: h, w) and the box
/// offset (2: y, x).
#[derive(Debug, Clone, Copy)]
pub struct MultiposeHeads<'a> {
    pub height: usize,
    pub width: usize,
    pub center: &'a [f32],
    pub heatmap: &'a [f32],
    pub regress: &'a [f32],
    pub offset: &'a [f32],
    pub box_scale: &'a [f32],
    pub box_offset: &'a [f32],
}

/// A candidate's box in cells: `[ymin, xmin, ymax, xmax]`.
type CellBox = [f32; 4];

impl MultiposeHeads<'_> {
    fn check(&self) -> Result<()> {
        let cells = self.height * self.width;
        let planes = [
            ("centre", self.center.len(), 1),
            ("keypoint heatmap", self.heatmap.len(), KEYPOINTS),
            ("keypoint regression", self.regress.len(), 2 * KEYPOINTS),
            ("keypoint offset", self.offset.len(), 2 * KEYPOINTS),
            ("box scale", self.box_scale.len(), 2),
            ("box offset", self.box_offset.len(), 2),
        ];
        if cells < PEOPLE {
            return Err(VisionError::Shape {
                what: "MoveNet MultiPose heads".into(),
                expected: format!("at least {PEOPLE} cells (an input of 32 × 32 or more)"),
                got: vec![self.height, self.width],
            });
        }
        for (what, len, planes) in planes {
            if len != planes * cells {
                return Err(VisionError::Shape {
                    what: format!("MoveNet MultiPose's {what} head"),
                    expected: format!("{planes} planes of {} × {}", self.height, self.width),
                    got: vec![len],
                });
            }
        }
        Ok(())
    }

    fn at(&self, plane: &[f32], channel: usize, cell: usize) -> f32 {
        plane[channel * self.height * self.width + cell]
    }

    /// A cell's (row, column), as the graph's floats.
    fn yx(&self, cell: usize) -> (f32, f32) {
        ((cell / self.width) as f32, (cell % self.width) as f32)
    }
}

/// The graph's output for one image: [`PEOPLE`] rows of [`ROW`] values (17 × (y, x, score)
/// normalised to the input, the box `[ymin, xmin, ymax, xmax]` normalised, the person's score).
pub fn decode_multipose(heads: &MultiposeHeads<'_>) -> Result<Vec<f32>> {
    heads.check()?;
    let (h, w) = (heads.height, heads.width);
    let centers = top_centers(heads);
    let spread = (h.min(w) as f32) * SPREAD;
    let boxes: Vec<CellBox> = centers
        .iter()
        .map(|&(_, cell)| candidate_box(heads, cell))
        .collect();
    let points: Vec<[(f32, f32); KEYPOINTS]> = centers
        .iter()
        .map(|&(_, cell)| regressed(heads, cell))
        .collect();
    let mut out = vec![0.0f32; PEOPLE * ROW];
    for (p, &(center_score, _)) in centers.iter().enumerate() {
        let row = &mut out[p * ROW..(p + 1) * ROW];
        let mut score_sum = 0.0f32;
        let mut counted = 0.0f32;
        for k in 0..KEYPOINTS {
            let best = best_cell(heads, k, points[p][k], &boxes[p], spread);
            let score = (0..PEOPLE)
                .map(|q| weighted(heads, k, best, &boxes[q], points[q][k], spread))
                .fold(0.0f32, f32::max);
            let (by, bx) = heads.yx(best);
            row[3 * k] =
                (by + heads.at(heads.offset, 2 * k, best)) * (STRIDE / (STRIDE * h as f32));
            row[3 * k + 1] =
                (bx + heads.at(heads.offset, 2 * k + 1, best)) * (STRIDE / (STRIDE * w as f32));
            row[3 * k + 2] = score;
            if score > KEYPOINT_THRESHOLD {
                score_sum += center_score * score;
                counted += 1.0;
            }
        }
        let scale = [h, w, h, w].map(|d| STRIDE * d as f32);
        for (i, (v, s)) in boxes[p].iter().zip(scale).enumerate() {
            row[3 * KEYPOINTS + i] = ((v * STRIDE) / s).clamp(0.0, 1.0);
        }
        row[ROW - 1] = (1.0 / counted.max(1.0)) * score_sum;
    }
    Ok(out)
}

/// The six best centres `(score, cell)`, best first, among the centre heatmap's local maxima
/// (others count as 0): the graph's MaxPool, mask and `TopK`.
fn top_centers(heads: &MultiposeHeads<'_>) -> Vec<(f32, usize)> {
    let (h, w) = (heads.height, heads.width);
    let c = heads.center;
    let r = NMS_WINDOW / 2;
    // The window's maximum, separably: along rows, then along columns.
    let mut row_max = vec![f32::NEG_INFINITY; h * w];
    for y in 0..h {
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r).min(w - 1));
            row_max[y * w + x] = c[y * w + x0..=y * w + x1]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
        }
    }
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(PEOPLE + 1);
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            let window = (y0..=y1)
                .map(|yy| row_max[yy * w + x])
                .fold(f32::NEG_INFINITY, f32::max);
            let v = c[y * w + x];
            let kept = if (v - window).abs() < NMS_TOLERANCE {
                v
            } else {
                0.0
            };
            // Cells come in index order, so a tie keeps the earlier cell ahead.
            if best.len() < PEOPLE || kept > best[PEOPLE - 1].0 {
                let at = best
                    .iter()
                    .position(|&(s, _)| kept > s)
                    .unwrap_or(best.len());
                best.insert(at, (kept, y * w + x));
                best.truncate(PEOPLE);
            }
        }
    }
    best
}

/// The candidate at `cell`'s box in cells, clipped to the grid.
fn candidate_box(heads: &MultiposeHeads<'_>, cell: usize) -> CellBox {
    let (h, w) = (heads.height as f32, heads.width as f32);
    let (y, x) = heads.yx(cell);
    let half_h = heads.at(heads.box_scale, 0, cell).max(0.0) * 0.5;
    let half_w = heads.at(heads.box_scale, 1, cell).max(0.0) * 0.5;
    let (cy, cx) = (
        y + heads.at(heads.box_offset, 0, cell),
        x + heads.at(heads.box_offset, 1, cell),
    );
    let clip = |v: f32, hi: f32| v.min(hi).max(0.0);
    [
        clip(cy - half_h, h),
        clip(cx - half_w, w),
        clip(cy + half_h, h),
        clip(cx + half_w, w),
    ]
}

/// The candidate at `cell`'s regressed position of each keypoint, in cells.
fn regressed(heads: &MultiposeHeads<'_>, cell: usize) -> [(f32, f32); KEYPOINTS] {
    let (y, x) = heads.yx(cell);
    std::array::from_fn(|k| {
        (
            y + heads.at(heads.regress, 2 * k, cell),
            x + heads.at(heads.regress, 2 * k + 1, cell),
        )
    })
}

/// A heat weighted by the squared distance `d2` to its keypoint, as the graph computes it.
fn weigh(heat: f32, d2: f32, spread: f32) -> f32 {
    heat * (-d2 / spread).exp()
}

/// The rows or columns `lo ≤ v < hi` of a box side, as a range of cell indices.
fn cells_within(lo: f32, hi: f32) -> std::ops::Range<usize> {
    (lo.ceil().max(0.0) as usize)..(hi.ceil().max(0.0) as usize)
}

/// Keypoint `k`'s heatmap at `cell` weighted by its distance to `point`, or 0 outside `b`.
fn weighted(
    heads: &MultiposeHeads<'_>,
    k: usize,
    cell: usize,
    b: &CellBox,
    point: (f32, f32),
    spread: f32,
) -> f32 {
    let (y, x) = heads.yx(cell);
    if !(y >= b[0] && y < b[2] && x >= b[1] && x < b[3]) {
        return 0.0;
    }
    let (dy, dx) = (y - point.0, x - point.1);
    weigh(heads.at(heads.heatmap, k, cell), dy * dy + dx * dx, spread)
}

/// The cell of box `b` where keypoint `k`'s weighted heatmap is largest (the first in raster
/// order), or cell 0 when no cell of the box scores above 0 — the graph's `ArgMax` over the
/// whole grid, where cells outside the box are 0.
fn best_cell(
    heads: &MultiposeHeads<'_>,
    k: usize,
    point: (f32, f32),
    b: &CellBox,
    spread: f32,
) -> usize {
    let w = heads.width;
    let plane = &heads.heatmap[k * heads.height * w..(k + 1) * heads.height * w];
    let (mut best, mut best_at) = (0.0f32, 0usize);
    for y in cells_within(b[0], b[2]) {
        let dy = y as f32 - point.0;
        let dy2 = dy * dy;
        for x in cells_within(b[1], b[3]) {
            let heat = plane[y * w + x];
            // exp(−d²/s) ≤ 1, so a cell whose heat is no more than the best cannot beat it.
            if heat <= best {
                continue;
            }
            let dx = x as f32 - point.1;
            let v = weigh(heat, dy2 + dx * dx, spread);
            if v > best {
                best = v;
                best_at = y * w + x;
            }
        }
    }
    best_at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads of an 8 × 8 grid with one clear centre at (3, 4), every keypoint regressed to
    /// (3, 4) + (1, −1), keypoint heat 0.9 at the regressed cell and 0.5 elsewhere, a 4 × 4
    /// box, no offsets.
    fn one_person() -> [Vec<f32>; 6] {
        let (h, w) = (8, 8);
        let mut center = vec![0.01; h * w];
        center[3 * w + 4] = 0.8;
        let mut heatmap = vec![0.5; KEYPOINTS * h * w];
        for k in 0..KEYPOINTS {
            heatmap[k * h * w + 4 * w + 3] = 0.9;
        }
        let mut regress = vec![0.0; 2 * KEYPOINTS * h * w];
        for k in 0..KEYPOINTS {
            regress[2 * k * h * w + 3 * w + 4] = 1.0;
            regress[(2 * k + 1) * h * w + 3 * w + 4] = -1.0;
        }
        let mut box_scale = vec![0.0; 2 * h * w];
        box_scale[3 * w + 4] = 4.0;
        box_scale[h * w + 3 * w + 4] = 4.0;
        [
            center,
            heatmap,
            regress,
            vec![0.0; 2 * KEYPOINTS * h * w],
            box_scale,
            vec![0.0; 2 * h * w],
        ]
    }

    fn heads(p: &[Vec<f32>; 6]) -> MultiposeHeads<'_> {
        MultiposeHeads {
            height: 8,
            width: 8,
            center: &p[0],
            heatmap: &p[1],
            regress: &p[2],
            offset: &p[3],
            box_scale: &p[4],
            box_offset: &p[5],
        }
    }

    #[test]
    fn the_clear_centre_comes_first_with_its_keypoints_at_the_hottest_nearby_cell() {
        let planes = one_person();
        let out = decode_multipose(&heads(&planes)).expect("decode");
        let first = &out[..ROW];
        // Keypoints at cell (4, 3) of 8: 0.5, 0.375; score 0.9 (exp(0) = 1).
        for k in 0..KEYPOINTS {
            assert_eq!(&first[3 * k..3 * k + 3], &[0.5, 0.375, 0.9], "keypoint {k}");
        }
        // Box (3, 4) ± 2 cells, over 8 cells.
        assert_eq!(&first[51..55], &[0.125, 0.25, 0.625, 0.75]);
        // Centre 0.8 × mean keypoint score 0.9.
        assert!((first[55] - 0.72).abs() < 1e-6, "{}", first[55]);
    }

    #[test]
    fn a_candidate_without_a_box_points_every_keypoint_at_cell_zero() {
        let planes = one_person();
        let out = decode_multipose(&heads(&planes)).expect("decode");
        // The next candidate is cell 0: a 0.01 cell far enough from the clear centre to be
        // its own window's maximum. Its box is empty (scale 0), so nothing in it scores.
        let second = &out[ROW..2 * ROW];
        assert_eq!(&second[..2], &[0.0, 0.0]);
        assert_eq!(second[ROW - 1], 0.0);
    }

    #[test]
    fn heads_of_the_wrong_size_are_an_error_naming_the_head() {
        let mut planes = one_person();
        planes[2].pop();
        let err = decode_multipose(&heads(&planes)).expect_err("short regression head");
        assert!(err.to_string().contains("keypoint regression"), "{err}");
    }
}
