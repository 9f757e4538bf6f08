//! Tiles of `R` weight rows × `T` tokens for the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) with AVX-512 VNNI on 256-bit lanes.
//!
//! Why tiles: the per-row products (`dot_q4`, `dot_q5`, `dot_q8_0`) run one (row, token) pair at a
//! time, so each block's codes are unpacked once per token and the pair's one accumulator makes a
//! chain of dependent fused multiply-adds; in prompt processing that left the cores waiting on
//! latency. A tile unpacks each weight block once for `T` tokens and each activation block once
//! for `R` rows, and keeps `R × T` independent accumulators in registers.
//!
//! Why VNNI: `vpdpbusd` multiplies unsigned by signed bytes and adds each lane's four products to
//! an i32 lane in one instruction. The weights' codes are unsigned (Q4_0's nibble, Q5_0's 5-bit
//! code, Q8_0's code + 128), and their offset (8, 16, 128) is taken off in integers: each pair's
//! lanes start from `−offset · Σ` of the activation's four codes, computed once per activation
//! block. Every lane then holds exactly the integer of llama.cpp's AVX2 kernels (the four products
//! of values 4k…4k+3), and the float steps are theirs too (`fma(d_w·d_a, lanes, acc)` per block,
//! Q4_1/Q5_1's `m_w·s_a` summed apart, llama.cpp's horizontal sum): a tile's results equal the
//! per-row AVX2 products bit for bit, which the tests check.

use super::x86::{hsum8, hsum8_tile, scale1};
use shuku_quants::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// A block's 16 bytes of nibbles as 32 unsigned codes: low nibbles in bytes 0..16, high ones in
/// 16..32 (value order).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 bytes, exactly one unaligned 128-bit load.
    let packed = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
        _mm256_set1_epi8(0x0f),
    )
}

/// A 5-bit block's 32 codes (0..32): the nibbles with bit j of `qh` as bit 4 of byte j.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn codes5(qh: [u8; 4], qs: &[u8; 16]) -> __m256i {
    let high = _mm256_movm_epi8(u32::from_le_bytes(qh));
    _mm256_or_si256(nibbles(qs), _mm256_and_si256(high, _mm256_set1_epi8(0x10)))
}

/// 32 signed bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load32(qs: &[i8; 32]) -> __m256i {
    // SAFETY: `qs` is 32 bytes, exactly one unaligned 256-bit load.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_codes(b: &BlockQ4_0) -> __m256i {
    nibbles(&b.qs)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_codes(b: &BlockQ5_0) -> __m256i {
    codes5(b.qh, &b.qs)
}

/// Q8_0's signed codes shifted to unsigned (`q + 128`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_codes(b: &BlockQ8_0) -> __m256i {
    _mm256_xor_si256(load32(&b.qs), _mm256_set1_epi8(-128))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_codes(b: &BlockQ4_1) -> __m256i {
    nibbles(&b.qs)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_codes(b: &BlockQ5_1) -> __m256i {
    codes5(b.qh, &b.qs)
}

// Every tile function takes its `R` weight rows as one slice `w` in which block `b` of row `r` is
// `w[r * rs + b * bs]`: `rs` = blocks per row and `bs` = 1 for rows as the file stores them,
// `rs` = 1 and `bs` = `R` for rows interleaved block by block (a matrix's short last group, copied
// so with its last row repeated).

/// Tokens of a 512-bit tile: two per vector.
pub const WIDE_TOKENS: usize = 8;

/// Token pairs of a 512-bit tile.
pub(super) const PAIRS: usize = WIDE_TOKENS / 2;

/// A 4 × [`WIDE_TOKENS`] tile on 512-bit lanes: each vector holds two tokens' 8 lanes, so one `vpdpbusd`,
/// conversion, scale product and fused multiply-add serve two (row, token) pairs; each half does
/// exactly the 256-bit tile's arithmetic.
macro_rules! offset_tile_wide {
    ($(#[$doc:meta])* $name:ident, $w:ty, $codes:ident, $offset:literal) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub fn $name(
            w: &[$w],
            rs: usize,
            bs: usize,
            a: [&[BlockQ8_0]; WIDE_TOKENS],
        ) -> [[f32; WIDE_TOKENS]; 4] {
            let zero = _mm512_setzero_si512();
            let offset = _mm512_set1_epi8($offset);
            let mut acc = [[_mm512_setzero_ps(); PAIRS]; 4];
            for b in 0..a[0].len() {
                let mut qa = [zero; PAIRS];
                let mut da = [_mm512_setzero_ps(); PAIRS];
                let mut start = [zero; PAIRS];
                for p in 0..PAIRS {
                    let (a0, a1) = (&a[2 * p][b], &a[2 * p + 1][b]);
                    qa[p] = pair_i(load32(&a0.qs), load32(&a1.qs));
                    da[p] = pair_f(scale1(a0.d), scale1(a1.d));
                    start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, qa[p]));
                }
                for r in 0..4 {
                    let wb = &w[r * rs + b * bs];
                    let qw = _mm512_broadcast_i64x4($codes(wb));
                    let dw = _mm512_broadcastss_ps(scale1(wb.d));
                    for p in 0..PAIRS {
                        let lanes = _mm512_dpbusd_epi32(start[p], qw, qa[p]);
                        acc[r][p] = _mm512_fmadd_ps(
                            _mm512_mul_ps(dw, da[p]),
                            _mm512_cvtepi32_ps(lanes),
                            acc[r][p],
                        );
                    }
                }
            }
            halves(acc)
        }
    };
}

/// [`offset_tile_wide`] for the types with a per-block minimum, against Q8_1 activations.
macro_rules! min_tile_wide {
    ($(#[$doc:meta])* $name:ident, $w:ty, $codes:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub fn $name(
            w: &[$w],
            rs: usize,
            bs: usize,
            a: [&[BlockQ8_1]; WIDE_TOKENS],
        ) -> [[f32; WIDE_TOKENS]; 4] {
            let zero = _mm512_setzero_si512();
            let mut acc = [[_mm512_setzero_ps(); PAIRS]; 4];
            let mut offsets = [[0f32; WIDE_TOKENS]; 4];
            for b in 0..a[0].len() {
                let mut qa = [zero; PAIRS];
                let mut da = [_mm512_setzero_ps(); PAIRS];
                let mut sa = [0f32; WIDE_TOKENS];
                for p in 0..PAIRS {
                    let (a0, a1) = (&a[2 * p][b], &a[2 * p + 1][b]);
                    qa[p] = pair_i(load32(&a0.qs), load32(&a1.qs));
                    da[p] = pair_f(scale1(a0.d), scale1(a1.d));
                }
                for t in 0..WIDE_TOKENS {
                    sa[t] = _mm_cvtss_f32(scale1(a[t][b].s));
                }
                for r in 0..4 {
                    let wb = &w[r * rs + b * bs];
                    let qw = _mm512_broadcast_i64x4($codes(wb));
                    let dw = _mm512_broadcastss_ps(scale1(wb.d));
                    let mw = _mm_cvtss_f32(scale1(wb.m));
                    for p in 0..PAIRS {
                        let lanes = _mm512_dpbusd_epi32(zero, qw, qa[p]);
                        acc[r][p] = _mm512_fmadd_ps(
                            _mm512_mul_ps(dw, da[p]),
                            _mm512_cvtepi32_ps(lanes),
                            acc[r][p],
                        );
                    }
                    for t in 0..WIDE_TOKENS {
                        offsets[r][t] += mw * sa[t];
                    }
                }
            }
            let mut out = halves(acc);
            for r in 0..4 {
                for t in 0..WIDE_TOKENS {
                    out[r][t] += offsets[r][t];
                }
            }
            out
        }
    };
}

/// Two tokens' 32 codes as one 512-bit vector (first token in the low half).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn pair_i(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

/// Two scales (lane 0 of each) broadcast to the low and high halves.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn pair_f(lo: __m128, hi: __m128) -> __m512 {
    let lo = _mm256_broadcastss_ps(lo);
    let hi = _mm256_broadcastss_ps(hi);
    _mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
        _mm256_castps_pd(hi),
        1,
    ))
}

/// Each half of each accumulator summed as llama.cpp's `hsum_float_8`: `[row][token]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn halves(acc: [[__m512; PAIRS]; 4]) -> [[f32; WIDE_TOKENS]; 4] {
    let mut out = [[0f32; WIDE_TOKENS]; 4];
    for r in 0..4 {
        for p in 0..PAIRS {
            let v = _mm512_castps_pd(acc[r][p]);
            out[r][2 * p] = hsum8(_mm256_castpd_ps(_mm512_castpd512_pd256(v)));
            out[r][2 * p + 1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(v, 1)));
        }
    }
    out
}

/// A tile for a block type whose codes carry an offset (value = `d · (code − offset)`), against
/// Q8_0 activations.
macro_rules! offset_tile {
    ($(#[$doc:meta])* $name:ident, $w:ty, $codes:ident, $offset:literal) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub fn $name<const R: usize, const T: usize>(
            w: &[$w],
            rs: usize,
            bs: usize,
            a: [&[BlockQ8_0]; T],
        ) -> [[f32; T]; R] {
            let zero = _mm256_setzero_si256();
            let offset = _mm256_set1_epi8($offset);
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for b in 0..a[0].len() {
                let mut qa = [zero; T];
                let mut da = [_mm256_setzero_ps(); T];
                let mut start = [zero; T];
                for t in 0..T {
                    let ab = &a[t][b];
                    qa[t] = load32(&ab.qs);
                    da[t] = _mm256_broadcastss_ps(scale1(ab.d));
                    start[t] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offset, qa[t]));
                }
                for r in 0..R {
                    let wb = &w[r * rs + b * bs];
                    let qw = $codes(wb);
                    let dw = _mm256_broadcastss_ps(scale1(wb.d));
                    for t in 0..T {
                        let lanes = _mm256_dpbusd_epi32(start[t], qw, qa[t]);
                        acc[r][t] = _mm256_fmadd_ps(
                            _mm256_mul_ps(dw, da[t]),
                            _mm256_cvtepi32_ps(lanes),
                            acc[r][t],
                        );
                    }
                }
            }
            hsum8_tile(acc)
        }
    };
}

/// A tile for a block type with a per-block minimum (value = `d · code + m`), against Q8_1
/// activations (whose `s` holds `d · Σq`).
macro_rules! min_tile {
    ($(#[$doc:meta])* $name:ident, $w:ty, $codes:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub fn $name<const R: usize, const T: usize>(
            w: &[$w],
            rs: usize,
            bs: usize,
            a: [&[BlockQ8_1]; T],
        ) -> [[f32; T]; R] {
            let zero = _mm256_setzero_si256();
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut offsets = [[0f32; T]; R];
            for b in 0..a[0].len() {
                let mut qa = [zero; T];
                let mut da = [_mm256_setzero_ps(); T];
                let mut sa = [0f32; T];
                for t in 0..T {
                    let ab = &a[t][b];
                    qa[t] = load32(&ab.qs);
                    da[t] = _mm256_broadcastss_ps(scale1(ab.d));
                    sa[t] = _mm_cvtss_f32(scale1(ab.s));
                }
                for r in 0..R {
                    let wb = &w[r * rs + b * bs];
                    let qw = $codes(wb);
                    let dw = _mm256_broadcastss_ps(scale1(wb.d));
                    let mw = _mm_cvtss_f32(scale1(wb.m));
                    for t in 0..T {
                        let lanes = _mm256_dpbusd_epi32(zero, qw, qa[t]);
                        acc[r][t] = _mm256_fmadd_ps(
                            _mm256_mul_ps(dw, da[t]),
                            _mm256_cvtepi32_ps(lanes),
                            acc[r][t],
                        );
                        offsets[r][t] += mw * sa[t];
                    }
                }
            }
            let mut out = hsum8_tile(acc);
            for r in 0..R {
                for t in 0..T {
                    out[r][t] += offsets[r][t];
                }
            }
            out
        }
    };
}

offset_tile!(
    /// Q4_0 rows × Q8_0 tokens.
    q4_0, BlockQ4_0, q4_0_codes, 8
);
offset_tile!(
    /// Q5_0 rows × Q8_0 tokens.
    q5_0, BlockQ5_0, q5_0_codes, 16
);
offset_tile!(
    /// Q8_0 rows × Q8_0 tokens.
    q8_0, BlockQ8_0, q8_0_codes, -128
);
min_tile!(
    /// Q4_1 rows × Q8_1 tokens.
    q4_1, BlockQ4_1, q4_1_codes
);
min_tile!(
    /// Q5_1 rows × Q8_1 tokens.
    q5_1, BlockQ5_1, q5_1_codes
);
offset_tile_wide!(
    /// [`q4_0`] for 4 × [`WIDE_TOKENS`] on 512-bit lanes.
    q4_0_wide, BlockQ4_0, q4_0_codes, 8
);
offset_tile_wide!(
    /// [`q5_0`] for 4 × [`WIDE_TOKENS`] on 512-bit lanes.
    q5_0_wide, BlockQ5_0, q5_0_codes, 16
);
offset_tile_wide!(
    /// [`q8_0`] for 4 × [`WIDE_TOKENS`] on 512-bit lanes.
    q8_0_wide, BlockQ8_0, q8_0_codes, -128
);
min_tile_wide!(
    /// [`q4_1`] for 4 × [`WIDE_TOKENS`] on 512-bit lanes.
    q4_1_wide, BlockQ4_1, q4_1_codes
);
min_tile_wide!(
    /// [`q5_1`] for 4 × [`WIDE_TOKENS`] on 512-bit lanes.
    q5_1_wide, BlockQ5_1, q5_1_codes
);

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{random, with_scales};
    use super::super::{cpu, dot_q4, dot_q5, dot_q8_0};
    use super::*;
    use half::f16;

    /// Activation blocks as the engine's quantizer makes them: codes in −127..=127, and for Q8_1
    /// the true `s = d·Σq`.
    fn acts0(n: usize, seed: u64) -> Vec<BlockQ8_0> {
        let mut a: Vec<BlockQ8_0> = with_scales(random(n, seed), &[0.03]);
        for q in a.iter_mut().flat_map(|b| &mut b.qs) {
            *q = (*q).max(-127);
        }
        a
    }

    fn acts1(n: usize, seed: u64) -> Vec<BlockQ8_1> {
        let mut a: Vec<BlockQ8_1> = with_scales(random(n, seed), &[0.03]);
        for b in &mut a {
            for q in &mut b.qs {
                *q = (*q).max(-127);
            }
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            b.s = f16::from_f32(b.d.to_f32() * sum as f32);
        }
        a
    }

    /// Runs a 4 × `T` tile over `w` (4 rows of `nb` blocks) and `a` (`T` tokens) and checks each
    /// entry against the per-row product, bit for bit.
    fn check<W: Copy, A, const T: usize>(
        w: &[W],
        a: &[A],
        nb: usize,
        tile: impl Fn(&[W], usize, usize, [&[A]; T]) -> [[f32; T]; 4],
        dot: impl Fn(&[W], &[A]) -> f32,
        what: &str,
        exact: bool,
    ) {
        let rows: [&[W]; 4] = std::array::from_fn(|r| &w[r * nb..(r + 1) * nb]);
        let toks: [&[A]; T] = std::array::from_fn(|t| &a[t * nb..(t + 1) * nb]);
        let got = tile(w, nb, 1, toks);
        // The same rows interleaved block by block, as a short last group is copied.
        let interleaved: Vec<W> = (0..nb).flat_map(|b| rows.map(|r| r[b])).collect();
        assert!(
            tile(&interleaved, 1, 4, toks) == got,
            "{what}: interleaved rows give other results"
        );
        for r in 0..4 {
            for t in 0..T {
                let (got, want) = (got[r][t], dot(rows[r], toks[t]));
                let ok = if exact {
                    got.to_bits() == want.to_bits()
                } else {
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
                };
                assert!(
                    ok,
                    "{what} ({nb} blocks) row {r} token {t}: {got} vs {want}"
                );
            }
        }
    }

    /// Every tile equals the per-row AVX2 products bit for bit, on random codes and scales, for
    /// several block counts.
    #[test]
    fn tiles_equal_per_row_products() {
        if !cpu::has_avx512_vnni() {
            eprintln!("no AVX-512 VNNI: the tiles are not used on this CPU");
            return;
        }
        // Each type: the 4 × 3 tile (the generic one, as single tokens use it with 1) and the
        // 4 × `WIDE_TOKENS` one on 512-bit lanes, both against the per-row product.
        macro_rules! both {
            ($w:expr, $a:expr, $nb:expr, $narrow:ident, $wide:ident, $dot:path, $what:literal) => {
                // SAFETY (both closures): the CPU has AVX-512 VNNI (checked above).
                check::<_, _, 3>(
                    $w,
                    $a,
                    $nb,
                    |w, rs, bs, a| unsafe { $narrow(w, rs, bs, a) },
                    $dot,
                    $what,
                    true,
                );
                check::<_, _, WIDE_TOKENS>(
                    $w,
                    $a,
                    $nb,
                    |w, rs, bs, a| unsafe { $wide(w, rs, bs, a) },
                    $dot,
                    concat!($what, " wide"),
                    true,
                );
            };
        }
        for (nb, seed) in [(1, 1), (3, 2), (18, 3), (48, 4)] {
            let a0 = acts0(WIDE_TOKENS * nb, seed + 50);
            let a1 = acts1(WIDE_TOKENS * nb, seed + 60);
            let w: Vec<BlockQ4_0> = with_scales(random(4 * nb, seed), &[0.02]);
            both!(
                &w,
                &a0,
                nb,
                q4_0,
                q4_0_wide,
                dot_q4::vec_dot_q4_0_q8_0,
                "Q4_0"
            );
            let w: Vec<BlockQ5_0> = with_scales(random(4 * nb, seed + 1), &[0.02]);
            both!(
                &w,
                &a0,
                nb,
                q5_0,
                q5_0_wide,
                dot_q5::vec_dot_q5_0_q8_0,
                "Q5_0"
            );
            let w: Vec<BlockQ8_0> = with_scales(random(4 * nb, seed + 2), &[0.01]);
            both!(
                &w,
                &a0,
                nb,
                q8_0,
                q8_0_wide,
                dot_q8_0::vec_dot_q8_0_q8_0,
                "Q8_0"
            );
            let w: Vec<BlockQ4_1> = with_scales(random(4 * nb, seed + 3), &[0.02, -0.3]);
            both!(
                &w,
                &a1,
                nb,
                q4_1,
                q4_1_wide,
                dot_q4::vec_dot_q4_1_q8_1,
                "Q4_1"
            );
            let w: Vec<BlockQ5_1> = with_scales(random(4 * nb, seed + 4), &[0.02, -0.3]);
            both!(
                &w,
                &a1,
                nb,
                q5_1,
                q5_1_wide,
                dot_q5::vec_dot_q5_1_q8_1,
                "Q5_1"
            );
        }
    }

    /// The 4 × 3 tiles of the extremes test, as plain functions.
    fn tile_q8_0(w: &[BlockQ8_0], rs: usize, bs: usize, a: [&[BlockQ8_0]; 3]) -> [[f32; 3]; 4] {
        // SAFETY: called only after `cpu::has_avx512_vnni()`.
        unsafe { q8_0(w, rs, bs, a) }
    }

    fn tile_q4_0(w: &[BlockQ4_0], rs: usize, bs: usize, a: [&[BlockQ8_0]; 3]) -> [[f32; 3]; 4] {
        // SAFETY: called only after `cpu::has_avx512_vnni()`.
        unsafe { q4_0(w, rs, bs, a) }
    }

    fn tile_q5_0(w: &[BlockQ5_0], rs: usize, bs: usize, a: [&[BlockQ8_0]; 3]) -> [[f32; 3]; 4] {
        // SAFETY: called only after `cpu::has_avx512_vnni()`.
        unsafe { q5_0(w, rs, bs, a) }
    }

    /// Extreme codes (all weights at their largest magnitude, activations at ±127 or 0, Q8_0
    /// weights at −128) and large scales: equal to the per-row products, and close to the scalar
    /// references.
    #[test]
    fn tiles_at_extremes() {
        if !cpu::has_avx512_vnni() {
            return;
        }
        let nb = 8;
        for act in [127i8, -127, 0] {
            let mut a0: Vec<BlockQ8_0> = with_scales(random(3 * nb, 9), &[1000.0]);
            a0.iter_mut().for_each(|b| b.qs = [act; 32]);
            let mut w: Vec<BlockQ8_0> = with_scales(random(4 * nb, 10), &[1.0]);
            w.iter_mut().for_each(|b| b.qs = [-128; 32]);
            check(
                &w,
                &a0,
                nb,
                tile_q8_0,
                dot_q8_0::vec_dot_q8_0_q8_0,
                "Q8_0 −128",
                true,
            );
            check(
                &w,
                &a0,
                nb,
                tile_q8_0,
                dot_q8_0::vec_dot_scalar,
                "Q8_0 −128",
                false,
            );
            let mut w: Vec<BlockQ4_0> = with_scales(random(4 * nb, 11), &[1.0]);
            w.iter_mut().for_each(|b| b.qs = [0x00; 16]);
            check(
                &w,
                &a0,
                nb,
                tile_q4_0,
                dot_q4::vec_dot_q4_0_q8_0,
                "Q4_0 −8",
                true,
            );
            check(
                &w,
                &a0,
                nb,
                tile_q4_0,
                dot_q4::vec_dot_q4_0_scalar,
                "Q4_0 −8",
                false,
            );
            let mut w: Vec<BlockQ5_0> = with_scales(random(4 * nb, 12), &[1.0]);
            w.iter_mut().for_each(|b| {
                b.qs = [0xff; 16];
                b.qh = [0xff; 4];
            });
            check(
                &w,
                &a0,
                nb,
                tile_q5_0,
                dot_q5::vec_dot_q5_0_q8_0,
                "Q5_0 15",
                true,
            );
            check(
                &w,
                &a0,
                nb,
                tile_q5_0,
                dot_q5::vec_dot_q5_0_scalar,
                "Q5_0 15",
                false,
            );
        }
    }
}
