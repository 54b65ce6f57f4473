//! DeepSORT's association: the appearance metric (nearest-neighbour cosine distance
//! to each track's gallery of features, with an optional budget), gating by the
//! Kalman filter's Mahalanobis distance, the IoU cost, min-cost matching with a
//! threshold, and the matching cascade that gives recently seen tracks priority.
//! Orders of the returned lists follow `deep-sort-realtime` 1.3.2, since the order
//! of unmatched detections decides the ids of new tracks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kalman::CHI2INV95;
use super::lsap::linear_sum_assignment;
use super::tracker::Track;
use super::{Detection, TrackingError};

/// Cost given to infeasible pairs (gated out, or not seen last frame for IoU).
pub const INFTY_COST: f64 = 1e5;

/// The features seen per confirmed track (`budget`: at most that many, newest kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gallery {
    pub budget: Option<usize>,
    pub samples: BTreeMap<u64, Vec<Vec<f32>>>,
}

fn unit(v: &[f32]) -> Vec<f64> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if n == 0.0 {
        return vec![0.0; v.len()];
    }
    v.iter().map(|&x| x as f64 / n).collect()
}

impl Gallery {
    /// Add features per target, trim to the budget, keep only `active` targets.
    pub fn partial_fit(&mut self, fed: Vec<(u64, Vec<f32>)>, active: &[u64]) {
        for (target, f) in fed {
            let list = self.samples.entry(target).or_default();
            list.push(f);
            if let Some(b) = self.budget {
                if list.len() > b {
                    list.drain(..list.len() - b);
                }
            }
        }
        self.samples.retain(|k, _| active.contains(k));
    }

    /// Smallest cosine distance from each target's samples to each feature
    /// (`targets × features`, row-major).
    pub fn distance(&self, features: &[&[f32]], targets: &[u64]) -> Vec<f64> {
        let feats: Vec<Vec<f64>> = features.iter().map(|f| unit(f)).collect();
        let mut out = Vec::with_capacity(targets.len() * feats.len());
        for t in targets {
            let samples: Vec<Vec<f64>> = self
                .samples
                .get(t)
                .map(|s| s.iter().map(|v| unit(v)).collect())
                .unwrap_or_default();
            for f in &feats {
                let best = samples
                    .iter()
                    .map(|s| 1.0 - s.iter().zip(f).map(|(a, b)| a * b).sum::<f64>())
                    .fold(f64::INFINITY, f64::min);
                out.push(if best.is_finite() { best } else { 1.0 });
            }
        }
        out
    }
}

/// The result of one matching step: matched (track, detection) pairs, unmatched
/// tracks and unmatched detections (indices into the tracker's lists).
pub struct Matched {
    pub matches: Vec<(usize, usize)>,
    pub tracks: Vec<usize>,
    pub detections: Vec<usize>,
}

/// Solve the assignment of `track_idx × det_idx` under `cost`, pairs above
/// `max_distance` rejected.
pub fn min_cost_matching(
    cost: impl FnOnce(&[usize], &[usize]) -> Result<Vec<f64>, TrackingError>,
    max_distance: f64,
    track_idx: &[usize],
    det_idx: &[usize],
) -> Result<Matched, TrackingError> {
    if track_idx.is_empty() || det_idx.is_empty() {
        return Ok(Matched {
            matches: vec![],
            tracks: track_idx.to_vec(),
            detections: det_idx.to_vec(),
        });
    }
    let mut c = cost(track_idx, det_idx)?;
    for v in c.iter_mut() {
        if *v > max_distance {
            *v = max_distance + 1e-5;
        }
    }
    let cols = det_idx.len();
    let pairs = linear_sum_assignment(&c, track_idx.len(), cols)?;
    let mut out = Matched {
        matches: vec![],
        tracks: vec![],
        detections: vec![],
    };
    for (col, &d) in det_idx.iter().enumerate() {
        if !pairs.iter().any(|p| p.1 == col) {
            out.detections.push(d);
        }
    }
    for (row, &t) in track_idx.iter().enumerate() {
        if !pairs.iter().any(|p| p.0 == row) {
            out.tracks.push(t);
        }
    }
    for (row, col) in pairs {
        let (t, d) = (track_idx[row], det_idx[col]);
        if c[row * cols + col] > max_distance {
            out.tracks.push(t);
            out.detections.push(d);
        } else {
            out.matches.push((t, d));
        }
    }
    Ok(out)
}

/// Match by `cost` level by level: tracks missed for 0 frames first, then 1, …
/// up to `depth`.
pub fn matching_cascade(
    mut cost: impl FnMut(&[usize], &[usize]) -> Result<Vec<f64>, TrackingError>,
    max_distance: f64,
    depth: u32,
    tracks: &[Track],
    track_idx: &[usize],
    det_idx: &[usize],
) -> Result<Matched, TrackingError> {
    let mut unmatched = det_idx.to_vec();
    let mut matches = Vec::new();
    for level in 0..depth {
        if unmatched.is_empty() {
            break;
        }
        let level_tracks: Vec<usize> = track_idx
            .iter()
            .copied()
            .filter(|&k| tracks[k].time_since_update == 1 + level)
            .collect();
        if level_tracks.is_empty() {
            continue;
        }
        let m = min_cost_matching(&mut cost, max_distance, &level_tracks, &unmatched)?;
        matches.extend(m.matches);
        unmatched = m.detections;
    }
    let mut left: Vec<usize> = track_idx
        .iter()
        .copied()
        .filter(|k| !matches.iter().any(|m| m.0 == *k))
        .collect();
    left.sort_unstable();
    Ok(Matched {
        matches,
        tracks: left,
        detections: unmatched,
    })
}

/// Set pairs whose Mahalanobis distance exceeds the chi-square 95 % gate to
/// [`INFTY_COST`].
pub fn gate(
    cost: &mut [f64],
    tracks: &[Track],
    dets: &[Detection],
    track_idx: &[usize],
    det_idx: &[usize],
    only_position: bool,
) -> Result<(), TrackingError> {
    let threshold = CHI2INV95[if only_position { 2 } else { 4 }];
    let z: Vec<[f64; 4]> = det_idx.iter().map(|&d| dets[d].xyah()).collect();
    let cols = det_idx.len();
    for (row, &t) in track_idx.iter().enumerate() {
        let d = tracks[t].kf.gating_distance(&z, only_position)?;
        for (col, dist) in d.iter().enumerate() {
            if *dist > threshold {
                cost[row * cols + col] = INFTY_COST;
            }
        }
    }
    Ok(())
}

/// Intersection over union of `(left, top, width, height)` boxes.
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let (ax2, ay2, bx2, by2) = (a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]);
    let w = (ax2.min(bx2) - a[0].max(b[0])).max(0.0);
    let h = (ay2.min(by2) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// 1 − IoU between each track's predicted box and each detection; tracks not
/// updated last frame get [`INFTY_COST`].
pub fn iou_cost(
    tracks: &[Track],
    dets: &[Detection],
    track_idx: &[usize],
    det_idx: &[usize],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(track_idx.len() * det_idx.len());
    for &t in track_idx {
        let tr = &tracks[t];
        for &d in det_idx {
            out.push(if tr.time_since_update > 1 {
                INFTY_COST
            } else {
                1.0 - iou(tr.ltwh(), dets[d].ltwh64())
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 10.0, 10.0]), 0.0);
        assert!((iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn gallery_keeps_the_newest_within_budget_and_only_active_targets() {
        let mut g = Gallery {
            budget: Some(2),
            ..Default::default()
        };
        g.partial_fit(
            vec![
                (1, vec![1.0, 0.0]),
                (1, vec![0.0, 1.0]),
                (1, vec![1.0, 1.0]),
                (2, vec![1.0, 0.0]),
            ],
            &[1],
        );
        assert_eq!(g.samples.len(), 1);
        assert_eq!(g.samples[&1], vec![vec![0.0, 1.0], vec![1.0, 1.0]]);
        let d = g.distance(&[&[0.0, 2.0], &[1.0, 0.0]], &[1]);
        assert!(d[0].abs() < 1e-12, "{d:?}");
        assert!((d[1] - (1.0 - 0.5f64.sqrt())).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn over_threshold_pairs_are_unmatched_and_come_last() {
        // Two tracks, three detections: track 0 fits det 2; track 1 fits nothing.
        let m = min_cost_matching(
            |_, _| Ok(vec![0.9, 0.9, 0.1, 0.9, 0.9, 0.9]),
            0.5,
            &[0, 1],
            &[0, 1, 2],
        )
        .unwrap();
        assert_eq!(m.matches, vec![(0, 2)]);
        assert_eq!(m.tracks, vec![1]);
        // Column 1 is not assigned; column 0 was (to track 1, over the threshold).
        assert_eq!(m.detections, vec![1, 0]);
    }
}
