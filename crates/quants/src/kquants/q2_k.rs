//! Q2_K: 2-bit quants with a 4-bit scale and a 4-bit min per 16, `x = d·sc·q - dmin·m`.

use super::pack_2bit;
use crate::blocks::{BlockQ2K, QK_K};
use crate::round::{from_f16, nearest_int, to_f16};
use crate::search::{make_qkx2_quants, make_qkx3_quants, make_qp_quants, ScaleSearch};

/// Sub-blocks per super-block.
const SUB: usize = QK_K / 16;

/// One super-block of `quantize_row_q2_K_ref`: each sub-block by `make_qkx2_quants` on
/// absolute-error weights `|x|`, then scales and mins to 4 bits against their maxima.
pub(super) fn quantize_ref(x: &[f32; QK_K], y: &mut BlockQ2K) {
    const SEARCH: ScaleSearch = ScaleSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; SUB];
    let mut mins = [0.0f32; SUB];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (j, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let weights: [f32; 16] = std::array::from_fn(|i| x[i].abs());
        let (scale, min) = make_qkx2_quants(3, x, &weights, l, SEARCH);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (q, &s) in y.scales.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s) as u8;
        }
        y.d = to_f16(max_scale / Q4SCALE);
    } else {
        y.scales = [0; SUB];
        y.d = to_f16(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (q, &m) in y.scales.iter_mut().zip(&mins) {
            *q |= (nearest_int(iscale * m) << 4) as u8;
        }
        y.dmin = to_f16(max_min / Q4SCALE);
    } else {
        y.dmin = to_f16(0.0);
    }
    requantize(x, y, &mut l);
    pack_2bit(&l, &mut y.qs);
}

/// One super-block of `quantize_row_q2_K_impl` (`quantize_q2_K` with importance weights): each
/// sub-block by `make_qkx3_quants` with weights `qw·√(σ² + x²)` (σ² the super-block's mean
/// square), then scales and mins each by `make_qp_quants` weighted by the sub-blocks' weight
/// sums.
pub(super) fn quantize_weighted(x: &[f32; QK_K], qw: &[f32; QK_K], y: &mut BlockQ2K) {
    const SEARCH: ScaleSearch = ScaleSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; SUB];
    let mut mins = [0.0f32; SUB];
    let mut sw = [0.0f32; SUB];
    let sumx2 = x.iter().fold(0.0f32, |s, &v| s + v * v);
    let sigma2 = sumx2 / QK_K as f32;
    let blocks = x.chunks_exact(16).zip(qw.chunks_exact(16));
    for (j, ((x, qw), l)) in blocks.zip(l.chunks_exact_mut(16)).enumerate() {
        let weight: [f32; 16] = std::array::from_fn(|i| qw[i] * (sigma2 + x[i] * x[i]).sqrt());
        sw[j] = weight.iter().fold(0.0f32, |s, &w| s + w);
        (scales[j], mins[j]) = make_qkx3_quants(3, x, Some(&weight), l, SEARCH);
    }
    let mut ls = [0u8; SUB];
    let mut lm = [0u8; SUB];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.d = to_f16(dm);
    y.dmin = to_f16(mm);
    for ((q, &s), &m) in y.scales.iter_mut().zip(&ls).zip(&lm) {
        *q = s | (m << 4);
    }
    requantize(x, y, &mut l);
    pack_2bit(&l, &mut y.qs);
}

/// The final pass of both quantizers: sub-blocks with a non-zero stored scale are quantized
/// again against it, `l = round((x + dmin·m) / (d·sc))` clamped to `[0, 3]`.
fn requantize(x: &[f32; QK_K], y: &BlockQ2K, l: &mut [u8; QK_K]) {
    let d_all = from_f16(y.d);
    let dmin_all = from_f16(y.dmin);
    let groups = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for ((x, l), &sc) in groups.zip(&y.scales) {
        let d = d_all * (sc & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = dmin_all * (sc >> 4) as f32;
        for (l, &v) in l.iter_mut().zip(x) {
            *l = nearest_int((v + m) / d).clamp(0, 3) as u8;
        }
    }
}

/// `dequantize_row_q2_K` of one super-block: sub-block `s` of each 128-element half reads the
/// two bits at `2·(s / 2)` of bytes `16·(s % 2)..` of the half's 32.
pub(super) fn dequantize(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let d = from_f16(b.d);
    let min = from_f16(b.dmin);
    let halves = b.qs.chunks_exact(32).zip(y.chunks_exact_mut(128));
    for ((q, y), scales) in halves.zip(b.scales.chunks_exact(8)) {
        for ((s, y), &sc) in y.chunks_exact_mut(16).enumerate().zip(scales) {
            let shift = 2 * (s / 2);
            let q = &q[16 * (s % 2)..][..16];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dl * ((q >> shift) & 3) as f32 - ml;
            }
        }
    }
}
