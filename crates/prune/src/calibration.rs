//! Calibration samples: consecutive windows of a tokenized text.

use crate::error::{PruneError, Result};

/// The first `samples` non-overlapping windows of `seq_len` tokens of `tokens`; an error when the
/// text is shorter than that, rather than silently calibrating on less.
pub fn calibration_samples(
    tokens: &[u32],
    samples: usize,
    seq_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let needed = samples.saturating_mul(seq_len);
    if samples == 0 || seq_len == 0 || tokens.len() < needed {
        return Err(PruneError::CalibrationTooShort {
            tokens: tokens.len(),
            needed,
            samples,
            seq_len,
        });
    }
    Ok(tokens[..needed]
        .chunks(seq_len)
        .map(<[u32]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_or_a_typed_error() {
        let t: Vec<u32> = (0..10).collect();
        assert_eq!(
            calibration_samples(&t, 2, 4).unwrap(),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]
        );
        assert!(matches!(
            calibration_samples(&t, 3, 4),
            Err(PruneError::CalibrationTooShort {
                tokens: 10,
                needed: 12,
                ..
            })
        ));
        assert!(calibration_samples(&t, 0, 4).is_err());
    }
}
