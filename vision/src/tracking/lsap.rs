//! Rectangular linear sum assignment (minimum cost), the shortest-augmenting-path
//! algorithm of Crouse (2016) exactly as SciPy's `linear_sum_assignment` runs it,
//! tie-breaking included. DeepSORT's new track ids follow the order of the
//! unmatched detections, which depends on which of several equal-cost assignments
//! the solver returns; reproducing SciPy's choice is what makes our ids those of
//! `deep-sort-realtime` (docs/decisions.md). The optimum itself is checked against
//! `pathfinding`'s Kuhn–Munkres in the tests.

use super::TrackingError;

/// Minimum-cost assignment of a `rows × cols` matrix (row-major): the pairs
/// `(row, col)` sorted by row, `min(rows, cols)` of them.
pub fn linear_sum_assignment(
    cost: &[f64],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, TrackingError> {
    if cost.len() != rows * cols {
        return Err(TrackingError::Numeric(format!(
            "cost matrix of {} entries is not {rows}×{cols}",
            cost.len()
        )));
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    if cost.iter().any(|c| c.is_nan() || *c == f64::NEG_INFINITY) {
        return Err(TrackingError::Numeric(
            "cost matrix contains invalid numeric entries".into(),
        ));
    }
    let transpose = cols < rows;
    let (nr, nc, c): (usize, usize, Vec<f64>) = if transpose {
        let mut t = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = cost[i * cols + j];
            }
        }
        (cols, rows, t)
    } else {
        (rows, cols, cost.to_vec())
    };
    let mut s = Solver {
        nc,
        cost: &c,
        u: vec![0.0; nr],
        v: vec![0.0; nc],
        spc: vec![f64::INFINITY; nc],
        path: vec![usize::MAX; nc],
        col4row: vec![usize::MAX; nr],
        row4col: vec![usize::MAX; nc],
        sr: vec![false; nr],
        sc: vec![false; nc],
        remaining: vec![0; nc],
    };
    for cur in 0..nr {
        let (sink, min_val) = s
            .augmenting_path(cur)
            .ok_or_else(|| TrackingError::Numeric("cost matrix is infeasible".into()))?;
        s.u[cur] += min_val;
        for i in 0..nr {
            if s.sr[i] && i != cur {
                s.u[i] += min_val - s.spc[s.col4row[i]];
            }
        }
        for j in 0..nc {
            if s.sc[j] {
                s.v[j] -= min_val - s.spc[j];
            }
        }
        let mut j = sink;
        loop {
            let i = s.path[j];
            s.row4col[j] = i;
            std::mem::swap(&mut s.col4row[i], &mut j);
            if i == cur {
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = if transpose {
        (0..nr).map(|r| (s.col4row[r], r)).collect()
    } else {
        (0..nr).map(|r| (r, s.col4row[r])).collect()
    };
    pairs.sort_unstable();
    Ok(pairs)
}

struct Solver<'a> {
    nc: usize,
    cost: &'a [f64],
    u: Vec<f64>,
    v: Vec<f64>,
    /// Shortest path costs per column.
    spc: Vec<f64>,
    path: Vec<usize>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
    sr: Vec<bool>,
    sc: Vec<bool>,
    remaining: Vec<usize>,
}

impl Solver<'_> {
    /// The sink column of a shortest augmenting path from row `i`, and its cost.
    fn augmenting_path(&mut self, mut i: usize) -> Option<(usize, f64)> {
        let nc = self.nc;
        let mut min_val = 0.0;
        let mut num_remaining = nc;
        for it in 0..nc {
            self.remaining[it] = nc - it - 1;
        }
        self.sr.fill(false);
        self.sc.fill(false);
        self.spc.fill(f64::INFINITY);
        loop {
            let mut index = usize::MAX;
            let mut lowest = f64::INFINITY;
            self.sr[i] = true;
            for it in 0..num_remaining {
                let j = self.remaining[it];
                let r = min_val + self.cost[i * nc + j] - self.u[i] - self.v[j];
                if r < self.spc[j] {
                    self.path[j] = i;
                    self.spc[j] = r;
                }
                if self.spc[j] < lowest || (self.spc[j] == lowest && self.row4col[j] == usize::MAX)
                {
                    lowest = self.spc[j];
                    index = it;
                }
            }
            min_val = lowest;
            if min_val == f64::INFINITY || index == usize::MAX {
                return None;
            }
            let j = self.remaining[index];
            self.sc[j] = true;
            num_remaining -= 1;
            self.remaining[index] = self.remaining[num_remaining];
            if self.row4col[j] == usize::MAX {
                return Some((j, min_val));
            }
            i = self.row4col[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathfinding::kuhn_munkres::kuhn_munkres_min;
    use pathfinding::matrix::Matrix;

    fn total(cost: &[f64], cols: usize, pairs: &[(usize, usize)]) -> f64 {
        pairs.iter().map(|&(r, c)| cost[r * cols + c]).sum()
    }

    /// Kuhn–Munkres (pathfinding) on integer costs: the optimum to compare with.
    fn optimum(cost: &[i64], rows: usize, cols: usize) -> i64 {
        let (r, c, data) = if rows <= cols {
            (rows, cols, cost.to_vec())
        } else {
            let mut t = vec![0; rows * cols];
            for i in 0..rows {
                for j in 0..cols {
                    t[j * rows + i] = cost[i * cols + j];
                }
            }
            (cols, rows, t)
        };
        let m = Matrix::from_vec(r, c, data).unwrap();
        kuhn_munkres_min(&m).0
    }

    #[test]
    fn optimal_on_random_rectangular_matrices_like_kuhn_munkres() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..300 {
            let rows = 1 + (next() % 7) as usize;
            let cols = 1 + (next() % 7) as usize;
            // Few distinct values: many ties.
            let ints: Vec<i64> = (0..rows * cols).map(|_| (next() % 5) as i64).collect();
            let cost: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
            let pairs = linear_sum_assignment(&cost, rows, cols).unwrap();
            assert_eq!(pairs.len(), rows.min(cols), "case {case}");
            let mut seen_r = std::collections::HashSet::new();
            let mut seen_c = std::collections::HashSet::new();
            for &(r, c) in &pairs {
                assert!(seen_r.insert(r) && seen_c.insert(c), "case {case}");
            }
            assert_eq!(
                total(&cost, cols, &pairs) as i64,
                optimum(&ints, rows, cols),
                "case {case}: {rows}x{cols} {ints:?}"
            );
        }
    }

    #[test]
    fn ties_are_broken_as_scipy_does() {
        // scipy.optimize.linear_sum_assignment(np.full((1, 3), 0.7)) -> ([0], [0]) and
        // np.full((3, 1), 0.7) -> ([0], [0]); [[1, 1], [1, 1]] -> rows [0, 1], cols [0, 1].
        assert_eq!(
            linear_sum_assignment(&[0.7; 3], 1, 3).unwrap(),
            vec![(0, 0)]
        );
        assert_eq!(
            linear_sum_assignment(&[0.7; 3], 3, 1).unwrap(),
            vec![(0, 0)]
        );
        assert_eq!(
            linear_sum_assignment(&[1.0; 4], 2, 2).unwrap(),
            vec![(0, 0), (1, 1)]
        );
    }

    #[test]
    fn nan_is_an_error() {
        assert!(linear_sum_assignment(&[f64::NAN, 1.0], 1, 2).is_err());
        assert!(linear_sum_assignment(&[1.0, 2.0, 3.0], 2, 2).is_err());
    }
}
