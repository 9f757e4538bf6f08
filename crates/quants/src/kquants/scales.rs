//! The packed sub-block scales of the k-quants: Q4_K's and Q5_K's eight 6-bit scales and eight
//! 6-bit mins, and Q3_K's sixteen 6-bit scales, each in [`K_SCALE_SIZE`] bytes.

use crate::blocks::K_SCALE_SIZE;
pub(super) use crate::blocks::{get_scale_min_k4, q3_scale};

/// The inverse of [`get_scale_min_k4`], written as the packing loop of `quantize_row_q4_K_ref`
/// (and Q5_K's, and both `_impl`s): the same stores in the same order, so that values above 63
/// (which Q4_K's weighted quantizer can store) give ggml's bytes too.
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
    q
}

/// Q3_K's scale packing, as `quantize_row_q3_K_ref` and `_impl` write it: the low nibbles of
/// scales 0–7 in the low nibbles of bytes 0–7, those of scales 8–15 in their high nibbles, and
/// the top two bits of scale `j` at bit `2·(j / 4)` of byte `8 + j % 4`. `l` holds the scales
/// offset by 32 (0..64).
pub(super) fn pack_q3_scales(l: &[u8; 16]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for (j, &l) in l.iter().enumerate() {
        if j < 8 {
            q[j] = l & 0xF;
        } else {
            q[j - 8] |= (l & 0xF) << 4;
        }
        q[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    q
}
