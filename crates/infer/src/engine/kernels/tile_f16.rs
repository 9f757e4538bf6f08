//! F16 weight rows × f16 tokens in tiles of `R` rows × `T` tokens, on 512-bit lanes.
//!
//! The per-row product (`dot_float::dot_half`, llama.cpp's `ggml_vec_dot_f16` order) keeps four
//! 8-lane accumulators per (row, token) pair and converts both operands for every pair. A tile
//! converts each weight chunk once for its tokens and each token chunk once for its rows, and holds
//! a pair's four accumulators as two 512-bit halves: lane for lane the same fused multiply-adds
//! and the same final reduction, so a tile's results equal the per-row product bit for bit (for
//! rows whose length is a multiple of 32; others take the per-row path).

use super::dot_float::avx2::reduce;
use super::tile::WIDE_TOKENS;
use half::f16;
use std::arch::x86_64::*;

/// 32 values: one step of the per-row product's four accumulators.
pub type Chunk = [f16; 32];

/// 16 f16 at `c[at..at + 16]` widened to f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn widen(c: &Chunk, at: usize) -> __m512 {
    let s = &c[at..at + 16];
    // SAFETY: `s` is 16 f16 (32 bytes), one unaligned 256-bit load.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s.as_ptr().cast()) })
}

/// F16 rows × f16 tokens; chunk `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn f16<const R: usize, const T: usize>(
    w: &[Chunk],
    rs: usize,
    bs: usize,
    a: [&[Chunk]; T],
) -> [[f32; T]; R] {
    let mut acc = [[[_mm512_setzero_ps(); 2]; T]; R];
    for b in 0..a[0].len() {
        let x: [[__m512; 2]; T] =
            std::array::from_fn(|t| [widen(&a[t][b], 0), widen(&a[t][b], 16)]);
        for r in 0..R {
            let wc = &w[r * rs + b * bs];
            let y = [widen(wc, 0), widen(wc, 16)];
            for t in 0..T {
                for h in 0..2 {
                    acc[r][t][h] = _mm512_fmadd_ps(y[h], x[t][h], acc[r][t][h]);
                }
            }
        }
    }
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            let (lo, hi) = (
                _mm512_castps_pd(acc[r][t][0]),
                _mm512_castps_pd(acc[r][t][1]),
            );
            out[r][t] = reduce([
                _mm256_castpd_ps(_mm512_castpd512_pd256(lo)),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(lo, 1)),
                _mm256_castpd_ps(_mm512_castpd512_pd256(hi)),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(hi, 1)),
            ]);
        }
    }
    out
}

/// [`f16`] for 4 rows × [`WIDE_TOKENS`] tokens, as 4 × 2 tiles (wider ones would not fit the
/// registers).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn f16_wide(
    w: &[Chunk],
    rs: usize,
    bs: usize,
    a: [&[Chunk]; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; 4] {
    let mut out = [[0f32; WIDE_TOKENS]; 4];
    for p in 0..WIDE_TOKENS / 2 {
        let two = f16::<4, 2>(w, rs, bs, [a[2 * p], a[2 * p + 1]]);
        for r in 0..4 {
            out[r][2 * p] = two[r][0];
            out[r][2 * p + 1] = two[r][1];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{cpu, dot_float};
    use super::*;

    /// Every entry of a wide tile equals the per-row product bit for bit.
    #[test]
    fn tiles_equal_per_row_products() {
        if !cpu::has_avx512_vnni() {
            return;
        }
        let val = |i: usize| f16::from_f32(((i * 7919 % 2003) as f32 - 1001.0) / 300.0);
        for chunks in [1, 3, 18] {
            let cols = 32 * chunks;
            let w: Vec<f16> = (0..4 * cols).map(val).collect();
            let a: Vec<f16> = (0..WIDE_TOKENS * cols).map(|i| val(i + 17)).collect();
            let wc: &[Chunk] = bytemuck::cast_slice(&w);
            let ac: &[Chunk] = bytemuck::cast_slice(&a);
            let toks: [&[Chunk]; WIDE_TOKENS] =
                std::array::from_fn(|t| &ac[t * chunks..(t + 1) * chunks]);
            // SAFETY: the CPU has AVX-512 (checked above).
            let got = unsafe { f16_wide(wc, chunks, 1, toks) };
            // SAFETY: as above.
            let one = unsafe { f16::<4, 1>(wc, chunks, 1, [toks[2]]) };
            for r in 0..4 {
                assert_eq!(one[r][0].to_bits(), got[r][2].to_bits());
                for t in 0..WIDE_TOKENS {
                    let want = dot_float::dot_half(
                        &w[r * cols..(r + 1) * cols],
                        &a[t * cols..(t + 1) * cols],
                    );
                    assert_eq!(
                        got[r][t].to_bits(),
                        want.to_bits(),
                        "{chunks} chunks, row {r}, token {t}"
                    );
                }
            }
        }
    }
}
