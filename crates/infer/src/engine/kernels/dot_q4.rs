//! Q4_1 · Q8_1 and Q4_0 · Q8_0 row dot products, with AVX2 paths beside the scalar references.
//!
//! Written here because candle's `BlockQ4_1::vec_dot` has no SIMD path (on a Q4_1 model it took
//! four fifths of the decoding time) and its Q4_0 one converts the f16 block scales through the
//! `half` crate, one call behind a run-time feature check per value. The AVX2 paths follow
//! llama.cpp's x86 kernels (`ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q4_0_q8_0`): the integer dot of
//! each 32-value block in 8 lanes of 4 products, scaled by `d_w · d_a` into an 8-lane f32
//! accumulator with a fused multiply-add, Q4_1's block offsets `m_w · s_a` summed apart, and the
//! lanes added pairwise at the end. Following its order keeps the engine's last bits near
//! llama.cpp's, which decides near-ties in greedy decoding.
//!
//! The blocks are `shuku_quants`' ([`BlockQ4_1`], [`BlockQ4_0`], [`BlockQ8_1`], [`BlockQ8_0`]):
//! value j of a 4-bit block is `d·(qs[j] & 15) + m` for j < 16 and `d·(qs[j-16] >> 4) + m` above
//! (Q4_0: `d·(nibble − 8)` in the same order); Q8_1's `s` holds `d·Σqs`.

use shuku_quants::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// `Σ w·a` over the blocks of one Q4_0 row and one Q8_0 row (equal block counts). Activations come
/// from the engine's quantizer, whose codes lie in −127..=127.
pub fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
            return unsafe { avx2::vec_dot_q4_0(w, a) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        super::neon::vec_dot_q4_0(w, a)
    }
    #[cfg(not(target_arch = "aarch64"))]
    vec_dot_q4_0_scalar(w, a)
}

/// The scalar reference of [`vec_dot_q4_0_q8_0`], block by block, summed in order.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // there, the NEON path's test reference
pub fn vec_dot_q4_0_scalar(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let d = wb.d.to_f32() * ab.d.to_f32();
        let mut sumi = 0i32;
        for j in 0..16 {
            let lo = i32::from(wb.qs[j] & 0x0f) - 8;
            let hi = i32::from(wb.qs[j] >> 4) - 8;
            sumi += lo * i32::from(ab.qs[j]) + hi * i32::from(ab.qs[16 + j]);
        }
        sum += d * sumi as f32;
    }
    sum
}

/// `Σ w·a` over the blocks of one Q4_1 row and one Q8_1 row (equal block counts).
pub fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
            return unsafe { avx2::vec_dot(w, a) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        super::neon::vec_dot_q4_1(w, a)
    }
    #[cfg(not(target_arch = "aarch64"))]
    vec_dot_scalar(w, a)
}

/// The scalar reference: the same arithmetic, block by block, summed in order.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // there, the NEON path's test reference
pub fn vec_dot_scalar(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    let mut offsets = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let lo = i32::from(wb.qs[j] & 0x0f);
            let hi = i32::from(wb.qs[j] >> 4);
            sumi += lo * i32::from(ab.qs[j]) + hi * i32::from(ab.qs[16 + j]);
        }
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
        offsets += wb.m.to_f32() * ab.s.to_f32();
    }
    sum + offsets
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{hsum8, scale1, scale2};
    use shuku_quants::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let eights = _mm256_set1_epi8(8);
        let ones = _mm256_set1_epi16(1);
        for (wb, ab) in w.iter().zip(a) {
            let d = _mm256_broadcastss_ps(_mm_mul_ss(scale1(wb.d), scale1(ab.d)));
            // SAFETY: `wb.qs` is 16 bytes, one unaligned 128-bit load; `ab.qs` is 32 bytes, one
            // unaligned 256-bit load.
            let (packed, qa) = unsafe {
                (
                    _mm_loadu_si128(wb.qs.as_ptr().cast()),
                    _mm256_loadu_si256(ab.qs.as_ptr().cast()),
                )
            };
            // Low nibbles in bytes 0..16, high nibbles in bytes 16..32, minus 8: −8..=7.
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            let qw = _mm256_sub_epi8(_mm256_and_si256(both, low_nibbles), eights);
            // |w| times a carrying w's sign (exact for activations in −127..=127), pairs to i16
            // (at most 8·127·2), then pairs to i32.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw));
            let quads = _mm256_madd_epi16(pairs, ones);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc);
        }
        hsum8(acc)
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        // Lane 1 sums the block offsets m_w · s_a, one block after another.
        let mut offsets = _mm_setzero_ps();
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        for (wb, ab) in w.iter().zip(a) {
            // [d_w·d_a, m_w·s_a, 0, 0]
            let scales = _mm_mul_ps(scale2(wb.d, wb.m), scale2(ab.d, ab.s));
            offsets = _mm_add_ps(offsets, scales);
            let d = _mm256_broadcastss_ps(scales);
            // SAFETY: `wb.qs` is 16 bytes, one unaligned 128-bit load; `ab.qs` is 32 bytes, one
            // unaligned 256-bit load.
            let (packed, qa) = unsafe {
                (
                    _mm_loadu_si128(wb.qs.as_ptr().cast()),
                    _mm256_loadu_si256(ab.qs.as_ptr().cast()),
                )
            };
            // Low nibbles in bytes 0..16, high nibbles in bytes 16..32.
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            let qw = _mm256_and_si256(both, low_nibbles);
            // u8 × i8 pairs summed to i16 (no overflow: 15·128·2 < 2^15), then pairs to i32.
            let pairs = _mm256_maddubs_epi16(qw, qa);
            let quads = _mm256_madd_epi16(pairs, ones);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc);
        }
        hsum8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(offsets))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{random, unit, with_scales};
    use super::*;
    use half::f16;

    /// The dispatched path (AVX2 where the CPU has it) agrees with the scalar reference to float
    /// rounding, and exactly where every block product is an integer.
    #[test]
    fn simd_matches_scalar_reference() {
        for (blocks, seed) in [(1, 1), (2, 2), (8, 3), (18, 4), (64, 5)] {
            let w: Vec<BlockQ4_1> = with_scales(random(blocks, seed), &[0.013, -0.2]);
            let a: Vec<BlockQ8_1> = with_scales(random(blocks, seed + 100), &[0.02, 1.5]);
            let (got, want) = (vec_dot_q4_1_q8_1(&w, &a), vec_dot_scalar(&w, &a));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{blocks} blocks: {got} vs {want}"
            );
            // Unit scales and zero offsets: every partial sum is an exact integer in f32.
            let (w1, a1) = (unit(&w, 2), unit(&a, 2));
            assert_eq!(vec_dot_q4_1_q8_1(&w1, &a1), vec_dot_scalar(&w1, &a1));
        }
    }

    /// Q4_0: the dispatched path against the scalar reference, and the reference against a
    /// direct dequantize-and-multiply (activation codes in −127..=127, as the quantizer makes).
    #[test]
    fn q4_0_matches_scalar_and_dequantized_references() {
        for (blocks, seed) in [(1, 11), (5, 12), (64, 13)] {
            let w: Vec<BlockQ4_0> = with_scales(random(blocks, seed), &[0.02, 0.0]);
            let mut a: Vec<BlockQ8_0> = with_scales(random(blocks, seed + 7), &[0.05, 0.0]);
            for q in a.iter_mut().flat_map(|b| &mut b.qs) {
                if *q == -128 {
                    *q = -127;
                }
            }
            // The second f16 of `with_scales` landed in the first code bytes: harmless, codes are
            // arbitrary.
            let (got, want) = (vec_dot_q4_0_q8_0(&w, &a), vec_dot_q4_0_scalar(&w, &a));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{blocks} blocks: {got} vs {want}"
            );
            let mut exact = 0f64;
            for (wb, ab) in w.iter().zip(&a) {
                let d = f64::from(wb.d.to_f32()) * f64::from(ab.d.to_f32());
                for j in 0..32 {
                    let nib = if j < 16 {
                        wb.qs[j] & 15
                    } else {
                        wb.qs[j - 16] >> 4
                    };
                    exact += d * (f64::from(nib) - 8.0) * f64::from(ab.qs[j]);
                }
            }
            assert!((f64::from(want) - exact).abs() < 1e-4 * exact.abs().max(1.0));
        }
    }

    /// The reference against a direct dequantize-and-multiply.
    #[test]
    fn scalar_reference_matches_dequantized_dot() {
        let blocks = 4;
        let w: Vec<BlockQ4_1> = with_scales(random(blocks, 9), &[0.05, -0.3]);
        let mut a: Vec<BlockQ8_1> = with_scales(random(blocks, 10), &[0.01, 0.0]);
        let mut want = 0f64;
        for (wb, ab) in w.iter().zip(&a) {
            let (dw, mw, da) = (wb.d.to_f32(), wb.m.to_f32(), ab.d.to_f32());
            for j in 0..32 {
                let nib = if j < 16 {
                    wb.qs[j] & 15
                } else {
                    wb.qs[j - 16] >> 4
                };
                let wv = dw as f64 * nib as f64 + mw as f64;
                want += wv * da as f64 * ab.qs[j] as f64;
            }
        }
        // Q8_1's `s` stands for d·Σq; here it was set independently, so put the true value in.
        for b in &mut a {
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            b.s = f16::from_f32(b.d.to_f32() * sum as f32);
        }
        let got = vec_dot_scalar(&w, &a) as f64;
        assert!(
            (got - want).abs() < 1e-2 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
