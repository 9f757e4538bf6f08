//! Q4_K · Q8_K and Q6_K · Q8_K: scalar references and tiles of `R` weight rows × `T` tokens with
//! AVX-512 VNNI on 256-bit lanes (`T` = 1 is the single-token product).
//!
//! Written here because candle's k-quant products run one (row, token) pair at a time through
//! generic code, a fifth of llama.cpp's prompt speed on Q4_K_M files. The tiles follow llama.cpp's
//! AVX2 kernels (`ggml_vec_dot_q4_K_q8_K`, `ggml_vec_dot_q6_K_q8_K`) lane for lane: `vpmaddubsw`
//! of the weights' unsigned codes and the activations pairs values into i16, and `vpdpwssd` adds
//! those pairs times the sub-block scale into eight i32 lanes, which is llama.cpp's
//! `vpmaddwd` + `vpaddd` in one instruction with the same integers; then one fused multiply-add
//! by `d_w · d_a` per super-block, Q4_K's minimums through the activations' block sums (four
//! lanes, their own accumulator), Q6_K's offset of 32 taken off in integers, and llama.cpp's
//! horizontal sums. A tile unpacks each weight super-block once for its `T` tokens.
//!
//! Layouts (`ggml-common.h`): a Q4_K super-block of 256 values has `d`, `dmin`, 12 bytes packing
//! eight 6-bit scales and minimums, and 128 bytes of nibbles: bytes `32j…32j+31` hold values
//! `64j + l` in their low nibbles (sub-block `2j`) and `64j + 32 + l` in their high ones
//! (sub-block `2j + 1`); value = `d·sc·q − dmin·m`. A Q6_K super-block has 128 bytes of low
//! nibbles `ql`, 64 bytes of high bit pairs `qh`, sixteen i8 scales (one per 16 values) and `d`;
//! value = `d·sc·(q − 32)`. Q8_K has an f32 `d`, 256 codes and sixteen sums of 16 codes.

use shuku_quants::blocks::{get_scale_min_k4, BlockQ4K, BlockQ6K, BlockQ8K, QK_K};

/// Q4_K's and Q5_K's eight 6-bit scales and minimums from their 12 packed bytes.
/// A plain loop: the kernels call it once per super-block and row, and closures are not always
/// inlined into them.
#[inline(always)]
pub(super) fn scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = get_scale_min_k4(j, q);
    }
    (sc, m)
}

/// Σ w·a over one Q4_K row and one Q8_K row: per super-block the exact integer sums, scaled in
/// order. The reference the tiles are tested against (without the tiles, candle's product runs).
#[cfg(test)]
pub fn vec_dot_q4_k_scalar(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let (sc, m) = scales_mins(&wb.scales);
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for j in 0..4 {
            for l in 0..32 {
                let byte = wb.qs[32 * j + l];
                let (lo, hi) = (i32::from(byte & 15), i32::from(byte >> 4));
                sumi += i32::from(sc[2 * j]) * lo * i32::from(ab.qs[64 * j + l]);
                sumi += i32::from(sc[2 * j + 1]) * hi * i32::from(ab.qs[64 * j + 32 + l]);
            }
        }
        for (k, &mk) in m.iter().enumerate() {
            let s = i32::from(ab.bsums[2 * k]) + i32::from(ab.bsums[2 * k + 1]);
            summ += i32::from(mk) * s;
        }
        sum += ab.d * wb.d.to_f32() * sumi as f32 - ab.d * wb.dmin.to_f32() * summ as f32;
    }
    sum
}

/// Σ w·a over one Q6_K row and one Q8_K row: per super-block the exact integer sum, scaled in
/// order. The reference the tiles are tested against.
#[cfg(test)]
pub fn vec_dot_q6_k_scalar(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for n in 0..2 {
            let (ql, qh) = (&wb.ql[64 * n..], &wb.qh[32 * n..]);
            for l in 0..32 {
                let codes = [
                    (ql[l] & 15) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &q) in codes.iter().enumerate() {
                    let v = 128 * n + 32 * k + l;
                    let scale = i32::from(wb.scales[v / 16]);
                    sumi += scale * (i32::from(q) - 32) * i32::from(ab.qs[v]);
                }
            }
        }
        sum += ab.d * wb.d.to_f32() * sumi as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
pub use super::tile_k_wide::q4_k_wide;
#[cfg(target_arch = "x86_64")]
pub(super) use vnni::load;
#[cfg(target_arch = "x86_64")]
pub use vnni::{q4_k, q6_k, q6_k_wide};

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::super::tile::WIDE_TOKENS;
    use super::super::x86::{hsum8, hsum8_tile};
    use super::{scales_mins, BlockQ4K, BlockQ6K, BlockQ8K, QK_K};
    use std::arch::x86_64::*;

    /// 32 bytes at `p[at..at + 32]`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn load<T: Copy>(p: &[T], at: usize) -> __m256i {
        const { assert!(size_of::<T>() == 1) };
        let s = &p[at..at + 32];
        // SAFETY: `s` is 32 one-byte values, one unaligned 256-bit load.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    /// Q4_K rows × Q8_K tokens; block `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q4_k<const R: usize, const T: usize>(
        w: &[BlockQ4K],
        rs: usize,
        bs: usize,
        a: [&[BlockQ8K]; T],
    ) -> [[f32; T]; R] {
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut acc_m = [[_mm_setzero_ps(); T]; R];
        for b in 0..a[0].len() {
            // The activations' sums per 32-value sub-block, as llama.cpp's `hadd` of its sums of 16.
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
                let (dw, dminw) = (wb.d.to_f32(), wb.dmin.to_f32());
                let mut sumi = [_mm256_setzero_si256(); T];
                for j in 0..4 {
                    let bits = load(&wb.qs, 32 * j);
                    let lo = _mm256_and_si256(bits, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                    let scale_lo = _mm256_set1_epi16(i16::from(sc[2 * j]));
                    let scale_hi = _mm256_set1_epi16(i16::from(sc[2 * j + 1]));
                    for t in 0..T {
                        let qa = &a[t][b].qs;
                        let p_lo = _mm256_maddubs_epi16(lo, load(qa, 64 * j));
                        let p_hi = _mm256_maddubs_epi16(hi, load(qa, 64 * j + 32));
                        sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale_lo, p_lo);
                        sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale_hi, p_hi);
                    }
                }
                for t in 0..T {
                    let da = a[t][b].d;
                    let (d, dmin) = (da * dw, -da * dminw);
                    acc[r][t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[r][t]);
                    let prod = _mm_madd_epi16(mins, q8s[t]);
                    acc_m[r][t] =
                        _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r][t]);
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let mut m = acc_m[r][t];
                m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                m = _mm_add_ss(m, _mm_movehdup_ps(m));
                out[r][t] = hsum8(acc[r][t]) + _mm_cvtss_f32(m);
            }
        }
        out
    }

    /// `$tile` for 4 rows × [`WIDE_TOKENS`] tokens, as 4 × 4 tiles (the k-quant tiles keep a
    /// 256-bit accumulator per pair; wider ones would not fit the registers).
    macro_rules! wide_k {
        ($name:ident, $tile:ident, $w:ty) => {
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub fn $name(
                w: &[$w],
                rs: usize,
                bs: usize,
                a: [&[BlockQ8K]; WIDE_TOKENS],
            ) -> [[f32; WIDE_TOKENS]; 4] {
                let mut out = [[0f32; WIDE_TOKENS]; 4];
                for q in 0..WIDE_TOKENS / 4 {
                    let part = $tile::<4, 4>(w, rs, bs, std::array::from_fn(|t| a[4 * q + t]));
                    for r in 0..4 {
                        out[r][4 * q..4 * q + 4].copy_from_slice(&part[r]);
                    }
                }
                out
            }
        };
    }
    wide_k!(q6_k_wide, q6_k, BlockQ6K);

    /// Q6_K rows × Q8_K tokens; block `b` of tile row `r` is `w[r * rs + b * bs]` (see `tile`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub fn q6_k<const R: usize, const T: usize>(
        w: &[BlockQ6K],
        rs: usize,
        bs: usize,
        a: [&[BlockQ8K]; T],
    ) -> [[f32; T]; R] {
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for b in 0..a[0].len() {
            for r in 0..R {
                let wb = &w[r * rs + b * bs];
                // SAFETY: `scales` is sixteen i8, one unaligned 128-bit load.
                let scales = unsafe { _mm_loadu_si128(wb.scales.as_ptr().cast()) };
                let scales16 = _mm256_cvtepi8_epi16(scales);
                let dw = wb.d.to_f32();
                let mut sumi = [_mm256_setzero_si256(); T];
                for j in 0..QK_K / 128 {
                    let bits1 = load(&wb.ql, 64 * j);
                    let bits2 = load(&wb.ql, 64 * j + 32);
                    let high = load(&wb.qh, 32 * j);
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(high, m3), 4);
                    let h1 = _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(12)), 2);
                    let h2 = _mm256_and_si256(high, _mm256_set1_epi8(48));
                    let h3 = _mm256_srli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(-64)), 2);
                    let codes = [
                        _mm256_or_si256(_mm256_and_si256(bits1, m15), h0),
                        _mm256_or_si256(_mm256_and_si256(bits2, m15), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3),
                    ];
                    // Sub-blocks of 16: lanes 0–7 take scale 2i, lanes 8–15 scale 2i + 1.
                    let scale: [__m256i; 4] = std::array::from_fn(|k| {
                        let i = 8 * j + 2 * k;
                        _mm256_set_m128i(
                            _mm_set1_epi16(i16::from(wb.scales[i + 1])),
                            _mm_set1_epi16(i16::from(wb.scales[i])),
                        )
                    });
                    for t in 0..T {
                        let qa = &a[t][b].qs;
                        for k in 0..4 {
                            let p = _mm256_maddubs_epi16(codes[k], load(qa, 128 * j + 32 * k));
                            sumi[t] = _mm256_dpwssd_epi32(sumi[t], scale[k], p);
                        }
                    }
                }
                for t in 0..T {
                    let ab = &a[t][b];
                    // SAFETY: `bsums` is sixteen i16, one unaligned 256-bit load.
                    let sums = unsafe { _mm256_loadu_si256(ab.bsums.as_ptr().cast()) };
                    // 32 · Σ scale·Σa: the codes' offset of 32, in llama.cpp's lanes.
                    let offset = _mm256_slli_epi32(_mm256_madd_epi16(sums, scales16), 5);
                    let lanes = _mm256_sub_epi32(sumi[t], offset);
                    acc[r][t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(ab.d * dw),
                        _mm256_cvtepi32_ps(lanes),
                        acc[r][t],
                    );
                }
            }
        }
        hsum8_tile(acc)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::as_candle;
    #[cfg(target_arch = "x86_64")]
    use super::super::cpu;
    use super::super::test_blocks::{random, with_scales};
    #[cfg(target_arch = "x86_64")]
    use super::super::tile::WIDE_TOKENS;
    use super::*;
    use candle_core::quantized::k_quants::GgmlType as _;

    /// Q8_K activations as the engine's quantizer makes them: codes in −127..=127 and true sums.
    pub fn acts(n: usize, seed: u64) -> Vec<BlockQ8K> {
        let mut a: Vec<BlockQ8K> = random(n, seed);
        for (i, b) in a.iter_mut().enumerate() {
            b.d = 0.01 * (1.0 + (i % 5) as f32);
            for q in &mut b.qs {
                *q = (*q).max(-127);
            }
            b.bsums = std::array::from_fn(|g| {
                b.qs[16 * g..16 * (g + 1)]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum()
            });
        }
        a
    }

    /// [`acts`] with scale 1 and codes within ±7 (true sums kept): every product over them, and
    /// its float sums, stay exact below 2^24, so two orders of summation agree bit for bit.
    pub fn exact_acts(n: usize, seed: u64) -> Vec<BlockQ8K> {
        let mut a = acts(n, seed);
        for a in &mut a {
            a.d = 1.0;
            a.qs.iter_mut().for_each(|q| *q %= 8);
            a.bsums = std::array::from_fn(|g| {
                a.qs[16 * g..16 * (g + 1)]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum()
            });
        }
        a
    }

    pub fn close(got: f32, want: f32, what: &str) {
        assert!(
            (got - want).abs() <= 2e-5 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    }

    /// The scalar references against candle's products (an independent implementation of the
    /// same blocks).
    #[test]
    fn scalar_references_match_candle() {
        for (nb, seed) in [(1, 1), (3, 2), (9, 3)] {
            let a = acts(nb, seed + 10);
            let w4: Vec<BlockQ4K> = with_scales(random(nb, seed), &[0.02, 0.01]);
            let c4 = candle_core::quantized::k_quants::BlockQ4K::vec_dot(
                nb * QK_K,
                as_candle(&w4),
                as_candle(&a),
            );
            close(vec_dot_q4_k_scalar(&w4, &a), c4, "Q4_K vs candle");
            let mut w6: Vec<BlockQ6K> = random(nb, seed + 1);
            w6.iter_mut().for_each(|b| b.d = half::f16::from_f32(0.003));
            let c6 = candle_core::quantized::k_quants::BlockQ6K::vec_dot(
                nb * QK_K,
                as_candle(&w6),
                as_candle(&a),
            );
            close(vec_dot_q6_k_scalar(&w6, &a), c6, "Q6_K vs candle");
        }
    }

    /// The tiles against the scalar references, and the wide tile equal to single-token ones bit
    /// for bit, with rows given row-major and interleaved.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tiles_match_scalar_references() {
        if !cpu::has_avx512_vnni() {
            return;
        }
        for (nb, seed) in [(1, 4), (2, 5), (6, 6)] {
            let a = acts(WIDE_TOKENS * nb, seed + 20);
            let toks: [&[BlockQ8K]; WIDE_TOKENS] =
                std::array::from_fn(|t| &a[t * nb..(t + 1) * nb]);
            let w4: Vec<BlockQ4K> = with_scales(random(4 * nb, seed), &[0.02, 0.01]);
            let mut w6: Vec<BlockQ6K> = random(4 * nb, seed + 1);
            w6.iter_mut().for_each(|b| b.d = half::f16::from_f32(0.003));
            let inter4: Vec<BlockQ4K> = (0..nb)
                .flat_map(|b| (0..4).map(move |r| (r, b)))
                .map(|(r, b)| w4[r * nb + b])
                .collect();
            let inter6: Vec<BlockQ6K> = (0..nb)
                .flat_map(|b| (0..4).map(move |r| (r, b)))
                .map(|(r, b)| w6[r * nb + b])
                .collect();
            // SAFETY (each `unsafe` below): the CPU has AVX-512 VNNI (checked above).
            let (t4, t6) = unsafe { (q4_k_wide(&w4, nb, 1, toks), q6_k_wide(&w6, nb, 1, toks)) };
            let (i4, i6) = unsafe {
                (
                    q4_k_wide(&inter4, 1, 4, toks),
                    q6_k_wide(&inter6, 1, 4, toks),
                )
            };
            assert!(t4 == i4 && t6 == i6, "interleaved rows give other results");
            for t in 0..WIDE_TOKENS {
                let (s4, s6) = unsafe {
                    (
                        q4_k::<4, 1>(&w4, nb, 1, [toks[t]]),
                        q6_k::<4, 1>(&w6, nb, 1, [toks[t]]),
                    )
                };
                for r in 0..4 {
                    assert_eq!(
                        s4[r][0].to_bits(),
                        t4[r][t].to_bits(),
                        "Q4_K row {r} token {t}"
                    );
                    assert_eq!(
                        s6[r][0].to_bits(),
                        t6[r][t].to_bits(),
                        "Q6_K row {r} token {t}"
                    );
                    let row4 = &w4[r * nb..(r + 1) * nb];
                    let row6 = &w6[r * nb..(r + 1) * nb];
                    close(t4[r][t], vec_dot_q4_k_scalar(row4, toks[t]), "Q4_K tile");
                    close(t6[r][t], vec_dot_q6_k_scalar(row6, toks[t]), "Q6_K tile");
                }
            }
        }
    }
}
