//! AVX-512 VNNI kernels for the lane layouts (`lanes`, `lanes_k`): one group of 16 rows × `T`
//! tokens.
//!
//! Per group block: the eight code vectors (row `i` in lane `i`, four codes a lane) are unpacked
//! once for the `T` tokens; per token, eight `vpdpbusd` against the token's four-byte chunks
//! broadcast to every lane give the 16 rows' exact integer block sums (started from
//! `−offset · Σa`), and one conversion and one fused multiply-add by `d_w · d_a` accumulate them —
//! the arithmetic of `lanes::reference`, which the tests check bit for bit.

use super::lanes::{ActCodes, ActTerms, Q4_0x16, Q4_1x16, Q5_0x16, Q5_1x16, Q8_0x16, LANE_ROWS};
use super::lanes_k::Q6Kx16;
use super::lanes_k23::{Q2Kx16, Q3Kx16};
use super::lanes_k45::{K45Lanes, Q4Kx16, Q5Kx16};
use super::x86::lanes16;
use half::f16;
use shuku_quants::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// Activation codes `4c … 4c + 3` as one 32-bit word in every lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn chunk(qs: &[i8], c: usize) -> __m512i {
    let b = &qs[4 * c..4 * c + 4];
    _mm512_set1_epi32(i32::from_le_bytes([
        b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8,
    ]))
}

/// 16 f16 as f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn widen(h: &[f16; LANE_ROWS]) -> __m512 {
    // SAFETY: `h` is 16 f16 (32 bytes), one unaligned 256-bit load.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(h.as_ptr().cast()) })
}

/// 64 bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load(q: &[u8; 4 * LANE_ROWS]) -> __m512i {
    // SAFETY: `q` is 64 bytes, one unaligned 512-bit load.
    unsafe { _mm512_loadu_si512(q.as_ptr().cast()) }
}

/// The eight code vectors of a 4-bit group block: vector `c` pairs with activation chunk `c`
/// (low nibbles are values 0…15, high nibbles 16…31).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibble_codes(qs: &[[u8; 4 * LANE_ROWS]; 4]) -> [__m512i; 8] {
    let mask = _mm512_set1_epi8(0x0f);
    let mut out = [_mm512_setzero_si512(); 8];
    for c in 0..4 {
        let q = load(&qs[c]);
        out[c] = _mm512_and_si512(q, mask);
        out[c + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), mask);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_codes(g: &Q4_0x16) -> [__m512i; 8] {
    nibble_codes(&g.qs)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_codes(g: &Q4_1x16) -> [__m512i; 8] {
    nibble_codes(&g.qs)
}

/// A 5-bit group block's code vectors: the nibbles with each chunk's high bits (stored in
/// `lanes::spread_high_bits` order, row `i` in lane `i`) moved to bit 4.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn codes5(qh: &[u32; LANE_ROWS], qs: &[[u8; 4 * LANE_ROWS]; 4]) -> [__m512i; 8] {
    // SAFETY: `qh` is 16 u32 (64 bytes), one unaligned 512-bit load.
    let w = unsafe { _mm512_loadu_si512(qh.as_ptr().cast()) };
    let mask = _mm512_set1_epi32(0x1010_1010);
    let high = [
        _mm512_slli_epi32::<4>(w),
        _mm512_slli_epi32::<3>(w),
        _mm512_slli_epi32::<2>(w),
        _mm512_slli_epi32::<1>(w),
        w,
        _mm512_srli_epi32::<1>(w),
        _mm512_srli_epi32::<2>(w),
        _mm512_srli_epi32::<3>(w),
    ];
    let mut codes = nibble_codes(qs);
    for (c, h) in codes.iter_mut().zip(high) {
        *c = _mm512_or_si512(*c, _mm512_and_si512(h, mask));
    }
    codes
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_codes(g: &Q5_0x16) -> [__m512i; 8] {
    codes5(&g.qh, &g.qs)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_codes(g: &Q5_1x16) -> [__m512i; 8] {
    codes5(&g.qh, &g.qs)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_mins(g: &Q5_1x16) -> __m512 {
    widen(&g.m)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_codes(g: &Q8_0x16) -> [__m512i; 8] {
    std::array::from_fn(|c| load(&g.qs[c]))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_mins(g: &Q4_1x16) -> __m512 {
    widen(&g.m)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn no_mins<G>(_: &G) -> __m512 {
    _mm512_setzero_ps()
}

/// A kernel over group blocks `$w` and activation blocks `$a`: `$codes` unpacks a group block,
/// `$offset` is its codes' offset, `$mins` its minima (added as `m · s` when `$has_min`).
macro_rules! lane_kernel {
    ($(#[$doc:meta])* $name:ident, $w:ty, $a:ty, $codes:ident, $offset:literal, $mins:ident, $has_min:literal) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub fn $name<const T: usize>(
            w: &[$w],
            a: [&[$a]; T],
            terms: [&[ActTerms]; T],
        ) -> [[f32; LANE_ROWS]; T] {
            let blocks = w.len();
            for t in 0..T {
                assert!(a[t].len() >= blocks && terms[t].len() >= blocks);
            }
            let mut acc = [_mm512_setzero_ps(); T];
            for (b, g) in w.iter().enumerate() {
                let codes = $codes(g);
                let dw = widen(&g.d);
                let mw = $mins(g);
                for t in 0..T {
                    let (qa, tm) = (a[t][b].codes(), &terms[t][b]);
                    let mut sum = _mm512_set1_epi32(-$offset * tm.sum);
                    for (c, &code) in codes.iter().enumerate() {
                        sum = _mm512_dpbusd_epi32(sum, code, chunk(qa, c));
                    }
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(tm.d));
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[t]);
                    if $has_min {
                        acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(tm.s), acc[t]);
                    }
                }
            }
            lanes16(&acc)
        }
    };
}

lane_kernel!(
    /// Q4_0 group blocks × Q8_0 tokens.
    q4_0, Q4_0x16, BlockQ8_0, q4_0_codes, 8, no_mins, false
);
lane_kernel!(
    /// Q4_1 group blocks × Q8_1 tokens.
    q4_1, Q4_1x16, BlockQ8_1, q4_1_codes, 0, q4_1_mins, true
);
lane_kernel!(
    /// Q5_0 group blocks × Q8_0 tokens.
    q5_0, Q5_0x16, BlockQ8_0, q5_0_codes, 16, no_mins, false
);
lane_kernel!(
    /// Q5_1 group blocks × Q8_1 tokens.
    q5_1, Q5_1x16, BlockQ8_1, q5_1_codes, 0, q5_1_mins, true
);
lane_kernel!(
    /// Q8_0 group blocks × Q8_0 tokens.
    q8_0, Q8_0x16, BlockQ8_0, q8_0_codes, 128, no_mins, false
);

/// Q6_K group super-blocks × Q8_K tokens (`lanes_k`): per pair of sub-blocks `p` and `p + 8`
/// (their codes' low bits share four `ql` vectors), four `vpdpbusd` per sub-block and token from
/// `−32 · bsum`, then the sub-block's scales multiplied in (`vpmulld`) and summed in integers;
/// one conversion and fused multiply-add per super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q6_k<const T: usize>(
    w: &[Q6Kx16],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    let blocks = w.len();
    for t in 0..T {
        assert!(a[t].len() >= blocks && terms[t].len() >= blocks);
    }
    let low = _mm512_set1_epi8(0x0f);
    let top = _mm512_set1_epi32(0x3030_3030);
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, g) in w.iter().enumerate() {
        let mut sums = [_mm512_setzero_si512(); T];
        for (p, pair) in g.pairs.iter().enumerate() {
            let ql: [__m512i; 4] = std::array::from_fn(|j| load(&pair.ql[j]));
            for (half, s) in [p, p + 8].into_iter().enumerate() {
                let high = half == 1;
                // SAFETY: `pair.qh[half]` is 16 u32 (64 bytes), one unaligned 512-bit load.
                let h = unsafe { _mm512_loadu_si512(pair.qh[half].as_ptr().cast()) };
                let tops = [
                    _mm512_slli_epi32::<4>(h),
                    _mm512_slli_epi32::<2>(h),
                    h,
                    _mm512_srli_epi32::<2>(h),
                ];
                let codes: [__m512i; 4] = std::array::from_fn(|j| {
                    let nib = if high {
                        _mm512_srli_epi16::<4>(ql[j])
                    } else {
                        ql[j]
                    };
                    _mm512_or_si512(_mm512_and_si512(nib, low), _mm512_and_si512(tops[j], top))
                });
                // SAFETY: `pair.scales[half]` is 16 bytes, one unaligned 128-bit load.
                let sc = _mm512_cvtepi8_epi32(unsafe {
                    _mm_loadu_si128(pair.scales[half].as_ptr().cast())
                });
                for t in 0..T {
                    let qa = &a[t][b].qs[16 * s..16 * (s + 1)];
                    let mut dot = _mm512_set1_epi32(-32 * i32::from(a[t][b].bsums[s]));
                    for (j, &code) in codes.iter().enumerate() {
                        dot = _mm512_dpbusd_epi32(dot, code, chunk(qa, j));
                    }
                    sums[t] = _mm512_add_epi32(sums[t], _mm512_mullo_epi32(dot, sc));
                }
            }
        }
        let dw = widen(&g.d);
        for t in 0..T {
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(terms[t][b].d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), scale, acc[t]);
        }
    }
    lanes16(&acc)
}

/// 16 u32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_words(w: &[u32; LANE_ROWS]) -> __m512i {
    // SAFETY: `w` is 16 u32 (64 bytes), one unaligned 512-bit load.
    unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
}

/// `Σ_k m_k · s_k` per lane, from minimums held as i16 pairs: pair `p` holds minimums `k` and
/// `k + 2` for `k = 4·(p / 2) + p % 2` (bytes 0 and 2, then 1 and 3, of each 32-bit word of
/// four); `sums[k]` is the activations' sum that minimum `k` multiplies. One `vpdpwssd` a pair.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn min_sum<const P: usize, const S: usize>(pairs: &[__m512i; P], sums: &[i32; S]) -> __m512i {
    const { assert!(S == 2 * P) };
    let mut m = _mm512_setzero_si512();
    for (p, &pair) in pairs.iter().enumerate() {
        let k = 4 * (p / 2) + p % 2;
        let word = (sums[k] & 0xffff) | (sums[k + 2] << 16);
        m = _mm512_dpwssd_epi32(m, pair, _mm512_set1_epi32(word));
    }
    m
}

/// `acc − acc_m` of every token, as 16 lanes each.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lanes16_minus<const T: usize>(acc: &[__m512; T], acc_m: &[__m512; T]) -> [[f32; LANE_ROWS]; T] {
    let mut out = [_mm512_setzero_ps(); T];
    for t in 0..T {
        out[t] = _mm512_sub_ps(acc[t], acc_m[t]);
    }
    lanes16(&out)
}

/// Q4_K group super-blocks × Q8_K tokens ([`k45`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q4_k<const T: usize>(
    w: &[Q4Kx16],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    k45(w, a, terms)
}

/// Q5_K group super-blocks × Q8_K tokens ([`k45`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q5_k<const T: usize>(
    w: &[Q5Kx16],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    k45(w, a, terms)
}

/// Q4_K or Q5_K group super-blocks × Q8_K tokens (`lanes_k45`): the 16 rows' scales and minimums
/// unpacked by llama.cpp's `kmask` steps (four 8-bit values a lane), then per sub-block of 32 and
/// token eight `vpdpbusd` and the scale multiplied in (`vpmulld`); the minimums' sum by four
/// `vpdpwssd` of (minimum, minimum) pairs against the activations' paired sums; one conversion
/// and fused multiply-add each per super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k45<G: K45Lanes, const T: usize>(
    w: &[G],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    let blocks = w.len();
    for t in 0..T {
        assert!(a[t].len() >= blocks && terms[t].len() >= blocks);
    }
    let zero = _mm512_setzero_si512();
    let low = _mm512_set1_epi8(0x0f);
    let six = _mm512_set1_epi32(0x3f3f_3f3f);
    let four = _mm512_set1_epi32(0x0f0f_0f0f);
    let two = _mm512_set1_epi32(0x0303_0303);
    let byte = _mm512_set1_epi32(0xff);
    let even = _mm512_set1_epi32(0x00ff_00ff);
    let one = _mm512_set1_epi8(1);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    for (b, g) in w.iter().enumerate() {
        let words = g.scale_words();
        let s = [
            load_words(&words[0]),
            load_words(&words[1]),
            load_words(&words[2]),
        ];
        let (nibbles, fifth) = (g.nibbles(), g.fifth_bits());
        // Scales 0–3 and 4–7, minimums 0–3 and 4–7: one byte each, four a lane; the top two bits
        // of 4–7 sit in bits 6–7 of the bytes of words 0 (scales) and 1 (minimums).
        let top0 = _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s[0]), two));
        let top1 = _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s[1]), two));
        let scales = [
            _mm512_and_si512(s[0], six),
            _mm512_or_si512(_mm512_and_si512(s[2], four), top0),
        ];
        let mins = [
            _mm512_and_si512(s[1], six),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(s[2]), four), top1),
        ];
        let mut sums = [zero; T];
        for k in 0..8 {
            let sc = _mm512_and_si512(
                _mm512_srl_epi32(scales[k / 4], _mm_cvtsi32_si128(8 * (k % 4) as i32)),
                byte,
            );
            let mut codes = [zero; 8];
            let bit = _mm_cvtsi32_si128(k as i32);
            for (c, code) in codes.iter_mut().enumerate() {
                let q = load(&nibbles[8 * (k / 2) + c]);
                let q = if k % 2 == 0 {
                    q
                } else {
                    _mm512_srli_epi16::<4>(q)
                };
                *code = _mm512_and_si512(q, low);
                if let Some(fifth) = fifth {
                    let h = _mm512_and_si512(_mm512_srl_epi16(load(&fifth[c]), bit), one);
                    *code = _mm512_or_si512(*code, _mm512_slli_epi16::<4>(h));
                }
            }
            for t in 0..T {
                let qa = &a[t][b].qs[32 * k..32 * (k + 1)];
                let mut dot = zero;
                for (c, &code) in codes.iter().enumerate() {
                    dot = _mm512_dpbusd_epi32(dot, code, chunk(qa, c));
                }
                sums[t] = _mm512_add_epi32(sums[t], _mm512_mullo_epi32(dot, sc));
            }
        }
        // Minimums as i16 pairs (0, 2), (1, 3), (4, 6), (5, 7) per lane.
        let pairs = [
            _mm512_and_si512(mins[0], even),
            _mm512_srli_epi16::<8>(mins[0]),
            _mm512_and_si512(mins[1], even),
            _mm512_srli_epi16::<8>(mins[1]),
        ];
        let (dw, dmw) = (widen(g.d()), widen(g.dmin()));
        for t in 0..T {
            let bs = &a[t][b].bsums;
            let sums32: [i32; 8] =
                std::array::from_fn(|k| i32::from(bs[2 * k]) + i32::from(bs[2 * k + 1]));
            let m = min_sum(&pairs, &sums32);
            let da = _mm512_set1_ps(terms[t][b].d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), _mm512_mul_ps(dw, da), acc[t]);
            acc_m[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmw, da), acc_m[t]);
        }
    }
    lanes16_minus(&acc, &acc_m)
}

/// The four code vectors of sub-block `s` (0…16) of a Q2_K or Q3_K group super-block: vectors
/// `8h + 4·(s % 2) + u` shifted to bits `2c`, where `s = 8h + 2c + s % 2` (`lanes_k23`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn codes2(qs: &[[u8; 4 * LANE_ROWS]; 16], s: usize) -> [__m512i; 4] {
    let m3 = _mm512_set1_epi8(3);
    let (h, c, half) = (s / 8, s % 8 / 2, s % 2);
    let shift = _mm_cvtsi32_si128(2 * c as i32);
    let mut out = [_mm512_setzero_si512(); 4];
    for (u, out) in out.iter_mut().enumerate() {
        *out = _mm512_and_si512(_mm512_srl_epi16(load(&qs[8 * h + 4 * half + u]), shift), m3);
    }
    out
}

/// Byte `k % 4` of each lane of `words[k / 4]`, as an i32 per lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lane_byte(words: &[__m512i], k: usize) -> __m512i {
    let shift = _mm_cvtsi32_si128(8 * (k % 4) as i32);
    _mm512_and_si512(
        _mm512_srl_epi32(words[k / 4], shift),
        _mm512_set1_epi32(0xff),
    )
}

/// Q2_K group super-blocks × Q8_K tokens (`lanes_k23`): per sub-block of 16 and token four
/// `vpdpbusd` and the 4-bit scale multiplied in (`vpmulld`); the minimums' sum by eight
/// `vpdpwssd` of (minimum, minimum) pairs against the activations' sums of 16; one conversion and
/// fused multiply-add each per super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q2_k<const T: usize>(
    w: &[Q2Kx16],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    let blocks = w.len();
    for t in 0..T {
        assert!(a[t].len() >= blocks && terms[t].len() >= blocks);
    }
    let zero = _mm512_setzero_si512();
    let (low, even) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi32(0x00ff_00ff));
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    for (b, g) in w.iter().enumerate() {
        let packed = [
            load_words(&g.scales[0]),
            load_words(&g.scales[1]),
            load_words(&g.scales[2]),
            load_words(&g.scales[3]),
        ];
        let mut scales = [zero; 4];
        let mut min_pairs = [zero; 8];
        for (k, &p) in packed.iter().enumerate() {
            scales[k] = _mm512_and_si512(p, low);
            // Minimums of sub-blocks 4k … 4k + 3 as i16 pairs (4k, 4k + 2) and (4k + 1, 4k + 3).
            let mins = _mm512_and_si512(_mm512_srli_epi16::<4>(p), low);
            min_pairs[2 * k] = _mm512_and_si512(mins, even);
            min_pairs[2 * k + 1] = _mm512_srli_epi16::<8>(mins);
        }
        let mut sums = [zero; T];
        for s in 0..16 {
            let sc = lane_byte(&scales, s);
            let codes = codes2(&g.qs, s);
            for t in 0..T {
                let qa = &a[t][b].qs[16 * s..16 * (s + 1)];
                let mut dot = zero;
                for (u, &code) in codes.iter().enumerate() {
                    dot = _mm512_dpbusd_epi32(dot, code, chunk(qa, u));
                }
                sums[t] = _mm512_add_epi32(sums[t], _mm512_mullo_epi32(dot, sc));
            }
        }
        let (dw, dmw) = (widen(&g.d), widen(&g.dmin));
        for t in 0..T {
            let sums16 = a[t][b].bsums.map(i32::from);
            let m = min_sum(&min_pairs, &sums16);
            let da = _mm512_set1_ps(terms[t][b].d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), _mm512_mul_ps(dw, da), acc[t]);
            acc_m[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmw, da), acc_m[t]);
        }
    }
    lanes16_minus(&acc, &acc_m)
}

/// Bits `2k, 2k + 1` of each byte of Q3_K's third scale word, moved to bits 4–5: the top bits of
/// scales `4k … 4k + 3`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q3_top(word: __m512i, k: i32) -> __m512i {
    let bits = _mm512_srl_epi32(word, _mm_cvtsi32_si128(2 * k));
    _mm512_slli_epi32::<4>(_mm512_and_si512(bits, _mm512_set1_epi32(0x0303_0303)))
}

/// Q3_K group super-blocks × Q8_K tokens (`lanes_k23`): the 16 rows' signed scales unpacked by
/// llama.cpp's `kmask` steps, then per sub-block of 16 and token four `vpdpbusd` of the 3-bit codes
/// (0…7) from `−4 · bsum` and the scale multiplied in (`vpmulld`); one conversion and fused
/// multiply-add per super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn q3_k<const T: usize>(
    w: &[Q3Kx16],
    a: [&[BlockQ8K]; T],
    terms: [&[ActTerms]; T],
) -> [[f32; LANE_ROWS]; T] {
    let blocks = w.len();
    for t in 0..T {
        assert!(a[t].len() >= blocks && terms[t].len() >= blocks);
    }
    let zero = _mm512_setzero_si512();
    let four = _mm512_set1_epi32(0x0f0f_0f0f);
    let (one, offset) = (_mm512_set1_epi8(1), _mm512_set1_epi32(32));
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, g) in w.iter().enumerate() {
        let (a0, a1, a2) = (
            load_words(&g.scales[0]),
            load_words(&g.scales[1]),
            load_words(&g.scales[2]),
        );
        // Scales 0–3, 4–7, 8–11, 12–15 (offset by 32), one byte each, four a lane: low four bits
        // from the nibbles of words 0 and 1, top two from bits `2k, 2k + 1` of word 2's bytes.
        let scales = [
            _mm512_or_si512(_mm512_and_si512(a0, four), q3_top(a2, 0)),
            _mm512_or_si512(_mm512_and_si512(a1, four), q3_top(a2, 1)),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi32::<4>(a0), four),
                q3_top(a2, 2),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi32::<4>(a1), four),
                q3_top(a2, 3),
            ),
        ];
        let mut sums = [zero; T];
        for s in 0..16 {
            let sc = _mm512_sub_epi32(lane_byte(&scales, s), offset);
            let mut codes = codes2(&g.qs, s);
            let (h, c, half) = (s / 8, s % 8 / 2, s % 2);
            let bit = _mm_cvtsi32_si128((4 * h + c) as i32);
            for (u, code) in codes.iter_mut().enumerate() {
                let hb = _mm512_and_si512(_mm512_srl_epi16(load(&g.hmask[4 * half + u]), bit), one);
                *code = _mm512_or_si512(*code, _mm512_slli_epi16::<2>(hb));
            }
            for t in 0..T {
                let ab = &a[t][b];
                let qa = &ab.qs[16 * s..16 * (s + 1)];
                let mut dot = _mm512_set1_epi32(-4 * i32::from(ab.bsums[s]));
                for (u, &code) in codes.iter().enumerate() {
                    dot = _mm512_dpbusd_epi32(dot, code, chunk(qa, u));
                }
                sums[t] = _mm512_add_epi32(sums[t], _mm512_mullo_epi32(dot, sc));
            }
        }
        let dw = widen(&g.d);
        for t in 0..T {
            let da = _mm512_set1_ps(terms[t][b].d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), _mm512_mul_ps(dw, da), acc[t]);
        }
    }
    lanes16(&acc)
}

#[cfg(test)]
mod tests {
    use super::super::lanes::{self, gather_rows, LaneCodes, LaneGroup};
    use super::super::test_blocks::{random, with_scales};
    use super::super::{acts, cpu};
    use super::*;
    use bytemuck::Zeroable;
    use shuku_quants::blocks::QK;

    type Kernel<G, A, const T: usize> =
        unsafe fn(&[G], [&[A]; T], [&[ActTerms]; T]) -> [[f32; LANE_ROWS]; T];

    /// The kernel over `T` tokens equals the scalar reference for every row and token, bit for bit.
    fn check<G: LaneCodes, A: lanes::ActCodes, const T: usize>(
        groups: &[G],
        acts: &[Vec<A>],
        terms: &[Vec<ActTerms>],
        kernel: Kernel<G, A, T>,
        what: &str,
    ) {
        let got = (0..acts.len() / T).flat_map(|k| {
            let a: [&[A]; T] = std::array::from_fn(|t| &acts[k * T + t][..]);
            let tm: [&[ActTerms]; T] = std::array::from_fn(|t| &terms[k * T + t][..]);
            // SAFETY: called only after `cpu::has_avx512_vnni()`.
            unsafe { kernel(groups, a, tm) }
        });
        for (t, got) in got.enumerate() {
            let want = lanes::reference(groups, &acts[t], &terms[t]);
            assert_eq!(
                got.map(f32::to_bits),
                want.map(f32::to_bits),
                "{what} token {t}"
            );
        }
    }

    /// Real activation blocks of 8 tokens of `bpr` blocks of `len` values (quantized from seeded
    /// values by `quantize`, token 1 all zeros), and their terms.
    fn tokens<B>(
        bpr: usize,
        len: usize,
        seed: u64,
        quantize: fn(&[f32]) -> B,
        terms: fn(&B) -> ActTerms,
    ) -> (Vec<Vec<B>>, Vec<Vec<ActTerms>>) {
        let blocks: Vec<Vec<B>> = (0..8)
            .map(|t| {
                let x = values(bpr * len, seed + t as u64, t == 1);
                x.chunks_exact(len).map(quantize).collect()
            })
            .collect();
        let terms = blocks
            .iter()
            .map(|r| r.iter().map(terms).collect())
            .collect();
        (blocks, terms)
    }

    /// Seeded values in ±4, with extremes (±127 codes after quantization) in every block, or zeros.
    fn values(n: usize, seed: u64, zero: bool) -> Vec<f32> {
        let mut rng = shuku_testkit::TestRng(seed);
        (0..n)
            .map(|i| {
                let v = rng.signed() * 4.0;
                match (zero, i % 32) {
                    (true, _) => 0.0,
                    (false, 5) => 4.0,
                    (false, 17) => -4.0,
                    _ => v,
                }
            })
            .collect()
    }

    fn groups<G: LaneGroup>(rows: usize, bpr: usize, seed: u64, scales: &[f32]) -> Vec<G> {
        let mut out = vec![G::zeroed(); rows.div_ceil(16) * bpr];
        gather_rows::<G>(
            &with_scales(random::<G::Block>(rows * bpr, seed), scales),
            bpr,
            &mut out,
        );
        out
    }

    /// The Q6_K kernel equals its scalar reference bit for bit, for one token and a batch tile, on
    /// random codes and scales (every bit pattern) under ordinary, tiny and huge super-block scales,
    /// against real activation blocks (one all zeros).
    #[test]
    fn q6_k_equals_the_scalar_reference() {
        if !cpu::has_avx512_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI (the scalar reference runs instead)");
            return;
        }
        use super::super::lanes_k::{reference, terms_q8_k};
        use shuku_quants::blocks::{BlockQ6K, QK_K};
        let bpr = 3;
        for (k, d) in [0.01f32, 6.0e-8, 30000.0].into_iter().enumerate() {
            let mut blocks = random::<BlockQ6K>(16 * bpr, 40 + k as u64);
            for (i, b) in blocks.iter_mut().enumerate() {
                b.d = f16::from_f32(d * (1.0 + (i % 7) as f32 / 7.0));
            }
            let mut g = vec![Q6Kx16::zeroed(); bpr];
            gather_rows(&blocks, bpr, &mut g);
            let (acts, terms) = tokens(bpr, QK_K, 60, acts::quantize_q8_k, terms_q8_k);
            let a: [&[BlockQ8K]; 8] = std::array::from_fn(|t| &acts[t][..]);
            let tm: [&[ActTerms]; 8] = std::array::from_fn(|t| &terms[t][..]);
            // SAFETY: called only after `cpu::has_avx512_vnni()`.
            let wide = unsafe { q6_k::<8>(&g, a, tm) };
            for t in 0..8 {
                // SAFETY: as above.
                let one = unsafe { q6_k::<1>(&g, [a[t]], [tm[t]]) }[0];
                let want = reference(&g, a[t], tm[t]).map(f32::to_bits);
                assert_eq!(wide[t].map(f32::to_bits), want, "scale {d} token {t}");
                assert_eq!(one.map(f32::to_bits), want, "scale {d} token {t}");
            }
        }
    }

    /// The Q4_K and Q5_K kernels equal their scalar reference bit for bit, as
    /// [`q6_k_equals_the_scalar_reference`] (random codes, scales and minimums, every bit pattern,
    /// under ordinary, tiny and huge `d` and `dmin`), plus every byte at its largest.
    #[test]
    fn q4_k_and_q5_k_equal_the_scalar_reference() {
        use super::super::lanes_k45::reference;
        use shuku_quants::blocks::{BlockQ4K, BlockQ5K};
        check_k_lanes::<Q4Kx16>(
            q4_k::<8>,
            q4_k::<1>,
            reference,
            |b: &mut BlockQ4K, d, dmin| (b.d, b.dmin) = (d, dmin),
            |b| (b.scales, b.qs) = ([0xff; 12], [0xff; 128]),
        );
        check_k_lanes::<Q5Kx16>(
            q5_k::<8>,
            q5_k::<1>,
            reference,
            |b: &mut BlockQ5K, d, dmin| (b.d, b.dmin) = (d, dmin),
            |b| (b.scales, b.qh, b.qs) = ([0xff; 12], [0xff; 32], [0xff; 128]),
        );
    }

    /// The Q2_K and Q3_K kernels against their scalar references, as
    /// [`q4_k_and_q5_k_equal_the_scalar_reference`]; the saturated Q3_K block has every high bit
    /// set, so its all-zero counterpart (every code −4) comes from the random ones.
    #[test]
    fn q2_k_and_q3_k_equal_the_scalar_reference() {
        use super::super::lanes_k23::{reference_q2_k, reference_q3_k};
        use shuku_quants::blocks::{BlockQ2K, BlockQ3K};
        check_k_lanes::<Q2Kx16>(
            q2_k::<8>,
            q2_k::<1>,
            reference_q2_k,
            |b: &mut BlockQ2K, d, dmin| (b.d, b.dmin) = (d, dmin),
            |b| (b.scales, b.qs) = ([0xff; 16], [0xff; 64]),
        );
        check_k_lanes::<Q3Kx16>(
            q3_k::<8>,
            q3_k::<1>,
            reference_q3_k,
            |b: &mut BlockQ3K, d, _| b.d = d,
            |b| (b.hmask, b.qs, b.scales) = ([0xff; 32], [0xff; 64], [0xff; 12]),
        );
    }

    /// One k-quant lane kernel against its scalar reference: `scale` sets a block's `d` (and
    /// `dmin`), `saturate` sets every other byte to 0xff.
    fn check_k_lanes<G: LaneGroup>(
        wide: Kernel<G, BlockQ8K, 8>,
        narrow: Kernel<G, BlockQ8K, 1>,
        reference: super::super::LaneReference<G, BlockQ8K>,
        scale: fn(&mut G::Block, f16, f16),
        saturate: fn(&mut G::Block),
    ) {
        if !cpu::has_avx512_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI (the scalar reference runs instead)");
            return;
        }
        use super::super::lanes_k::terms_q8_k;
        use shuku_quants::blocks::QK_K;
        let bpr = 3;
        for (k, d) in [0.01f32, 6.0e-8, 30000.0, 0.02].into_iter().enumerate() {
            let mut blocks = random::<G::Block>(16 * bpr, 70 + k as u64);
            for (i, b) in blocks.iter_mut().enumerate() {
                let s = 1.0 + (i % 7) as f32 / 7.0;
                scale(b, f16::from_f32(d * s), f16::from_f32(0.5 * d * s));
                if k == 3 {
                    saturate(b);
                }
            }
            let mut g = vec![G::zeroed(); bpr];
            gather_rows(&blocks, bpr, &mut g);
            let (acts, terms) = tokens(bpr, QK_K, 80, acts::quantize_q8_k, terms_q8_k);
            let a: [&[BlockQ8K]; 8] = std::array::from_fn(|t| &acts[t][..]);
            let tm: [&[ActTerms]; 8] = std::array::from_fn(|t| &terms[t][..]);
            // SAFETY: called only after `cpu::has_avx512_vnni()`.
            let all = unsafe { wide(&g, a, tm) };
            for t in 0..8 {
                // SAFETY: as above.
                let one = unsafe { narrow(&g, [a[t]], [tm[t]]) }[0];
                let want = reference(&g, a[t], tm[t]).map(f32::to_bits);
                assert_eq!(all[t].map(f32::to_bits), want, "d {d} token {t}");
                assert_eq!(one.map(f32::to_bits), want, "d {d} token {t}");
            }
        }
    }

    /// Every kernel, for one token and for a batch tile, on random codes (every bit pattern) under
    /// ordinary, tiny and huge scales, against real activation blocks (including an all-zero one).
    #[test]
    fn kernels_equal_the_scalar_reference() {
        if !cpu::has_avx512_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI (the scalar reference runs instead)");
            return;
        }
        let bpr = 7;
        for (k, scales) in [[0.01f32, -0.003], [6.0e-8, 1.0e-7], [30000.0, -30000.0]]
            .iter()
            .enumerate()
        {
            let seed = 100 + k as u64;
            let (a0, t0) = tokens(bpr, QK, seed, acts::quantize_q8_0, lanes::terms_q8_0);
            let (a1, t1) = tokens(bpr, QK, seed, acts::quantize_q8_1, lanes::terms_q8_1);
            let g = groups::<Q4_0x16>(16, bpr, seed, &scales[..1]);
            check::<_, _, 1>(&g, &a0, &t0, q4_0::<1>, "Q4_0");
            check::<_, _, 8>(&g, &a0, &t0, q4_0::<8>, "Q4_0");
            let g = groups::<Q8_0x16>(16, bpr, seed, &scales[..1]);
            check::<_, _, 1>(&g, &a0, &t0, q8_0::<1>, "Q8_0");
            check::<_, _, 8>(&g, &a0, &t0, q8_0::<8>, "Q8_0");
            let g = groups::<Q4_1x16>(16, bpr, seed, scales);
            check::<_, _, 1>(&g, &a1, &t1, q4_1::<1>, "Q4_1");
            check::<_, _, 8>(&g, &a1, &t1, q4_1::<8>, "Q4_1");
            let g = groups::<Q5_0x16>(16, bpr, seed, &scales[..1]);
            check::<_, _, 1>(&g, &a0, &t0, q5_0::<1>, "Q5_0");
            check::<_, _, 8>(&g, &a0, &t0, q5_0::<8>, "Q5_0");
            let g = groups::<Q5_1x16>(16, bpr, seed, scales);
            check::<_, _, 1>(&g, &a1, &t1, q5_1::<1>, "Q5_1");
            check::<_, _, 8>(&g, &a1, &t1, q5_1::<8>, "Q5_1");
        }
    }
}
