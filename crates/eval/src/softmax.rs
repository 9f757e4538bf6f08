//! Numerically stable log-softmax in f64.
//!
//! Logits come in as f32 (what every engine produces); every statistic is accumulated in f64 so that summing
//! hundreds of thousands of log-probabilities does not drift. The maximum is subtracted before `exp` so large
//! logits cannot overflow.

/// `ln Σ exp(row)` and the row's maximum, computed stably in f64.
pub(crate) fn log_sum_exp(row: &[f32]) -> (f64, f64) {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    (max + sum.ln(), max)
}

/// Log-probabilities of a logits row: `row[i] - ln Σ exp(row)`.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let (lse, _) = log_sum_exp(row);
    row.iter().map(|&v| f64::from(v) - lse).collect()
}

/// Index of the first maximum (ties go to the lowest id, as in llama.cpp).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_is_stable_and_normalised() {
        let lp = log_softmax(&[1000.0, 1000.0]);
        assert!((lp[0] - (0.5f64).ln()).abs() < 1e-12);
        let total: f64 = log_softmax(&[0.3, -2.0, 5.0]).iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn argmax_prefers_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
