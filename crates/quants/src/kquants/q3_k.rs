//! Q3_K: 3-bit quants with a 6-bit signed scale per 16, `x = d·sc·(q - 4)`; the quants' high
//! bits live in `hmask`.

use super::pack_2bit;
use super::scales::{pack_q3_scales, q3_scale};
use crate::blocks::{BlockQ3K, QK_K};
use crate::round::{from_f16, nearest_int, to_f16};
use crate::search::{make_q3_quants, make_qx_quants};

/// Sub-blocks per super-block.
const SUB: usize = QK_K / 16;

/// One super-block of `quantize_row_q3_K_ref`: each sub-block by `make_q3_quants`, then the
/// scales to 6 bits against the one of largest magnitude (kept with its sign).
pub(super) fn quantize_ref(x: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; SUB];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    let groups = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for (s, (x, l)) in scales.iter_mut().zip(groups) {
        *s = make_q3_quants(4, x, l, true);
        if s.abs() > amax {
            amax = s.abs();
            max_scale = *s;
        }
    }
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        // `int8_t l = nearest_int(...)`: truncated to a signed byte before the clamp.
        let ls = scales.map(|s| ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8);
        y.scales = pack_q3_scales(&ls);
        y.d = to_f16(1.0 / iscale);
    } else {
        y.scales = [0; 12];
        y.d = to_f16(0.0);
    }
    finish(x, &mut l, y);
}

/// One super-block of `quantize_row_q3_K_impl` (`quantize_q3_K` with importance weights): each
/// sub-block by `make_qx_quants` with weights `qw·√(σ² + x²)` (σ² twice the super-block's mean
/// square), then the scales by `make_qx_quants` weighted by the sub-blocks' weight sums.
pub(super) fn quantize_weighted(x: &[f32; QK_K], qw: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; SUB];
    let mut sw = [0.0f32; SUB];
    let sumx2 = x.iter().fold(0.0f32, |s, &v| s + v * v);
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let blocks = x.chunks_exact(16).zip(qw.chunks_exact(16));
    for (j, ((x, qw), l)) in blocks.zip(l.chunks_exact_mut(16)).enumerate() {
        let weight: [f32; 16] = std::array::from_fn(|i| qw[i] * (sigma2 + x[i] * x[i]).sqrt());
        sw[j] = weight.iter().fold(0.0f32, |s, &w| s + w);
        scales[j] = make_qx_quants(4, x, l, 1, Some(&weight));
    }
    let mut ls = [0i8; SUB];
    let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
    y.scales = pack_q3_scales(&ls.map(|v| v as u8));
    y.d = to_f16(d_block);
    finish(x, &mut l, y);
}

/// The end both quantizers share: sub-blocks with a non-zero stored scale are quantized again
/// against it (`round(x / (d·sc))` clamped to `[-4, 3]`, stored plus 4), then each quant's bit 2
/// goes to `hmask` (element `j` at bit `j / 32` of byte `j % 32`) and its low bits to `qs`
/// (ggml's `if (L[j] > 3) { hmask |= …; L[j] -= 4; }`).
fn finish(x: &[f32; QK_K], l: &mut [i8; QK_K], y: &mut BlockQ3K) {
    let d_all = from_f16(y.d);
    for (j, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * q3_scale(&y.scales, j) as f32;
        if d == 0.0 {
            continue;
        }
        for (l, &v) in l.iter_mut().zip(x) {
            *l = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // Quants are 0..8 here, so bit 2 is ggml's `L[j] > 3` test and the low two bits what it
    // leaves after subtracting 4.
    let mut low = [0u8; QK_K];
    for (lo, &l) in low.iter_mut().zip(l.iter()) {
        *lo = l as u8 & 3;
    }
    for (m, hm) in y.hmask.iter_mut().enumerate() {
        *hm = (0..8).fold(0u8, |acc, r| acc | (((l[32 * r + m] as u8 >> 2) & 1) << r));
    }
    pack_2bit(&low, &mut y.qs);
}

/// `dequantize_row_q3_K` of one super-block: the layout of Q2_K's quants, minus 4 where the
/// element's `hmask` bit is clear.
pub(super) fn dequantize(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d_all = from_f16(b.d);
    let halves = b.qs.chunks_exact(32).zip(y.chunks_exact_mut(128));
    for (half, (q, y)) in halves.enumerate() {
        for (s, y) in y.chunks_exact_mut(16).enumerate() {
            let shift = 2 * (s / 2);
            let m = 1u8 << (4 * half + s / 2);
            let off = 16 * (s % 2);
            let dl = d_all * (q3_scale(&b.scales, 8 * half + s) as i32) as f32;
            let (q, hmask) = (&q[off..off + 16], &b.hmask[off..off + 16]);
            for ((y, &q), &h) in y.iter_mut().zip(q).zip(hmask) {
                let v = ((q >> shift) & 3) as i32 - if h & m != 0 { 0 } else { 4 };
                *y = dl * v as f32;
            }
        }
    }
}
