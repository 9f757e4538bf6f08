//! The packed sub-block scales of the k-quants: Q4_K's and Q5_K's eight 6-bit scales and eight
//! 6-bit mins, and Q3_K's sixteen 6-bit scales, each in [`K_SCALE_SIZE`] bytes.

use crate::blocks::K_SCALE_SIZE;

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K
/// super-block. Sub-blocks 0–3 keep theirs in the low six bits of bytes `j` and `j + 4`;
/// sub-blocks 4–7 keep their low four bits in the nibbles of byte `j + 4` and their top two bits
/// in the spare top bits of bytes `j - 4` (scale) and `j` (min).
#[inline]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

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

/// Scale `j` (0..16) of a Q3_K super-block, signed (−32..32): the read-back in
/// `quantize_row_q3_K_ref`'s requantization, equal to `dequantize_row_q3_K`'s `kmask` unpacking.
#[inline]
pub(super) fn q3_scale(q: &[u8; K_SCALE_SIZE], j: usize) -> i8 {
    let low = if j < 8 { q[j] & 0xF } else { q[j - 8] >> 4 };
    let high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}
