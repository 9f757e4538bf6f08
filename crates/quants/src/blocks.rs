//! The block layouts of ggml's quantized types, field for field as `ggml-common.h` declares them.
//!
//! Each struct is `#[repr(C)]` with no padding and derives [`bytemuck::Pod`], so a file's bytes
//! are viewed as blocks with [`bytemuck::try_cast_slice`] (size, alignment and length checked, no
//! `unsafe`), and a block's size is `size_of::<Block>()`: the tests below pin each one to ggml's.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block of the legacy types (Q4_0 … Q8_1).
pub const QK: usize = 32;
/// Elements per super-block of the k-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in a Q4_K / Q5_K super-block (and Q3_K's 6-bit scales).
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K
/// super-block. Sub-blocks 0–3 keep theirs in the low six bits of bytes `j` and `j + 4`;
/// sub-blocks 4–7 keep their low four bits in the nibbles of byte `j + 4` and their top two bits
/// in the spare top bits of bytes `j - 4` (scale) and `j` (min).
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Scale `j` (0..16) of a Q3_K super-block, signed (−32..32): as `dequantize_row_q3_K`'s `kmask`
/// unpacking reads it (and the read-back in `quantize_row_q3_K_ref`'s requantization).
#[inline]
pub fn q3_scale(q: &[u8; K_SCALE_SIZE], j: usize) -> i8 {
    let low = if j < 8 { q[j] & 0xF } else { q[j - 8] >> 4 };
    let high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// 4-bit, one scale per 32: `x = d * (q - 8)`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
    pub qs: [u8; QK / 2],
}

/// 4-bit with a minimum: `x = d * q + m`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Nibbles, as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}

/// 5-bit, one scale per 32: `x = d * (q - 16)`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// The fifth bit of each element, element `j` at bit `j` (little-endian u32).
    pub qh: [u8; 4],
    /// The low four bits, as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}

/// 5-bit with a minimum: `x = d * q + m`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// The fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// The low four bits.
    pub qs: [u8; QK / 2],
}

/// 8-bit, one scale per 32: `x = d * q`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK],
}

/// 8-bit with the block's sum (the activation type of Q4_1 / Q5_1 dot products).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * Σ qs`.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK],
}

/// 2-bit k-quant: 16 sub-blocks of 16, each with a 4-bit scale and a 4-bit min.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// Quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
}

/// 3-bit k-quant: 16 sub-blocks of 16 with 6-bit scales.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// The high bit of each quant.
    pub hmask: [u8; QK_K / 8],
    /// The low two bits, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, packed.
    pub scales: [u8; K_SCALE_SIZE],
    /// Super-block scale.
    pub d: f16,
}

/// 4-bit k-quant: 8 sub-blocks of 32 with 6-bit scales and mins.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; K_SCALE_SIZE],
    /// Quants, two per byte.
    pub qs: [u8; QK_K / 2],
}

/// 5-bit k-quant: 8 sub-blocks of 32 with 6-bit scales and mins.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; K_SCALE_SIZE],
    /// The fifth bit of each quant.
    pub qh: [u8; QK_K / 8],
    /// The low four bits, two per byte.
    pub qs: [u8; QK_K / 2],
}

/// 6-bit k-quant: 16 sub-blocks of 16 with 8-bit scales.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// The low four bits.
    pub ql: [u8; QK_K / 2],
    /// The high two bits.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

/// 8-bit k-quant activations: one f32 scale per 256 and sums of each 16 quants.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of each group of 16 quants.
    pub bsums: [i16; QK_K / 16],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn sizes_are_ggml_type_sizes() {
        // ggml-common.h's static_asserts.
        assert_eq!(size_of::<BlockQ4_0>(), 18);
        assert_eq!(size_of::<BlockQ4_1>(), 20);
        assert_eq!(size_of::<BlockQ5_0>(), 22);
        assert_eq!(size_of::<BlockQ5_1>(), 24);
        assert_eq!(size_of::<BlockQ8_0>(), 34);
        assert_eq!(size_of::<BlockQ8_1>(), 36);
        assert_eq!(size_of::<BlockQ2K>(), 84);
        assert_eq!(size_of::<BlockQ3K>(), 110);
        assert_eq!(size_of::<BlockQ4K>(), 144);
        assert_eq!(size_of::<BlockQ5K>(), 176);
        assert_eq!(size_of::<BlockQ6K>(), 210);
        assert_eq!(size_of::<BlockQ8K>(), 292);
    }
}
