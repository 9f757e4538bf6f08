//! AVX2 pieces shared by the block dot products (`dot_q4`, `dot_q5`, `dot_q8_0`).
//!
//! Safe functions compiled for AVX2, FMA and F16C: callable without `unsafe` from the kernels'
//! functions compiled for the same features, which run only after `cpu::has_avx2_fma_f16c`.

use half::f16;
use std::arch::x86_64::*;

/// A block's f16 scale `d` as lane 0.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scale1(d: f16) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(d.to_bits())))
}

/// A block's two f16 (`d, m` or `d, s`) as lanes 0 and 1.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scale2(d: f16, m: f16) -> __m128 {
    let bits = u32::from(d.to_bits()) | u32::from(m.to_bits()) << 16;
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Sum of the 8 lanes as llama.cpp's `hsum_float_8`: high half onto low half, then pairwise.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn hsum8(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// [`hsum8`] of every accumulator of a tile: `[row][token]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn hsum8_tile<const R: usize, const T: usize>(acc: [[__m256; T]; R]) -> [[f32; T]; R] {
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum8(acc[r][t]);
        }
    }
    out
}

/// Each 512-bit accumulator's 16 lanes, in a plain loop (`array::map` with a closure is not
/// always inlined into the kernels, and then passes every vector through memory).
#[target_feature(enable = "avx512f")]
pub fn lanes16<const T: usize>(acc: &[__m512; T]) -> [[f32; 16]; T] {
    let mut out = [[0f32; 16]; T];
    for (o, v) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is 16 f32 (64 bytes), one unaligned 512-bit store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *v) };
    }
    out
}
