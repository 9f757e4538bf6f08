//! Q6_K: 6-bit quants with an 8-bit signed scale per 16, `x = d·sc·(q - 32)`.

use bytemuck::Zeroable;

use crate::blocks::{BlockQ6K, QK_K};
use crate::round::{from_f16, nearest_int, to_f16};
use crate::search::{make_qx_quants, GROUP_MAX_EPS};

/// Sub-blocks per super-block.
const SUB: usize = QK_K / 16;

/// One super-block of `quantize_row_q6_K_ref`.
pub(super) fn quantize_ref(x: &[f32; QK_K], y: &mut BlockQ6K) {
    quantize(x, None, y);
}

/// One super-block of `quantize_row_q6_K_impl` (`quantize_q6_K` with importance weights).
pub(super) fn quantize_weighted(x: &[f32; QK_K], qw: &[f32; QK_K], y: &mut BlockQ6K) {
    quantize(x, Some(qw), y);
}

/// The two quantizers, which differ only in `make_qx_quants`'s error weights: `x²` for the
/// reference one, the importance weights as given (no σ² term) for the weighted one. Each
/// sub-block's scale goes to 8 bits against the one of largest magnitude; a super-block whose
/// scales are all below `GROUP_MAX_EPS` is stored as zeros.
#[inline(always)]
fn quantize(x: &[f32; QK_K], qw: Option<&[f32; QK_K]>, y: &mut BlockQ6K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; SUB];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let qw = qw.map(|w| &w[16 * ib..16 * ib + 16]);
        let scale = make_qx_quants(32, x, l, 1, qw);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = BlockQ6K::zeroed();
        y.d = to_f16(0.0);
        return;
    }
    let iscale = -128.0 / max_scale;
    y.d = to_f16(1.0 / iscale);
    for (q, &s) in y.scales.iter_mut().zip(&scales) {
        *q = nearest_int(iscale * s).min(127) as i8;
    }
    let d_all = from_f16(y.d);
    let groups = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for ((x, l), &sc) in groups.zip(&y.scales) {
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for (l, &v) in l.iter_mut().zip(x) {
            *l = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
        }
    }
    pack(&l.map(|v| v as u8), y);
}

/// Q6_K's layout: in each 128-element half (rows of 32 elements `r = 0..4`), byte `i` of
/// `ql`'s first 32 holds the low nibbles of rows 0 and 2 at column `i`, byte `32 + i` those of
/// rows 1 and 3, and byte `i` of `qh`'s 32 the top two bits of all four rows, row 0 lowest.
fn pack(l: &[u8; QK_K], y: &mut BlockQ6K) {
    let halves = l.chunks_exact(128).zip(y.ql.chunks_exact_mut(64));
    for ((l, ql), qh) in halves.zip(y.qh.chunks_exact_mut(32)) {
        let (ql_a, ql_b) = ql.split_at_mut(32);
        for i in 0..32 {
            let (l1, l2, l3, l4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
            ql_a[i] = (l1 & 0xF) | ((l3 & 0xF) << 4);
            ql_b[i] = (l2 & 0xF) | ((l4 & 0xF) << 4);
            qh[i] = (l1 >> 4) | ((l2 >> 4) << 2) | ((l3 >> 4) << 4) | ((l4 >> 4) << 6);
        }
    }
}

/// `dequantize_row_q6_K` of one super-block.
pub(super) fn dequantize(b: &BlockQ6K, y: &mut [f32; QK_K]) {
    let d = from_f16(b.d);
    let halves = b.ql.chunks_exact(64).zip(b.qh.chunks_exact(32));
    let halves = halves.zip(b.scales.chunks_exact(8));
    for (((ql, qh), sc), y) in halves.zip(y.chunks_exact_mut(128)) {
        for i in 0..32 {
            let is = i / 16;
            let q1 = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i8 - 32;
            y[i] = d * sc[is] as f32 * q1 as f32;
            y[i + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[i + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[i + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}
