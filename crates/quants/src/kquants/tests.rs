//! Unit tests of the k-quants: round trips within each type's error bound, degenerate
//! super-blocks, the scale packings, and dequantization of hand-built blocks.

use bytemuck::Zeroable;

use super::scales::{get_scale_min_k4, pack_q3_scales, pack_scale_min_k4, q3_scale};
use crate::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::format::BlockFormat;
use crate::round::to_f16;

/// A deterministic, roughly normal test row (a sum of sines, so no generator is needed).
fn row(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 + seed as f32 * 7.31;
            0.6 * (t * 0.713).sin() + 0.3 * (t * 2.117).cos() + 0.1 * (t * 5.37).sin()
        })
        .collect()
}

/// The root-mean-square error of quantizing `x` to `B` and back, relative to `x`'s RMS.
fn relative_rms_error<B: BlockFormat>(x: &[f32], qw: Option<&[f32]>) -> f32 {
    let mut blocks = vec![B::zeroed(); x.len() / QK_K];
    match qw {
        None => B::quantize_ref(x, &mut blocks),
        Some(w) => B::quantize_weighted(x, &mut blocks, w),
    }
    let mut back = vec![0.0; x.len()];
    B::dequantize(&blocks, &mut back);
    let err: f32 = x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f32 = x.iter().map(|a| a * a).sum();
    (err / norm).sqrt()
}

fn check_round_trip<B: BlockFormat>(bound: f32) {
    let x = row(4 * QK_K, 3);
    let qw: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32).collect();
    let e_ref = relative_rms_error::<B>(&x, None);
    let e_w = relative_rms_error::<B>(&x, Some(&qw));
    assert!(e_ref < bound, "{}: reference error {e_ref}", B::TYPE);
    assert!(e_w < bound, "{}: weighted error {e_w}", B::TYPE);
}

#[test]
fn round_trip_errors_shrink_with_bits() {
    // Each extra bit roughly halves the error; these bounds are about 1.5× what is observed.
    check_round_trip::<BlockQ2K>(0.35);
    check_round_trip::<BlockQ3K>(0.2);
    check_round_trip::<BlockQ4K>(0.09);
    check_round_trip::<BlockQ5K>(0.045);
    check_round_trip::<BlockQ6K>(0.021);
}

fn check_zero_block<B: BlockFormat + PartialEq + std::fmt::Debug>() {
    let x = [0.0f32; QK_K];
    let qw = [1.0f32; QK_K];
    for weighted in [false, true] {
        let mut b = [B::zeroed()];
        if weighted {
            B::quantize_weighted(&x, &mut b, &qw);
        } else {
            B::quantize_ref(&x, &mut b);
        }
        let mut back = [1.0f32; QK_K];
        B::dequantize(&b, &mut back);
        assert!(
            back.iter().all(|&v| v == 0.0),
            "{} weighted {weighted}: {back:?}",
            B::TYPE
        );
    }
}

#[test]
fn all_zero_super_blocks_decode_to_zero() {
    check_zero_block::<BlockQ2K>();
    check_zero_block::<BlockQ3K>();
    check_zero_block::<BlockQ4K>();
    check_zero_block::<BlockQ5K>();
    check_zero_block::<BlockQ6K>();
    // Q6_K stores an all-zero super-block as all-zero bytes.
    let mut b = [BlockQ6K {
        d: to_f16(1.0),
        ..BlockQ6K::zeroed()
    }];
    BlockQ6K::quantize_ref(&[0.0; QK_K], &mut b);
    assert_eq!(b[0], BlockQ6K::zeroed());
}

#[test]
fn scale_min_k4_packing_round_trips() {
    for seed in 0..64u32 {
        let ls: [u8; 8] = std::array::from_fn(|j| ((seed * 13 + j as u32 * 29) % 64) as u8);
        let lm: [u8; 8] = std::array::from_fn(|j| ((seed * 7 + j as u32 * 41 + 5) % 64) as u8);
        let q = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (ls[j], lm[j]), "seed {seed} j {j}");
        }
    }
}

#[test]
fn q3_scale_packing_round_trips() {
    for seed in 0..64u32 {
        let l: [u8; 16] = std::array::from_fn(|j| ((seed * 11 + j as u32 * 23) % 64) as u8);
        let q = pack_q3_scales(&l);
        for (j, &l) in l.iter().enumerate() {
            assert_eq!(q3_scale(&q, j), l as i8 - 32, "seed {seed} j {j}");
        }
    }
}

#[test]
fn dequantize_hand_built_q4_k() {
    // Sub-block j: scale j + 1, min j; every quant 3 in sub-block 0 (low nibbles of the first
    // 32 bytes) and 5 in sub-block 1 (their high nibbles), and so on.
    let ls: [u8; 8] = std::array::from_fn(|j| j as u8 + 1);
    let lm: [u8; 8] = std::array::from_fn(|j| j as u8);
    let mut b = BlockQ4K {
        d: to_f16(0.5),
        dmin: to_f16(0.25),
        scales: pack_scale_min_k4(&ls, &lm),
        qs: [0; QK_K / 2],
    };
    for (c, q) in b.qs.chunks_exact_mut(32).enumerate() {
        q.fill((3 + c as u8) | ((5 + c as u8) << 4));
    }
    let mut y = [0.0f32; QK_K];
    BlockQ4K::dequantize(&[b], &mut y);
    for (i, &v) in y.iter().enumerate() {
        let j = i / 32;
        let q = if j % 2 == 0 { 3 + j / 2 } else { 5 + j / 2 } as f32;
        assert_eq!(v, 0.5 * (j + 1) as f32 * q - 0.25 * j as f32, "element {i}");
    }
}

#[test]
fn dequantize_hand_built_q5_k() {
    // Q4_K's block plus the fifth bit set on every element of odd sub-blocks.
    let ls = [2u8; 8];
    let lm = [1u8; 8];
    let b = BlockQ5K {
        d: to_f16(1.0),
        dmin: to_f16(2.0),
        scales: pack_scale_min_k4(&ls, &lm),
        qh: [0b1010_1010; QK_K / 8],
        qs: [0x71; QK_K / 2],
    };
    let mut y = [0.0f32; QK_K];
    BlockQ5K::dequantize(&[b], &mut y);
    for (i, &v) in y.iter().enumerate() {
        let q = if (i / 32) % 2 == 0 { 1 } else { 7 + 16 };
        assert_eq!(v, 2.0 * q as f32 - 2.0, "element {i}");
    }
}

#[test]
fn dequantize_hand_built_q2_k() {
    // Scale nibble s % 16, min nibble 1; element i's two bits from its row of 32.
    let mut b = BlockQ2K {
        scales: std::array::from_fn(|s| (s as u8 % 16) | (1 << 4)),
        qs: [0; QK_K / 4],
        d: to_f16(0.5),
        dmin: to_f16(0.125),
    };
    // Row r (0..4) of each half holds quant r.
    for q in b.qs.iter_mut() {
        *q = 0b11_10_01_00;
    }
    let mut y = [0.0f32; QK_K];
    BlockQ2K::dequantize(&[b], &mut y);
    for (i, &v) in y.iter().enumerate() {
        let s = i / 16;
        let q = ((i % 128) / 32) as f32;
        assert_eq!(v, 0.5 * s as f32 * q - 0.125, "element {i}");
    }
}

#[test]
fn dequantize_hand_built_q3_k() {
    // All scales +1 (stored 33); high bit set on the first half's elements only, so they
    // decode to q and the second half's to q - 4.
    let b = BlockQ3K {
        hmask: [0x0F; QK_K / 8],
        qs: [0b11_10_01_00; QK_K / 4],
        scales: pack_q3_scales(&[33; 16]),
        d: to_f16(0.5),
    };
    let mut y = [0.0f32; QK_K];
    BlockQ3K::dequantize(&[b], &mut y);
    for (i, &v) in y.iter().enumerate() {
        let q = ((i % 128) / 32) as i32 - if i < 128 { 0 } else { 4 };
        assert_eq!(v, 0.5 * q as f32, "element {i}");
    }
}

#[test]
fn dequantize_hand_built_q6_k() {
    // Scales alternate ±2; every quant is 40 (stored low nibble 8, high bits 2).
    let b = BlockQ6K {
        ql: [0x88; QK_K / 2],
        qh: [0b10_10_10_10; QK_K / 4],
        scales: std::array::from_fn(|s| if s % 2 == 0 { 2 } else { -2 }),
        d: to_f16(0.25),
    };
    let mut y = [0.0f32; QK_K];
    BlockQ6K::dequantize(&[b], &mut y);
    for (i, &v) in y.iter().enumerate() {
        let sc = if (i / 16) % 2 == 0 { 2.0 } else { -2.0 };
        assert_eq!(v, 0.25 * sc * 8.0, "element {i}");
    }
}

#[test]
fn quantize_then_dequantize_is_stable() {
    // Decoded values are on the grid, so quantizing them again gives the same values back.
    fn check<B: BlockFormat>() {
        let x = row(2 * QK_K, 11);
        let mut b = vec![B::zeroed(); 2];
        B::quantize_ref(&x, &mut b);
        let mut once = vec![0.0; x.len()];
        B::dequantize(&b, &mut once);
        B::quantize_ref(&once, &mut b);
        let mut twice = vec![0.0; x.len()];
        B::dequantize(&b, &mut twice);
        let err = once
            .iter()
            .zip(&twice)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.05, "{}: {err}", B::TYPE);
    }
    check::<BlockQ4K>();
    check::<BlockQ5K>();
    check::<BlockQ6K>();
}
