//! The rotary Q/K row permutation llama.cpp's converter applies for the `llama` architecture.
//!
//! HF checkpoints lay out each head's rotary dimensions "rotate-half" style: the first half of a
//! head's rows are the real parts, the second half the imaginary parts. ggml's RoPE (normal mode)
//! expects interleaved pairs instead. Within each head of `d` rows, HF row `j * d/2 + i` (half `j`,
//! pair `i`) becomes GGUF row `2 * i + j`. For K, pass the number of KV heads.

/// Reorders the rows of a `[n_rows, row_len]` row-major matrix from HF to GGUF layout.
///
/// `n_rows` must be divisible by `2 * n_head` (returns `None` otherwise, or when `rows` does not
/// hold exactly `n_rows * row_len` elements).
pub fn permute_qk<T: Copy>(
    rows: &[T],
    n_rows: usize,
    row_len: usize,
    n_head: usize,
) -> Option<Vec<T>> {
    remap(rows, n_rows, row_len, n_head, false)
}

/// The exact inverse of [`permute_qk`]: GGUF interleaved layout back to HF rotate-half layout.
pub fn unpermute_qk<T: Copy>(
    rows: &[T],
    n_rows: usize,
    row_len: usize,
    n_head: usize,
) -> Option<Vec<T>> {
    remap(rows, n_rows, row_len, n_head, true)
}

fn remap<T: Copy>(
    rows: &[T],
    n_rows: usize,
    row_len: usize,
    n_head: usize,
    inverse: bool,
) -> Option<Vec<T>> {
    if n_head == 0
        || !n_rows.is_multiple_of(2 * n_head)
        || rows.len() != n_rows.checked_mul(row_len)?
    {
        return None;
    }
    let d = n_rows / n_head;
    let half = d / 2;
    let mut out = Vec::with_capacity(rows.len());
    for dst in 0..n_rows {
        let (h, r) = (dst / d, dst % d);
        let src_in_head = if inverse {
            // dst is HF row j*half + i; it comes from GGUF row 2*i + j.
            let (j, i) = (r / half, r % half);
            2 * i + j
        } else {
            // dst is GGUF row 2*i + j; it comes from HF row j*half + i.
            let (i, j) = (r / 2, r % 2);
            j * half + i
        };
        let src = h * d + src_in_head;
        out.extend_from_slice(rows.get(src * row_len..(src + 1) * row_len)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_example() {
        // One head of 4 rows (2 pairs), rows of length 1: HF [r0, r1, i0, i1] -> [r0, i0, r1, i1].
        assert_eq!(permute_qk(&[0, 1, 2, 3], 4, 1, 1), Some(vec![0, 2, 1, 3]));
        // Two heads of 4 rows each, rows of length 2.
        let hf: Vec<u32> = (0..16).collect();
        let g = permute_qk(&hf, 8, 2, 2);
        assert_eq!(
            g,
            Some(vec![0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15])
        );
        // Head dim 6: [a0 a1 a2 b0 b1 b2] -> [a0 b0 a1 b1 a2 b2].
        assert_eq!(
            permute_qk(&[10, 11, 12, 20, 21, 22], 6, 1, 1),
            Some(vec![10, 20, 11, 21, 12, 22])
        );
    }

    #[test]
    fn inverse_round_trips() {
        for (n_head, d, row_len) in [(1, 4, 1), (4, 8, 3), (3, 64, 5), (9, 64, 2)] {
            let n_rows = n_head * d;
            let x: Vec<f32> = (0..n_rows * row_len).map(|v| v as f32).collect();
            let p = permute_qk(&x, n_rows, row_len, n_head).unwrap_or_default();
            assert_ne!(p, x);
            assert_eq!(unpermute_qk(&p, n_rows, row_len, n_head), Some(x.clone()));
            let u = unpermute_qk(&x, n_rows, row_len, n_head).unwrap_or_default();
            assert_eq!(permute_qk(&u, n_rows, row_len, n_head), Some(x));
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(permute_qk(&[1, 2, 3], 3, 1, 1), None);
        assert_eq!(permute_qk(&[1, 2, 3, 4], 4, 1, 0), None);
        assert_eq!(permute_qk(&[1, 2, 3], 4, 1, 1), None);
    }
}
