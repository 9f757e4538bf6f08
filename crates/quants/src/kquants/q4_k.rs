//! Q4_K: 4-bit quants with a 6-bit scale and min per 32, `x = d·sc·q - dmin·m`.

use super::scale_min::{requantize, search_ref, search_weighted, sub_block_scale_min, ScaleMin};
use crate::blocks::{BlockQ4K, QK_K};
use crate::round::from_f16;
use crate::search::ScaleSearch;

/// Largest quant.
const NMAX: i32 = 15;

/// One super-block of `quantize_row_q4_K_ref`.
pub(super) fn quantize_ref(x: &[f32; QK_K], y: &mut BlockQ4K) {
    const SEARCH: ScaleSearch = ScaleSearch {
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let sm = search_ref(x, NMAX, SEARCH, &mut l);
    finish(x, sm, &mut l, y);
}

/// One super-block of `quantize_row_q4_K_impl` (`quantize_q4_K` with importance weights).
pub(super) fn quantize_weighted(x: &[f32; QK_K], qw: &[f32; QK_K], y: &mut BlockQ4K) {
    let mut l = [0u8; QK_K];
    let sm = search_weighted(x, qw, NMAX, false, &mut l);
    finish(x, sm, &mut l, y);
}

/// Requantizes against the stored scales and packs: each 64 elements fill 32 bytes, the first
/// 32 in the low nibbles and the next 32 in the high ones.
fn finish(x: &[f32; QK_K], sm: ScaleMin, l: &mut [u8; QK_K], y: &mut BlockQ4K) {
    requantize(x, &sm, NMAX, l);
    y.d = sm.d;
    y.dmin = sm.dmin;
    y.scales = sm.scales;
    for (q, l) in y.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
        for (i, q) in q.iter_mut().enumerate() {
            *q = l[i] | (l[i + 32] << 4);
        }
    }
}

/// `dequantize_row_q4_K` of one super-block.
pub(super) fn dequantize(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let d = from_f16(b.d);
    let dmin = from_f16(b.dmin);
    let pairs = b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64));
    for (c, (q, y)) in pairs.enumerate() {
        let (d1, m1) = sub_block_scale_min(d, dmin, &b.scales, 2 * c);
        let (d2, m2) = sub_block_scale_min(d, dmin, &b.scales, 2 * c + 1);
        let (lo, hi) = y.split_at_mut(32);
        for ((&q, lo), hi) in q.iter().zip(lo).zip(hi) {
            *lo = d1 * (q & 0xF) as f32 - m1;
            *hi = d2 * (q >> 4) as f32 - m2;
        }
    }
}
