//! Q2_K · Q8_K, Q3_K · Q8_K and Q5_K · Q8_K: scalar references and tiles of `R` weight rows × `T`
//! tokens with AVX-512 VNNI on 256-bit lanes (`T` = 1 is the single-token product).
//!
//! Written here for the reason `tile_k` gives for Q4_K and Q6_K: candle's products run one
//! (row, token) pair at a time. The tiles follow llama.cpp's AVX2 kernels
//! (`ggml_vec_dot_q2_K_q8_K`, `_q3_K_`, `_q5_K_`) lane for lane: `vpmaddubsw` of the weights'
//! unsigned codes and the activations, `vpdpwssd` adding those pairs times the sub-block scale
//! into eight i32 lanes (llama.cpp's `vpmaddwd` + `vpaddd`, the same integers), then per
//! super-block one fused multiply-add of the lanes by `d_w · d_a`, and llama.cpp's horizontal sum.
//! A tile unpacks each weight super-block once for its `T` tokens.
//!
//! Per type (`ggml-common.h` layouts; a value's sub-block scale and minimum multiply its code):
//! * Q2_K: sixteen sub-blocks of 16, a 4-bit scale (low nibble) and minimum (high nibble) each;
//!   64 bytes of 2-bit codes, byte `l` of 32-byte half `h` holding values `128h + 32c + l` at bits
//!   `2c`. The minimums enter through the activations' sums of 16, as llama.cpp: one multiply-add
//!   of `−d_a · dmin_w` by those eight lanes into the same accumulator, before the codes' one.
//! * Q3_K: the same 2-bit codes, a high bit per value (`hmask[l]` bit `4h + c`; a clear bit takes
//!   4 off the code), sixteen signed 6-bit scales. llama.cpp multiplies the low bits and the
//!   "minus 4" part separately (both unsigned) and subtracts the 16-bit pair sums; so here.
//! * Q5_K: Q4_K's nibbles and packed 6-bit scales and minimums with a fifth bit per value
//!   (`qh[l]` bit `2j` for sub-block `2j`, bit `2j + 1` for `2j + 1`). llama.cpp sums the
//!   minimums' term as a scalar, `summs += dmin · Σ m·bsum` per super-block (contracted to one
//!   fused multiply-add by its compiler), added after the horizontal sum; so here.

#[cfg(test)]
use shuku_quants::blocks::{get_scale_min_k4, q3_scale};
use shuku_quants::blocks::{BlockQ2K, BlockQ3K, BlockQ5K, BlockQ8K};

/// Σ w·a over one Q2_K row and one Q8_K row: per super-block the exact integer sums, scaled in
/// order. The reference the tiles are tested against.
#[cfg(test)]
pub fn vec_dot_q2_k_scalar(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for (v, &q8) in ab.qs.iter().enumerate() {
            let (half, c, l) = (v / 128, v % 128 / 32, v % 32);
            let code = (wb.qs[32 * half + l] >> (2 * c)) & 3;
            sumi += i32::from(wb.scales[v / 16] & 15) * i32::from(code) * i32::from(q8);
        }
        for (k, &s) in ab.bsums.iter().enumerate() {
            summ += i32::from(wb.scales[k] >> 4) * i32::from(s);
        }
        sum += ab.d * wb.d.to_f32() * sumi as f32 - ab.d * wb.dmin.to_f32() * summ as f32;
    }
    sum
}

/// Σ w·a over one Q3_K row and one Q8_K row, as [`vec_dot_q2_k_scalar`].
#[cfg(test)]
pub fn vec_dot_q3_k_scalar(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for (v, &q8) in ab.qs.iter().enumerate() {
            let (half, c, l) = (v / 128, v % 128 / 32, v % 32);
            let low = i32::from((wb.qs[32 * half + l] >> (2 * c)) & 3);
            let high = (wb.hmask[l] >> (4 * half + c)) & 1;
            let code = if high == 1 { low } else { low - 4 };
            sumi += i32::from(q3_scale(&wb.scales, v / 16)) * code * i32::from(q8);
        }
        sum += ab.d * wb.d.to_f32() * sumi as f32;
    }
    sum
}

/// Σ w·a over one Q5_K row and one Q8_K row, as [`vec_dot_q2_k_scalar`].
#[cfg(test)]
pub fn vec_dot_q5_k_scalar(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for (v, &q8) in ab.qs.iter().enumerate() {
            let (sub, l) = (v / 32, v % 32);
            let byte = wb.qs[32 * (sub / 2) + l];
            let low = if sub % 2 == 0 { byte & 15 } else { byte >> 4 };
            let code = low | (((wb.qh[l] >> sub) & 1) << 4);
            let (sc, _) = get_scale_min_k4(sub, &wb.scales);
            sumi += i32::from(sc) * i32::from(code) * i32::from(q8);
        }
        for k in 0..8 {
            let (_, m) = get_scale_min_k4(k, &wb.scales);
            summ += i32::from(m) * (i32::from(ab.bsums[2 * k]) + i32::from(ab.bsums[2 * k + 1]));
        }
        sum += ab.d * wb.d.to_f32() * sumi as f32 - ab.d * wb.dmin.to_f32() * summ as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
pub use super::tile_k_wide::{q2_k_wide, q3_k_wide, q5_k_wide};
#[cfg(target_arch = "x86_64")]
pub(super) use vnni::q3_scales;
#[cfg(target_arch = "x86_64")]
pub use vnni::{q2_k, q3_k, q5_k};

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::super::tile_k::{load, scales_mins};
    use super::super::x86::{hsum8, hsum8_tile};
    use super::{BlockQ2K, BlockQ3K, BlockQ5K, BlockQ8K};
    use std::arch::x86_64::*;

    /// Byte shuffles that pick, from eight i16 scales held in both 128-bit halves, scales `2c`
    /// (low half) and `2c + 1` (high half) for chunk `c` of a 128-value half: the two sub-blocks
    /// of 16 that the chunk's 32 values span (llama.cpp's `get_scale_shuffle_q3k`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn scale_shuffles() -> [__m256i; 4] {
        let pick = |k: i16| _mm_set1_epi16(((2 * k + 1) << 8) | (2 * k));
        let mut out = [_mm256_setzero_si256(); 4];
        for (c, out) in (0i16..).zip(&mut out) {
            *out = _mm256_set_m128i(pick(2 * c + 1), pick(2 * c));
        }
        out
    }

    /// Sixteen i8 scales widened to i16, as two vectors of eight held in both halves (scales
    /// `0..8` for the first 128 values, `8..16` for the rest), for [`scale_shuffles`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn scale_halves(scales: __m128i) -> [__m256i; 2] {
        let wide = _mm256_cvtepi8_epi16(scales);
        [
            _mm256_broadcastsi128_si256(_mm256_castsi256_si128(wide)),
            _mm256_broadcastsi128_si256(_mm256_extracti128_si256::<1>(wide)),
        ]
    }

    /// Q2_K rows × Q8_K tokens; block `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q2_k<const R: usize, const T: usize>(
        w: &[BlockQ2K],
        rs: usize,
        bs: usize,
        a: [&[BlockQ8K]; T],
    ) -> [[f32; T]; R] {
        let (m3, m4) = (_mm256_set1_epi8(3), _mm_set1_epi8(15));
        let shuffles = scale_shuffles();
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for b in 0..a[0].len() {
            for r in 0..R {
                let wb = &w[r * rs + b * bs];
                // SAFETY: `scales` is sixteen bytes, one unaligned 128-bit load.
                let packed = unsafe { _mm_loadu_si128(wb.scales.as_ptr().cast()) };
                let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
                let scales = scale_halves(_mm_and_si128(packed, m4));
                let (dw, dminw) = (wb.d.to_f32(), wb.dmin.to_f32());
                let mut sumi = [_mm256_setzero_si256(); T];
                for (half, scales) in scales.iter().enumerate() {
                    let mut shifted = load(&wb.qs, 32 * half);
                    for (c, shuffle) in shuffles.iter().enumerate() {
                        let codes = _mm256_and_si256(shifted, m3);
                        shifted = _mm256_srli_epi16(shifted, 2);
                        let scale = _mm256_shuffle_epi8(*scales, *shuffle);
                        for t in 0..T {
                            let q8 = load(&a[t][b].qs, 128 * half + 32 * c);
                            let p = _mm256_maddubs_epi16(codes, q8);
                            sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale, p);
                        }
                    }
                }
                for t in 0..T {
                    let ab = &a[t][b];
                    // SAFETY: `bsums` is sixteen i16, one unaligned 256-bit load.
                    let sums = unsafe { _mm256_loadu_si256(ab.bsums.as_ptr().cast()) };
                    let prod = _mm256_madd_epi16(mins, sums);
                    let (d, dmin) = (ab.d * dw, -ab.d * dminw);
                    acc[r][t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc[r][t]);
                    acc[r][t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[r][t]);
                }
            }
        }
        hsum8_tile(acc)
    }

    /// Q3_K's sixteen signed scales from their 12 packed bytes, in four 32-bit words as
    /// `ggml_vec_dot_q3_K_q8_K` unpacks them (the arithmetic of `q3_scale`, four scales a word).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q3_scales(packed: &[u8; 12]) -> __m128i {
        let word = |i: usize| u32::from_le_bytes([0, 1, 2, 3].map(|k| packed[4 * i + k]));
        let (a0, a1, a2) = (word(0), word(1), word(2));
        let (low, top) = (0x0f0f_0f0f, 0x0303_0303);
        let bytes = _mm_set_epi32(
            (((a1 >> 4) & low) | (((a2 >> 6) & top) << 4)) as i32,
            (((a0 >> 4) & low) | (((a2 >> 4) & top) << 4)) as i32,
            ((a1 & low) | (((a2 >> 2) & top) << 4)) as i32,
            ((a0 & low) | ((a2 & top) << 4)) as i32,
        );
        _mm_sub_epi8(bytes, _mm_set1_epi8(32))
    }

    /// Q3_K rows × Q8_K tokens; block `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q3_k<const R: usize, const T: usize>(
        w: &[BlockQ3K],
        rs: usize,
        bs: usize,
        a: [&[BlockQ8K]; T],
    ) -> [[f32; T]; R] {
        let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
        let shuffles = scale_shuffles();
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for b in 0..a[0].len() {
            for r in 0..R {
                let wb = &w[r * rs + b * bs];
                let scales = scale_halves(q3_scales(&wb.scales));
                // The high bits inverted: a set bit here takes 4 off the code.
                let mut clear = _mm256_xor_si256(load(&wb.hmask, 0), _mm256_set1_epi8(-1));
                let mut sumi = [_mm256_setzero_si256(); T];
                for (half, scales) in scales.iter().enumerate() {
                    let mut shifted = load(&wb.qs, 32 * half);
                    for (c, shuffle) in shuffles.iter().enumerate() {
                        let low = _mm256_and_si256(shifted, m3);
                        shifted = _mm256_srli_epi16(shifted, 2);
                        let four = _mm256_slli_epi16(_mm256_and_si256(clear, one), 2);
                        clear = _mm256_srli_epi16(clear, 1);
                        let scale = _mm256_shuffle_epi8(*scales, *shuffle);
                        for t in 0..T {
                            let q8 = load(&a[t][b].qs, 128 * half + 32 * c);
                            let p = _mm256_sub_epi16(
                                _mm256_maddubs_epi16(low, q8),
                                _mm256_maddubs_epi16(four, q8),
                            );
                            sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale, p);
                        }
                    }
                }
                let dw = wb.d.to_f32();
                for t in 0..T {
                    let d = a[t][b].d * dw;
                    acc[r][t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[r][t]);
                }
            }
        }
        hsum8_tile(acc)
    }

    /// Q5_K rows × Q8_K tokens; block `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q5_k<const R: usize, const T: usize>(
        w: &[BlockQ5K],
        rs: usize,
        bs: usize,
        a: [&[BlockQ8K]; T],
    ) -> [[f32; T]; R] {
        let (m4, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut summs = [[0f32; T]; R];
        for b in 0..a[0].len() {
            // The activations' sums per 32-value sub-block, as llama.cpp's `hadd` of its sums of 16.
            // (Plain loops here and below: closures in a kernel are not always inlined, and then
            // every intrinsic in them is a call.)
            let mut q8s = [_mm_setzero_si128(); T];
            for t in 0..T {
                let sums = &a[t][b].bsums;
                // SAFETY: `bsums` is sixteen i16, two unaligned 128-bit loads.
                let (lo, hi) = unsafe {
                    (
                        _mm_loadu_si128(sums.as_ptr().cast()),
                        _mm_loadu_si128(sums.as_ptr().add(8).cast()),
                    )
                };
                q8s[t] = _mm_hadd_epi16(lo, hi);
            }
            for r in 0..R {
                let wb = &w[r * rs + b * bs];
                let (sc, m) = scales_mins(&wb.scales);
                let mins = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(m)));
                let mut high = load(&wb.qh, 0);
                let mut sumi = [_mm256_setzero_si256(); T];
                for j in 0..4 {
                    let bits = load(&wb.qs, 32 * j);
                    let fifth_lo = _mm256_slli_epi16(_mm256_and_si256(high, one), 4);
                    let fifth_hi =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 1), one), 4);
                    high = _mm256_srli_epi16(high, 2);
                    let codes = [
                        _mm256_or_si256(_mm256_and_si256(bits, m4), fifth_lo),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), fifth_hi),
                    ];
                    for (i, codes) in codes.iter().enumerate() {
                        let scale = _mm256_set1_epi16(i16::from(sc[2 * j + i]));
                        for t in 0..T {
                            let q8 = load(&a[t][b].qs, 64 * j + 32 * i);
                            let p = _mm256_maddubs_epi16(*codes, q8);
                            sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale, p);
                        }
                    }
                }
                let (dw, dminw) = (wb.d.to_f32(), wb.dmin.to_f32());
                for t in 0..T {
                    let da = a[t][b].d;
                    let (d, dmin) = (da * dw, -da * dminw);
                    let prod = _mm_madd_epi16(mins, q8s[t]);
                    let m = _mm_hadd_epi32(_mm_hadd_epi32(prod, prod), prod);
                    summs[r][t] = dmin.mul_add(_mm_cvtsi128_si32(m) as f32, summs[r][t]);
                    acc[r][t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[r][t]);
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = hsum8(acc[r][t]) + summs[r][t];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::as_candle;
    #[cfg(target_arch = "x86_64")]
    use super::super::cpu;
    use super::super::test_blocks::random;
    #[cfg(target_arch = "x86_64")]
    use super::super::tile::WIDE_TOKENS;
    use super::super::tile_k::tests::{acts, close};
    use super::*;
    use candle_core::quantized::k_quants::{self as candle, GgmlType as _};
    use half::f16;

    /// Seeded Q2_K blocks with their scales set (the random bytes could be NaN as f16).
    fn q2(n: usize, seed: u64, d: f32, dmin: f32) -> Vec<BlockQ2K> {
        let mut w: Vec<BlockQ2K> = random(n, seed);
        for (i, b) in w.iter_mut().enumerate() {
            let k = 1.0 + (i % 7) as f32 / 7.0;
            (b.d, b.dmin) = (f16::from_f32(d * k), f16::from_f32(dmin * k));
        }
        w
    }

    fn q3(n: usize, seed: u64, d: f32) -> Vec<BlockQ3K> {
        let mut w: Vec<BlockQ3K> = random(n, seed);
        for (i, b) in w.iter_mut().enumerate() {
            b.d = f16::from_f32(d * (1.0 + (i % 7) as f32 / 7.0));
        }
        w
    }

    fn q5(n: usize, seed: u64, d: f32, dmin: f32) -> Vec<BlockQ5K> {
        let mut w: Vec<BlockQ5K> = random(n, seed);
        for (i, b) in w.iter_mut().enumerate() {
            let k = 1.0 + (i % 7) as f32 / 7.0;
            (b.d, b.dmin) = (f16::from_f32(d * k), f16::from_f32(dmin * k));
        }
        w
    }

    /// The scalar references against candle's products (an independent implementation of the
    /// same blocks).
    #[test]
    fn scalar_references_match_candle() {
        for (nb, seed) in [(1, 1), (3, 2), (9, 3)] {
            let a = acts(nb, seed + 10);
            let w2 = q2(nb, seed, 0.02, 0.01);
            let c2 = candle::BlockQ2K::vec_dot(nb * 256, as_candle(&w2), as_candle(&a));
            close(vec_dot_q2_k_scalar(&w2, &a), c2, "Q2_K vs candle");
            let w3 = q3(nb, seed + 1, 0.01);
            let c3 = candle::BlockQ3K::vec_dot(nb * 256, as_candle(&w3), as_candle(&a));
            close(vec_dot_q3_k_scalar(&w3, &a), c3, "Q3_K vs candle");
            let w5 = q5(nb, seed + 2, 0.02, 0.01);
            let c5 = candle::BlockQ5K::vec_dot(nb * 256, as_candle(&w5), as_candle(&a));
            close(vec_dot_q5_k_scalar(&w5, &a), c5, "Q5_K vs candle");
        }
    }

    /// `$tile` against `$reference` on 4 rows of `$w` (`nb` blocks each, given row-major and
    /// interleaved): the wide tile equal to single-token ones bit for bit, and close to the
    /// reference.
    #[cfg(target_arch = "x86_64")]
    fn check_tiles<W: Copy>(
        w: &[W],
        nb: usize,
        a: &[BlockQ8K],
        wide: super::super::TileFn<W, BlockQ8K, WIDE_TOKENS>,
        single: super::super::TileFn<W, BlockQ8K, 1>,
        reference: fn(&[W], &[BlockQ8K]) -> f32,
        what: &str,
    ) {
        let toks: [&[BlockQ8K]; WIDE_TOKENS] = std::array::from_fn(|t| &a[t * nb..(t + 1) * nb]);
        let inter: Vec<W> = (0..nb)
            .flat_map(|b| (0..4).map(move |r| (r, b)))
            .map(|(r, b)| w[r * nb + b])
            .collect();
        // SAFETY (each `unsafe` below): the caller checked the CPU has AVX-512 VNNI.
        let (rows, interleaved) = unsafe { (wide(w, nb, 1, toks), wide(&inter, 1, 4, toks)) };
        assert!(
            rows == interleaved,
            "{what}: interleaved rows give other results"
        );
        for (t, tok) in toks.iter().enumerate() {
            let one = unsafe { single(w, nb, 1, [tok]) };
            for r in 0..4 {
                assert_eq!(
                    one[r][0].to_bits(),
                    rows[r][t].to_bits(),
                    "{what} row {r} token {t}"
                );
                close(rows[r][t], reference(&w[r * nb..(r + 1) * nb], tok), what);
            }
        }
    }

    /// The tiles against the scalar references, on random codes under ordinary scales and under
    /// the largest codes and scales (all bits set) and all-zero blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tiles_match_scalar_references() {
        if !cpu::has_avx512_vnni() {
            return;
        }
        for (nb, seed) in [(1, 4), (2, 5), (6, 6)] {
            let a = acts(WIDE_TOKENS * nb, seed + 20);
            let mut w2 = q2(4 * nb, seed, 0.02, 0.01);
            let mut w3 = q3(4 * nb, seed + 1, 0.01);
            let mut w5 = q5(4 * nb, seed + 2, 0.02, 0.01);
            check_tiles(
                &w2,
                nb,
                &a,
                q2_k_wide,
                q2_k::<4, 1>,
                vec_dot_q2_k_scalar,
                "Q2_K",
            );
            check_tiles(
                &w3,
                nb,
                &a,
                q3_k_wide,
                q3_k::<4, 1>,
                vec_dot_q3_k_scalar,
                "Q3_K",
            );
            check_tiles(
                &w5,
                nb,
                &a,
                q5_k_wide,
                q5_k::<4, 1>,
                vec_dot_q5_k_scalar,
                "Q5_K",
            );
            // Every code, scale and minimum at its largest (Q3_K's scales at 31, high bits set).
            for b in &mut w2 {
                (b.scales, b.qs) = ([0xff; 16], [0xff; 64]);
            }
            for b in &mut w3 {
                (b.hmask, b.qs, b.scales) = ([0xff; 32], [0xff; 64], [0xff; 12]);
            }
            for b in &mut w5 {
                (b.scales, b.qh, b.qs) = ([0xff; 12], [0xff; 32], [0xff; 128]);
            }
            check_tiles(
                &w2,
                nb,
                &a,
                q2_k_wide,
                q2_k::<4, 1>,
                vec_dot_q2_k_scalar,
                "Q2_K max",
            );
            check_tiles(
                &w3,
                nb,
                &a,
                q3_k_wide,
                q3_k::<4, 1>,
                vec_dot_q3_k_scalar,
                "Q3_K max",
            );
            check_tiles(
                &w5,
                nb,
                &a,
                q5_k_wide,
                q5_k::<4, 1>,
                vec_dot_q5_k_scalar,
                "Q5_K max",
            );
            // All-zero codes and high bits: Q3_K's codes at −4, the most negative.
            for b in &mut w3 {
                (b.hmask, b.qs) = ([0; 32], [0; 64]);
            }
            check_tiles(
                &w3,
                nb,
                &a,
                q3_k_wide,
                q3_k::<4, 1>,
                vec_dot_q3_k_scalar,
                "Q3_K min",
            );
            let zero2: Vec<BlockQ2K> = vec![bytemuck::Zeroable::zeroed(); 4 * nb];
            check_tiles(
                &zero2,
                nb,
                &a,
                q2_k_wide,
                q2_k::<4, 1>,
                vec_dot_q2_k_scalar,
                "Q2_K 0",
            );
        }
    }
}
