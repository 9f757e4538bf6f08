//! Block influence (Men et al., *ShortGPT*, 2024): how much a decoder layer changes the hidden
//! states that pass through it, `1 − mean cos(x_in, x_out)` over calibration tokens. A layer whose
//! output points where its input did adds little, and is the first to remove.

use candle_core::{Tensor, D};
use shuku_model::Llama;

use crate::error::Result;
use crate::layerwise::LayerwisePass;

/// Summed cosine similarity of matching rows of `a` and `b` (`[N, H]`), and `N`.
fn cosine_sum(a: &Tensor, b: &Tensor) -> Result<(f64, usize)> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    let cos = (dot / (na * nb)?.clamp(1e-12, f64::MAX)?)?;
    let n = cos.dim(0)?;
    Ok((f64::from(cos.sum_all()?.to_scalar::<f32>()?), n))
}

/// Block influence of every layer of `model` on `samples`.
pub fn block_influence(model: &Llama, samples: &[Vec<u32>]) -> Result<Vec<f64>> {
    let mut pass = LayerwisePass::new(model, samples, "block influence")?;
    let mut influence = Vec::new();
    for _ in 0..model.config().num_hidden_layers() {
        let before: Vec<Tensor> = pass.hidden().cloned().collect();
        pass.advance(None)?;
        let (mut sum, mut n) = (0.0, 0);
        for (a, b) in before.iter().zip(pass.hidden()) {
            let (s, k) = cosine_sum(a, b)?;
            sum += s;
            n += k;
        }
        influence.push(1.0 - sum / n.max(1) as f64);
    }
    Ok(influence)
}

/// The `count` layers of lowest influence, ascending by index.
pub fn least_influential(influence: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(a.cmp(&b)));
    let mut out: Vec<usize> = order.into_iter().take(count).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_influential_picks_the_lowest() {
        assert_eq!(least_influential(&[0.3, 0.1, 0.5, 0.05], 2), [1, 3]);
        assert!(least_influential(&[0.3], 0).is_empty());
    }
}
