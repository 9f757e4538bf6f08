//! AArch64 NEON paths of the per-row block products (Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights):
//! the edge's most common CPU.
//!
//! Each block's integer dot product runs in vector registers (`smull` of the codes into 16-bit
//! products, `sadalp` pairwise into 32-bit lanes, one horizontal add), and the float steps are
//! exactly those of the scalar references (`sum += d_w·d_a · Σ`, Q4_1/Q5_1's `m·s` summed apart),
//! so every path equals its reference bit for bit; the tests check that on random and extreme
//! blocks, built for `aarch64-unknown-linux-gnu` and run under qemu-user by `scripts/test.sh`.
//! NEON is part of every AArch64 CPU, so no run-time check is needed.

use shuku_quants::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::aarch64::*;

/// `Σ w[i]·a[i]` over 32 signed codes, exactly: each product fits 16 bits (|w| ≤ 128, |a| ≤ 128).
#[inline]
fn dot32(w: [int8x16_t; 2], a: &[i8; 32]) -> i32 {
    // SAFETY: `a` is 32 bytes, two 128-bit loads; the arithmetic intrinsics only need NEON, which
    // every AArch64 CPU has.
    unsafe {
        let a0 = vld1q_s8(a.as_ptr());
        let a1 = vld1q_s8(a.as_ptr().add(16));
        let mut acc = vpaddlq_s16(vmull_s8(vget_low_s8(w[0]), vget_low_s8(a0)));
        acc = vpadalq_s16(acc, vmull_high_s8(w[0], a0));
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w[1]), vget_low_s8(a1)));
        acc = vpadalq_s16(acc, vmull_high_s8(w[1], a1));
        vaddvq_s32(acc)
    }
}

/// A 4-bit block's codes in value order (low nibbles are values 0…15, high ones 16…31), minus
/// `offset`.
#[inline]
fn nibbles(qs: &[u8; 16], offset: i8) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 16 bytes, one 128-bit load; the rest only needs NEON.
    unsafe {
        let q = vld1q_u8(qs.as_ptr());
        let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
        let hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        let off = vdupq_n_s8(offset);
        [vsubq_s8(lo, off), vsubq_s8(hi, off)]
    }
}

/// A 5-bit block's codes (nibbles with bit `j` of `qh` as bit 4 of value `j`), minus `offset`.
#[inline]
fn codes5(qh: [u8; 4], qs: &[u8; 16], offset: i8) -> [int8x16_t; 2] {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: `qs` and `BITS` are 16 bytes, one 128-bit load each; the rest only needs NEON.
    unsafe {
        let q = vld1q_u8(qs.as_ptr());
        let bits = vld1q_u8(BITS.as_ptr());
        let high = |a: u8, b: u8| {
            let bytes = vcombine_u8(vdup_n_u8(a), vdup_n_u8(b));
            vandq_u8(vtstq_u8(bytes, bits), vdupq_n_u8(0x10))
        };
        let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0f)), high(qh[0], qh[1]));
        let hi = vorrq_u8(vshrq_n_u8(q, 4), high(qh[2], qh[3]));
        let off = vdupq_n_s8(offset);
        [
            vsubq_s8(vreinterpretq_s8_u8(lo), off),
            vsubq_s8(vreinterpretq_s8_u8(hi), off),
        ]
    }
}

/// Q8_0 · Q8_0, as `dot_q8_0::vec_dot_scalar`.
pub fn vec_dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        // SAFETY: `qs` is 32 bytes, two 128-bit loads.
        let codes = unsafe { [vld1q_s8(wb.qs.as_ptr()), vld1q_s8(wb.qs.as_ptr().add(16))] };
        let d = wb.d.to_f32() * ab.d.to_f32();
        sum += d * dot32(codes, &ab.qs) as f32;
    }
    sum
}

/// Q4_0 · Q8_0, as `dot_q4::vec_dot_q4_0_scalar`.
pub fn vec_dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let d = wb.d.to_f32() * ab.d.to_f32();
        sum += d * dot32(nibbles(&wb.qs, 8), &ab.qs) as f32;
    }
    sum
}

/// Q4_1 · Q8_1, as `dot_q4::vec_dot_scalar`.
pub fn vec_dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let (mut sum, mut offsets) = (0f32, 0f32);
    for (wb, ab) in w.iter().zip(a) {
        let sumi = dot32(nibbles(&wb.qs, 0), &ab.qs);
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
        offsets += wb.m.to_f32() * ab.s.to_f32();
    }
    sum + offsets
}

/// Q5_0 · Q8_0, as `dot_q5::vec_dot_q5_0_scalar`.
pub fn vec_dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let sumi = dot32(codes5(wb.qh, &wb.qs, 16), &ab.qs);
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
    }
    sum
}

/// Q5_1 · Q8_1, as `dot_q5::vec_dot_q5_1_scalar`.
pub fn vec_dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let (mut sum, mut offsets) = (0f32, 0f32);
    for (wb, ab) in w.iter().zip(a) {
        let sumi = dot32(codes5(wb.qh, &wb.qs, 0), &ab.qs);
        sum += (wb.d.to_f32() * ab.d.to_f32()) * sumi as f32;
        offsets += wb.m.to_f32() * ab.s.to_f32();
    }
    sum + offsets
}

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{random, with_scales};
    use super::super::{dot_q4, dot_q5, dot_q8_0};
    use super::*;

    /// Activation blocks as the engine's quantizer makes them (codes in −127..=127), one all zeros.
    fn acts<T: bytemuck::Pod>(n: usize, seed: u64, fields: &[f32], codes_at: usize) -> Vec<T> {
        let mut a: Vec<T> = with_scales(random(n, seed), fields);
        for (i, blk) in a.iter_mut().enumerate() {
            let bytes = bytemuck::bytes_of_mut(blk);
            for q in &mut bytes[codes_at..] {
                *q = if i == 1 {
                    0
                } else {
                    (*q as i8).max(-127) as u8
                };
            }
        }
        a
    }

    /// Each NEON product equals its scalar reference bit for bit on random codes under ordinary,
    /// tiny and huge scales, with the extreme codes forced into some blocks.
    #[test]
    fn neon_products_equal_the_scalar_references() {
        let n = 9;
        for (k, scale) in [0.02f32, 6.0e-8, 30000.0].into_iter().enumerate() {
            let seed = 10 * k as u64;
            let a0: Vec<BlockQ8_0> = acts(n, seed + 1, &[scale], 2);
            let a1: Vec<BlockQ8_1> = acts(n, seed + 2, &[scale, -scale], 4);

            let mut w8: Vec<BlockQ8_0> = with_scales(random(n, seed + 3), &[scale]);
            w8[0].qs = [-128; 32];
            w8[2].qs = [127; 32];
            let (got, want) = (vec_dot_q8_0(&w8, &a0), dot_q8_0::vec_dot_scalar(&w8, &a0));
            assert_eq!(got.to_bits(), want.to_bits(), "Q8_0 at {scale}");

            let mut w40: Vec<BlockQ4_0> = with_scales(random(n, seed + 4), &[scale]);
            w40[0].qs = [0; 16];
            w40[2].qs = [0xff; 16];
            let (got, want) = (
                vec_dot_q4_0(&w40, &a0),
                dot_q4::vec_dot_q4_0_scalar(&w40, &a0),
            );
            assert_eq!(got.to_bits(), want.to_bits(), "Q4_0 at {scale}");

            let w41: Vec<BlockQ4_1> = with_scales(random(n, seed + 5), &[scale, scale]);
            let (got, want) = (vec_dot_q4_1(&w41, &a1), dot_q4::vec_dot_scalar(&w41, &a1));
            assert_eq!(got.to_bits(), want.to_bits(), "Q4_1 at {scale}");

            let mut w50: Vec<BlockQ5_0> = with_scales(random(n, seed + 6), &[scale]);
            w50[0].qh = [0xff; 4];
            w50[0].qs = [0xff; 16];
            w50[2].qh = [0; 4];
            w50[2].qs = [0; 16];
            let (got, want) = (
                vec_dot_q5_0(&w50, &a0),
                dot_q5::vec_dot_q5_0_scalar(&w50, &a0),
            );
            assert_eq!(got.to_bits(), want.to_bits(), "Q5_0 at {scale}");

            let w51: Vec<BlockQ5_1> = with_scales(random(n, seed + 7), &[scale, -scale]);
            let (got, want) = (
                vec_dot_q5_1(&w51, &a1),
                dot_q5::vec_dot_q5_1_scalar(&w51, &a1),
            );
            assert_eq!(got.to_bits(), want.to_bits(), "Q5_1 at {scale}");
        }
    }
}
