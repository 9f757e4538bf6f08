//! Q8_0 weight rows · Q8_0 activation rows, with an AVX2 path beside the scalar reference.
//!
//! candle's AVX version of this product converts each block's two f16 scales through the `half`
//! crate (one call behind a run-time feature check per value), which made Q8_0 models decode at
//! three quarters of llama.cpp's speed. This one converts them with F16C and otherwise follows
//! llama.cpp's x86 kernel (`ggml_vec_dot_q8_0_q8_0`): the block's integer dot in 8 lanes of 4
//! products (|w| times a with w's sign), scaled by `d_w · d_a` into an 8-lane f32 accumulator with a
//! fused multiply-add, the lanes added pairwise at the end.
//!
//! Layout (ggml's): a Q8_0 block is `d: f16, qs: [i8; 32]` (34 bytes).

use half::f16;

/// Bytes of one Q8_0 block.
pub const Q8_0_BLOCK: usize = 34;

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `Σ w·a` over the blocks of two Q8_0 rows (equal block counts). Activations come from the
/// engine's quantizer, whose codes lie in −127..=127; a weight of −128 is handled exactly.
pub fn vec_dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
            return unsafe { avx2::vec_dot(w, a) };
        }
    }
    vec_dot_scalar(w, a)
}

/// The scalar reference: the same arithmetic, block by block, summed in order.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.chunks_exact(Q8_0_BLOCK).zip(a.chunks_exact(Q8_0_BLOCK)) {
        let d = f16_at(wb, 0) * f16_at(ab, 0);
        let sumi: i32 = wb[2..]
            .iter()
            .zip(&ab[2..])
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y as i8))
            .sum();
        sum += d * sumi as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{hsum8, scale1};
    use super::Q8_0_BLOCK;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        for (wb, ab) in w.chunks_exact(Q8_0_BLOCK).zip(a.chunks_exact(Q8_0_BLOCK)) {
            let d = _mm256_broadcastss_ps(_mm_mul_ss(scale1(wb), scale1(ab)));
            // SAFETY: `chunks_exact` gives 34 bytes, so bytes 2..34 (32) of each block are in
            // bounds for an unaligned 256-bit load.
            let (qw, qa) = unsafe {
                (
                    _mm256_loadu_si256(wb.as_ptr().add(2).cast()),
                    _mm256_loadu_si256(ab.as_ptr().add(2).cast()),
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

    fn blocks(n: usize, seed: u64, scale: f32) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n * Q8_0_BLOCK);
        for i in 0..n {
            let d = scale * (1.0 + (i % 5) as f32 / 5.0);
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            for _ in 0..32 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Codes in −127..=127, as both quantizers produce.
                out.push((((s >> 33) % 255) as i32 - 127) as i8 as u8);
            }
        }
        out
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
            let unit = |b: &[u8]| -> Vec<u8> {
                b.chunks_exact(Q8_0_BLOCK)
                    .flat_map(|blk| {
                        let mut blk = blk.to_vec();
                        blk[0..2].copy_from_slice(&f16::ONE.to_le_bytes());
                        blk
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
        let mut w = vec![0u8; Q8_0_BLOCK];
        let mut a = vec![0u8; Q8_0_BLOCK];
        w[0..2].copy_from_slice(&f16::ONE.to_le_bytes());
        a[0..2].copy_from_slice(&f16::ONE.to_le_bytes());
        for j in 0..32 {
            w[2 + j] = [-128i8, 127, -127, 0][j % 4] as u8;
            a[2 + j] = [127i8, -127, 127, -127][(j / 4) % 4] as u8;
        }
        let want: i32 = (0..32)
            .map(|j| i32::from(w[2 + j] as i8) * i32::from(a[2 + j] as i8))
            .sum();
        assert_eq!(vec_dot_q8_0_q8_0(&w, &a), want as f32);
        assert_eq!(vec_dot_scalar(&w, &a), want as f32);
    }
}
