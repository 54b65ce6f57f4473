//! DeepSORT multi-object tracking (Wojke et al. 2017), as `deep-sort-realtime` 1.3.2
//! runs it: a Kalman filter per track ([`kalman`]), appearance matching by cosine
//! distance with a matching cascade, then IoU matching ([`matching`]), assignments by
//! SciPy's shortest-augmenting-path algorithm ([`lsap`]) and the track life cycle
//! tentative → confirmed → deleted ([`tracker`]). The whole state serialises (serde),
//! so a pipeline stage can snapshot it and come back with the same tracks.

pub mod kalman;
pub mod lsap;
pub mod matching;
pub mod tracker;

pub use tracker::{Track, TrackState, Tracker, TrackerConfig};

use serde::{Deserialize, Serialize};

/// What can go wrong while tracking.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking: {0}")]
    Numeric(String),
    #[error("detection {index}: {msg}")]
    BadDetection { index: usize, msg: String },
    #[error("invalid tracker parameter `{name}`: {msg}")]
    BadParam { name: &'static str, msg: String },
}

/// One detection of a frame: its box `(left, top, width, height)` in pixels, its
/// score and its appearance feature (any length, the same for every detection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub ltwh: [f32; 4],
    pub confidence: f32,
    pub feature: Vec<f32>,
}

impl Detection {
    /// A detection from corners `x1, y1, x2, y2`.
    pub fn from_corners(
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        confidence: f32,
        feature: Vec<f32>,
    ) -> Self {
        Detection {
            ltwh: [x1, y1, x2 - x1, y2 - y1],
            confidence,
            feature,
        }
    }

    /// `(centre x, centre y, width / height, height)`, computed in f32 like the
    /// reference (its boxes are float32 arrays).
    pub fn xyah(&self) -> [f64; 4] {
        let [l, t, w, h] = self.ltwh;
        [
            (l + w / 2.0) as f64,
            (t + h / 2.0) as f64,
            (w / h) as f64,
            h as f64,
        ]
    }

    pub fn ltwh64(&self) -> [f64; 4] {
        self.ltwh.map(|v| v as f64)
    }

    /// Refuse what would make the filter or the metric meaningless.
    fn check(&self, index: usize, dim: usize) -> Result<(), TrackingError> {
        let bad = |msg: String| TrackingError::BadDetection { index, msg };
        if self.ltwh.iter().any(|v| !v.is_finite()) || self.ltwh[2] <= 0.0 || self.ltwh[3] <= 0.0 {
            return Err(bad(format!(
                "box (left, top, width, height) {:?} must be finite with a positive size",
                self.ltwh
            )));
        }
        if self.feature.is_empty() {
            return Err(bad("has no appearance feature (embedding)".into()));
        }
        if self.feature.len() != dim {
            return Err(bad(format!(
                "embedding has {} numbers, the others of this tracker {dim}",
                self.feature.len()
            )));
        }
        if self.feature.iter().any(|v| !v.is_finite()) {
            return Err(bad("embedding contains NaN or infinity".into()));
        }
        Ok(())
    }
}
