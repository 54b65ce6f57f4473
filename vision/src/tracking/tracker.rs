//! The DeepSORT tracker: tracks with their Kalman state, life cycle (tentative until
//! `n_init` hits, deleted when missed while tentative or for more than `max_age`
//! frames) and feature gallery; one [`Tracker::step`] per frame, in order.

use serde::{Deserialize, Serialize};

use super::kalman::Gaussian;
use super::matching::{gate, iou_cost, matching_cascade, min_cost_matching, Gallery};
use super::{Detection, TrackingError};

/// DeepSORT's parameters; defaults are `deep-sort-realtime`'s `DeepSort(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// IoU matching rejects pairs with 1 − IoU above this.
    pub max_iou_distance: f64,
    /// Frames a confirmed track may go unmatched before it is deleted.
    pub max_age: u32,
    /// Consecutive hits before a track is confirmed.
    pub n_init: u32,
    /// Appearance matching rejects pairs with a cosine distance above this.
    pub max_cosine_distance: f64,
    /// Features kept per track (newest); `None` = all since it was last matched.
    pub nn_budget: Option<usize>,
    /// Gate on the centre only instead of (x, y, a, h).
    pub gating_only_position: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_iou_distance: 0.7,
            max_age: 30,
            n_init: 3,
            max_cosine_distance: 0.2,
            nn_budget: None,
            gating_only_position: false,
        }
    }
}

impl TrackerConfig {
    pub fn check(&self) -> Result<(), TrackingError> {
        let bad = |name, msg: &str| {
            Err(TrackingError::BadParam {
                name,
                msg: msg.into(),
            })
        };
        if !(0.0..=1.0).contains(&self.max_iou_distance) {
            return bad("max_iou_distance", "must be within 0..1");
        }
        if !(0.0..=2.0).contains(&self.max_cosine_distance) {
            return bad("max_cosine_distance", "must be within 0..2");
        }
        if self.n_init == 0 {
            return bad("n_init", "must be at least 1");
        }
        if self.nn_budget == Some(0) {
            return bad("nn_budget", "must be at least 1 (or absent for no budget)");
        }
        Ok(())
    }
}

/// A track's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackState {
    Tentative,
    Confirmed,
    Deleted,
}

/// One tracked object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Track {
    pub id: u64,
    pub kf: Gaussian,
    pub hits: u32,
    pub age: u32,
    pub time_since_update: u32,
    pub state: TrackState,
    /// Features matched since the gallery last took them.
    pub features: Vec<Vec<f32>>,
}

impl Track {
    /// The predicted box `(left, top, width, height)`.
    pub fn ltwh(&self) -> [f64; 4] {
        let m = &self.kf.mean;
        let w = m[2] * m[3];
        [m[0] - w / 2.0, m[1] - m[3] / 2.0, w, m[3]]
    }

    fn mark_missed(&mut self, max_age: u32) {
        if self.state == TrackState::Tentative || self.time_since_update > max_age {
            self.state = TrackState::Deleted;
        }
    }
}

/// The tracker of one source: feed it every frame's detections in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracker {
    pub config: TrackerConfig,
    pub tracks: Vec<Track>,
    pub next_id: u64,
    pub gallery: Gallery,
    /// Length of the embeddings this tracker has seen (0 before the first).
    pub feature_dim: usize,
    /// Frames stepped so far.
    pub frames: u64,
}

/// What a frame's step gave each of its detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The track the detection belongs to (matched or newly started).
    pub track_id: u64,
    /// Whether that track is confirmed after this frame.
    pub confirmed: bool,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Result<Tracker, TrackingError> {
        config.check()?;
        Ok(Tracker {
            gallery: Gallery {
                budget: config.nn_budget,
                ..Default::default()
            },
            config,
            tracks: Vec::new(),
            next_id: 1,
            feature_dim: 0,
            frames: 0,
        })
    }

    /// Predict every track one frame on, then associate this frame's detections and
    /// update the tracks; returns each detection's track.
    pub fn step(&mut self, dets: &[Detection]) -> Result<Vec<Assigned>, TrackingError> {
        let dim = if self.feature_dim == 0 {
            dets.first().map_or(0, |d| d.feature.len())
        } else {
            self.feature_dim
        };
        for (i, d) in dets.iter().enumerate() {
            d.check(i, dim)?;
        }
        self.feature_dim = dim;
        self.frames += 1;
        for t in &mut self.tracks {
            t.kf.predict();
            t.age += 1;
            t.time_since_update += 1;
        }
        let (matches, unmatched_tracks, unmatched_dets) = self.associate(dets)?;
        let mut owner = vec![0u64; dets.len()];
        for &(t, d) in &matches {
            let n_init = self.config.n_init;
            let tr = &mut self.tracks[t];
            tr.kf.update(dets[d].xyah())?;
            tr.features.push(dets[d].feature.clone());
            tr.hits += 1;
            tr.time_since_update = 0;
            if tr.state == TrackState::Tentative && tr.hits >= n_init {
                tr.state = TrackState::Confirmed;
            }
            owner[d] = tr.id;
        }
        for t in unmatched_tracks {
            self.tracks[t].mark_missed(self.config.max_age);
        }
        for d in unmatched_dets {
            owner[d] = self.initiate(&dets[d]);
        }
        self.tracks.retain(|t| t.state != TrackState::Deleted);
        let active: Vec<u64> = self
            .tracks
            .iter()
            .filter(|t| t.state == TrackState::Confirmed)
            .map(|t| t.id)
            .collect();
        let mut fed = Vec::new();
        for t in self
            .tracks
            .iter_mut()
            .filter(|t| t.state == TrackState::Confirmed)
        {
            let last = t.features.last().cloned();
            for f in t.features.drain(..) {
                fed.push((t.id, f));
            }
            t.features.extend(last);
        }
        self.gallery.partial_fit(fed, &active);
        Ok(owner
            .into_iter()
            .map(|id| Assigned {
                track_id: id,
                confirmed: self
                    .tracks
                    .iter()
                    .any(|t| t.id == id && t.state == TrackState::Confirmed),
            })
            .collect())
    }

    #[allow(clippy::type_complexity)]
    fn associate(
        &self,
        dets: &[Detection],
    ) -> Result<(Vec<(usize, usize)>, Vec<usize>, Vec<usize>), TrackingError> {
        let tracks = &self.tracks;
        let confirmed: Vec<usize> = (0..tracks.len())
            .filter(|&i| tracks[i].state == TrackState::Confirmed)
            .collect();
        let unconfirmed: Vec<usize> = (0..tracks.len())
            .filter(|&i| tracks[i].state != TrackState::Confirmed)
            .collect();
        let all_dets: Vec<usize> = (0..dets.len()).collect();
        let only_position = self.config.gating_only_position;
        let appearance = |ti: &[usize], di: &[usize]| -> Result<Vec<f64>, TrackingError> {
            let feats: Vec<&[f32]> = di.iter().map(|&d| dets[d].feature.as_slice()).collect();
            let targets: Vec<u64> = ti.iter().map(|&t| tracks[t].id).collect();
            let mut cost = self.gallery.distance(&feats, &targets);
            gate(&mut cost, tracks, dets, ti, di, only_position)?;
            Ok(cost)
        };
        let a = matching_cascade(
            appearance,
            self.config.max_cosine_distance,
            self.config.max_age,
            tracks,
            &confirmed,
            &all_dets,
        )?;
        let mut iou_candidates = unconfirmed;
        iou_candidates.extend(
            a.tracks
                .iter()
                .filter(|&&k| tracks[k].time_since_update == 1),
        );
        let still: Vec<usize> = a
            .tracks
            .iter()
            .copied()
            .filter(|&k| tracks[k].time_since_update != 1)
            .collect();
        let b = min_cost_matching(
            |ti, di| Ok(iou_cost(tracks, dets, ti, di)),
            self.config.max_iou_distance,
            &iou_candidates,
            &a.detections,
        )?;
        let mut matches = a.matches;
        matches.extend(b.matches);
        let mut unmatched = still;
        for t in b.tracks {
            if !unmatched.contains(&t) {
                unmatched.push(t);
            }
        }
        Ok((matches, unmatched, b.detections))
    }

    fn initiate(&mut self, d: &Detection) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tracks.push(Track {
            id,
            kf: Gaussian::initiate(d.xyah()),
            hits: 1,
            age: 1,
            time_since_update: 0,
            state: TrackState::Tentative,
            features: vec![d.feature.clone()],
        });
        id
    }
}
