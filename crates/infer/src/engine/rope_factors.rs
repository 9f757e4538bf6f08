//! Per-dimension RoPE frequency factors: which set a sequence rotates with.
//!
//! A file may divide RoPE's frequencies by per-pair factors. Llama 3.1 stores one set
//! (`rope_freqs.weight`). LongRoPE models (Phi-3 128k, Phi-4 mini) store two:
//! `rope_factors_short.weight` for sequences within the context the frequencies were trained for,
//! and `rope_factors_long.weight` beyond it. As in llama.cpp, the choice is made once per sequence
//! from the context it is created with (llama.cpp's `n_ctx_seq`), not per position: every key in a
//! session's cache is rotated the same way, and a session's numbers do not change as it fills.

/// The factor sets a model's file provides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RopeFactors {
    /// `rope_freqs.weight`: used whatever the context when present.
    pub freqs: Option<Vec<f32>>,
    /// `rope_factors_long.weight`: contexts longer than the original one.
    pub long: Option<Vec<f32>>,
    /// `rope_factors_short.weight`: contexts up to the original one.
    pub short: Option<Vec<f32>>,
}

impl RopeFactors {
    /// The factors for a sequence of `n_ctx_seq` positions when the frequencies were trained for
    /// `n_ctx_orig` (`None`: plain RoPE).
    pub fn select(&self, n_ctx_seq: usize, n_ctx_orig: usize) -> Option<&[f32]> {
        if let Some(f) = &self.freqs {
            return Some(f);
        }
        if n_ctx_seq > n_ctx_orig {
            self.long.as_deref()
        } else {
            self.short.as_deref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_factors_only_beyond_the_original_context() {
        let f = RopeFactors {
            freqs: None,
            long: Some(vec![2.0]),
            short: Some(vec![1.5]),
        };
        assert_eq!(f.select(4096, 4096), Some(&[1.5][..]));
        assert_eq!(f.select(4097, 4096), Some(&[2.0][..]));
        let only_long = RopeFactors {
            short: None,
            ..f.clone()
        };
        assert_eq!(only_long.select(16, 4096), None);
        let fixed = RopeFactors {
            freqs: Some(vec![8.0]),
            ..f
        };
        assert_eq!(fixed.select(1 << 20, 4096), Some(&[8.0][..]));
        assert_eq!(RopeFactors::default().select(10, 1), None);
    }
}
