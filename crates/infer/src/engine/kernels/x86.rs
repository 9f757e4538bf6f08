//! AVX2 pieces shared by the block dot products (`dot_q4`, `dot_q5`, `dot_q8_0`).
//!
//! Safe functions compiled for AVX2, FMA and F16C: callable without `unsafe` from the kernels'
//! functions compiled for the same features, which run only after `cpu::has_avx2_fma_f16c`.

use std::arch::x86_64::*;

/// The f16 at the start of a block (its scale `d`) as lane 0.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scale1(block: &[u8]) -> __m128 {
    let bits = i32::from(u16::from_le_bytes([block[0], block[1]]));
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// The two f16 at the start of a block (`d, m` or `d, s`) as lanes 0 and 1.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scale2(block: &[u8]) -> __m128 {
    let bits = i32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// Sum of the 8 lanes as llama.cpp's `hsum_float_8`: high half onto low half, then pairwise.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn hsum8(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}
