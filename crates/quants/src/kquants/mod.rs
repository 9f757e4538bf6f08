//! The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, in super-blocks of [`QK_K`] elements.
//!
//! Each type's module mirrors three functions of `ggml-quants.c`: `quantize_row_*_ref` (what
//! `ggml_quantize_chunk` runs without an importance matrix), `quantize_row_*_impl` (what it runs
//! per row with one) and `dequantize_row_*`. They work on one super-block at a time, on the
//! stack; this module turns them into [`BlockFormat`] impls over rows.

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod scale_min;
mod scales;

use crate::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::format::{BlockFormat, QuantType};

/// The super-blocks of `x`, as fixed-size arrays.
fn super_blocks(x: &[f32]) -> impl Iterator<Item = &[f32; QK_K]> {
    x.chunks_exact(QK_K)
        .map(|c| c.try_into().expect("chunks_exact yields QK_K elements"))
}

/// The layout Q2_K's and Q3_K's quants share (the `qs` loop of `quantize_row_q2_K_ref` and
/// `quantize_row_q3_K_ref`): each 128-element half is four rows of 32, and byte `l` of the half's
/// 32 bytes holds element `l` of each row, two bits apiece, first row lowest.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (q, l) in qs.chunks_exact_mut(32).zip(l.chunks_exact(128)) {
        for (i, q) in q.iter_mut().enumerate() {
            *q = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
        }
    }
}

/// Implements [`BlockFormat`] for a k-quant block from its module's per-super-block
/// `quantize_ref`, `quantize_weighted` and `dequantize`.
macro_rules! k_quant {
    ($($block:ident => $ty:ident, $module:ident;)*) => {$(
        impl BlockFormat for $block {
            const BLOCK_ELEMS: usize = QK_K;
            const TYPE: QuantType = QuantType::$ty;

            fn quantize_ref(x: &[f32], out: &mut [Self]) {
                assert_eq!(x.len(), out.len() * QK_K, "{} row length", Self::TYPE);
                for (x, y) in super_blocks(x).zip(out) {
                    $module::quantize_ref(x, y);
                }
            }

            fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]) {
                assert_eq!(x.len(), out.len() * QK_K, "{} row length", Self::TYPE);
                assert_eq!(quant_weights.len(), x.len(), "{} importance weights", Self::TYPE);
                for ((x, qw), y) in super_blocks(x).zip(super_blocks(quant_weights)).zip(out) {
                    $module::quantize_weighted(x, qw, y);
                }
            }

            fn dequantize(blocks: &[Self], out: &mut [f32]) {
                assert_eq!(out.len(), blocks.len() * QK_K, "{} output length", Self::TYPE);
                for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
                    let y = y.try_into().expect("chunks_exact_mut yields QK_K elements");
                    $module::dequantize(b, y);
                }
            }
        }
    )*};
}

k_quant! {
    BlockQ2K => Q2_K, q2_k;
    BlockQ3K => Q3_K, q3_k;
    BlockQ4K => Q4_K, q4_k;
    BlockQ5K => Q5_K, q5_k;
    BlockQ6K => Q6_K, q6_k;
}

#[cfg(test)]
mod tests;
