//! Activations quantized to the weights' vec-dot types (Q8_0, Q8_1, Q8_K) as llama.cpp's x86 CPU
//! backend quantizes them.
//!
//! Written here (not candle's `from_float`, nor `shuku_quants`' reference `quantize_row_q8_*_ref`)
//! because llama.cpp's AVX path rounds half to even with `127/amax` as the multiplier and stores
//! Q8_1's block sum as `fp16(d · Σq)`; the others differ in those last bits, and last bits decide
//! near-ties in greedy decoding. The codes are computed by an AVX2 path where the CPU has one
//! (llama.cpp's `quantize_row_q8_0` steps: scale, `vroundps` to nearest even, convert, saturating
//! packs) beside the scalar reference; both give the same bytes. Without it, Rust's
//! `round_ties_even` compiles to a call to `rintf` per value, a tenth of prompt processing.

use bytemuck::Zeroable;
use half::f16;
use shuku_quants::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};

/// The largest |x|.
fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// `round_half_even(x · scale)` saturated to i8 for each of 32 values.
fn codes(xb: &[f32], scale: f32) -> [i8; QK] {
    debug_assert_eq!(xb.len(), QK);
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above).
            return unsafe { avx2::codes(xb, scale) };
        }
    }
    codes_scalar(xb, scale)
}

/// The scalar reference of [`codes`].
fn codes_scalar(xb: &[f32], scale: f32) -> [i8; QK] {
    std::array::from_fn(|j| (xb[j] * scale).round_ties_even().clamp(-128.0, 127.0) as i8)
}

/// llama.cpp's x86 `quantize_row_q8_0` for one block of 32: `d = amax/127`,
/// `q = round_half_even(x · 127/amax)`.
pub fn quantize_q8_0(xb: &[f32]) -> BlockQ8_0 {
    let m = amax(xb);
    let id = if m != 0.0 { 127.0 / m } else { 0.0 };
    BlockQ8_0 {
        d: f16::from_f32(m / 127.0),
        qs: codes(xb, id),
    }
}

/// llama.cpp's x86 `quantize_row_q8_1` for one block of 32: as Q8_0 plus `s = fp16(d · Σq)`.
pub fn quantize_q8_1(xb: &[f32]) -> BlockQ8_1 {
    let m = amax(xb);
    let d = m / 127.0;
    let id = if m != 0.0 { 127.0 / m } else { 0.0 };
    let qs = codes(xb, id);
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    BlockQ8_1 {
        d: f16::from_f32(d),
        s: f16::from_f32(d * sum as f32),
        qs,
    }
}

/// llama.cpp's `quantize_row_q8_K_ref` (used on x86) for one block of 256: scale from the signed
/// extreme, `iscale = -127/max`, `nearest_int` (half to even, at most 127), block sums of 16.
pub fn quantize_q8_k(xb: &[f32]) -> BlockQ8K {
    let mut max = 0f32;
    let mut am = 0f32;
    for &v in xb {
        if v.abs() > am {
            am = v.abs();
            max = v;
        }
    }
    if am == 0.0 {
        return BlockQ8K::zeroed();
    }
    let iscale = -127.0 / max;
    let mut qs = [0i8; QK_K];
    for (q, x) in qs.chunks_exact_mut(QK).zip(xb.chunks_exact(QK)) {
        q.copy_from_slice(&codes(x, iscale));
    }
    BlockQ8K {
        d: 1.0 / iscale,
        qs,
        bsums: std::array::from_fn(|g| {
            qs[16 * g..16 * (g + 1)].iter().map(|&q| i16::from(q)).sum()
        }),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::QK;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `xb` holds 32 values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn codes(xb: &[f32], scale: f32) -> [i8; QK] {
        assert_eq!(xb.len(), QK);
        let mul = _mm256_set1_ps(scale);
        // SAFETY: `xb` holds 32 f32 (asserted), four unaligned 256-bit loads at 0, 8, 16, 24.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * k)) });
        let i = v.map(|x| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(x, mul),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        // Saturating packs to i16, then to i8, then the lanes put back in order.
        let lo = _mm256_packs_epi32(i[0], i[1]);
        let hi = _mm256_packs_epi32(i[2], i[3]);
        let bytes = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(lo, hi),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        );
        let mut out = [0i8; QK];
        // SAFETY: `out` is 32 bytes, one unaligned 256-bit store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_quantizers_follow_llama_cpp_rounding() {
        // 63.5 lands exactly on .5 after scaling by 127/amax when amax = 127: half to even.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let b = quantize_q8_0(&x);
        assert_eq!(b.qs[..3], [127, 2, -4]);
        assert_eq!(quantize_q8_1(&x).s.to_f32(), 125.0);
    }

    /// The dispatched codes equal the scalar reference on random values, exact halves, values
    /// past the i8 range (saturation) and zeros.
    #[test]
    fn simd_codes_match_scalar_reference() {
        let mut s = 7u64;
        for case in 0..200 {
            let xb: Vec<f32> = (0..QK)
                .map(|j| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    match case % 4 {
                        0 => r,
                        1 => (j as f32 - 16.0) + 0.5,
                        2 => r * 1e6,
                        _ => 0.0,
                    }
                })
                .collect();
            for scale in [1.0, 127.0 / 3.0, 0.0, 3.5] {
                assert_eq!(codes(&xb, scale), codes_scalar(&xb, scale), "case {case}");
            }
        }
    }
}
