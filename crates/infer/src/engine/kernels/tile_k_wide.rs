//! The batch tiles of Q2_K, Q3_K, Q4_K and Q5_K on 512-bit lanes: 4 weight rows ×
//! [`WIDE_TOKENS`] tokens, two tokens per vector (the first in the low 256 bits).
//!
//! Each half of a vector does exactly the 256-bit tile's arithmetic (`tile_k`, `tile_k235`: the
//! same `vpmaddubsw` and `vpdpwssd` on the same bytes into the same eight i32 lanes, the same
//! fused multiply-adds per super-block and the same horizontal sums), so a wide tile equals the
//! single-token tiles bit for bit, which the tests of those modules check. What changes is the
//! loop order: per 32-value chunk the activations of every token pair are loaded once and serve
//! the tile's four rows, and each instruction does the work of two 256-bit ones. That halves the
//! instructions of the inner loop against running the 256-bit tile four tokens at a time.

use super::tile::{halves, pair_f, pair_i, PAIRS, WIDE_TOKENS};
use super::tile_k::{load, scales_mins};
use super::tile_k235::q3_scales;
use shuku_quants::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ8K};
use std::arch::x86_64::*;

/// Rows of a tile.
const ROWS: usize = 4;

/// Per token pair of a super-block: `d_a` of each token in its half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_scales(a: &[&[BlockQ8K]; WIDE_TOKENS], b: usize) -> [__m512; PAIRS] {
    let mut da = [_mm512_setzero_ps(); PAIRS];
    for (p, da) in da.iter_mut().enumerate() {
        *da = pair_f(_mm_set_ss(a[2 * p][b].d), _mm_set_ss(a[2 * p + 1][b].d));
    }
    da
}

/// Chunk `at..at + 32` of both tokens of every pair.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_chunks(a: &[&[BlockQ8K]; WIDE_TOKENS], b: usize, at: usize) -> [__m512i; PAIRS] {
    let mut qa = [_mm512_setzero_si512(); PAIRS];
    for (p, qa) in qa.iter_mut().enumerate() {
        *qa = pair_i(load(&a[2 * p][b].qs, at), load(&a[2 * p + 1][b].qs, at));
    }
    qa
}

/// The activations' sums of 32 values (llama.cpp's `hadd` of its sums of 16) for both tokens of
/// every pair: eight i16 per token, in its 128-bit half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_sums32(a: &[&[BlockQ8K]; WIDE_TOKENS], b: usize) -> [__m256i; PAIRS] {
    let mut out = [_mm256_setzero_si256(); PAIRS];
    for (p, out) in out.iter_mut().enumerate() {
        *out = _mm256_set_m128i(sums32(&a[2 * p + 1][b]), sums32(&a[2 * p][b]));
    }
    out
}

/// One token's sums of 32 values.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn sums32(ab: &BlockQ8K) -> __m128i {
    // SAFETY: `bsums` is sixteen i16, two unaligned 128-bit loads.
    unsafe {
        _mm_hadd_epi16(
            _mm_loadu_si128(ab.bsums.as_ptr().cast()),
            _mm_loadu_si128(ab.bsums.as_ptr().add(8).cast()),
        )
    }
}

/// `-x` in every lane (the sign bit flipped, as a scalar negation).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn neg(x: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(x),
        _mm512_set1_epi32(i32::MIN),
    ))
}

/// Byte shuffle picking i16 scales `k` (low 128 bits of each token's 256) and `k + 1` (high).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pick_pair(k: usize) -> __m512i {
    let (lo, hi) = (2 * k as i16, 2 * k as i16 + 2);
    _mm512_broadcast_i64x4(_mm256_set_m128i(
        _mm_set1_epi16(((hi + 1) << 8) | hi),
        _mm_set1_epi16(((lo + 1) << 8) | lo),
    ))
}

/// `-d_a` of both tokens of every pair, four lanes each (the minimums' accumulators).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_neg_scales4(a: &[&[BlockQ8K]; WIDE_TOKENS], b: usize) -> [__m256; PAIRS] {
    let mut out = [_mm256_setzero_ps(); PAIRS];
    for (p, out) in out.iter_mut().enumerate() {
        *out = _mm256_set_m128(_mm_set1_ps(-a[2 * p + 1][b].d), _mm_set1_ps(-a[2 * p][b].d));
    }
    out
}

/// 32 bytes of `p` at `at`, in both halves.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn both(p: &[u8], at: usize) -> __m512i {
    _mm512_broadcast_i64x4(load(p, at))
}

/// Horizontal sum of four f32 lanes as the 256-bit Q4_K tile sums its minimums' accumulator.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum4(m: __m128) -> f32 {
    let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
}

/// Q4_K (`FIFTH` false) or Q5_K (`FIFTH` true) codes of 64-value group `j` of a super-block:
/// the low and high nibbles of its 32 bytes, with the fifth bits of `qh` (bits `2j`, `2j + 1`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_codes<const FIFTH: bool>(qs: &[u8], qh: &[u8], j: usize) -> [__m512i; 2] {
    let m4 = _mm512_set1_epi8(0x0f);
    let bits = both(qs, 32 * j);
    let lo = _mm512_and_si512(bits, m4);
    let hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
    if !FIFTH {
        return [lo, hi];
    }
    let one = _mm512_set1_epi8(1);
    let high = _mm512_srl_epi16(both(qh, 0), _mm_cvtsi32_si128(2 * j as i32));
    let fifth_lo = _mm512_slli_epi16(_mm512_and_si512(high, one), 4);
    let fifth_hi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(high, 1), one), 4);
    [_mm512_or_si512(lo, fifth_lo), _mm512_or_si512(hi, fifth_hi)]
}

/// The sub-block sums of Q4_K or Q5_K rows (`qs`, `qh` and scales of each row): per row and pair,
/// `Σ_k sc_k · Σ_{i ∈ k} q_i · a_i` in eight i32 lanes per token.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_sums<const FIFTH: bool>(
    rows: [(&[u8], &[u8]); ROWS],
    sc: &[[u8; 8]; ROWS],
    a: &[&[BlockQ8K]; WIDE_TOKENS],
    b: usize,
) -> [[__m512i; PAIRS]; ROWS] {
    let mut sumi = [[_mm512_setzero_si512(); PAIRS]; ROWS];
    for j in 0..4 {
        let qa = [pair_chunks(a, b, 64 * j), pair_chunks(a, b, 64 * j + 32)];
        for r in 0..ROWS {
            let codes = k4_codes::<FIFTH>(rows[r].0, rows[r].1, j);
            for i in 0..2 {
                let scale = _mm512_set1_epi16(i16::from(sc[r][2 * j + i]));
                for p in 0..PAIRS {
                    let prod = _mm512_maddubs_epi16(codes[i], qa[i][p]);
                    sumi[r][p] = _mm512_dpwssd_epi32(sumi[r][p], scale, prod);
                }
            }
        }
    }
    sumi
}

/// Q4_K rows × [`WIDE_TOKENS`] tokens; block `b` of tile row `r` is `w[r * rs + b * bs]`. The
/// arithmetic of `tile_k::q4_k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q4_k_wide(
    w: &[BlockQ4K],
    rs: usize,
    bs: usize,
    a: [&[BlockQ8K]; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; ROWS] {
    let mut acc = [[_mm512_setzero_ps(); PAIRS]; ROWS];
    let mut acc_m = [[_mm256_setzero_ps(); PAIRS]; ROWS];
    for b in 0..a[0].len() {
        let blocks: [&BlockQ4K; ROWS] = std::array::from_fn(|r| &w[r * rs + b * bs]);
        let mut sc = [[0u8; 8]; ROWS];
        let mut mins = [_mm256_setzero_si256(); ROWS];
        for r in 0..ROWS {
            let m;
            (sc[r], m) = scales_mins(&blocks[r].scales);
            let m16 = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(m)));
            mins[r] = _mm256_broadcastsi128_si256(m16);
        }
        let rows = blocks.map(|wb| (&wb.qs[..], &[][..]));
        let sumi = k4_sums::<false>(rows, &sc, &a, b);
        let (da, neg_da, q8s) = (
            pair_scales(&a, b),
            pair_neg_scales4(&a, b),
            pair_sums32(&a, b),
        );
        for r in 0..ROWS {
            let (dw, dminw) = (blocks[r].d.to_f32(), blocks[r].dmin.to_f32());
            for p in 0..PAIRS {
                let d = _mm512_mul_ps(da[p], _mm512_set1_ps(dw));
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
                let dmin = _mm256_mul_ps(neg_da[p], _mm256_set1_ps(dminw));
                let prod = _mm256_madd_epi16(mins[r], q8s[p]);
                acc_m[r][p] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), acc_m[r][p]);
            }
        }
    }
    let mut out = halves(acc);
    for r in 0..ROWS {
        for p in 0..PAIRS {
            let m = acc_m[r][p];
            out[r][2 * p] += hsum4(_mm256_castps256_ps128(m));
            out[r][2 * p + 1] += hsum4(_mm256_extractf128_ps(m, 1));
        }
    }
    out
}

/// Q5_K rows × [`WIDE_TOKENS`] tokens; the arithmetic of `tile_k235::q5_k` (the minimums' term
/// summed per token as a scalar, added after the horizontal sum).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q5_k_wide(
    w: &[BlockQ5K],
    rs: usize,
    bs: usize,
    a: [&[BlockQ8K]; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; ROWS] {
    let mut acc = [[_mm512_setzero_ps(); PAIRS]; ROWS];
    // Lanes 0 and 4 of each: the two tokens' scalar sums.
    let mut summs = [[_mm256_setzero_ps(); PAIRS]; ROWS];
    for b in 0..a[0].len() {
        let blocks: [&BlockQ5K; ROWS] = std::array::from_fn(|r| &w[r * rs + b * bs]);
        let mut sc = [[0u8; 8]; ROWS];
        let mut mins = [_mm256_setzero_si256(); ROWS];
        for r in 0..ROWS {
            let m;
            (sc[r], m) = scales_mins(&blocks[r].scales);
            let m16 = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(m)));
            mins[r] = _mm256_broadcastsi128_si256(m16);
        }
        let rows = blocks.map(|wb| (&wb.qs[..], &wb.qh[..]));
        let sumi = k4_sums::<true>(rows, &sc, &a, b);
        let (da, neg_da, q8s) = (
            pair_scales(&a, b),
            pair_neg_scales4(&a, b),
            pair_sums32(&a, b),
        );
        for r in 0..ROWS {
            let (dw, dminw) = (blocks[r].d.to_f32(), blocks[r].dmin.to_f32());
            for p in 0..PAIRS {
                let d = _mm512_mul_ps(da[p], _mm512_set1_ps(dw));
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
                // Each token's Σ m·bsum: four i32 lanes summed within its 128-bit half.
                let prod = _mm256_madd_epi16(mins[r], q8s[p]);
                let sum = _mm256_hadd_epi32(_mm256_hadd_epi32(prod, prod), prod);
                let dmin = _mm256_mul_ps(neg_da[p], _mm256_set1_ps(dminw));
                summs[r][p] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(sum), summs[r][p]);
            }
        }
    }
    let mut out = halves(acc);
    for r in 0..ROWS {
        for p in 0..PAIRS {
            let s = summs[r][p];
            out[r][2 * p] += _mm256_cvtss_f32(s);
            out[r][2 * p + 1] += _mm_cvtss_f32(_mm256_extractf128_ps(s, 1));
        }
    }
    out
}

/// Q2_K (`Q3` false) or Q3_K (`Q3` true) sub-block sums: per row and pair, `Σ_k sc_k · Σ_{i ∈ k}
/// q_i · a_i` in eight i32 lanes per token. `rows` holds each row's 2-bit codes and (Q3_K) its
/// high-bit mask; `scales` each row's sixteen scales as i16, the first eight in both halves of
/// `scales[r][0]`, the rest in `scales[r][1]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k2_sums<const Q3: bool>(
    rows: [(&[u8], &[u8]); ROWS],
    scales: &[[__m512i; 2]; ROWS],
    a: &[&[BlockQ8K]; WIDE_TOKENS],
    b: usize,
) -> [[__m512i; PAIRS]; ROWS] {
    let (m3, one) = (_mm512_set1_epi8(3), _mm512_set1_epi8(1));
    let mut sumi = [[_mm512_setzero_si512(); PAIRS]; ROWS];
    for chunk in 0..8 {
        let (half, c) = (chunk / 4, chunk % 4);
        let qa = pair_chunks(a, b, 128 * half + 32 * c);
        // Sub-blocks `8·half + 2c` (low 128 bits of each token) and `+ 1` (high).
        let shuffle = pick_pair(2 * c);
        let shift = _mm_cvtsi32_si128(2 * c as i32);
        for r in 0..ROWS {
            let low = _mm512_and_si512(_mm512_srl_epi16(both(rows[r].0, 32 * half), shift), m3);
            let scale = _mm512_shuffle_epi8(scales[r][half], shuffle);
            let four = if Q3 {
                // A clear high bit takes 4 off the code.
                let clear = _mm512_andnot_si512(both(rows[r].1, 0), _mm512_set1_epi8(-1));
                let bit = _mm_cvtsi32_si128((4 * half + c) as i32);
                _mm512_slli_epi16(_mm512_and_si512(_mm512_srl_epi16(clear, bit), one), 2)
            } else {
                _mm512_setzero_si512()
            };
            for p in 0..PAIRS {
                let mut prod = _mm512_maddubs_epi16(low, qa[p]);
                if Q3 {
                    prod = _mm512_sub_epi16(prod, _mm512_maddubs_epi16(four, qa[p]));
                }
                sumi[r][p] = _mm512_dpwssd_epi32(sumi[r][p], scale, prod);
            }
        }
    }
    sumi
}

/// Sixteen i8 scales as i16, eight per vector, each eight in both 128-bit halves of every token's
/// 256 bits (the layout [`k2_sums`] shuffles from).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scale_vectors(scales: __m128i) -> [__m512i; 2] {
    let wide = _mm256_cvtepi8_epi16(scales);
    [
        _mm512_broadcast_i32x4(_mm256_castsi256_si128(wide)),
        _mm512_broadcast_i32x4(_mm256_extracti128_si256::<1>(wide)),
    ]
}

/// Q2_K rows × [`WIDE_TOKENS`] tokens; the arithmetic of `tile_k235::q2_k` (the minimums through
/// the activations' sums of 16, into the same accumulator before the codes' term).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q2_k_wide(
    w: &[BlockQ2K],
    rs: usize,
    bs: usize,
    a: [&[BlockQ8K]; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; ROWS] {
    let m4 = _mm_set1_epi8(15);
    let mut acc = [[_mm512_setzero_ps(); PAIRS]; ROWS];
    for b in 0..a[0].len() {
        let blocks: [&BlockQ2K; ROWS] = std::array::from_fn(|r| &w[r * rs + b * bs]);
        let mut scales = [[_mm512_setzero_si512(); 2]; ROWS];
        let mut mins = [_mm512_setzero_si512(); ROWS];
        for r in 0..ROWS {
            // SAFETY: `scales` is sixteen bytes, one unaligned 128-bit load.
            let packed = unsafe { _mm_loadu_si128(blocks[r].scales.as_ptr().cast()) };
            scales[r] = scale_vectors(_mm_and_si128(packed, m4));
            let m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
            mins[r] = _mm512_broadcast_i64x4(m);
        }
        let rows = blocks.map(|wb| (&wb.qs[..], &[][..]));
        let sumi = k2_sums::<false>(rows, &scales, &a, b);
        let da = pair_scales(&a, b);
        let mut bsums = [_mm512_setzero_si512(); PAIRS];
        for (p, bsums) in bsums.iter_mut().enumerate() {
            let (a0, a1) = (&a[2 * p][b], &a[2 * p + 1][b]);
            // SAFETY: `bsums` is sixteen i16, one unaligned 256-bit load each.
            *bsums = unsafe {
                pair_i(
                    _mm256_loadu_si256(a0.bsums.as_ptr().cast()),
                    _mm256_loadu_si256(a1.bsums.as_ptr().cast()),
                )
            };
        }
        for r in 0..ROWS {
            let (dw, dminw) = (blocks[r].d.to_f32(), blocks[r].dmin.to_f32());
            for p in 0..PAIRS {
                let prod = _mm512_madd_epi16(mins[r], bsums[p]);
                let dmin = _mm512_mul_ps(neg(da[p]), _mm512_set1_ps(dminw));
                acc[r][p] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(prod), acc[r][p]);
                let d = _mm512_mul_ps(da[p], _mm512_set1_ps(dw));
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
            }
        }
    }
    halves(acc)
}

/// Q3_K rows × [`WIDE_TOKENS`] tokens; the arithmetic of `tile_k235::q3_k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q3_k_wide(
    w: &[BlockQ3K],
    rs: usize,
    bs: usize,
    a: [&[BlockQ8K]; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; ROWS] {
    let mut acc = [[_mm512_setzero_ps(); PAIRS]; ROWS];
    for b in 0..a[0].len() {
        let blocks: [&BlockQ3K; ROWS] = std::array::from_fn(|r| &w[r * rs + b * bs]);
        let mut scales = [[_mm512_setzero_si512(); 2]; ROWS];
        for r in 0..ROWS {
            scales[r] = scale_vectors(q3_scales(&blocks[r].scales));
        }
        let rows = blocks.map(|wb| (&wb.qs[..], &wb.hmask[..]));
        let sumi = k2_sums::<true>(rows, &scales, &a, b);
        let da = pair_scales(&a, b);
        for r in 0..ROWS {
            let dw = blocks[r].d.to_f32();
            for p in 0..PAIRS {
                let d = _mm512_mul_ps(da[p], _mm512_set1_ps(dw));
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
            }
        }
    }
    halves(acc)
}
