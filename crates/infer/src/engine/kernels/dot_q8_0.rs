//! Q8_0 weight rows · Q8_0 activation rows, with an AVX2 path beside the scalar reference.
//!
//! candle's AVX version of this product converts each block's two f16 scales through the `half`
//! crate (one call behind a run-time feature check per value), which made Q8_0 models decode at
//! three quarters of llama.cpp's speed. This one converts them with F16C and otherwise follows
//! llama.cpp's x86 kernel (`ggml_vec_dot_q8_0_q8_0`): the block's integer dot in 8 lanes of 4
//! products (|w| times a with w's sign), scaled by `d_w · d_a` into an 8-lane f32 accumulator with a
//! fused multiply-add, the lanes added pairwise at the end. The blocks are `shuku_quants`'
//! [`BlockQ8_0`].

use shuku_quants::blocks::BlockQ8_0;

/// `Σ w·a` over the blocks of two Q8_0 rows (equal block counts). Activations come from the
/// engine's quantizer, whose codes lie in −127..=127; a weight of −128 is handled exactly.
pub fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
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
        super::neon::vec_dot_q8_0(w, a)
    }
    #[cfg(not(target_arch = "aarch64"))]
    vec_dot_scalar(w, a)
}

/// The scalar reference: the same arithmetic, block by block, summed in order.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // there, the NEON path's test reference
pub fn vec_dot_scalar(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let d = wb.d.to_f32() * ab.d.to_f32();
        let sumi: i32 = wb
            .qs
            .iter()
            .zip(&ab.qs)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        sum += d * sumi as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{hsum8, scale1};
    use shuku_quants::blocks::BlockQ8_0;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        for (wb, ab) in w.iter().zip(a) {
            let d = _mm256_broadcastss_ps(_mm_mul_ss(scale1(wb.d), scale1(ab.d)));
            // SAFETY: each `qs` is 32 bytes, one unaligned 256-bit load.
            let (qw, qa) = unsafe {
                (
                    _mm256_loadu_si256(wb.qs.as_ptr().cast()),
                    _mm256_loadu_si256(ab.qs.as_ptr().cast()),
                )
            };
            // |w| as u8 (−128 gives 128) times a carrying w's sign: the products are w·a exactly
            // for activations in −127..=127; pairs summed to i16 (at most 128·127·2 < 2^15).
            let abs_w = _mm256_sign_epi8(qw, qw);
            let signed_a = _mm256_sign_epi8(qa, qw);
            let pairs = _mm256_maddubs_epi16(abs_w, signed_a);
            let quads = _mm256_madd_epi16(pairs, ones);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc);
        }
        hsum8(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn blocks(n: usize, seed: u64, scale: f32) -> Vec<BlockQ8_0> {
        let mut s = seed;
        (0..n)
            .map(|i| BlockQ8_0 {
                d: f16::from_f32(scale * (1.0 + (i % 5) as f32 / 5.0)),
                qs: std::array::from_fn(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Codes in −127..=127, as both quantizers produce.
                    (((s >> 33) % 255) as i32 - 127) as i8
                }),
            })
            .collect()
    }

    #[test]
    fn simd_matches_scalar_reference() {
        for (n, seed) in [(1, 1), (3, 2), (8, 3), (64, 4)] {
            let (w, a) = (blocks(n, seed, 0.01), blocks(n, seed + 50, 0.03));
            let (got, want) = (vec_dot_q8_0_q8_0(&w, &a), vec_dot_scalar(&w, &a));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{n} blocks: {got} vs {want}"
            );
            // Unit scales: every partial sum is an exact integer in f32.
            let unit = |b: &[BlockQ8_0]| -> Vec<BlockQ8_0> {
                b.iter()
                    .map(|blk| BlockQ8_0 {
                        d: f16::ONE,
                        ..*blk
                    })
                    .collect()
            };
            let (w1, a1) = (unit(&w), unit(&a));
            assert_eq!(vec_dot_q8_0_q8_0(&w1, &a1), vec_dot_scalar(&w1, &a1));
        }
    }

    /// Weights of −128 and the extremes of the activations, exactly.
    #[test]
    fn extremes_are_exact() {
        let w = [BlockQ8_0 {
            d: f16::ONE,
            qs: std::array::from_fn(|j| [-128i8, 127, -127, 0][j % 4]),
        }];
        let a = [BlockQ8_0 {
            d: f16::ONE,
            qs: std::array::from_fn(|j| [127i8, -127, 127, -127][(j / 4) % 4]),
        }];
        let want: i32 = (0..32)
            .map(|j| i32::from(w[0].qs[j]) * i32::from(a[0].qs[j]))
            .sum();
        assert_eq!(vec_dot_q8_0_q8_0(&w, &a), want as f32);
        assert_eq!(vec_dot_scalar(&w, &a), want as f32);
    }
}
