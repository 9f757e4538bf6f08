//! The part Q4_K and Q5_K share: eight sub-blocks of 32, each with a 6-bit scale and a 6-bit
//! min, under an f16 super-scale for each. The two types differ only in the quants' range
//! (`nmax` 15 or 31), the reference search's trial grid, and how the quants are packed.

use half::f16;

use super::scales::{get_scale_min_k4, pack_scale_min_k4};
use crate::blocks::{K_SCALE_SIZE, QK_K};
use crate::round::{from_f16, nearest_int, to_f16};
use crate::search::{make_qkx2_quants, make_qkx3_quants, make_qp_quants, ScaleSearch};

/// Sub-blocks per super-block.
const SUB: usize = QK_K / 32;

/// A super-block's scales as stored: `x ≈ d·sc_j·q - dmin·m_j`.
pub(super) struct ScaleMin {
    /// Super-scale of the sub-block scales.
    pub d: f16,
    /// Super-scale of the sub-block mins.
    pub dmin: f16,
    /// The packed 6-bit scales and mins ([`get_scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
}

/// The reference scale search of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: each
/// sub-block by `make_qkx2_quants` with weights `√(mean x²) + |x|`, then the scales and mins
/// quantized to 6 bits against their maxima. Leaves the search's quants in `l`.
pub(super) fn search_ref(
    x: &[f32; QK_K],
    nmax: i32,
    search: ScaleSearch,
    l: &mut [u8; QK_K],
) -> ScaleMin {
    let mut scales = [0.0f32; SUB];
    let mut mins = [0.0f32; SUB];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (j, (x, l)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let sum_x2 = x.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (w, &v) in weights.iter_mut().zip(x) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(nmax, x, &weights, l, search);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // `uint8_t ls = nearest_int(...)`: truncated to a byte, then capped at 63.
    let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
    ScaleMin {
        d: to_f16(max_scale / 63.0),
        dmin: to_f16(max_min / 63.0),
        scales: pack_scale_min_k4(&ls, &lm),
    }
}

/// The importance-weighted scale search of `quantize_row_q4_K_impl` /
/// `quantize_row_q5_K_impl`: each sub-block by `make_qkx3_quants` with weights
/// `qw·√(σ² + x²)` (σ² twice the super-block's mean square), then the scales and the mins each
/// by `make_qp_quants` weighted by the sub-blocks' weight sums. Q5_K caps the 6-bit values at
/// 63 (`cap_63`); Q4_K stores them as `make_qp_quants` left them. Leaves the search's quants in
/// `l`.
pub(super) fn search_weighted(
    x: &[f32; QK_K],
    qw: &[f32; QK_K],
    nmax: i32,
    cap_63: bool,
    l: &mut [u8; QK_K],
) -> ScaleMin {
    const SEARCH: ScaleSearch = ScaleSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sum_x2 = x.iter().fold(0.0f32, |s, &v| s + v * v);
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let mut scales = [0.0f32; SUB];
    let mut mins = [0.0f32; SUB];
    let mut sw = [0.0f32; SUB];
    let blocks = x.chunks_exact(32).zip(qw.chunks_exact(32));
    for (j, ((x, qw), l)) in blocks.zip(l.chunks_exact_mut(32)).enumerate() {
        let mut weights = [0.0f32; 32];
        for ((w, &q), &v) in weights.iter_mut().zip(qw).zip(x) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        sw[j] = weights.iter().fold(0.0f32, |s, &w| s + w);
        (scales[j], mins[j]) = make_qkx3_quants(nmax, x, Some(&weights), l, SEARCH);
    }
    let mut ls = [0u8; SUB];
    let mut lm = [0u8; SUB];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if cap_63 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    ScaleMin {
        d: to_f16(d_block),
        dmin: to_f16(m_block),
        scales: pack_scale_min_k4(&ls, &lm),
    }
}

/// The final pass of all four quantizers: every sub-block with a non-zero scale is quantized
/// again against its stored (rounded) scale and min, `l = round((x + dmin·m) / (d·sc))` clamped
/// to `[0, nmax]`; a sub-block whose scale is zero keeps the search's quants.
pub(super) fn requantize(x: &[f32; QK_K], sm: &ScaleMin, nmax: i32, l: &mut [u8; QK_K]) {
    let d_all = from_f16(sm.d);
    let dmin_all = from_f16(sm.dmin);
    for (j, (x, l)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, &sm.scales);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for (l, &v) in l.iter_mut().zip(x) {
            *l = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Sub-block `j`'s scale and min as `dequantize_row_q4_K` / `_q5_K` compute them: `d·sc` and
/// `dmin·m`.
#[inline]
pub(super) fn sub_block_scale_min(
    d: f32,
    dmin: f32,
    scales: &[u8; K_SCALE_SIZE],
    j: usize,
) -> (f32, f32) {
    let (sc, m) = get_scale_min_k4(j, scales);
    (d * sc as f32, dmin * m as f32)
}
