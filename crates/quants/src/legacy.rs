//! The legacy 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each quantizer mirrors `ggml-quants.c` operation for operation, in `f32` and without fused
//! multiply-adds (ggml-base is built for baseline x86-64): `quantize_row_*_ref` for
//! [`BlockFormat::quantize_ref`], `quantize_row_*_impl` with `quant_weights` for
//! [`BlockFormat::quantize_weighted`], and `dequantize_row_*` for [`BlockFormat::dequantize`].

use std::array;

use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
use crate::format::{BlockFormat, QuantType};
use crate::round::{from_f16, to_f16};
use crate::search::{make_qkx3_quants, make_qx_quants, signed_abs_max, ScaleSearch};

/// x86's `cvttss2si`, which C's `(int8_t)` / `(uint8_t)` casts of a float compile to before the
/// low byte is kept: truncation toward zero, and `i32::MIN` for NaN and out-of-range values (where
/// Rust's `as` would saturate instead).
#[inline]
fn cvtt(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// C's `(int8_t)x` for a float on x86-64.
#[inline]
fn c_to_i8(x: f32) -> i8 {
    cvtt(x) as i8
}

/// C's `(uint8_t)x` for a float on x86-64.
#[inline]
fn c_to_u8(x: f32) -> u8 {
    cvtt(x) as u8
}

/// `d ? 1.0f/d : 0.0f`, the inverse scale of the reference quantizers.
#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The smallest and largest value of a block, as the `_1` reference quantizers scan it from
/// `FLT_MAX` / `-FLT_MAX`.
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(mut min, mut max), &v| {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
            (min, max)
        })
}

/// Element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
#[inline]
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    array::from_fn(|j| (q[j] & 0x0f) | (q[j + QK / 2] << 4))
}

/// 5-bit quants split as Q5_0 / Q5_1 store them: the low nibbles packed as by
/// [`pack_nibbles`], and the fifth bit of element `j` at bit `j` of a little-endian `u32`.
#[inline]
fn pack_5bit(q: &[u8; QK]) -> ([u8; 4], [u8; QK / 2]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |qh, (j, &v)| qh | (u32::from(v & 0x10) >> 4) << j);
    (qh.to_le_bytes(), pack_nibbles(q))
}

/// The 5-bit quants of a Q5_0 / Q5_1 block, as `dequantize_row_q5_*` reassembles them.
#[inline]
fn unpack_5bit(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let qh = u32::from_le_bytes(qh);
    array::from_fn(|j| {
        let nibble = if j < QK / 2 {
            qs[j] & 0x0f
        } else {
            qs[j - QK / 2] >> 4
        };
        nibble | (((qh >> j) << 4) & 0x10) as u8
    })
}

/// The 4-bit quants of a Q4_0 / Q4_1 block.
#[inline]
fn unpack_nibbles(qs: &[u8; QK / 2]) -> [u8; QK] {
    array::from_fn(|j| {
        if j < QK / 2 {
            qs[j] & 0x0f
        } else {
            qs[j - QK / 2] >> 4
        }
    })
}

/// `sigma2` of the weighted legacy quantizers: the row's mean square, summed in order.
fn row_sigma2(x: &[f32]) -> f32 {
    let sum_x2 = x.iter().fold(0.0f32, |s, &v| s + v * v);
    sum_x2 / x.len() as f32
}

/// The per-element weights of the weighted legacy quantizers:
/// `quant_weights[j] · √(sigma2 + x[j]²)`.
#[inline]
fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    array::from_fn(|j| qw[j] * (sigma2 + xb[j] * xb[j]).sqrt())
}

/// The trial grid `quantize_row_q4_1_impl` and `quantize_row_q5_1_impl` give
/// `make_qkx3_quants`.
const QKX3_LEGACY: ScaleSearch = ScaleSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Splits a row and its importance weights into blocks, with the row's `sigma2`, for the
/// weighted quantizers.
fn weighted_blocks<'a, B>(
    x: &'a [f32],
    out: &'a mut [B],
    quant_weights: &'a [f32],
) -> impl Iterator<Item = (&'a [f32], [f32; QK], &'a mut B)> {
    assert_eq!(x.len(), out.len() * QK, "row length must be blocks × {QK}");
    assert_eq!(
        quant_weights.len(),
        x.len(),
        "one importance weight per element"
    );
    let sigma2 = row_sigma2(x);
    x.chunks_exact(QK)
        .zip(quant_weights.chunks_exact(QK))
        .zip(out)
        .map(move |((xb, qw), y)| (xb, block_weights(xb, qw, sigma2), y))
}

/// Pairs the source blocks with the output blocks of a reference quantizer.
fn ref_blocks<'a, B>(
    x: &'a [f32],
    out: &'a mut [B],
) -> impl Iterator<Item = (&'a [f32], &'a mut B)> {
    assert_eq!(x.len(), out.len() * QK, "length must be blocks × {QK}");
    x.chunks_exact(QK).zip(out)
}

/// Pairs the blocks with the output chunks of a dequantizer.
fn dequant_blocks<'a, B>(
    blocks: &'a [B],
    out: &'a mut [f32],
) -> impl Iterator<Item = (&'a B, &'a mut [f32])> {
    assert_eq!(
        out.len(),
        blocks.len() * QK,
        "output must hold blocks × {QK}"
    );
    blocks.iter().zip(out.chunks_exact_mut(QK))
}

impl BlockFormat for BlockQ4_0 {
    const BLOCK_ELEMS: usize = QK;
    const TYPE: QuantType = QuantType::Q4_0;

    /// `quantize_row_q4_0_ref`: `d = max / -8` from the element of largest magnitude (so that
    /// element lands on `-8`), quants `min(15, trunc(x/d + 8.5))`.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (xb, y) in ref_blocks(x, out) {
            let (_, max) = signed_abs_max(xb);
            let d = max / -8.0;
            let id = inverse(d);
            let q: [u8; QK] = array::from_fn(|j| c_to_i8(xb[j] * id + 8.5).min(15) as u8);
            *y = BlockQ4_0 {
                d: to_f16(d),
                qs: pack_nibbles(&q),
            };
        }
    }

    /// `quantize_row_q4_0_impl`: `make_qx_quants(32, 8, …, rmse_type 1, weights)`.
    fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]) {
        for (xb, w, y) in weighted_blocks(x, out, quant_weights) {
            let mut l = [0i8; QK];
            let d = make_qx_quants(8, xb, &mut l, 1, Some(&w));
            *y = BlockQ4_0 {
                d: to_f16(d),
                qs: pack_nibbles(&l.map(|v| v as u8)),
            };
        }
    }

    /// `dequantize_row_q4_0`: `(q - 8) · d`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, o) in dequant_blocks(blocks, out) {
            let d = from_f16(b.d);
            for (o, q) in o.iter_mut().zip(unpack_nibbles(&b.qs)) {
                *o = (i32::from(q) - 8) as f32 * d;
            }
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const BLOCK_ELEMS: usize = QK;
    const TYPE: QuantType = QuantType::Q4_1;

    /// `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`, quants
    /// `min(15, trunc((x - min)/d + 0.5))`.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (xb, y) in ref_blocks(x, out) {
            let (min, max) = min_max(xb);
            let d = (max - min) / 15.0;
            let id = inverse(d);
            let q: [u8; QK] = array::from_fn(|j| c_to_i8((xb[j] - min) * id + 0.5).min(15) as u8);
            *y = BlockQ4_1 {
                d: to_f16(d),
                m: to_f16(min),
                qs: pack_nibbles(&q),
            };
        }
    }

    /// `quantize_row_q4_1_impl`: `make_qkx3_quants(32, 15, …, -0.9, 0.05, 36, false)`.
    fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]) {
        for (xb, w, y) in weighted_blocks(x, out, quant_weights) {
            let mut l = [0u8; QK];
            let (d, the_min) = make_qkx3_quants(15, xb, Some(&w), &mut l, QKX3_LEGACY);
            *y = BlockQ4_1 {
                d: to_f16(d),
                m: to_f16(-the_min),
                qs: pack_nibbles(&l),
            };
        }
    }

    /// `dequantize_row_q4_1`: `q · d + m`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, o) in dequant_blocks(blocks, out) {
            let (d, m) = (from_f16(b.d), from_f16(b.m));
            for (o, q) in o.iter_mut().zip(unpack_nibbles(&b.qs)) {
                *o = f32::from(q) * d + m;
            }
        }
    }
}

impl BlockFormat for BlockQ5_0 {
    const BLOCK_ELEMS: usize = QK;
    const TYPE: QuantType = QuantType::Q5_0;

    /// `quantize_row_q5_0_ref`: `d = max / -16`, quants `min(31, trunc(x/d + 16.5))`.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (xb, y) in ref_blocks(x, out) {
            let (_, max) = signed_abs_max(xb);
            let d = max / -16.0;
            let id = inverse(d);
            let q: [u8; QK] = array::from_fn(|j| c_to_i8(xb[j] * id + 16.5).min(31) as u8);
            let (qh, qs) = pack_5bit(&q);
            *y = BlockQ5_0 {
                d: to_f16(d),
                qh,
                qs,
            };
        }
    }

    /// `quantize_row_q5_0_impl`: `make_qx_quants(32, 16, …, rmse_type 1, weights)`.
    fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]) {
        for (xb, w, y) in weighted_blocks(x, out, quant_weights) {
            let mut l = [0i8; QK];
            let d = make_qx_quants(16, xb, &mut l, 1, Some(&w));
            let (qh, qs) = pack_5bit(&l.map(|v| v as u8));
            *y = BlockQ5_0 {
                d: to_f16(d),
                qh,
                qs,
            };
        }
    }

    /// `dequantize_row_q5_0`: `(q - 16) · d`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, o) in dequant_blocks(blocks, out) {
            let d = from_f16(b.d);
            for (o, q) in o.iter_mut().zip(unpack_5bit(b.qh, &b.qs)) {
                *o = (i32::from(q) - 16) as f32 * d;
            }
        }
    }
}

impl BlockFormat for BlockQ5_1 {
    const BLOCK_ELEMS: usize = QK;
    const TYPE: QuantType = QuantType::Q5_1;

    /// `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`, quants
    /// `trunc((x - min)/d + 0.5)` (no clamp in ggml).
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (xb, y) in ref_blocks(x, out) {
            let (min, max) = min_max(xb);
            let d = (max - min) / 31.0;
            let id = inverse(d);
            let q: [u8; QK] = array::from_fn(|j| c_to_u8((xb[j] - min) * id + 0.5));
            let (qh, qs) = pack_5bit(&q);
            *y = BlockQ5_1 {
                d: to_f16(d),
                m: to_f16(min),
                qh,
                qs,
            };
        }
    }

    /// `quantize_row_q5_1_impl`: `make_qkx3_quants(32, 31, …, -0.9, 0.05, 36, false)`.
    fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]) {
        for (xb, w, y) in weighted_blocks(x, out, quant_weights) {
            let mut l = [0u8; QK];
            let (d, the_min) = make_qkx3_quants(31, xb, Some(&w), &mut l, QKX3_LEGACY);
            let (qh, qs) = pack_5bit(&l);
            *y = BlockQ5_1 {
                d: to_f16(d),
                m: to_f16(-the_min),
                qh,
                qs,
            };
        }
    }

    /// `dequantize_row_q5_1`: `q · d + m`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, o) in dequant_blocks(blocks, out) {
            let (d, m) = (from_f16(b.d), from_f16(b.m));
            for (o, q) in o.iter_mut().zip(unpack_5bit(b.qh, &b.qs)) {
                *o = f32::from(q) * d + m;
            }
        }
    }
}

impl BlockFormat for BlockQ8_0 {
    const BLOCK_ELEMS: usize = QK;
    const TYPE: QuantType = QuantType::Q8_0;

    /// `quantize_row_q8_0_ref`: `d = amax / 127`, quants `roundf(x/d)` (half away from zero).
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (xb, y) in ref_blocks(x, out) {
            // `MAX(amax, fabsf(v))`: a NaN element poisons the maximum, as in ggml.
            let amax = xb.iter().fold(
                0.0f32,
                |amax, &v| if amax > v.abs() { amax } else { v.abs() },
            );
            let d = amax / 127.0;
            let id = inverse(d);
            *y = BlockQ8_0 {
                d: to_f16(d),
                qs: array::from_fn(|j| c_to_i8((xb[j] * id).round())),
            };
        }
    }

    /// `quantize_q8_0` ignores importance weights: the reference quantizer.
    fn quantize_weighted(x: &[f32], out: &mut [Self], _quant_weights: &[f32]) {
        Self::quantize_ref(x, out);
    }

    /// `dequantize_row_q8_0`: `q · d`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, o) in dequant_blocks(blocks, out) {
            let d = from_f16(b.d);
            for (o, &q) in o.iter_mut().zip(&b.qs) {
                *o = f32::from(q) * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;
    use half::f16;

    /// Deterministic test data: a sine-modulated LCG in roughly [-scale, scale].
    fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32;
                scale * (2.0 * u - 1.0) * (1.0 + (i as f32 * 0.1).sin()) * 0.5
            })
            .collect()
    }

    fn round_trip<B: BlockFormat>(x: &[f32], qw: Option<&[f32]>) -> Vec<f32> {
        let mut blocks = vec![B::zeroed(); x.len() / B::BLOCK_ELEMS];
        match qw {
            None => B::quantize_ref(x, &mut blocks),
            Some(w) => B::quantize_weighted(x, &mut blocks, w),
        }
        let mut back = vec![0.0; x.len()];
        B::dequantize(&blocks, &mut back);
        back
    }

    /// Checks every block's worst error against `bound(block)`.
    fn check_round_trip<B: BlockFormat>(bound: impl Fn(&[f32]) -> f32) {
        for seed in 0..8 {
            let x = data(QK * 64, seed, 1.0 + seed as f32);
            let back = round_trip::<B>(&x, None);
            for (xb, bb) in x.chunks(QK).zip(back.chunks(QK)) {
                let err = xb
                    .iter()
                    .zip(bb)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err <= bound(xb), "{}: error {err} > {}", B::TYPE, bound(xb));
            }
        }
    }

    fn amax(x: &[f32]) -> f32 {
        x.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn reference_round_trips_stay_within_a_step() {
        // f16 storage of d adds at most 2⁻¹¹ relative per level; one percent covers it.
        check_round_trip::<BlockQ4_0>(|x| amax(x) / 8.0 * 1.01);
        check_round_trip::<BlockQ5_0>(|x| amax(x) / 16.0 * 1.01);
        check_round_trip::<BlockQ8_0>(|x| amax(x) / 127.0 * 0.5 + amax(x) / 1024.0);
        check_round_trip::<BlockQ4_1>(|x| {
            let (lo, hi) = min_max(x);
            (hi - lo) / 15.0 * 0.5 * 1.05 + lo.abs() / 1024.0
        });
        check_round_trip::<BlockQ5_1>(|x| {
            let (lo, hi) = min_max(x);
            (hi - lo) / 31.0 * 0.5 * 1.05 + lo.abs() / 1024.0
        });
    }

    fn weighted_sq_error(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .zip(w)
            .map(|((a, b), w)| f64::from(*w) * f64::from(a - b).powi(2))
            .sum()
    }

    fn weighted_not_worse<B: BlockFormat>() {
        let x = data(QK * 128, 7, 2.0);
        let w: Vec<f32> = data(x.len(), 99, 1.0)
            .iter()
            .map(|v| v * v + 0.01)
            .collect();
        let plain = weighted_sq_error(&x, &round_trip::<B>(&x, None), &w);
        let weighted = weighted_sq_error(&x, &round_trip::<B>(&x, Some(&w)), &w);
        assert!(
            weighted < plain,
            "{}: weighted error {weighted} ≥ reference {plain}",
            B::TYPE
        );
    }

    #[test]
    fn weighted_quantizers_lower_the_weighted_error() {
        weighted_not_worse::<BlockQ4_0>();
        weighted_not_worse::<BlockQ4_1>();
        weighted_not_worse::<BlockQ5_0>();
        weighted_not_worse::<BlockQ5_1>();
    }

    #[test]
    fn all_zero_blocks_get_zero_scale() {
        let x = [0.0f32; QK];
        let w = [1.0f32; QK];
        let mut q4 = [BlockQ4_0::zeroed()];
        BlockQ4_0::quantize_ref(&x, &mut q4);
        assert_eq!(q4[0].d, f16::ZERO);
        assert_eq!(q4[0].qs, [0x88; 16]);
        BlockQ4_0::quantize_weighted(&x, &mut q4, &w);
        // make_qx_quants leaves an all-zero group at L = 0, not at the zero point 8.
        assert_eq!((q4[0].d, q4[0].qs), (f16::ZERO, [0; 16]));

        let mut q5 = [BlockQ5_0::zeroed()];
        BlockQ5_0::quantize_ref(&x, &mut q5);
        assert_eq!(
            (q5[0].d, q5[0].qh, q5[0].qs),
            (f16::ZERO, [0xff; 4], [0; 16])
        );
        BlockQ5_0::quantize_weighted(&x, &mut q5, &w);
        assert_eq!((q5[0].d, q5[0].qh, q5[0].qs), (f16::ZERO, [0; 4], [0; 16]));

        let mut q41 = [BlockQ4_1::zeroed()];
        for weighted in [false, true] {
            if weighted {
                BlockQ4_1::quantize_weighted(&x, &mut q41, &w);
            } else {
                BlockQ4_1::quantize_ref(&x, &mut q41);
            }
            assert_eq!(
                (q41[0].d, q41[0].m, q41[0].qs),
                (f16::ZERO, f16::ZERO, [0; 16])
            );
        }
        let mut q51 = [BlockQ5_1::zeroed()];
        for weighted in [false, true] {
            if weighted {
                BlockQ5_1::quantize_weighted(&x, &mut q51, &w);
            } else {
                BlockQ5_1::quantize_ref(&x, &mut q51);
            }
            assert_eq!(q51[0].d, f16::ZERO);
            assert_eq!((q51[0].qh, q51[0].qs), ([0; 4], [0; 16]));
        }

        let mut q8 = [BlockQ8_0::zeroed()];
        BlockQ8_0::quantize_ref(&x, &mut q8);
        assert_eq!((q8[0].d, q8[0].qs), (f16::ZERO, [0; QK]));
    }

    #[test]
    fn dequantize_hand_built_blocks() {
        let mut out = [0.0f32; QK];

        let mut qs = [0x88u8; 16];
        qs[0] = 0x3a; // element 0: 10, element 16: 3
        BlockQ4_0::dequantize(
            &[BlockQ4_0 {
                d: f16::from_f32(0.5),
                qs,
            }],
            &mut out,
        );
        assert_eq!((out[0], out[16], out[1]), (1.0, -2.5, 0.0));

        BlockQ4_1::dequantize(
            &[BlockQ4_1 {
                d: f16::from_f32(0.25),
                m: f16::from_f32(-1.0),
                qs,
            }],
            &mut out,
        );
        assert_eq!((out[0], out[16], out[1]), (1.5, -0.25, 1.0));

        // Q5_0: element 0 has its fifth bit set (26), element 17 too (16 + 8 = 24).
        let mut qs5 = [0u8; 16];
        qs5[0] = 0x0a;
        qs5[1] = 0x80;
        let qh = (1u32 | 1 << 17).to_le_bytes();
        BlockQ5_0::dequantize(
            &[BlockQ5_0 {
                d: f16::from_f32(2.0),
                qh,
                qs: qs5,
            }],
            &mut out,
        );
        assert_eq!(
            (out[0], out[17], out[1], out[16]),
            (20.0, 16.0, -32.0, -32.0)
        );

        BlockQ5_1::dequantize(
            &[BlockQ5_1 {
                d: f16::from_f32(0.5),
                m: f16::from_f32(1.0),
                qh,
                qs: qs5,
            }],
            &mut out,
        );
        assert_eq!((out[0], out[17], out[1]), (14.0, 13.0, 1.0));

        let mut q8 = [0i8; QK];
        q8[0] = -128;
        q8[31] = 127;
        BlockQ8_0::dequantize(
            &[BlockQ8_0 {
                d: f16::from_f32(0.125),
                qs: q8,
            }],
            &mut out,
        );
        assert_eq!((out[0], out[31], out[5]), (-16.0, 15.875, 0.0));
    }

    #[test]
    fn reference_quants_hit_the_expected_levels() {
        // One block whose largest magnitude is -4: d = 0.5 for Q4_0, so x = 1.0 → q = 10.
        let mut x = [0.0f32; QK];
        x[0] = -4.0;
        x[1] = 1.0;
        x[2] = 3.75; // 7.5 + 8.5 = 16 → clamped to 15
        let mut b = [BlockQ4_0::zeroed()];
        BlockQ4_0::quantize_ref(&x, &mut b);
        assert_eq!(from_f16(b[0].d), 0.5);
        assert_eq!(unpack_nibbles(&b[0].qs)[..4], [0, 10, 15, 8]);

        // Q8_0 rounds half away from zero: 0.5 · 127/127 steps.
        let mut x = [0.0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        let mut b = [BlockQ8_0::zeroed()];
        BlockQ8_0::quantize_ref(&x, &mut b);
        assert_eq!(b[0].qs[..3], [127, 3, -3]);
    }

    #[test]
    fn float_to_byte_casts_follow_x86() {
        assert_eq!(c_to_i8(15.99), 15);
        assert_eq!(c_to_i8(-0.99), 0);
        assert_eq!(c_to_i8(f32::NAN), 0);
        assert_eq!(c_to_i8(f32::INFINITY), 0);
        assert_eq!(c_to_u8(31.5), 31);
        assert_eq!(c_to_u8(300.0), 44);
    }
}
