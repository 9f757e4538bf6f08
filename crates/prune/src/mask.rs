//! Choosing which weights to prune from their scores: the lowest scores go, compared over the whole
//! matrix, within each output row, or within each group of `M` input columns (`N:M` sparsity).
//!
//! Everything here is plain slices so that the selection rules are tested on their own, apart from
//! the methods that produce the scores.

use rayon::prelude::*;

use crate::error::{PruneError, Result};

/// An `N:M` pattern: in each run of `M` consecutive input columns of a row, `N` weights are pruned
/// (2:4 prunes two of every four, the pattern sparse tensor cores accelerate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmPattern {
    /// Weights pruned per group.
    pub n: usize,
    /// Group length.
    pub m: usize,
}

impl NmPattern {
    /// A pattern pruning `n` of every `m`; `0 < n < m`.
    pub fn new(n: usize, m: usize) -> Result<Self> {
        if n == 0 || n >= m {
            return Err(PruneError::BadPattern { n, m });
        }
        Ok(NmPattern { n, m })
    }

    /// The fraction of weights the pattern prunes.
    pub fn sparsity(&self) -> f64 {
        self.n as f64 / self.m as f64
    }

    /// Checks that the pattern tiles a row of `width` input columns of `tensor`.
    pub fn check_width(&self, tensor: &str, width: usize) -> Result<()> {
        if !width.is_multiple_of(self.m) {
            return Err(PruneError::PatternWidth {
                tensor: tensor.to_string(),
                n: self.n,
                m: self.m,
                width,
            });
        }
        Ok(())
    }
}

impl std::str::FromStr for NmPattern {
    type Err = PruneError;

    /// Parses `N:M`, e.g. `2:4`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || PruneError::BadSpec {
            spec: s.to_string(),
            reason: "expected N:M with 0 < N < M, e.g. 2:4".into(),
        };
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let n = n.trim().parse().map_err(|_| bad())?;
        let m = m.trim().parse().map_err(|_| bad())?;
        NmPattern::new(n, m)
    }
}

impl std::fmt::Display for NmPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

/// Which scores are compared with each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// The lowest `⌊sparsity · rows · cols⌋` scores of the whole matrix (magnitude pruning's rule).
    WholeMatrix(f64),
    /// The lowest `⌊sparsity · cols⌋` scores of each output row (Wanda's rule: weights compete only
    /// with the weights that feed the same output).
    PerRow(f64),
    /// The lowest `N` scores of every `M` consecutive columns of each row.
    Pattern(NmPattern),
}

/// Orders scores ascending, ties by position, NaN last: a total order so masks are deterministic.
fn ascending(scores: &[f32]) -> impl Fn(&usize, &usize) -> std::cmp::Ordering + '_ {
    move |&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
}

/// Marks the `k` lowest of `scores` in `mask` (true = prune).
fn mark_lowest(scores: &[f32], k: usize, mask: &mut [bool]) {
    if k == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, ascending(scores));
    }
    for &i in &order[..k.min(order.len())] {
        mask[i] = true;
    }
}

/// The prune mask (`true` = prune) of a `rows × cols` row-major score matrix under `selection`.
///
/// # Panics
/// If `scores.len() != rows * cols`, or a pattern's `M` does not divide `cols` (check with
/// [`NmPattern::check_width`] first).
pub fn prune_mask(scores: &[f32], rows: usize, cols: usize, selection: Selection) -> Vec<bool> {
    assert_eq!(scores.len(), rows * cols, "score matrix length");
    let mut mask = vec![false; scores.len()];
    if cols == 0 {
        return mask;
    }
    match selection {
        Selection::WholeMatrix(sparsity) => {
            let k = (sparsity * scores.len() as f64).floor() as usize;
            mark_lowest(scores, k, &mut mask);
        }
        Selection::PerRow(sparsity) => {
            let k = (sparsity * cols as f64).floor() as usize;
            mask.par_chunks_mut(cols)
                .zip(scores.par_chunks(cols))
                .for_each(|(m, s)| mark_lowest(s, k, m));
        }
        Selection::Pattern(p) => {
            assert_eq!(cols % p.m, 0, "pattern {p} does not tile {cols} columns");
            mask.par_chunks_mut(p.m)
                .zip(scores.par_chunks(p.m))
                .for_each(|(m, s)| mark_lowest(s, p.n, m));
        }
    }
    mask
}

/// Zeroes the weights the mask marks.
pub fn apply_mask(weights: &mut [f32], mask: &[bool]) {
    for (w, &m) in weights.iter_mut().zip(mask) {
        if m {
            *w = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_refuse_nonsense() {
        assert_eq!(
            "2:4".parse::<NmPattern>().unwrap(),
            NmPattern { n: 2, m: 4 }
        );
        assert_eq!(" 4 : 8".parse::<NmPattern>().unwrap().sparsity(), 0.5);
        for bad in ["4:4", "0:4", "5:4", "2", "a:b", "2:4:8"] {
            assert!(bad.parse::<NmPattern>().is_err(), "{bad}");
        }
        let p = NmPattern::new(2, 4).unwrap();
        assert!(p.check_width("w", 12).is_ok());
        assert!(matches!(
            p.check_width("w", 10),
            Err(PruneError::PatternWidth { width: 10, .. })
        ));
    }

    #[test]
    fn whole_matrix_prunes_exactly_the_lowest() {
        let scores = [5.0, 1.0, 3.0, 2.0, 8.0, 0.5];
        let mask = prune_mask(&scores, 2, 3, Selection::WholeMatrix(0.5));
        assert_eq!(mask, [false, true, false, true, false, true]);
    }

    #[test]
    fn per_row_prunes_the_same_count_in_every_row() {
        let scores = [1.0, 9.0, 8.0, 7.0, 0.1, 0.2, 0.3, 0.4];
        let mask = prune_mask(&scores, 2, 4, Selection::PerRow(0.5));
        assert_eq!(mask, [true, false, false, true, true, true, false, false]);
    }

    #[test]
    fn nm_masks_are_exact_in_every_group() {
        let (rows, cols) = (7, 24);
        let scores: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        for (n, m) in [(2, 4), (4, 8), (1, 4), (3, 8)] {
            let p = NmPattern::new(n, m).unwrap();
            let mask = prune_mask(&scores, rows, cols, Selection::Pattern(p));
            for (g, s) in mask.chunks(m).zip(scores.chunks(m)) {
                assert_eq!(g.iter().filter(|&&x| x).count(), n);
                let kept_min = g.iter().zip(s).filter(|(m, _)| !**m).map(|(_, v)| *v);
                let pruned_max = g.iter().zip(s).filter(|(m, _)| **m).map(|(_, v)| *v);
                let lo = kept_min.fold(f32::INFINITY, f32::min);
                let hi = pruned_max.fold(f32::NEG_INFINITY, f32::max);
                assert!(hi <= lo, "{n}:{m} kept a lower score than it pruned");
            }
        }
    }

    #[test]
    fn ties_and_nan_are_deterministic() {
        let scores = [1.0, f32::NAN, 1.0, 1.0];
        let mask = prune_mask(&scores, 1, 4, Selection::PerRow(0.5));
        assert_eq!(mask, [true, false, true, false]);
        assert_eq!(
            prune_mask(&scores, 1, 4, Selection::PerRow(0.0)),
            [false; 4]
        );
    }
}
