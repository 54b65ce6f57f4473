//! Predicted quality of service and how it falls short of a quota.

use protocol::spec::Quota;
use serde::Serialize;
use std::fmt;

/// Throughput is met when within this relative tolerance of the requirement.
const RATE_TOLERANCE: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Qos {
    /// Replies per second.
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Standard deviation of the end-to-end latency.
    pub jitter_ms: f64,
    pub loss_pct: f64,
}

/// One way a plan misses its quota.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "quota", rename_all = "snake_case")]
pub enum Shortfall {
    Throughput {
        predicted_per_min: f64,
        required_per_min: f64,
    },
    Latency {
        p99_ms: f64,
        max_ms: f64,
    },
    Jitter {
        jitter_ms: f64,
        max_ms: f64,
    },
    Loss {
        loss_pct: f64,
        max_pct: f64,
    },
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::Throughput {
                predicted_per_min,
                required_per_min,
            } => {
                let (p, r) = apart(*predicted_per_min, *required_per_min, 0);
                write!(f, "throughput {p}/min < {r}/min required")
            }
            Shortfall::Latency { p99_ms, max_ms } => {
                write!(
                    f,
                    "p99 latency {} ms > {} ms quota",
                    three_digits(*p99_ms),
                    three_digits(*max_ms)
                )
            }
            Shortfall::Jitter { jitter_ms, max_ms } => {
                let (j, m) = apart(*jitter_ms, *max_ms, 1);
                write!(f, "jitter {j} ms > {m} ms quota")
            }
            Shortfall::Loss { loss_pct, max_pct } => {
                let (l, m) = apart(*loss_pct, *max_pct, 2);
                write!(f, "loss {l}% > {m}% quota")
            }
        }
    }
}

/// Two values that differ, printed with `decimals` digits after the point or as many more
/// (at most six) as it takes to tell them apart: not "300/min < 300/min" for 299.7 and 300.
fn apart(a: f64, b: f64, decimals: usize) -> (String, String) {
    let mut d = decimals;
    loop {
        let (x, y) = (format!("{a:.d$}"), format!("{b:.d$}"));
        if x != y || d >= 6 {
            return (x, y);
        }
        d += 1;
    }
}

/// `v` with three significant digits (at least none after the point, at most six): a
/// sub-millisecond quota is not printed as "0 ms".
fn three_digits(v: f64) -> String {
    let decimals = if v.is_finite() && v > 0.0 {
        (2.0 - v.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// Items per second the app must carry: max(quota throughput / 60, request frequency);
/// `None` when neither is given (as fast as the resources allow).
pub fn required_rate(quota: &Quota, request_frequency: Option<f64>) -> Option<f64> {
    let q = quota.throughput_per_min.map(|t| t / 60.0);
    match (q, request_frequency) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
    .filter(|r| r.is_finite() && *r > 0.0)
}

impl Qos {
    /// Every way this QoS misses `quota`, given the rate the app must carry.
    pub fn shortfalls(&self, quota: &Quota, required: Option<f64>) -> Vec<Shortfall> {
        let mut out = Vec::new();
        if let Some(r) = required {
            if self.throughput_per_s < r * (1.0 - RATE_TOLERANCE) {
                out.push(Shortfall::Throughput {
                    predicted_per_min: self.throughput_per_s * 60.0,
                    required_per_min: r * 60.0,
                });
            }
        }
        if let Some(m) = quota.max_latency_ms {
            if self.p99_ms.is_nan() || self.p99_ms > m {
                out.push(Shortfall::Latency {
                    p99_ms: self.p99_ms,
                    max_ms: m,
                });
            }
        }
        if let Some(m) = quota.max_jitter_ms {
            if self.jitter_ms.is_nan() || self.jitter_ms > m {
                out.push(Shortfall::Jitter {
                    jitter_ms: self.jitter_ms,
                    max_ms: m,
                });
            }
        }
        if let Some(m) = quota.max_loss_pct {
            if self.loss_pct.is_nan() || self.loss_pct > m + 1e-9 {
                out.push(Shortfall::Loss {
                    loss_pct: self.loss_pct,
                    max_pct: m,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_shortfall_shows_a_sub_millisecond_quota() {
        let s = Shortfall::Latency {
            p99_ms: 1234.4,
            max_ms: 0.001,
        };
        assert_eq!(s.to_string(), "p99 latency 1234 ms > 0.00100 ms quota");
        let s = Shortfall::Latency {
            p99_ms: 52.25,
            max_ms: 50.0,
        };
        assert_eq!(s.to_string(), "p99 latency 52.2 ms > 50.0 ms quota");
    }

    #[test]
    fn a_shortfall_close_to_its_quota_shows_the_digits_that_differ() {
        let s = Shortfall::Throughput {
            predicted_per_min: 299.7,
            required_per_min: 300.0,
        };
        assert_eq!(s.to_string(), "throughput 299.7/min < 300.0/min required");
        let s = Shortfall::Throughput {
            predicted_per_min: 120.0,
            required_per_min: 300.0,
        };
        assert_eq!(s.to_string(), "throughput 120/min < 300/min required");
        let s = Shortfall::Loss {
            loss_pct: 0.0004,
            max_pct: 0.0,
        };
        assert_eq!(s.to_string(), "loss 0.0004% > 0.0000% quota");
    }
}
