//! How many units (heads, groups of heads, FFN channels) each layer gives up so that the model as a
//! whole loses the asked-for share.
//!
//! A layer's units are removed lowest score first, so what is decided here is only the *count* per
//! layer. Two policies:
//! * [`Scope::Uniform`]: every layer loses as nearly the same fraction as whole units allow. The
//!   total is met across layers, so a model of four 4-head layers asked for 25 % of its heads loses
//!   four heads (two layers lose two), rather than every layer losing half (rounding per layer).
//! * [`Scope::Global`]: units compete across layers by their score divided by their layer's mean
//!   unit score (raw scores differ in scale from layer to layer), so unimportant layers lose more.
//!
//! Every layer keeps at least its minimum; a share that cannot be reached otherwise is an error
//! naming the first layer that would be emptied.

use crate::error::{PruneError, Result};

/// Whether layers lose the same fraction or compete for removals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The same fraction of every layer.
    #[default]
    Uniform,
    /// Layers compete by normalised importance.
    Global,
}

/// One layer's removable units.
#[derive(Debug, Clone)]
pub struct LayerUnits {
    /// Unit scores, ascending (the order they would go in).
    pub scores: Vec<f64>,
    /// Elements (heads, channels) per unit.
    pub size: usize,
    /// Units the layer must keep.
    pub min_keep: usize,
}

impl LayerUnits {
    fn total(&self) -> usize {
        self.scores.len() * self.size
    }

    fn mean(&self) -> f64 {
        let m = self.scores.iter().sum::<f64>() / self.scores.len().max(1) as f64;
        if m > 0.0 {
            m
        } else {
            1.0
        }
    }
}

/// Units to remove per layer so that `ratio` of all elements go. `what` names the elements in
/// errors.
pub fn allocate(
    layers: &[LayerUnits],
    ratio: f64,
    scope: Scope,
    what: &'static str,
) -> Result<Vec<usize>> {
    let total: usize = layers.iter().map(LayerUnits::total).sum();
    let target = (ratio * total as f64).round() as usize;
    let mut removed = vec![0usize; layers.len()];
    let mut done = 0usize;
    let means: Vec<f64> = layers.iter().map(LayerUnits::mean).collect();
    while done < target {
        let candidates = layers
            .iter()
            .enumerate()
            .filter(|(l, u)| removed[*l] + u.min_keep < u.scores.len());
        let key = |l: usize, u: &LayerUnits| -> (f64, f64) {
            let next = u.scores[removed[l]] / means[l];
            match scope {
                Scope::Uniform => ((removed[l] + 1) as f64 / u.scores.len() as f64, next),
                Scope::Global => (next, 0.0),
            }
        };
        let best = candidates.min_by(|(a, ua), (b, ub)| {
            key(*a, ua)
                .partial_cmp(&key(*b, ub))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        let Some((l, u)) = best else {
            let layer = layers
                .iter()
                .position(|u| u.scores.len() <= u.min_keep)
                .unwrap_or(0);
            return Err(PruneError::RemovesEverything { layer, what, ratio });
        };
        // Stop when one more unit would overshoot the target by more than it is short.
        if done + u.size > target && done + u.size - target > target - done {
            break;
        }
        removed[l] += 1;
        done += u.size;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(scores: &[f64], size: usize) -> LayerUnits {
        LayerUnits {
            scores: scores.to_vec(),
            size,
            min_keep: 1,
        }
    }

    #[test]
    fn uniform_meets_the_total_across_layers() {
        // Four layers of two 2-head units: a quarter of 16 heads is two units.
        let layers: Vec<_> = (0..4).map(|l| units(&[1.0 + l as f64, 10.0], 2)).collect();
        let r = allocate(&layers, 0.25, Scope::Uniform, "heads").unwrap();
        assert_eq!(r.iter().sum::<usize>(), 2);
        assert!(r.iter().all(|&k| k <= 1));
        // The layers whose next unit matters least (relative to the layer) go first.
        assert_eq!(r, [1, 1, 0, 0]);
    }

    #[test]
    fn uniform_spreads_evenly() {
        let layers: Vec<_> = (0..3).map(|_| units(&[1.0; 10], 1)).collect();
        let r = allocate(&layers, 0.3, Scope::Uniform, "channels").unwrap();
        assert_eq!(r, [3, 3, 3]);
    }

    #[test]
    fn global_takes_from_the_least_important_layer() {
        let layers = vec![
            units(&[0.1, 0.2, 10.0, 10.0], 1),
            units(&[5.0, 5.0, 5.0, 5.0], 1),
        ];
        let r = allocate(&layers, 0.25, Scope::Global, "channels").unwrap();
        assert_eq!(r, [2, 0]);
    }

    #[test]
    fn emptying_a_layer_is_an_error() {
        let layers = vec![units(&[1.0, 2.0], 2), units(&[1.0, 2.0], 2)];
        for scope in [Scope::Uniform, Scope::Global] {
            assert!(matches!(
                allocate(&layers, 0.9, scope, "heads"),
                Err(PruneError::RemovesEverything { what: "heads", .. })
            ));
        }
        assert_eq!(
            allocate(&layers, 0.0, Scope::Uniform, "heads").unwrap(),
            [0, 0]
        );
    }
}
