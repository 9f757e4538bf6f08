//! Q5_0 weight rows · Q8_0 activation rows and Q5_1 weight rows · Q8_1 activation rows, with AVX2
//! paths beside the scalar references.
//!
//! Written here because candle's `BlockQ5_0::vec_dot` / `BlockQ5_1::vec_dot` have no SIMD path: on
//! SmolLM2 requantized to Q4_K_M (whose tied embedding/output matrix is Q5_0) they took four fifths
//! of the decoding time. The AVX2 paths follow llama.cpp's x86 kernels for these pairs
//! (`ggml_vec_dot_q5_0_q8_0`, `ggml_vec_dot_q5_1_q8_1`): the integer dot of each 32-value block in 8
//! lanes of 4 products, converted to f32 and scaled by `d_w · d_a` into an 8-lane accumulator with a
//! fused multiply-add, Q5_1's block offsets `m_w · s_a` summed apart, and the lanes added pairwise
//! at the end. Following its order keeps the engine's last bits near llama.cpp's, which decides
//! near-ties in greedy decoding.
//!
//! The blocks are `shuku_quants`' ([`BlockQ5_0`], [`BlockQ5_1`], [`BlockQ8_0`], [`BlockQ8_1`]).
//! `qh` is a little-endian u32 holding the fifth bit of each value: value j of the block has the
//! 5-bit code `q = (qs[j % 16] >> (4·(j ≥ 16))) & 15 | ((qh >> j) & 1) << 4` and stands for
//! `d·(q − 16)` in Q5_0, `d·q + m` in Q5_1. Q8_1's `s` holds `d·Σqs`.

use shuku_quants::blocks::{BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// The 5-bit code (0..32) of value `j` of a block with fifth bits `qh` and low bits `qs`.
#[inline]
fn q5(qh: [u8; 4], qs: &[u8; 16], j: usize) -> i32 {
    let qh = u32::from_le_bytes(qh);
    let byte = qs[j % 16];
    let nib = if j < 16 { byte & 15 } else { byte >> 4 };
    i32::from(nib) | (((qh >> j) & 1) as i32) << 4
}

/// `Σ w·a` over the blocks of one Q5_0 row and one Q8_0 row (equal block counts).
pub fn vec_dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
            return unsafe { avx2::vec_dot_q5_0(w, a) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        super::neon::vec_dot_q5_0(w, a)
    }
    #[cfg(not(target_arch = "aarch64"))]
    vec_dot_q5_0_scalar(w, a)
}

/// `Σ w·a` over the blocks of one Q5_1 row and one Q8_1 row (equal block counts).
pub fn vec_dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
            return unsafe { avx2::vec_dot_q5_1(w, a) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        super::neon::vec_dot_q5_1(w, a)
    }
    #[cfg(not(target_arch = "aarch64"))]
    vec_dot_q5_1_scalar(w, a)
}

/// The scalar reference for Q5_0 · Q8_0: the same arithmetic, block by block, summed in order.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // there, the NEON path's test reference
pub fn vec_dot_q5_0_scalar(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let sumi: i32 = (0..32)
            .map(|j| (q5(wb.qh, &wb.qs, j) - 16) * i32::from(ab.qs[j]))
            .sum();
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
    }
    sum
}

/// The scalar reference for Q5_1 · Q8_1: the same arithmetic, block by block, summed in order.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // there, the NEON path's test reference
pub fn vec_dot_q5_1_scalar(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    let mut offsets = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let sumi: i32 = (0..32)
            .map(|j| q5(wb.qh, &wb.qs, j) * i32::from(ab.qs[j]))
            .sum();
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
        offsets += wb.m.to_f32() * ab.s.to_f32();
    }
    sum + offsets
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{hsum8, scale1, scale2};
    use shuku_quants::blocks::{BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
    use std::arch::x86_64::*;

    /// The 32 five-bit codes (0..32) of a block with fifth bits `qh` and low bits `qs`, one per
    /// byte: the nibbles of `qs` (low ones in bytes 0..16, high ones in 16..32) with bit j of `qh`
    /// as bit 4 of byte j.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn codes(qh: [u8; 4], qs: &[u8; 16]) -> __m256i {
        let qh = i32::from_le_bytes(qh);
        // SAFETY: `qs` is 16 bytes, exactly one unaligned 128-bit load.
        let packed = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let nibbles = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            _mm256_set1_epi8(0x0f),
        );
        // Byte j takes byte j/8 of qh; every bit but j%8 set, then all ones where bit j%8 was set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh),
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0x0000000000000000,
            ),
        );
        let bits = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        let high = _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1));
        _mm256_or_si256(nibbles, _mm256_and_si256(high, _mm256_set1_epi8(0x10)))
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        let sixteens = _mm256_set1_epi8(16);
        for (wb, ab) in w.iter().zip(a) {
            let d = _mm256_broadcastss_ps(_mm_mul_ss(scale1(wb.d), scale1(ab.d)));
            let qw = codes(wb.qh, &wb.qs);
            // SAFETY: `ab.qs` is 32 bytes, one unaligned 256-bit load.
            let qa = unsafe { _mm256_loadu_si256(ab.qs.as_ptr().cast()) };
            // Σ (q − 16)·a per pair of bytes as Σ q·a − 16·Σ a, both u8 × i8 products summed to
            // i16 without saturation (31·128·2 < 2^15), as is their difference (16·128·2). The
            // 4-product lane sums equal llama.cpp's (which moves the sign of q − 16 onto a), and are
            // also right for an activation of −128, which its sign trick cannot negate.
            let pairs = _mm256_sub_epi16(
                _mm256_maddubs_epi16(qw, qa),
                _mm256_maddubs_epi16(sixteens, qa),
            );
            let quads = _mm256_madd_epi16(pairs, ones);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc);
        }
        hsum8(acc)
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        // Lane 1 sums the block offsets m_w · s_a, one block after another.
        let mut offsets = _mm_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        for (wb, ab) in w.iter().zip(a) {
            // [d_w·d_a, m_w·s_a, 0, 0]
            let scales = _mm_mul_ps(scale2(wb.d, wb.m), scale2(ab.d, ab.s));
            offsets = _mm_add_ps(offsets, scales);
            let d = _mm256_broadcastss_ps(scales);
            let qw = codes(wb.qh, &wb.qs);
            // SAFETY: `ab.qs` is 32 bytes, one unaligned 256-bit load.
            let qa = unsafe { _mm256_loadu_si256(ab.qs.as_ptr().cast()) };
            // u8 × i8 pairs summed to i16 (no overflow: 31·128·2 < 2^15), then pairs to i32.
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

    const CASES: [(usize, u64); 6] = [(1, 1), (2, 2), (8, 3), (18, 4), (64, 5), (576 / 32, 6)];

    fn close(got: f32, want: f32, what: &str) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    }

    /// The dispatched path (AVX2 where the CPU has it) agrees with the scalar reference to float
    /// rounding, and exactly where every block product is an integer.
    #[test]
    fn q5_0_simd_matches_scalar_reference() {
        for (blocks, seed) in CASES {
            let w: Vec<BlockQ5_0> = with_scales(random(blocks, seed), &[0.013]);
            let a: Vec<BlockQ8_0> = with_scales(random(blocks, seed + 100), &[0.02]);
            let (got, want) = (vec_dot_q5_0_q8_0(&w, &a), vec_dot_q5_0_scalar(&w, &a));
            close(got, want, &format!("{blocks} blocks"));
            // Unit scales: every partial sum is an exact integer in f32.
            let (w1, a1) = (unit(&w, 1), unit(&a, 1));
            assert_eq!(vec_dot_q5_0_q8_0(&w1, &a1), vec_dot_q5_0_scalar(&w1, &a1));
        }
    }

    #[test]
    fn q5_1_simd_matches_scalar_reference() {
        for (blocks, seed) in CASES {
            let w: Vec<BlockQ5_1> = with_scales(random(blocks, seed), &[0.013, -0.2]);
            let a: Vec<BlockQ8_1> = with_scales(random(blocks, seed + 100), &[0.02, 1.5]);
            let (got, want) = (vec_dot_q5_1_q8_1(&w, &a), vec_dot_q5_1_scalar(&w, &a));
            close(got, want, &format!("{blocks} blocks"));
            // Unit scales and zero offsets: every partial sum is an exact integer in f32.
            let (w1, a1) = (unit(&w, 2), unit(&a, 2));
            assert_eq!(vec_dot_q5_1_q8_1(&w1, &a1), vec_dot_q5_1_scalar(&w1, &a1));
        }
    }

    /// Extreme codes and activations: every code 0 or 31 against ±127 and −128.
    #[test]
    fn simd_matches_scalar_at_extremes() {
        for (qh, qs, act) in [
            (0u8, 0u8, -128i8),
            (0xff, 0xff, -128),
            (0, 0, 127),
            (0xff, 0xff, -127),
            (0xa5, 0x0f, -128),
        ] {
            let w0 = [BlockQ5_0 {
                d: f16::ONE,
                qh: [qh; 4],
                qs: [qs; 16],
            }; 2];
            let w1 = [BlockQ5_1 {
                d: f16::ONE,
                m: f16::ZERO,
                qh: [qh; 4],
                qs: [qs; 16],
            }; 2];
            let a0 = [BlockQ8_0 {
                d: f16::ONE,
                qs: [act; 32],
            }; 2];
            let a1 = [BlockQ8_1 {
                d: f16::ONE,
                s: f16::ZERO,
                qs: [act; 32],
            }; 2];
            assert_eq!(vec_dot_q5_0_q8_0(&w0, &a0), vec_dot_q5_0_scalar(&w0, &a0));
            assert_eq!(vec_dot_q5_1_q8_1(&w1, &a1), vec_dot_q5_1_scalar(&w1, &a1));
        }
    }

    /// Puts the true `s = d·Σq` into each Q8_1 block (the random bytes set it independently).
    fn true_sums(mut a: Vec<BlockQ8_1>) -> Vec<BlockQ8_1> {
        for b in &mut a {
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            b.s = f16::from_f32(b.d.to_f32() * sum as f32);
        }
        a
    }

    /// Value j of a block's 5-bit codes, decoded straight from the layout description.
    fn code(qh: [u8; 4], qs: &[u8; 16], j: usize) -> f64 {
        let qh = u32::from_le_bytes(qh);
        let nib = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
        f64::from(u32::from(nib) + ((qh >> j) & 1) * 16)
    }

    /// The references against a direct dequantize-and-multiply.
    #[test]
    fn scalar_references_match_dequantized_dot() {
        let blocks = 4;
        let w: Vec<BlockQ5_0> = with_scales(random(blocks, 9), &[0.05]);
        let a: Vec<BlockQ8_0> = with_scales(random(blocks, 10), &[0.01]);
        let mut want = 0f64;
        for (wb, ab) in w.iter().zip(&a) {
            let (dw, da) = (wb.d.to_f32() as f64, ab.d.to_f32() as f64);
            for j in 0..32 {
                want += dw * (code(wb.qh, &wb.qs, j) - 16.0) * da * f64::from(ab.qs[j]);
            }
        }
        let got = vec_dot_q5_0_scalar(&w, &a) as f64;
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "Q5_0: {got} vs {want}"
        );

        let w: Vec<BlockQ5_1> = with_scales(random(blocks, 11), &[0.05, -0.3]);
        let a = true_sums(with_scales(random(blocks, 12), &[0.01, 0.0]));
        let mut want = 0f64;
        for (wb, ab) in w.iter().zip(&a) {
            let (dw, mw, da) = (
                wb.d.to_f32() as f64,
                wb.m.to_f32() as f64,
                ab.d.to_f32() as f64,
            );
            for j in 0..32 {
                let wv = dw * code(wb.qh, &wb.qs, j) + mw;
                want += wv * da * f64::from(ab.qs[j]);
            }
        }
        // `s` is rounded to f16, so the offsets carry up to 2^-11 relative error.
        let got = vec_dot_q5_1_scalar(&w, &a) as f64;
        assert!(
            (got - want).abs() < 1e-2 * want.abs().max(1.0),
            "Q5_1: {got} vs {want}"
        );
    }
}
