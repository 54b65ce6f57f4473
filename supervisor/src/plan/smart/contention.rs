//! CPU contention: every stage replica is a process, and the processes of an app share
//! the granted cores. A process that would be busy a fraction `u` of the time on a core
//! of its own (its busy fraction: arrival rate × service time per item) runs slower when
//! more threads are runnable than there are cores.
//!
//! Model (processor sharing with independent processes): while process p works, the
//! other processes' runnable threads K_p are a sum of independent Bernoulli terms, process
//! j being runnable (working or waiting for a core) a fraction q_j = min(1, u_j·f_j) of the
//! time with n_j threads. Fair sharing of C cores among n_p + K_p threads stretches p's
//! work by f_p = E[max(1, (n_p + K_p)/C)]
//!            = (n_p + E[K_p])/C + Σ_{k < C − n_p} (1 − (n_p + k)/C)·P(K_p = k).
//! q depends on f, so the factors are the least fixed point, reached by iterating from
//! f = 1 (the iteration is monotone and bounded by (n_p + Σ n_j)/C). A process is
//! stable when u_p·f_p < 1; the sum of busy fractions bounds what the cores can carry.

/// One competitor for the cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuLoad {
    /// Threads runnable while the process has work (a stage: its intra-op threads).
    pub(crate) threads: u32,
    /// Busy fraction on a core of its own (work seconds per second).
    pub(crate) busy: f64,
}

const MAX_ITERATIONS: usize = 200;
const TOLERANCE: f64 = 1e-9;

/// Product of the polynomials (1 − q) + q·x^n, truncated to degree `m`.
fn times(poly: &[f64], q: f64, n: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m + 1];
    for (k, &c) in poly.iter().enumerate() {
        out[k] += c * (1.0 - q);
        if k + n <= m {
            out[k + n] += c * q;
        }
    }
    out
}

/// How contention stretches one load's service times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slowdown {
    /// Mean factor f = E[F].
    pub(crate) mean: f64,
    /// Squared coefficient of variation of the factor, E[F²]/E[F]² − 1, of the
    /// instantaneous sharing: the service-time variability contention adds (an upper
    /// bound, as a job longer than the others' busy spells averages it out).
    pub(crate) scv: f64,
}

impl Slowdown {
    pub(crate) const NONE: Slowdown = Slowdown {
        mean: 1.0,
        scv: 0.0,
    };
}

/// The slowdown of every load when they share `cores` cores (see the module doc).
/// Loads with no work (or no threads) get none and slow nobody down.
pub(crate) fn slowdowns(loads: &[CpuLoad], cores: f64) -> Vec<Slowdown> {
    let n = loads.len();
    let mut out = vec![Slowdown::NONE; n];
    let active = |l: &CpuLoad| l.busy > 0.0 && l.threads > 0;
    let threads: u32 = loads.iter().filter(|l| active(l)).map(|l| l.threads).sum();
    if cores.is_nan() || cores <= 0.0 || f64::from(threads) <= cores + 1e-12 {
        return out; // never more runnable threads than cores
    }
    // P(K = k) is needed for k < C − n_p ≤ C only.
    let m = cores.ceil().max(1.0) as usize;
    for _ in 0..MAX_ITERATIONS {
        let q: Vec<f64> = loads
            .iter()
            .zip(&out)
            .map(|(l, s)| {
                if active(l) {
                    (l.busy * s.mean).min(1.0)
                } else {
                    0.0
                }
            })
            .collect();
        // Prefix and suffix products of the runnable-thread distributions.
        let mut prefix = vec![vec![0.0; m + 1]; n + 1];
        prefix[0][0] = 1.0;
        for j in 0..n {
            prefix[j + 1] = times(&prefix[j], q[j], loads[j].threads as usize, m);
        }
        let mut suffix = vec![vec![0.0; m + 1]; n + 1];
        suffix[n][0] = 1.0;
        for j in (0..n).rev() {
            suffix[j] = times(&suffix[j + 1], q[j], loads[j].threads as usize, m);
        }
        let (mean_all, var_all) = loads.iter().zip(&q).fold((0.0, 0.0), |(m1, v1), (l, qj)| {
            let t = f64::from(l.threads);
            (m1 + t * qj, v1 + t * t * qj * (1.0 - qj))
        });
        let mut change: f64 = 0.0;
        for p in 0..n {
            if !active(&loads[p]) {
                continue;
            }
            // F = max(1, (n_p + K)/C): its first two moments, the unbounded part
            // (n_p + K)/C corrected where n_p + K < C.
            let np = f64::from(loads[p].threads);
            let t = np / cores;
            let mean_k = mean_all - np * q[p];
            let var_k = var_all - np * np * q[p] * (1.0 - q[p]);
            let mut f1 = (np + mean_k) / cores;
            let mut f2 = ((np + mean_k).powi(2) + var_k.max(0.0)) / (cores * cores);
            for (a, pa) in prefix[p].iter().enumerate() {
                for (b, sb) in suffix[p + 1].iter().enumerate().take(m + 1 - a) {
                    let x = t + (a + b) as f64 / cores;
                    if x < 1.0 {
                        f1 += (1.0 - x) * pa * sb;
                        f2 += (1.0 - x * x) * pa * sb;
                    }
                }
            }
            let f1 = f1.max(1.0);
            change = change.max((f1 - out[p].mean).abs());
            out[p] = Slowdown {
                mean: f1,
                scv: (f2 / (f1 * f1) - 1.0).max(0.0),
            };
        }
        if change <= TOLERANCE {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(threads: u32, busy: f64) -> CpuLoad {
        CpuLoad { threads, busy }
    }

    #[test]
    fn no_slowdown_while_threads_fit_the_cores() {
        let f = slowdowns(&[load(1, 0.9), load(1, 0.9)], 2.0);
        assert_eq!(f, vec![Slowdown::NONE; 2]);
        let f = slowdowns(&[load(1, 0.5), load(0, 0.9), load(1, 0.0)], 1.0);
        assert_eq!(f, vec![Slowdown::NONE; 3]);
    }

    #[test]
    fn two_processes_on_one_core_match_the_closed_form() {
        // f = 1 + q_other = 1 + u·f (symmetric) ⇒ f = 1/(1 − u).
        // F is 1 or 2: E[F²] = 1 + 3q, so scv = (1 + 3q)/f² − 1.
        for u in [0.1, 0.25, 0.4] {
            let f = slowdowns(&[load(1, u), load(1, u)], 1.0);
            for x in f {
                let want = 1.0 / (1.0 - u);
                assert!((x.mean - want).abs() < 1e-6, "u {u}: {x:?}");
                let q = u * want;
                let scv = (1.0 + 3.0 * q) / (want * want) - 1.0;
                assert!((x.scv - scv).abs() < 1e-6, "u {u}: {x:?}");
            }
        }
    }

    #[test]
    fn three_processes_on_two_cores_match_the_closed_form() {
        // Process p is slowed only when both others are runnable: f = 1 + q²/2 with
        // q = u·f (symmetric), i.e. the root of u²f² − 2f + 2 = 0 nearest 1.
        let u: f64 = 0.5;
        let want = (2.0 - (4.0 - 8.0 * u * u).sqrt()) / (2.0 * u * u);
        let f = slowdowns(&[load(1, u), load(1, u), load(1, u)], 2.0);
        for x in f {
            assert!((x.mean - want).abs() < 1e-6, "{x:?} vs {want}");
        }
    }

    #[test]
    fn an_overloaded_set_saturates_at_fair_share() {
        // Busier than the core can carry: everyone runnable all the time, f = 3/1.
        let f = slowdowns(&[load(1, 0.9), load(1, 0.9), load(1, 0.9)], 1.0);
        for x in f {
            assert!((x.mean - 3.0).abs() < 1e-6 && x.scv < 1e-9, "{x:?}");
        }
    }

    #[test]
    fn a_process_with_more_threads_waits_more() {
        // On 2 cores the 2-thread process is slowed whenever anyone else is runnable
        // (f = 1 + q), a 1-thread one only when 2 more threads are.
        let f: Vec<f64> = slowdowns(&[load(2, 0.3), load(1, 0.3), load(1, 0.3)], 2.0)
            .iter()
            .map(|s| s.mean)
            .collect();
        assert!(f[1] > 1.0 && (f[1] - f[2]).abs() < 1e-12);
        assert!(f[0] > f[1], "{f:?}");
        let q = 0.3 * f[1];
        assert!((f[0] - (1.0 + q)).abs() < 1e-6, "{f:?}");
    }
}
