//! OWL: non-uniform layer sparsity from outlier ratios (Yin et al., *Outlier Weighed Layerwise
//! Sparsity*, 2024).
//!
//! Layers with many outlier features (weights whose Wanda score `|W|·‖x‖` exceeds `M` times the
//! layer's mean score) suffer most from pruning; OWL gives them lower sparsity and the others more,
//! keeping the mean at the target. A layer's outlier ratio is measured on the dense model, layer by
//! layer as Wanda sees it; ratios are scaled to a spread of `2λ` around the target, as in the
//! paper's code.

use shuku_model::{Calibration, CalibrationOptions, Llama};

use crate::error::{PruneError, Result};
use crate::layerwise::LayerwisePass;
use crate::unstructured::wanda_scores;
use crate::weights::read_weight;

/// OWL's two hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Owl {
    /// A score is an outlier above `m` times its layer's mean (the paper's 5).
    pub m: f64,
    /// Largest deviation of a layer's sparsity from the target (the paper's 0.08).
    pub lambda: f64,
}

impl Default for Owl {
    fn default() -> Self {
        Owl {
            m: 5.0,
            lambda: 0.08,
        }
    }
}

impl Owl {
    /// Refuses settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        if !(self.m.is_finite() && self.m > 0.0 && (0.0..1.0).contains(&self.lambda)) {
            return Err(PruneError::BadSpec {
                spec: format!("owl m {} lambda {}", self.m, self.lambda),
                reason: "m must be positive and lambda in [0, 1)".into(),
            });
        }
        Ok(())
    }
}

/// Fraction of the scores above `m` times their mean.
fn outlier_ratio(scores: &[f32], m: f64) -> f64 {
    let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len().max(1) as f64;
    let above = scores.iter().filter(|&&s| f64::from(s) > m * mean).count();
    above as f64 / scores.len().max(1) as f64
}

/// Layer sparsities from outlier ratios: scaled to `[0, 2λ]`, centred on the target keep ratio.
pub fn sparsities_from_ratios(ratios: &[f64], target: f64, lambda: f64) -> Vec<f64> {
    let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![target; ratios.len()];
    }
    let scaled: Vec<f64> = ratios
        .iter()
        .map(|r| (r - lo) / (hi - lo) * 2.0 * lambda)
        .collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    scaled
        .iter()
        .map(|s| (1.0 - (s - mean + (1.0 - target))).clamp(0.0, 0.99))
        .collect()
}

/// Each layer's sparsity for a mean of `target`, from outlier ratios of the dense model on `samples`.
pub fn owl_layer_sparsities(
    model: &Llama,
    samples: &[Vec<u32>],
    target: f64,
    owl: &Owl,
) -> Result<Vec<f64>> {
    let mut pass = LayerwisePass::new(model, samples, "owl")?;
    let mut ratios = Vec::new();
    for layer in 0..model.config().num_hidden_layers() {
        let mut cal = Calibration::default();
        pass.advance(Some(&mut cal.observer(CalibrationOptions::default())))?;
        let mut scores = Vec::new();
        for name in model.block_linear_names(layer)?.concat() {
            let stats = cal
                .get(&name)
                .ok_or(PruneError::NoCalibration { method: "owl" })?;
            let (w, _, cols) = read_weight(model, &name)?;
            scores.extend(wanda_scores(&w, cols, &stats.sum_sq));
        }
        ratios.push(outlier_ratio(&scores, owl.m));
    }
    Ok(sparsities_from_ratios(&ratios, target, owl.lambda))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsities_keep_the_mean_and_spare_outlier_layers() {
        let s = sparsities_from_ratios(&[0.01, 0.05, 0.03], 0.5, 0.08);
        let mean = s.iter().sum::<f64>() / 3.0;
        assert!((mean - 0.5).abs() < 1e-12, "{s:?}");
        assert!(s[1] < s[2] && s[2] < s[0], "{s:?}");
        assert!((s[0] - s[1] - 0.16).abs() < 1e-12, "spread 2λ: {s:?}");
        assert_eq!(sparsities_from_ratios(&[0.2, 0.2], 0.5, 0.08), [0.5, 0.5]);
    }

    #[test]
    fn outliers_are_counted_against_the_mean() {
        let mut scores = vec![1.0f32; 99];
        scores.push(1000.0);
        assert!((outlier_ratio(&scores, 5.0) - 0.01).abs() < 1e-12);
    }
}
