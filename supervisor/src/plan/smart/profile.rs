//! Profiles: measured service times t(batch, input size) per task on one machine, and the
//! least-squares fit t = α + β·b per input-size bucket that the model and planner use.
//!
//! Stored by the caller as `profiles/<machine>.json` (see [`Profiles::to_json`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Coefficient of variation of service times assumed when a profile does not say.
pub const DEFAULT_CV: f64 = 0.05;

/// One measurement: a batch of `batch` items whose inputs fall in the size bucket
/// `input_bytes` took `seconds` (mean over repetitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePoint {
    pub batch: u32,
    pub input_bytes: u64,
    pub seconds: f64,
}

/// Everything measured about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProfile {
    pub task: String,
    pub points: Vec<ProfilePoint>,
    /// Largest batch the task accepts (None: the largest profiled batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Amdahl parallel fraction p of the work when run with more intra-op threads:
    /// t(k threads) = t(1)·((1 − p) + p/k). 0 = threads do not help (the default).
    #[serde(default)]
    pub parallel_fraction: f64,
    /// Coefficient of variation (std dev / mean) of one batch's service time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    /// How much of that variability an item shares with its other stages (0 = none, 1 =
    /// all): the loading of the task's time on a per-item factor common to the path
    /// (e.g. a frame's face candidates slow P-Net's post-processing, R-Net and O-Net at
    /// once). Estimated by [`path_loadings`] from the profile run's per-item stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_loading: Option<f64>,
    /// The model the task keeps resident on the device, and its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub model_bytes: u64,
}

/// t = α + β·b, with the fit's coefficient of determination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub alpha: f64,
    pub beta: f64,
    pub r2: f64,
}

impl Fit {
    /// Seconds for a batch of `b` items (never below a microsecond).
    pub fn at(&self, b: f64) -> f64 {
        (self.alpha + self.beta * b).max(1e-6)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile for task '{0}'")]
    MissingTask(String),
    #[error("task '{0}': profile has no usable points")]
    NoPoints(String),
    #[error("task '{task}': bad point (batch {batch}, {seconds} s)")]
    BadPoint {
        task: String,
        batch: u32,
        seconds: f64,
    },
    #[error("profiles: {0}")]
    Json(String),
}

/// Least-squares fit of t = α + β·b over (b, t) pairs. With a single distinct batch size
/// the slope is unknown; we then assume the time is proportional to the batch (α = 0),
/// the conservative choice (batching brings no gain until measured).
pub fn fit(samples: &[(f64, f64)]) -> Option<Fit> {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return None;
    }
    let mb = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mt = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let sbb: f64 = samples.iter().map(|s| (s.0 - mb).powi(2)).sum();
    let sbt: f64 = samples.iter().map(|s| (s.0 - mb) * (s.1 - mt)).sum();
    let stt: f64 = samples.iter().map(|s| (s.1 - mt).powi(2)).sum();
    if sbb <= 1e-12 {
        let beta = if mb > 0.0 { mt / mb } else { mt };
        return Some(Fit {
            alpha: 0.0,
            beta,
            r2: 1.0,
        });
    }
    let beta = sbt / sbb;
    let alpha = mt - beta * mb;
    let r2 = if stt <= 1e-24 {
        1.0
    } else {
        (sbt * sbt / (sbb * stt)).clamp(0.0, 1.0)
    };
    Some(Fit { alpha, beta, r2 })
}

impl TaskProfile {
    /// A profile from (batch, bucket, seconds) triples.
    pub fn new(task: &str, points: &[(u32, u64, f64)]) -> Self {
        TaskProfile {
            task: task.to_string(),
            points: points
                .iter()
                .map(|&(batch, input_bytes, seconds)| ProfilePoint {
                    batch,
                    input_bytes,
                    seconds,
                })
                .collect(),
            max_batch: None,
            parallel_fraction: 0.0,
            cv: None,
            path_loading: None,
            model: None,
            model_bytes: 0,
        }
    }

    /// A linear profile t = α + β·b in one bucket (0), measured at b = 1, 2, 4, 8, 16.
    #[cfg(test)]
    pub fn linear(task: &str, alpha: f64, beta: f64) -> Self {
        let pts: Vec<(u32, u64, f64)> = [1u32, 2, 4, 8, 16]
            .iter()
            .map(|&b| (b, 0, alpha + beta * f64::from(b)))
            .collect();
        Self::new(task, &pts)
    }

    fn check(&self) -> Result<(), ProfileError> {
        for p in &self.points {
            if p.batch == 0 || !p.seconds.is_finite() || p.seconds < 0.0 {
                return Err(ProfileError::BadPoint {
                    task: self.task.clone(),
                    batch: p.batch,
                    seconds: p.seconds,
                });
            }
        }
        if self.points.is_empty() {
            return Err(ProfileError::NoPoints(self.task.clone()));
        }
        Ok(())
    }

    /// The fit per input-size bucket.
    pub fn fits(&self) -> Result<BTreeMap<u64, Fit>, ProfileError> {
        self.check()?;
        let mut by_bucket: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
        for p in &self.points {
            by_bucket
                .entry(p.input_bytes)
                .or_default()
                .push((f64::from(p.batch), p.seconds));
        }
        let mut out = BTreeMap::new();
        for (bucket, samples) in by_bucket {
            if let Some(f) = fit(&samples) {
                out.insert(bucket, f);
            }
        }
        Ok(out)
    }

    /// The fit for inputs of `bucket` bytes: the smallest profiled bucket at least as
    /// large (conservative), else the largest; `None` asks for the largest bucket.
    pub fn fit_for(&self, bucket: Option<u64>) -> Result<Fit, ProfileError> {
        let fits = self.fits()?;
        let chosen = match bucket {
            Some(b) => fits.range(b..).next().or_else(|| fits.iter().next_back()),
            None => fits.iter().next_back(),
        };
        chosen
            .map(|(_, f)| *f)
            .ok_or_else(|| ProfileError::NoPoints(self.task.clone()))
    }

    /// The measured mean seconds per batch size in the bucket [`TaskProfile::fit_for`]
    /// picks, by batch size: what the model interpolates between.
    pub fn curve_for(&self, bucket: Option<u64>) -> Result<Vec<(f64, f64)>, ProfileError> {
        self.check()?;
        let buckets: std::collections::BTreeSet<u64> =
            self.points.iter().map(|p| p.input_bytes).collect();
        let chosen = match bucket {
            Some(b) => buckets
                .range(b..)
                .next()
                .or_else(|| buckets.iter().next_back()),
            None => buckets.iter().next_back(),
        }
        .copied()
        .ok_or_else(|| ProfileError::NoPoints(self.task.clone()))?;
        let mut by_batch: BTreeMap<u32, (f64, u32)> = BTreeMap::new();
        for p in self.points.iter().filter(|p| p.input_bytes == chosen) {
            let e = by_batch.entry(p.batch).or_insert((0.0, 0));
            e.0 += p.seconds;
            e.1 += 1;
        }
        Ok(by_batch
            .into_iter()
            .map(|(b, (sum, n))| (f64::from(b), sum / f64::from(n.max(1))))
            .collect())
    }

    /// The largest batch the planner may pick.
    pub fn batch_limit(&self) -> u32 {
        self.max_batch
            .or_else(|| self.points.iter().map(|p| p.batch).max())
            .unwrap_or(1)
            .max(1)
    }

    pub fn cv(&self) -> f64 {
        self.cv.unwrap_or(DEFAULT_CV).clamp(0.0, 10.0)
    }
}

/// The profiles of one machine, by task name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    #[serde(default)]
    pub machine: String,
    /// A digest of the profiled app's task content (names, kinds, functions, params,
    /// inputs): a profile whose digest differs from the app's is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_digest: Option<String>,
    pub tasks: BTreeMap<String, TaskProfile>,
}

impl Profiles {
    pub fn new(machine: &str) -> Self {
        Profiles {
            machine: machine.to_string(),
            tasks_digest: None,
            tasks: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a task's profile.
    pub fn insert(&mut self, p: TaskProfile) {
        self.tasks.insert(p.task.clone(), p);
    }

    #[cfg(test)]
    pub fn with(mut self, p: TaskProfile) -> Self {
        self.insert(p);
        self
    }

    pub fn get(&self, task: &str) -> Option<&TaskProfile> {
        self.tasks.get(task)
    }

    /// Seconds for one batch of `batch` items of task `task` whose inputs are in `bucket`
    /// (tests check bucket choice through it; the planner reads fits through its model).
    #[cfg(test)]
    pub fn service_time(
        &self,
        task: &str,
        batch: u32,
        bucket: Option<u64>,
    ) -> Result<f64, ProfileError> {
        let p = self
            .get(task)
            .ok_or_else(|| ProfileError::MissingTask(task.to_string()))?;
        Ok(p.fit_for(bucket)?.at(f64::from(batch.max(1))))
    }

    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let p: Profiles =
            serde_json::from_str(text).map_err(|e| ProfileError::Json(e.to_string()))?;
        for t in p.tasks.values() {
            t.check()?;
        }
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_line() {
        let p = TaskProfile::linear("x", 0.010, 0.002);
        let f = p.fit_for(None).unwrap();
        assert!((f.alpha - 0.010).abs() < 1e-12);
        assert!((f.beta - 0.002).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fit_of_noisy_points_has_r2_below_one() {
        let f = fit(&[(1.0, 1.0), (2.0, 2.5), (4.0, 3.9), (8.0, 8.4)]).unwrap();
        assert!(f.r2 > 0.9 && f.r2 < 1.0, "{f:?}");
        assert!(f.beta > 0.9 && f.beta < 1.1);
    }

    #[test]
    fn one_batch_size_means_proportional() {
        let f = fit(&[(1.0, 0.02), (1.0, 0.04)]).unwrap();
        assert_eq!(f.alpha, 0.0);
        assert!((f.at(4.0) - 0.12).abs() < 1e-12);
    }

    #[test]
    fn buckets_pick_the_next_larger_then_the_largest() {
        let p = TaskProfile::new(
            "x",
            &[
                (1, 100, 0.01),
                (2, 100, 0.012),
                (1, 1000, 0.1),
                (2, 1000, 0.12),
            ],
        );
        let prof = Profiles::new("m").with(p);
        assert!((prof.service_time("x", 1, Some(50)).unwrap() - 0.01).abs() < 1e-9);
        assert!((prof.service_time("x", 1, Some(500)).unwrap() - 0.1).abs() < 1e-9);
        assert!((prof.service_time("x", 3, Some(5000)).unwrap() - 0.14).abs() < 1e-9);
        assert!((prof.service_time("x", 1, None).unwrap() - 0.1).abs() < 1e-9);
        assert!(matches!(
            prof.service_time("y", 1, None),
            Err(ProfileError::MissingTask(_))
        ));
    }

    #[test]
    fn json_round_trip_and_bad_input() {
        let prof = Profiles::new("box").with(TaskProfile::linear("a", 0.5, 0.25));
        let back = Profiles::from_json(&prof.to_json()).unwrap();
        assert_eq!(back, prof);
        assert!(matches!(
            Profiles::from_json("{\"tasks\": 3}"),
            Err(ProfileError::Json(_))
        ));
        let bad = r#"{"tasks": {"a": {"task": "a", "points": [{"batch": 0, "input_bytes": 0, "seconds": 1}]}}}"#;
        assert!(matches!(
            Profiles::from_json(bad),
            Err(ProfileError::BadPoint { .. })
        ));
    }

    #[test]
    fn curve_averages_repeated_batches_in_the_chosen_bucket() {
        let p = TaskProfile::new(
            "x",
            &[(1, 100, 0.01), (1, 100, 0.03), (4, 100, 0.1), (1, 9, 5.0)],
        );
        assert_eq!(p.curve_for(None).unwrap(), vec![(1.0, 0.02), (4.0, 0.1)]);
        assert_eq!(p.curve_for(Some(5)).unwrap(), vec![(1.0, 5.0)]);
    }
}

/// Per stage: its stay's standard deviation (ms) and the correlation of its stay with the
/// rest of the item's path, as a tail measured them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StayMoments {
    pub sd: f64,
    /// corr(S_i, R_i), R_i = the item's stays at its other stages.
    pub corr_rest: f64,
    /// Standard deviation of R_i (ms).
    pub rest_sd: f64,
}

/// Loadings λ_i of a one-factor model of per-item stays, S_i = m_i + σ_i(λ_i F + √(1−λ_i²) E_i)
/// with F and the E_i independent and standard: then corr(S_i, R_i) = λ_i · Σ_{j≠i} λ_j σ_j / sd(R_i),
/// solved for the λ_i by a damped fixed-point iteration, each kept in [0, 1] (a negative
/// correlation is read as none).
pub fn path_loadings(stays: &[StayMoments]) -> Vec<f64> {
    let mut l: Vec<f64> = stays.iter().map(|s| s.corr_rest.clamp(0.0, 1.0)).collect();
    for _ in 0..50 {
        let total: f64 = l.iter().zip(stays).map(|(l, s)| l * s.sd).sum();
        let next: Vec<f64> = stays
            .iter()
            .zip(&l)
            .map(|(s, &li)| {
                let others = total - li * s.sd;
                if s.sd <= 0.0 || s.rest_sd <= 0.0 || others <= 1e-12 {
                    return s.corr_rest.clamp(0.0, 1.0);
                }
                // The plain update flips an error of scale c into 1/c; the geometric mean
                // of the two settles it.
                (s.corr_rest * s.rest_sd / others * li)
                    .max(0.0)
                    .sqrt()
                    .min(1.0)
            })
            .collect();
        let moved = next
            .iter()
            .zip(&l)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        l = next;
        if moved < 1e-9 {
            break;
        }
    }
    l
}

#[cfg(test)]
mod loading_tests {
    use super::*;
    use crate::plan::smart::sim::Rng;
    use protocol::messages::StayStats;
    use protocol::TaskId;

    /// Stays drawn from a one-factor model with known loadings; the estimate recovers them.
    #[test]
    fn path_loadings_recover_a_one_factor_model() {
        let sd = [1.0, 2.0, 0.5, 1.5];
        let want = [0.9, 0.7, 0.0, 0.5];
        let mut rng = Rng::new(11);
        let n = 40_000;
        let mut stays: Vec<StayStats> = (0..4).map(|t| StayStats::new(TaskId::new(t))).collect();
        for _ in 0..n {
            let f = rng.normal();
            let s: Vec<f64> = (0..4)
                .map(|i| {
                    let e = rng.normal();
                    10.0 + sd[i] * (want[i] * f + (1.0 - want[i] * want[i]).sqrt() * e)
                })
                .collect();
            let total: f64 = s.iter().sum();
            for (i, st) in stays.iter_mut().enumerate() {
                st.observe(s[i], total - s[i]);
            }
        }
        let moments: Vec<StayMoments> = stays
            .iter()
            .map(|st| {
                let (sd, rest_sd) = st.std_devs();
                StayMoments {
                    sd,
                    corr_rest: st.correlation().expect("spread"),
                    rest_sd,
                }
            })
            .collect();
        let got = path_loadings(&moments);
        for i in 0..4 {
            assert!(
                (got[i] - want[i]).abs() < 0.05,
                "stage {i}: loading {:.3}, want {} (all: {got:?})",
                got[i],
                want[i]
            );
        }
        // Independent stages: no loading.
        let flat: Vec<StayMoments> = moments
            .iter()
            .map(|m| StayMoments {
                corr_rest: 0.0,
                ..*m
            })
            .collect();
        assert!(path_loadings(&flat).iter().all(|&l| l == 0.0));
    }
}
