//! The integer grid each element of a quantized block lies on, and access to a block's codes
//! without touching its scales: what Hessian-aware rounding (GPTQ) needs to write a GGUF type.
//!
//! GPTQ quantizes a weight matrix one input column at a time and pushes each column's rounding
//! error onto the columns not yet quantized. To produce a file in one of ggml's formats it works
//! group by group, a group being one block of columns (32 for the legacy types, 256 for the
//! k-quants):
//!
//! 1. At the start of a group it quantizes every row's current (error-updated) values of the
//!    group with the format's own quantizer ([`QuantType::quantize`]). That fixes the block's
//!    scales and mins, chosen exactly as `llama-quantize` would choose them.
//! 2. [`QuantType::element_grids`] then gives, for every element of the block, the values that
//!    element can still take: a [`Grid`], `value(q) = scale·q + offset` for integer codes
//!    `q ∈ [qmin, qmax]`.
//! 3. Column by column, each row's current value is rounded with [`Grid::nearest`], and the
//!    error against [`Grid::value`] of that code is what GPTQ propagates.
//! 4. At the end of the group, [`QuantType::set_codes`] writes the chosen codes into the block,
//!    leaving every scale, min and super-scale byte as the quantizer wrote it.
//!
//! GPTQ's error compensation is only right if the value it assumed for a code is the value the
//! model will see, so [`Grid::value`] is bit-for-bit what the type's dequantizer gives for that
//! code: the same operations on the same `f32`s, in the same order.
//!
//! # Codes
//!
//! A code is the integer the dequantizer multiplies by the element's scale. For the types with a
//! min (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) it is the stored unsigned quant; for the symmetric ones it
//! is the stored quant minus the type's bias, so that code 0 is the value 0:
//!
//! | type | value | codes |
//! |------|-------|-------|
//! | Q4_0 | `d·q` | −8..=7 |
//! | Q4_1 | `d·q + m` | 0..=15 |
//! | Q5_0 | `d·q` | −16..=15 |
//! | Q5_1 | `d·q + m` | 0..=31 |
//! | Q8_0 | `d·q` | −128..=127 |
//! | Q2_K | `(d·sc)·q − dmin·m` (16 per sub-block) | 0..=3 |
//! | Q3_K | `(d·(sc−32))·q` (16 per sub-block) | −4..=3 |
//! | Q4_K | `(d·sc)·q − dmin·m` (32 per sub-block) | 0..=15 |
//! | Q5_K | `(d·sc)·q − dmin·m` (32 per sub-block) | 0..=31 |
//! | Q6_K | `(d·sc)·q` (16 per sub-block) | −32..=31 |
//!
//! The range is everything the block's bits can hold and the dequantizer decodes, which can be
//! wider than what the quantizer itself produces (its reference Q8_0 stays within −127..=127, for
//! instance); GPTQ may use all of it.

use std::array;
use std::mem::size_of;

use crate::blocks::{
    get_scale_min_k4, q3_scale, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, QK, QK_K,
};
use crate::format::{BlockFormat, QuantType};
use crate::round::from_f16;

/// The values one element of a quantized block can take once the block's scales are fixed:
/// `value(q) = scale·q + offset` for integer codes `q` in `qmin..=qmax`.
///
/// `value` is computed as `scale * (q as f32) + offset`, one rounded product and one rounded sum,
/// which is how every dequantizer in this crate computes an element (with the factors of the
/// product in whichever order it multiplies them, the same thing in IEEE arithmetic). The types
/// without a min get `offset = -0.0`: adding −0 leaves every `f32` unchanged, +0 and −0
/// included, so the formula reproduces their plain `d·q` bit for bit, down to the sign of a zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Grid {
    /// The step between consecutive codes' values (negative when the block's scale is).
    pub scale: f32,
    /// The value of code 0 (`-0.0` for the types without a min).
    pub offset: f32,
    /// The smallest code the block can store.
    pub qmin: i32,
    /// The largest code the block can store.
    pub qmax: i32,
}

impl Grid {
    /// A grid without a min: `value(q) = scale·q` exactly.
    fn scaled(scale: f32, qmin: i32, qmax: i32) -> Self {
        Grid {
            scale,
            offset: -0.0,
            qmin,
            qmax,
        }
    }

    /// A grid with a min: `value(q) = scale·q + offset`.
    fn affine(scale: f32, offset: f32, qmin: i32, qmax: i32) -> Self {
        Grid {
            scale,
            offset,
            qmin,
            qmax,
        }
    }

    /// The value code `q` decodes to: `scale * (q as f32) + offset`, rounded as the dequantizer
    /// rounds it, so `value(q)` equals the dequantized element bit for bit.
    #[inline]
    pub fn value(&self, q: i32) -> f32 {
        self.scale * q as f32 + self.offset
    }

    /// The code in `qmin..=qmax` whose [`value`](Grid::value) is nearest `x`; of several equally
    /// near, the smallest. Out-of-range `x` gives the nearest end of the grid; a NaN `x` gives
    /// `qmin`. Distances are measured in `f64`, in which the difference of two `f32`s is exact
    /// whenever their magnitudes are within a factor 2²⁹ of each other.
    ///
    /// The values are searched as computed, not as the real line `scale·q + offset`, so the
    /// answer is right even where rounding makes neighbouring codes decode to the same value
    /// (a sub-block scale tiny next to its min).
    pub fn nearest(&self, x: f32) -> i32 {
        let (lo, hi) = (self.qmin, self.qmax);
        if lo >= hi {
            return lo;
        }
        if x.is_nan() || !self.scale.is_finite() || !self.offset.is_finite() {
            return self.nearest_by_scan(x);
        }
        // The computed values are monotone in q (a product and a sum, each rounded, are monotone
        // in q): non-decreasing for a non-negative scale, non-increasing for a negative one. So
        // "value(q) is at or past x" is false up to some code and true from it on.
        let rising = self.scale >= 0.0;
        let past = |q: i32| {
            let v = self.value(q);
            if rising {
                v >= x
            } else {
                v <= x
            }
        };
        // Either way, the first code past x is ⌈(x − offset)/scale⌉ in exact arithmetic: try
        // that, and fall back to bisection where rounding (or a zero scale) makes it wrong.
        let guess = ((x - self.offset) / self.scale).ceil();
        let guessed = guess.is_finite().then(|| {
            // `as` saturates, and the clamp keeps the guess within lo..=hi+1.
            (guess as i64).clamp(i64::from(lo), i64::from(hi) + 1) as i32
        });
        let first_past = match guessed {
            Some(g) if (g == lo || !past(g - 1)) && (g > hi || past(g)) => g,
            _ => {
                let (mut a, mut b) = (lo, hi + 1);
                while a < b {
                    let m = a + (b - a) / 2;
                    if past(m) {
                        b = m;
                    } else {
                        a = m + 1;
                    }
                }
                a
            }
        };
        let q = if first_past == lo {
            lo
        } else if first_past > hi {
            hi
        } else {
            let (before, after) = (first_past - 1, first_past);
            if self.distance(x, after) < self.distance(x, before) {
                after
            } else {
                before
            }
        };
        self.first_with_value_of(q)
    }

    /// `|value(q) − x|`, in `f64`.
    #[inline]
    fn distance(&self, x: f32, q: i32) -> f64 {
        (f64::from(self.value(q)) - f64::from(x)).abs()
    }

    /// The smallest code decoding to the same value as `q`. Codes sharing a value are
    /// consecutive (the values are monotone), so this bisects; usually `q` itself.
    fn first_with_value_of(&self, q: i32) -> i32 {
        let v = self.value(q);
        if q == self.qmin || self.value(q - 1) != v {
            return q;
        }
        let (mut a, mut b) = (self.qmin, q);
        while a < b {
            let m = a + (b - a) / 2;
            if self.value(m) == v {
                b = m;
            } else {
                a = m + 1;
            }
        }
        a
    }

    /// [`Grid::nearest`] by trying every code, for grids whose values need not be monotone (a
    /// non-finite scale or offset) and for a NaN `x`: NaN distances lose, and if all are NaN the
    /// answer is `qmin`.
    fn nearest_by_scan(&self, x: f32) -> i32 {
        let mut best = self.qmin;
        let mut best_d = f64::INFINITY;
        for q in self.qmin..=self.qmax {
            let d = self.distance(x, q);
            if d < best_d {
                best = q;
                best_d = d;
            }
        }
        best
    }
}

/// A block format whose elements lie on [`Grid`]s: the per-element grids, and the codes read
/// from and written to the quant bits alone.
trait GridBlock: BlockFormat {
    /// The smallest code.
    const QMIN: i32;
    /// The largest code.
    const QMAX: i32;

    /// Every element's grid, in element order (`out.len() == BLOCK_ELEMS`).
    fn grids(&self, out: &mut [Grid]);

    /// Every element's code, in element order (`out.len() == BLOCK_ELEMS`).
    fn codes(&self, out: &mut [i32]);

    /// Rewrites every quant bit from `codes` (`codes.len() == BLOCK_ELEMS`, each within
    /// `QMIN..=QMAX`), leaving the scale fields alone.
    fn set_codes(&mut self, codes: &[i32]);
}

/// Element `e`'s 4-bit value in the legacy nibble layout: elements 0–15 in the low nibbles of
/// bytes 0–15, elements 16–31 in their high nibbles.
#[inline]
fn legacy_nibble(qs: &[u8; QK / 2], e: usize) -> u8 {
    if e < QK / 2 {
        qs[e] & 0xF
    } else {
        qs[e - QK / 2] >> 4
    }
}

/// The legacy nibble layout of the low four bits of `u` (32 unsigned quants).
#[inline]
fn legacy_pack_nibbles(u: &[u8; QK]) -> [u8; QK / 2] {
    array::from_fn(|j| (u[j] & 0xF) | ((u[j + QK / 2] & 0xF) << 4))
}

/// Q5_0's / Q5_1's fifth bits: element `e`'s at bit `e` of a little-endian `u32`.
#[inline]
fn legacy_pack_fifth_bits(u: &[u8; QK]) -> [u8; 4] {
    let qh = u
        .iter()
        .enumerate()
        .fold(0u32, |qh, (e, &v)| qh | (u32::from(v >> 4) & 1) << e);
    qh.to_le_bytes()
}

/// The 5-bit unsigned quant of element `e` of a Q5_0 / Q5_1 block.
#[inline]
fn legacy_5bit(qh: [u8; 4], qs: &[u8; QK / 2], e: usize) -> u8 {
    let high = ((u32::from_le_bytes(qh) >> e) & 1) as u8;
    legacy_nibble(qs, e) | (high << 4)
}

/// The stored unsigned quants, `codes[e] + bias`.
#[inline]
fn unsigned_quants<const N: usize>(codes: &[i32], bias: i32) -> [u8; N] {
    array::from_fn(|e| (codes[e] + bias) as u8)
}

impl GridBlock for BlockQ4_0 {
    const QMIN: i32 = -8;
    const QMAX: i32 = 7;

    /// `dequantize_row_q4_0`: `(q − 8)·d`.
    fn grids(&self, out: &mut [Grid]) {
        out.fill(Grid::scaled(from_f16(self.d), Self::QMIN, Self::QMAX));
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            *c = i32::from(legacy_nibble(&self.qs, e)) - 8;
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        self.qs = legacy_pack_nibbles(&unsigned_quants(codes, 8));
    }
}

impl GridBlock for BlockQ4_1 {
    const QMIN: i32 = 0;
    const QMAX: i32 = 15;

    /// `dequantize_row_q4_1`: `q·d + m`.
    fn grids(&self, out: &mut [Grid]) {
        let (d, m) = (from_f16(self.d), from_f16(self.m));
        out.fill(Grid::affine(d, m, Self::QMIN, Self::QMAX));
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            *c = i32::from(legacy_nibble(&self.qs, e));
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        self.qs = legacy_pack_nibbles(&unsigned_quants(codes, 0));
    }
}

impl GridBlock for BlockQ5_0 {
    const QMIN: i32 = -16;
    const QMAX: i32 = 15;

    /// `dequantize_row_q5_0`: `(q − 16)·d`.
    fn grids(&self, out: &mut [Grid]) {
        out.fill(Grid::scaled(from_f16(self.d), Self::QMIN, Self::QMAX));
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            *c = i32::from(legacy_5bit(self.qh, &self.qs, e)) - 16;
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        let u = unsigned_quants(codes, 16);
        self.qh = legacy_pack_fifth_bits(&u);
        self.qs = legacy_pack_nibbles(&u);
    }
}

impl GridBlock for BlockQ5_1 {
    const QMIN: i32 = 0;
    const QMAX: i32 = 31;

    /// `dequantize_row_q5_1`: `q·d + m`.
    fn grids(&self, out: &mut [Grid]) {
        let (d, m) = (from_f16(self.d), from_f16(self.m));
        out.fill(Grid::affine(d, m, Self::QMIN, Self::QMAX));
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            *c = i32::from(legacy_5bit(self.qh, &self.qs, e));
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        let u = unsigned_quants(codes, 0);
        self.qh = legacy_pack_fifth_bits(&u);
        self.qs = legacy_pack_nibbles(&u);
    }
}

impl GridBlock for BlockQ8_0 {
    const QMIN: i32 = -128;
    const QMAX: i32 = 127;

    /// `dequantize_row_q8_0`: `q·d`.
    fn grids(&self, out: &mut [Grid]) {
        out.fill(Grid::scaled(from_f16(self.d), Self::QMIN, Self::QMAX));
    }

    fn codes(&self, out: &mut [i32]) {
        for (c, &q) in out.iter_mut().zip(&self.qs) {
            *c = i32::from(q);
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        self.qs = array::from_fn(|e| codes[e] as i8);
    }
}

/// Where Q2_K's and Q3_K's two low bits of element `e` live: byte `32·(e / 128) + e % 32` of `qs`,
/// at bit `2·((e % 128) / 32)` (each 128-element half is four rows of 32 sharing 32 bytes).
#[inline]
fn k_2bit_pos(e: usize) -> (usize, u32) {
    (32 * (e / 128) + e % 32, 2 * ((e % 128) / 32) as u32)
}

/// Packs the low two bits of 256 unsigned quants in the Q2_K / Q3_K layout ([`k_2bit_pos`]).
fn k_pack_2bit(u: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (e, &v) in u.iter().enumerate() {
        let (byte, shift) = k_2bit_pos(e);
        qs[byte] |= (v & 3) << shift;
    }
    qs
}

/// Where Q4_K's and Q5_K's low four bits of element `e` live: byte `32·(e / 64) + e % 32` of
/// `qs`, the low nibble for the first 32 of each 64 and the high nibble for the next 32.
#[inline]
fn k_nibble_pos(e: usize) -> (usize, u32) {
    (32 * (e / 64) + e % 32, 4 * ((e % 64) / 32) as u32)
}

/// Packs the low four bits of 256 unsigned quants in the Q4_K / Q5_K layout ([`k_nibble_pos`]).
fn k_pack_nibbles(u: &[u8; QK_K]) -> [u8; QK_K / 2] {
    let mut qs = [0u8; QK_K / 2];
    for (e, &v) in u.iter().enumerate() {
        let (byte, shift) = k_nibble_pos(e);
        qs[byte] |= (v & 0xF) << shift;
    }
    qs
}

/// Q3_K's `hmask` and Q5_K's `qh`: bit `bit` of element `e`'s quant, at bit `e / 32` of byte
/// `e % 32`.
fn k_pack_high_bits(u: &[u8; QK_K], bit: u32) -> [u8; QK_K / 8] {
    let mut h = [0u8; QK_K / 8];
    for (e, &v) in u.iter().enumerate() {
        h[e % 32] |= ((v >> bit) & 1) << (e / 32);
    }
    h
}

/// Element `e`'s bit in a [`k_pack_high_bits`] array.
#[inline]
fn k_high_bit(h: &[u8; QK_K / 8], e: usize) -> u8 {
    (h[e % 32] >> (e / 32)) & 1
}

impl GridBlock for BlockQ2K {
    const QMIN: i32 = 0;
    const QMAX: i32 = 3;

    /// `dequantize_row_q2_K`: `dl·q − ml` with `dl = d·(sc & 0xF)`, `ml = dmin·(sc >> 4)`, per
    /// 16 elements.
    fn grids(&self, out: &mut [Grid]) {
        let (d, min) = (from_f16(self.d), from_f16(self.dmin));
        for (g, &sc) in out.chunks_exact_mut(16).zip(&self.scales) {
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            g.fill(Grid::affine(dl, -ml, Self::QMIN, Self::QMAX));
        }
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            let (byte, shift) = k_2bit_pos(e);
            *c = i32::from((self.qs[byte] >> shift) & 3);
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        self.qs = k_pack_2bit(&unsigned_quants(codes, 0));
    }
}

impl GridBlock for BlockQ3K {
    const QMIN: i32 = -4;
    const QMAX: i32 = 3;

    /// `dequantize_row_q3_K`: `dl·q` with `dl = d·(sc − 32)`, per 16 elements. The code is the
    /// two low bits, minus 4 when the element's `hmask` bit is clear; so the stored value is
    /// `code + 4`, its bit 2 in `hmask` and its low bits in `qs`.
    fn grids(&self, out: &mut [Grid]) {
        let d = from_f16(self.d);
        for (j, g) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(q3_scale(&self.scales, j));
            g.fill(Grid::scaled(dl, Self::QMIN, Self::QMAX));
        }
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            let (byte, shift) = k_2bit_pos(e);
            let low = i32::from((self.qs[byte] >> shift) & 3);
            *c = if k_high_bit(&self.hmask, e) != 0 {
                low
            } else {
                low - 4
            };
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        let u = unsigned_quants(codes, 4);
        self.hmask = k_pack_high_bits(&u, 2);
        self.qs = k_pack_2bit(&u);
    }
}

impl GridBlock for BlockQ4K {
    const QMIN: i32 = 0;
    const QMAX: i32 = 15;

    /// `dequantize_row_q4_K`: `(d·sc)·q − dmin·m`, per 32 elements.
    fn grids(&self, out: &mut [Grid]) {
        let (d, dmin) = (from_f16(self.d), from_f16(self.dmin));
        for (j, g) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = get_scale_min_k4(j, &self.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            g.fill(Grid::affine(dl, -ml, Self::QMIN, Self::QMAX));
        }
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            let (byte, shift) = k_nibble_pos(e);
            *c = i32::from((self.qs[byte] >> shift) & 0xF);
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        self.qs = k_pack_nibbles(&unsigned_quants(codes, 0));
    }
}

impl GridBlock for BlockQ5K {
    const QMIN: i32 = 0;
    const QMAX: i32 = 31;

    /// `dequantize_row_q5_K`: `(d·sc)·q − dmin·m`, per 32 elements; the fifth bit of each quant
    /// in `qh`.
    fn grids(&self, out: &mut [Grid]) {
        let (d, dmin) = (from_f16(self.d), from_f16(self.dmin));
        for (j, g) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = get_scale_min_k4(j, &self.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            g.fill(Grid::affine(dl, -ml, Self::QMIN, Self::QMAX));
        }
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            let (byte, shift) = k_nibble_pos(e);
            let low = (self.qs[byte] >> shift) & 0xF;
            *c = i32::from(low | (k_high_bit(&self.qh, e) << 4));
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        let u = unsigned_quants(codes, 0);
        self.qh = k_pack_high_bits(&u, 4);
        self.qs = k_pack_nibbles(&u);
    }
}

/// Where Q6_K keeps element `e`'s bits: each 128-element half `h` is four rows of 32; element
/// `i` of row `r` has its low nibble in `ql[64h + 32·(r % 2) + i]` at bit `4·(r / 2)`, and its
/// top two bits in `qh[32h + i]` at bit `2r`. Returns `(ql byte, ql shift, qh byte, qh shift)`.
#[inline]
fn q6_pos(e: usize) -> (usize, u32, usize, u32) {
    let (h, r, i) = (e / 128, (e % 128) / 32, e % 32);
    (
        64 * h + 32 * (r % 2) + i,
        4 * (r / 2) as u32,
        32 * h + i,
        2 * r as u32,
    )
}

impl GridBlock for BlockQ6K {
    const QMIN: i32 = -32;
    const QMAX: i32 = 31;

    /// `dequantize_row_q6_K`: `(d·sc)·q`, per 16 elements, the stored quant being `q + 32`.
    fn grids(&self, out: &mut [Grid]) {
        let d = from_f16(self.d);
        for (g, &sc) in out.chunks_exact_mut(16).zip(&self.scales) {
            g.fill(Grid::scaled(d * sc as f32, Self::QMIN, Self::QMAX));
        }
    }

    fn codes(&self, out: &mut [i32]) {
        for (e, c) in out.iter_mut().enumerate() {
            let (lb, ls, hb, hs) = q6_pos(e);
            let u = ((self.ql[lb] >> ls) & 0xF) | (((self.qh[hb] >> hs) & 3) << 4);
            *c = i32::from(u) - 32;
        }
    }

    fn set_codes(&mut self, codes: &[i32]) {
        let u: [u8; QK_K] = unsigned_quants(codes, 32);
        self.ql = [0; QK_K / 2];
        self.qh = [0; QK_K / 4];
        for (e, &v) in u.iter().enumerate() {
            let (lb, ls, hb, hs) = q6_pos(e);
            self.ql[lb] |= (v & 0xF) << ls;
            self.qh[hb] |= (v >> 4) << hs;
        }
    }
}

/// Calls `$f::<Block>($args)` for the block struct of quantized type `$ty`, and panics for the
/// float types, which have no grid.
macro_rules! with_block {
    ($ty:expr, $f:ident($($arg:expr),*)) => {
        match $ty {
            QuantType::Q4_0 => $f::<BlockQ4_0>($($arg),*),
            QuantType::Q4_1 => $f::<BlockQ4_1>($($arg),*),
            QuantType::Q5_0 => $f::<BlockQ5_0>($($arg),*),
            QuantType::Q5_1 => $f::<BlockQ5_1>($($arg),*),
            QuantType::Q8_0 => $f::<BlockQ8_0>($($arg),*),
            QuantType::Q2_K => $f::<BlockQ2K>($($arg),*),
            QuantType::Q3_K => $f::<BlockQ3K>($($arg),*),
            QuantType::Q4_K => $f::<BlockQ4K>($($arg),*),
            QuantType::Q5_K => $f::<BlockQ5K>($($arg),*),
            QuantType::Q6_K => $f::<BlockQ6K>($($arg),*),
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => {
                panic!("{} is not a block-quantized type: it has no integer grid", $ty)
            }
        }
    };
}

fn range_of<B: GridBlock>() -> (i32, i32) {
    (B::QMIN, B::QMAX)
}

fn grids_of<B: GridBlock>(bytes: &[u8], out: &mut [Grid]) {
    for (b, g) in bytes
        .chunks_exact(size_of::<B>())
        .zip(out.chunks_exact_mut(B::BLOCK_ELEMS))
    {
        bytemuck::pod_read_unaligned::<B>(b).grids(g);
    }
}

fn codes_of<B: GridBlock>(bytes: &[u8], out: &mut [i32]) {
    for (b, c) in bytes
        .chunks_exact(size_of::<B>())
        .zip(out.chunks_exact_mut(B::BLOCK_ELEMS))
    {
        bytemuck::pod_read_unaligned::<B>(b).codes(c);
    }
}

fn set_codes_of<B: GridBlock>(bytes: &mut [u8], codes: &[i32]) {
    if let Some((e, &c)) = codes
        .iter()
        .enumerate()
        .find(|&(_, &c)| !(B::QMIN..=B::QMAX).contains(&c))
    {
        panic!(
            "{} code {c} at element {e} is outside {}..={}",
            B::TYPE,
            B::QMIN,
            B::QMAX
        );
    }
    for (b, c) in bytes
        .chunks_exact_mut(size_of::<B>())
        .zip(codes.chunks_exact(B::BLOCK_ELEMS))
    {
        // Read into an aligned block: the bytes may be any sub-slice of a tensor.
        let mut block: B = bytemuck::pod_read_unaligned(b);
        block.set_codes(c);
        b.copy_from_slice(bytemuck::bytes_of(&block));
    }
}

/// Panics unless `bytes` is a whole number of `ty`'s blocks and `elems` is their element count.
fn check_blocks(ty: QuantType, bytes: usize, elems: usize, what: &str) {
    assert!(
        ty.is_quantized(),
        "{ty} is not a block-quantized type: it has no integer grid"
    );
    let blocks = bytes / ty.type_size();
    assert!(
        bytes.is_multiple_of(ty.type_size()) && elems == blocks * ty.block_size(),
        "{ty}: {bytes} bytes and {elems} {what} are not the same whole number of blocks \
         ({} bytes, {} elements each)",
        ty.type_size(),
        ty.block_size()
    );
}

/// The grid API for Hessian-aware rounding (see [`Grid`]). Each method takes one or more whole
/// blocks as bytes (any alignment) with one entry per element, in element order.
///
/// They panic, rather than return an error, when called on F32 / F16 / BF16 or with lengths that
/// are not the same whole number of blocks: callers size these buffers from the type's
/// [`block_size`](QuantType::block_size) and [`type_size`](QuantType::type_size), so a mismatch
/// is a bug, and the calls sit in GPTQ's per-block inner loop.
impl QuantType {
    /// The codes a block of this type can store, `(qmin, qmax)` as in every [`Grid`] of the type;
    /// `None` for the float types.
    pub fn code_range(self) -> Option<(i32, i32)> {
        if !self.is_quantized() {
            return None;
        }
        Some(with_block!(self, range_of()))
    }

    /// The [`Grid`] of every element of the blocks in `block_bytes`, into `out`: the values each
    /// element can take with the blocks' scales and mins as they are.
    ///
    /// # Panics
    ///
    /// If the type is not block-quantized, or `block_bytes` is not a whole number of blocks with
    /// `out.len()` their element count.
    pub fn element_grids(self, block_bytes: &[u8], out: &mut [Grid]) {
        check_blocks(self, block_bytes.len(), out.len(), "grids");
        with_block!(self, grids_of(block_bytes, out))
    }

    /// The code of every element of the blocks in `block_bytes`, into `out`: the `q` with
    /// `dequantized[i] == grids[i].value(q)` (see [`QuantType::element_grids`]).
    ///
    /// # Panics
    ///
    /// As [`QuantType::element_grids`].
    pub fn codes(self, block_bytes: &[u8], out: &mut [i32]) {
        check_blocks(self, block_bytes.len(), out.len(), "codes");
        with_block!(self, codes_of(block_bytes, out))
    }

    /// Rewrites the quant bits of the blocks in `block_bytes` so that element `i` has code
    /// `codes[i]`, leaving every scale, min and super-scale byte unchanged. Afterwards
    /// dequantizing gives `grids[i].value(codes[i])` exactly, and [`QuantType::codes`] gives
    /// `codes` back; every bit of the quant fields is written, so setting the codes a block
    /// already has leaves its bytes as they were.
    ///
    /// ```
    /// use shuku_quants::{Grid, QuantType};
    ///
    /// let ty = QuantType::Q4_K;
    /// let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.41).sin()).collect();
    /// let mut block = ty.quantize(&x, 256, None).unwrap();
    ///
    /// // Round a perturbed copy of the weights onto the block's fixed grid, as GPTQ does.
    /// let mut grids = vec![Grid::default(); 256];
    /// ty.element_grids(&block, &mut grids);
    /// let codes: Vec<i32> = grids.iter().zip(&x).map(|(g, &v)| g.nearest(0.9 * v)).collect();
    /// ty.set_codes(&mut block, &codes);
    ///
    /// let mut back = vec![0.0; 256];
    /// ty.dequantize(&block, &mut back).unwrap();
    /// for i in 0..256 {
    ///     assert_eq!(back[i].to_bits(), grids[i].value(codes[i]).to_bits());
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`QuantType::element_grids`], and if a code is outside the type's
    /// [`code_range`](QuantType::code_range) (in which case nothing is written).
    pub fn set_codes(self, block_bytes: &mut [u8], codes: &[i32]) {
        check_blocks(self, block_bytes.len(), codes.len(), "codes");
        with_block!(self, set_codes_of(block_bytes, codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;
    use half::f16;

    /// The quantized types.
    const TYPES: [QuantType; 10] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ];

    /// Elements per test row: two super-blocks, sixteen legacy blocks.
    const N: usize = 512;

    use shuku_testkit::TestRng;

    /// Rows of [`N`] values from several distributions: weight-like Gaussians, uniform, heavy
    /// outliers, one-signed (so the mins matter), tiny (subnormal f16 scales), large, zero,
    /// constant, and sparse.
    fn rows(g: &mut TestRng) -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        for kind in 0..9 {
            let row: Vec<f32> = (0..N)
                .map(|i| match kind {
                    0 => 0.02 * g.normal(),
                    1 => 2.0 * g.unit() - 1.0,
                    2 => {
                        let x = g.normal();
                        if g.unit() < 0.02 {
                            40.0 * x
                        } else {
                            x
                        }
                    }
                    3 => 2.0 + g.unit(),
                    4 => -0.5 - 0.1 * g.unit(),
                    5 => 1e-6 * g.normal(),
                    6 => 300.0 * g.normal(),
                    7 => {
                        if i % 64 < 32 {
                            0.0
                        } else {
                            0.7
                        }
                    }
                    _ => {
                        if g.unit() < 0.1 {
                            g.normal()
                        } else {
                            0.0
                        }
                    }
                })
                .collect();
            rows.push(row);
        }
        rows
    }

    /// Every test block of `ty`: the rows of [`rows`] quantized by the reference quantizer and
    /// by the importance-weighted one.
    fn quantized_rows(ty: QuantType, g: &mut TestRng) -> Vec<Vec<u8>> {
        let qw: Vec<f32> = (0..N).map(|_| 0.1 + g.unit() * g.unit() * 10.0).collect();
        let mut out = Vec::new();
        for row in rows(g) {
            out.push(ty.quantize(&row, N, None).unwrap());
            out.push(ty.quantize(&row, N, Some(&qw)).unwrap());
        }
        out
    }

    /// Which bytes of one block of `ty` are quant bits (true) rather than scales or mins, from
    /// the block structs' own fields.
    fn quant_byte_mask(ty: QuantType) -> Vec<bool> {
        fn mask<B: bytemuck::Pod>(b: B) -> Vec<bool> {
            bytemuck::bytes_of(&b).iter().map(|&v| v != 0).collect()
        }
        match ty {
            QuantType::Q4_0 => mask(BlockQ4_0 {
                qs: [0xFF; 16],
                ..Zeroable::zeroed()
            }),
            QuantType::Q4_1 => mask(BlockQ4_1 {
                qs: [0xFF; 16],
                ..Zeroable::zeroed()
            }),
            QuantType::Q5_0 => mask(BlockQ5_0 {
                qh: [0xFF; 4],
                qs: [0xFF; 16],
                ..Zeroable::zeroed()
            }),
            QuantType::Q5_1 => mask(BlockQ5_1 {
                qh: [0xFF; 4],
                qs: [0xFF; 16],
                ..Zeroable::zeroed()
            }),
            QuantType::Q8_0 => mask(BlockQ8_0 {
                qs: [-1; 32],
                ..Zeroable::zeroed()
            }),
            QuantType::Q2_K => mask(BlockQ2K {
                qs: [0xFF; 64],
                ..Zeroable::zeroed()
            }),
            QuantType::Q3_K => mask(BlockQ3K {
                hmask: [0xFF; 32],
                qs: [0xFF; 64],
                ..Zeroable::zeroed()
            }),
            QuantType::Q4_K => mask(BlockQ4K {
                qs: [0xFF; 128],
                ..Zeroable::zeroed()
            }),
            QuantType::Q5_K => mask(BlockQ5K {
                qh: [0xFF; 32],
                qs: [0xFF; 128],
                ..Zeroable::zeroed()
            }),
            QuantType::Q6_K => mask(BlockQ6K {
                ql: [0xFF; 128],
                qh: [0xFF; 64],
                ..Zeroable::zeroed()
            }),
            _ => unreachable!(),
        }
    }

    fn grids_and_codes(ty: QuantType, bytes: &[u8]) -> (Vec<Grid>, Vec<i32>) {
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let mut grids = vec![Grid::default(); n];
        let mut codes = vec![0; n];
        ty.element_grids(bytes, &mut grids);
        ty.codes(bytes, &mut codes);
        (grids, codes)
    }

    fn dequantized(ty: QuantType, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; bytes.len() / ty.type_size() * ty.block_size()];
        ty.dequantize(bytes, &mut out).unwrap();
        out
    }

    /// Each element's dequantized value is its grid's value of its code, bit for bit, and the
    /// grid's range is the type's.
    fn assert_decodes(ty: QuantType, bytes: &[u8], grids: &[Grid], codes: &[i32], what: &str) {
        let (qmin, qmax) = ty.code_range().unwrap();
        for (i, ((x, g), &c)) in dequantized(ty, bytes)
            .iter()
            .zip(grids)
            .zip(codes)
            .enumerate()
        {
            assert_eq!((g.qmin, g.qmax), (qmin, qmax), "{ty} {what}: element {i}");
            assert!((qmin..=qmax).contains(&c), "{ty} {what}: code {c}");
            assert_eq!(
                x.to_bits(),
                g.value(c).to_bits(),
                "{ty} {what}: element {i} dequantizes to {x}, grid {g:?} gives {} for code {c}",
                g.value(c)
            );
        }
    }

    #[test]
    fn quantizer_blocks_decode_to_their_grid_values_and_round_trip_codes() {
        let mut g = TestRng(1);
        for ty in TYPES {
            for bytes in quantized_rows(ty, &mut g) {
                let (grids, codes) = grids_and_codes(ty, &bytes);
                assert_decodes(ty, &bytes, &grids, &codes, "quantized");
                let mut rewritten = bytes.clone();
                ty.set_codes(&mut rewritten, &codes);
                assert_eq!(
                    rewritten, bytes,
                    "{ty}: setting a block's own codes changed it"
                );
            }
        }
    }

    #[test]
    fn any_codes_keep_the_scales_and_decode_to_their_grid_values() {
        let mut g = TestRng(2);
        for ty in TYPES {
            let (qmin, qmax) = ty.code_range().unwrap();
            let mask = quant_byte_mask(ty);
            for bytes in quantized_rows(ty, &mut g) {
                let (grids, _) = grids_and_codes(ty, &bytes);
                // Uniform codes, and codes at the ends of the range (every quant bit 0 or 1).
                for pattern in 0..3 {
                    let codes: Vec<i32> = (0..grids.len())
                        .map(|i| match pattern {
                            0 => g.int(qmin, qmax),
                            1 if i % 3 == 0 => qmin,
                            1 => qmax,
                            _ if i % 2 == 0 => qmax,
                            _ => qmin,
                        })
                        .collect();
                    let mut b = bytes.clone();
                    ty.set_codes(&mut b, &codes);
                    for (blk, (old, new)) in bytes
                        .chunks_exact(ty.type_size())
                        .zip(b.chunks_exact(ty.type_size()))
                        .enumerate()
                    {
                        for (k, ((o, n), &quant)) in old.iter().zip(new).zip(&mask).enumerate() {
                            assert!(quant || o == n, "{ty}: block {blk} scale byte {k} changed");
                        }
                    }
                    let (new_grids, read_back) = grids_and_codes(ty, &b);
                    assert_eq!(new_grids, grids, "{ty}: grids changed with the codes");
                    assert_eq!(read_back, codes, "{ty}: codes not read back");
                    assert_decodes(ty, &b, &grids, &codes, "set");
                }
            }
        }
    }

    /// The smallest code among those nearest `x`, by trying them all.
    fn brute_nearest(g: &Grid, x: f32) -> i32 {
        let dist = |q: i32| (f64::from(g.value(q)) - f64::from(x)).abs();
        (g.qmin..=g.qmax).fold(
            g.qmin,
            |best, q| if dist(q) < dist(best) { q } else { best },
        )
    }

    fn assert_nearest(g: &Grid, x: f32) {
        assert_eq!(g.nearest(x), brute_nearest(g, x), "grid {g:?}, x = {x:e}");
    }

    #[test]
    fn nearest_is_the_closest_grid_value() {
        let mut gen = TestRng(3);
        for ty in TYPES {
            for bytes in quantized_rows(ty, &mut gen) {
                let (grids, _) = grids_and_codes(ty, &bytes);
                let row = dequantized(ty, &bytes);
                let amax = row.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
                // A few elements per block: the grid is shared by 16 or 32 of them.
                for (i, g) in grids.iter().enumerate().step_by(5) {
                    let (lo, hi) = (g.value(g.qmin), g.value(g.qmax));
                    let mut xs = vec![0.0, -0.0, row[i], 4.0 * lo - hi, 4.0 * hi - lo];
                    xs.extend((0..6).map(|_| 1.5 * amax * (2.0 * gen.unit() - 1.0)));
                    // Exact values and midpoints of adjacent values, and just beside them.
                    let q = gen.int(g.qmin, g.qmax - 1);
                    let (a, b) = (g.value(q), g.value(q + 1));
                    let mid = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
                    for x in [a, b, mid] {
                        // The adjacent floats on either side (one of them toward zero).
                        let bits = x.to_bits();
                        xs.extend([x, f32::from_bits(bits + 1), f32::from_bits(bits.max(1) - 1)]);
                    }
                    for x in xs {
                        assert_nearest(g, x);
                        let q = g.nearest(x);
                        assert!((g.qmin..=g.qmax).contains(&q));
                    }
                }
            }
        }
    }

    #[test]
    fn nearest_on_degenerate_grids() {
        let g = Grid::scaled(0.0, -8, 7);
        for x in [0.0, -1.0, 1.0, f32::INFINITY] {
            assert_eq!(g.nearest(x), -8, "zero scale: every code is equally near");
        }
        let g = Grid::scaled(-0.5, -4, 3);
        assert_eq!(g.nearest(1.0), -2);
        assert_eq!(g.nearest(1.25), -3, "a tie goes to the smaller code");
        assert_eq!(g.nearest(100.0), -4);
        assert_eq!(g.nearest(-100.0), 3);
        assert_eq!(g.nearest(f32::NAN), -4);
        // A sub-block scale far below its min: neighbouring codes round to the same value.
        let g = Grid::affine(1e-8, -1.0, 0, 31);
        for x in [-1.0, -0.999_999_9, -0.999_999_7, -1.000_000_1, 0.0] {
            assert_nearest(&g, x);
        }
        // A non-finite scale (an overflowed f16) falls back to trying every code.
        let g = Grid::scaled(f32::INFINITY, -8, 7);
        for x in [1.0, -1.0, f32::INFINITY] {
            assert_nearest(&g, x);
        }
        let g = Grid::affine(1.0, 0.0, 5, 5);
        assert_eq!(g.nearest(-3.0), 5);
    }

    #[test]
    fn negative_zero_is_kept() {
        // A negative Q4_0 scale decodes code 0 to −0.0; the grid must too.
        let mut b = BlockQ4_0 {
            d: f16::from_f32(-0.25),
            qs: [0x88; 16],
        };
        let bytes = bytemuck::bytes_of(&b).to_vec();
        let (grids, codes) = grids_and_codes(QuantType::Q4_0, &bytes);
        assert_eq!(codes, vec![0; 32]);
        assert_eq!(grids[0].value(0).to_bits(), (-0.0f32).to_bits());
        assert_decodes(QuantType::Q4_0, &bytes, &grids, &codes, "hand-built");
        b.qs[0] = 0x0F; // element 0: code 7, element 16: code −8
        let bytes = bytemuck::bytes_of(&b).to_vec();
        let (_, codes) = grids_and_codes(QuantType::Q4_0, &bytes);
        assert_eq!((codes[0], codes[16]), (7, -8));
    }

    #[test]
    fn code_ranges() {
        let ranges: Vec<_> = TYPES.iter().map(|t| t.code_range().unwrap()).collect();
        assert_eq!(
            ranges,
            [
                (-8, 7),
                (0, 15),
                (-16, 15),
                (0, 31),
                (-128, 127),
                (0, 3),
                (-4, 3),
                (0, 15),
                (0, 31),
                (-32, 31)
            ]
        );
        assert_eq!(QuantType::F16.code_range(), None);
    }

    #[test]
    #[should_panic(expected = "outside -4..=3")]
    fn set_codes_rejects_out_of_range_codes() {
        let mut bytes = vec![0u8; QuantType::Q3_K.type_size()];
        let mut codes = vec![0; 256];
        codes[17] = 4;
        QuantType::Q3_K.set_codes(&mut bytes, &codes);
    }

    #[test]
    #[should_panic(expected = "not the same whole number of blocks")]
    fn element_grids_checks_lengths() {
        let bytes = vec![0u8; QuantType::Q4_0.type_size()];
        QuantType::Q4_0.element_grids(&bytes, &mut [Grid::default(); 31]);
    }

    #[test]
    #[should_panic(expected = "no integer grid")]
    fn float_types_have_no_grid() {
        QuantType::F32.codes(&[0; 4], &mut [0]);
    }
}
