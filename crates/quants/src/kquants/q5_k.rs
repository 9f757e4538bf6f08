//! Q5_K: 5-bit quants with a 6-bit scale and min per 32, `x = d·sc·q - dmin·m`.

use super::scale_min::{requantize, search_ref, search_weighted, sub_block_scale_min, ScaleMin};
use crate::blocks::{BlockQ5K, QK_K};
use crate::round::from_f16;
use crate::search::ScaleSearch;

/// Largest quant.
const NMAX: i32 = 31;

/// One super-block of `quantize_row_q5_K_ref`.
pub(super) fn quantize_ref(x: &[f32; QK_K], y: &mut BlockQ5K) {
    const SEARCH: ScaleSearch = ScaleSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let sm = search_ref(x, NMAX, SEARCH, &mut l);
    finish(x, sm, &mut l, y);
}

/// One super-block of `quantize_row_q5_K_impl` (`quantize_q5_K` with importance weights).
pub(super) fn quantize_weighted(x: &[f32; QK_K], qw: &[f32; QK_K], y: &mut BlockQ5K) {
    let mut l = [0u8; QK_K];
    let sm = search_weighted(x, qw, NMAX, true, &mut l);
    finish(x, sm, &mut l, y);
}

/// Requantizes against the stored scales and packs: the low four bits as Q4_K's nibbles, and
/// the fifth bit of elements `64c + i` and `64c + 32 + i` at bits `2c` and `2c + 1` of `qh[i]`.
fn finish(x: &[f32; QK_K], sm: ScaleMin, l: &mut [u8; QK_K], y: &mut BlockQ5K) {
    requantize(x, &sm, NMAX, l);
    y.d = sm.d;
    y.dmin = sm.dmin;
    y.scales = sm.scales;
    y.qh = [0; QK_K / 8];
    let pairs = y.qs.chunks_exact_mut(32).zip(l.chunks_exact(64));
    for (c, (ql, l)) in pairs.enumerate() {
        let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for (i, (ql, qh)) in ql.iter_mut().zip(&mut y.qh).enumerate() {
            // Quants are 0..32: bit 4 is ggml's `l > 15` test, the low nibble what it leaves
            // after subtracting 16.
            let (l1, l2) = (l[i], l[i + 32]);
            *qh |= ((l1 >> 4) * m1) | ((l2 >> 4) * m2);
            *ql = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
}

/// `dequantize_row_q5_K` of one super-block.
pub(super) fn dequantize(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let d = from_f16(b.d);
    let dmin = from_f16(b.dmin);
    let pairs = b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64));
    for (c, (ql, y)) in pairs.enumerate() {
        let (d1, m1) = sub_block_scale_min(d, dmin, &b.scales, 2 * c);
        let (d2, m2) = sub_block_scale_min(d, dmin, &b.scales, 2 * c + 1);
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let (lo, hi) = y.split_at_mut(32);
        for (((&ql, &qh), lo), hi) in ql.iter().zip(&b.qh).zip(lo).zip(hi) {
            let h1 = if qh & u1 != 0 { 16 } else { 0 };
            let h2 = if qh & u2 != 0 { 16 } else { 0 };
            *lo = d1 * ((ql & 0xF) + h1) as f32 - m1;
            *hi = d2 * ((ql >> 4) + h2) as f32 - m2;
        }
    }
}
