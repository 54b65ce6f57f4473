//! DeepSORT's Kalman filter: an 8-dimensional constant-velocity model of a box's
//! centre `(x, y)`, aspect ratio `a` (width / height) and height `h`, with their
//! velocities; the box `(x, y, a, h)` is observed directly. Noise scales with the
//! box height as in DeepSORT (position 1/20, velocity 1/160 of `h`).

// Small fixed-size matrix algebra reads clearest with index loops.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use super::TrackingError;

/// 0.95 quantile of the chi-square distribution with N degrees of freedom (N = index),
/// the Mahalanobis gating threshold.
pub const CHI2INV95: [f64; 10] = [
    0.0, 3.8415, 5.9915, 7.8147, 9.4877, 11.070, 12.592, 14.067, 15.507, 16.919,
];

const STD_POS: f64 = 1.0 / 20.0;
const STD_VEL: f64 = 1.0 / 160.0;

type M8 = [[f64; 8]; 8];
type M4 = [[f64; 4]; 4];

/// A track's state distribution: mean and covariance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gaussian {
    pub mean: [f64; 8],
    pub cov: M8,
}

fn diag8(std: [f64; 8]) -> M8 {
    let mut m = [[0.0; 8]; 8];
    for (i, s) in std.iter().enumerate() {
        m[i][i] = s * s;
    }
    m
}

impl Gaussian {
    /// A new track from an unassociated measurement `(x, y, a, h)`; velocities 0.
    pub fn initiate(z: [f64; 4]) -> Gaussian {
        let h = z[3];
        let mut mean = [0.0; 8];
        mean[..4].copy_from_slice(&z);
        let p = 2.0 * STD_POS * h;
        let v = 10.0 * STD_VEL * h;
        Gaussian {
            mean,
            cov: diag8([p, p, 1e-2, p, v, v, 1e-5, v]),
        }
    }

    /// One time step forward (dt = 1): x += v, P = F P Fᵀ + Q.
    pub fn predict(&mut self) {
        let h = self.mean[3];
        let (p, v) = (STD_POS * h, STD_VEL * h);
        let q = diag8([p, p, 1e-2, p, v, v, 1e-5, v]);
        for i in 0..4 {
            self.mean[i] += self.mean[i + 4];
        }
        // F P Fᵀ with F = [[I, I], [0, I]]: rows then columns i += i+4.
        let mut fp = self.cov;
        for i in 0..4 {
            for j in 0..8 {
                fp[i][j] += self.cov[i + 4][j];
            }
        }
        let mut fpf = fp;
        for row in fpf.iter_mut() {
            for j in 0..4 {
                row[j] += row[j + 4];
            }
        }
        for i in 0..8 {
            for j in 0..8 {
                self.cov[i][j] = fpf[i][j] + q[i][j];
            }
        }
    }

    /// The distribution in measurement space: H x and H P Hᵀ + R.
    pub fn project(&self) -> ([f64; 4], M4) {
        let h = self.mean[3];
        let p = STD_POS * h;
        let r = [p * p, p * p, 1e-1 * 1e-1, p * p];
        let mut s = [[0.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = self.cov[i][j];
            }
            s[i][i] += r[i];
        }
        let mut m = [0.0; 4];
        m.copy_from_slice(&self.mean[..4]);
        (m, s)
    }

    /// The correction step with measurement `z`.
    pub fn update(&mut self, z: [f64; 4]) -> Result<(), TrackingError> {
        let (pm, s) = self.project();
        let l = cholesky(&s)?;
        // K = P Hᵀ S⁻¹ (8×4); P Hᵀ is the first four columns of P.
        let mut k = [[0.0; 4]; 8];
        for (i, krow) in k.iter_mut().enumerate() {
            let mut b = [0.0; 4];
            b.copy_from_slice(&self.cov[i][..4]);
            *krow = cho_solve(&l, b);
        }
        let innovation: Vec<f64> = (0..4).map(|i| z[i] - pm[i]).collect();
        for (i, krow) in k.iter().enumerate() {
            self.mean[i] += (0..4).map(|j| krow[j] * innovation[j]).sum::<f64>();
        }
        // P -= K S Kᵀ
        let mut ks = [[0.0; 4]; 8];
        for i in 0..8 {
            for j in 0..4 {
                ks[i][j] = (0..4).map(|m| k[i][m] * s[m][j]).sum();
            }
        }
        for i in 0..8 {
            for j in 0..8 {
                self.cov[i][j] -= (0..4).map(|m| ks[i][m] * k[j][m]).sum::<f64>();
            }
        }
        Ok(())
    }

    /// Squared Mahalanobis distance of each measurement to this distribution (over
    /// `x, y` only when `only_position`).
    pub fn gating_distance(
        &self,
        measurements: &[[f64; 4]],
        only_position: bool,
    ) -> Result<Vec<f64>, TrackingError> {
        let (m, s) = self.project();
        let dims = if only_position { 2 } else { 4 };
        let mut sub = [[0.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                sub[i][j] = if i < dims && j < dims {
                    s[i][j]
                } else if i == j {
                    1.0
                } else {
                    0.0
                };
            }
        }
        let l = cholesky(&sub)?;
        Ok(measurements
            .iter()
            .map(|z| {
                let mut d = [0.0; 4];
                for i in 0..dims {
                    d[i] = z[i] - m[i];
                }
                let y = forward(&l, d);
                y[..dims].iter().map(|v| v * v).sum()
            })
            .collect())
    }
}

/// Lower Cholesky factor of a symmetric positive-definite 4×4 matrix.
fn cholesky(a: &M4) -> Result<M4, TrackingError> {
    let mut l = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return Err(TrackingError::Numeric(format!(
                        "the innovation covariance is not positive definite (pivot {d})"
                    )));
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Ok(l)
}

/// Solve L y = b.
fn forward(l: &M4, b: [f64; 4]) -> [f64; 4] {
    let mut y = [0.0; 4];
    for i in 0..4 {
        let s: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i][i];
    }
    y
}

/// Solve (L Lᵀ) x = b.
fn cho_solve(l: &M4, b: [f64; 4]) -> [f64; 4] {
    let y = forward(l, b);
    let mut x = [0.0; 4];
    for i in (0..4).rev() {
        let s: f64 = (i + 1..4).map(|k| l[k][i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i][i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_moving_at_constant_speed_is_predicted_where_it_goes() {
        let mut g = Gaussian::initiate([100.0, 50.0, 0.5, 40.0]);
        for t in 1..=10 {
            g.predict();
            g.update([100.0 + 4.0 * t as f64, 50.0 - 2.0 * t as f64, 0.5, 40.0])
                .unwrap();
        }
        g.predict();
        // Learned velocity: the next centre is close to (144, 28).
        assert!((g.mean[0] - 144.0).abs() < 1.0, "x {}", g.mean[0]);
        assert!((g.mean[1] - 28.0).abs() < 1.0, "y {}", g.mean[1]);
        assert!((g.mean[4] - 4.0).abs() < 0.5, "vx {}", g.mean[4]);
        // Covariance stays symmetric.
        for i in 0..8 {
            for j in 0..8 {
                assert!((g.cov[i][j] - g.cov[j][i]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn gating_rejects_a_far_measurement_and_keeps_a_near_one() {
        let mut g = Gaussian::initiate([100.0, 100.0, 1.0, 50.0]);
        g.predict();
        let d = g
            .gating_distance(
                &[[101.0, 99.0, 1.0, 50.0], [300.0, 100.0, 1.0, 50.0]],
                false,
            )
            .unwrap();
        assert!(d[0] < CHI2INV95[4], "near {}", d[0]);
        assert!(d[1] > CHI2INV95[4], "far {}", d[1]);
    }

    #[test]
    fn a_degenerate_box_is_an_error_not_a_panic() {
        let mut g = Gaussian::initiate([0.0, 0.0, 0.0, 0.0]);
        g.cov = [[0.0; 8]; 8];
        assert!(g.update([1.0, 1.0, 1.0, 1.0]).is_err());
    }
}
