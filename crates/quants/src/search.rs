//! The scale searches of ggml's quantizers (`make_qx_quants`, `make_qkx3_quants`, …), shared by
//! the legacy types and the k-quants.
//!
//! Each function mirrors the `static` helper of the same name in `ggml-quants.c`, keeping its
//! floating-point operations in the same order and in `f32`: the quantizers that call them must
//! give llama.cpp's bytes, and a reordered sum picks a different scale now and then.

use crate::blocks::QK_K;
use crate::round::nearest_int;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is treated as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// The largest magnitude of `x` and the signed value that has it (the first one, on ties), as
/// ggml's scale-only quantizers find it (`if (amax < fabsf(v))`, so NaNs are skipped).
#[inline]
pub(crate) fn signed_abs_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((0.0f32, 0.0f32), |(amax, max), &v| {
        if amax < v.abs() {
            (v.abs(), v)
        } else {
            (amax, max)
        }
    })
}

/// The error weight `make_qx_quants` gives an element when it has no importance weights.
#[inline]
fn rmse_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// ggml's `make_qx_quants`: symmetric quantization of `x` to `l[i] ∈ [0, 2·nmax)` (stored as
/// `q + nmax`), returning the scale `d` with `x ≈ d · (l - nmax)`.
///
/// `rmse_type` is ggml's: 0 takes the scale from the largest magnitude alone; otherwise the
/// weighted least-squares scale is refined over 18 trial inverse scales `-(nmax + 0.1·is) / max`,
/// with error weights `qw` when given, else `x²` (1), `1` (2), `|x|` (3) or `√|x|` (other). A
/// negative `rmse_type` stops after the first fit and returns the mean of it and `1/iscale`.
/// An all-zero group (largest magnitude below [`GROUP_MAX_EPS`]) gives `l = 0` and scale 0.
pub(crate) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    debug_assert_eq!(l.len(), x.len());
    debug_assert!(qw.is_none_or(|w| w.len() == x.len()));
    let (amax, max) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (nmax + quant(iscale, v)) as i8;
        }
        return 1.0 / iscale;
    }
    let return_early = rmse_type < 0;
    let rmse_type = rmse_type.abs();
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => rmse_weight(rmse_type, x[i]),
    };

    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (i, (li, &v)) in l.iter_mut().zip(x).enumerate() {
        let q = quant(iscale, v);
        *li = (q + nmax) as i8;
        let w = weight(i);
        let q = q as f32;
        sumlx += w * v * q;
        suml2 += w * q * q;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let q = quant(iscale, v) as f32;
            let w = weight(i);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + quant(iscale, v)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The trial grid and error measure of ggml's `make_qkx2_quants` / `make_qkx3_quants` (their
/// trailing `rmin, rdelta, nstep, use_mad` arguments): inverse scales
/// `(rmin + rdelta·is + nmax) / (max - min)` for `is` in `0..=nstep`, errors summed as weighted
/// absolute differences when `use_mad`, weighted squares otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaleSearch {
    /// Offset of the first trial from `nmax`.
    pub rmin: f32,
    /// Step between trials.
    pub rdelta: f32,
    /// Number of steps (`nstep + 1` trials); below 1, no search.
    pub nstep: i32,
    /// Mean absolute instead of mean squared error.
    pub use_mad: bool,
}

/// ggml's `make_qkx3_quants`: asymmetric quantization of `x` to `l[i] ∈ [0, nmax]` with
/// `x ≈ scale · l - the_min`, returning `(scale, the_min)` (`the_min` is ggml's `*the_min`, the
/// negated minimum, never negative unless `x` is).
///
/// Error weights are `weights` when given, else `x²`. The minimum is clamped to at most 0; each
/// trial of `search` fits scale and minimum by weighted least squares and is kept when it lowers
/// the error. `x` has at most [`QK_K`] elements.
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    search: ScaleSearch,
) -> (f32, f32) {
    let n = x.len();
    assert!((1..=QK_K).contains(&n) && l.len() == n);
    debug_assert!(weights.is_none_or(|w| w.len() == n));
    let weight = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l.fill(0);
        return (0.0, -min);
    }
    let error = |diff: f32| {
        if search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for (i, (li, &v)) in l.iter_mut().zip(x).enumerate() {
        let q = nearest_int(iscale * (v - min));
        *li = q.clamp(0, nmax) as u8;
        let diff = scale * *li as f32 + min - v;
        best_mad += weight(i) * error(diff);
    }
    if search.nstep < 1 {
        return (scale, -min);
    }
    let mut laux_buf = [0u8; QK_K];
    let laux = &mut laux_buf[..n];
    for is in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for (i, (la, &v)) in laux.iter_mut().zip(x).enumerate() {
            let q = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *la = q as u8;
            let w = weight(i);
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for (i, (&la, &v)) in laux.iter().zip(x).enumerate() {
                let diff = this_scale * la as f32 + this_min - v;
                mad += weight(i) * error(diff);
            }
            if mad < best_mad {
                l.copy_from_slice(laux);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `MAX(lo, MIN(hi, nearest_int(x)))`, the clamped rounding of ggml's searches, returned as the
/// `f32` the sums then use. The value is the same integer (`nearest_int` stays within ±2²², so
/// it is exact in `f32`); clamping it with float compares compiles to `minss`/`maxss`, where the
/// integer clamp inside a search loop becomes branches (LLVM's x86 cmov conversion) that
/// mispredict whenever a quant lands on a bound.
#[inline(always)]
pub(crate) fn nearest_clamped(x: f32, lo: f32, hi: f32) -> f32 {
    let q = nearest_int(x) as f32;
    let q = if q > hi { hi } else { q };
    if q < lo {
        lo
    } else {
        q
    }
}

/// ggml's `make_qkx2_quants`: the search of [`make_qkx3_quants`] with caller-given error
/// weights and an all-equal test of `max == min` (the reference Q2_K, Q4_K and Q5_K quantizers
/// use it). Returns `(scale, the_min)` with `x ≈ scale · l - the_min`, `l[i] ∈ [0, nmax]`.
/// `x` has at most 32 elements (ggml's callers pass 16 or 32).
#[inline]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: ScaleSearch,
) -> (f32, f32) {
    const MAX_GROUP: usize = 32;
    let n = x.len();
    assert!((1..=MAX_GROUP).contains(&n) && l.len() == n && weights.len() == n);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let error = |diff: f32| {
        if search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let top = nmax as f32;
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &v), &w) in l.iter_mut().zip(x).zip(weights) {
        let q = nearest_clamped(iscale * (v - min), 0.0, top);
        *li = q as u8;
        let diff = scale * q + min - v;
        best_error += w * error(diff);
    }
    if search.nstep < 1 {
        return (scale, -min);
    }
    // The trial quants, as the floats the sums use (ggml's `Laux`).
    let mut laux_buf = [0.0f32; MAX_GROUP];
    let laux = &mut laux_buf[..n];
    for is in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * is as f32 + top) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &v), &w) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_clamped(iscale * (v - min), 0.0, top);
            *la = q;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&q, &v), &w) in laux.iter().zip(x).zip(weights) {
                let diff = this_scale * q + this_min - v;
                cur_error += w * error(diff);
            }
            if cur_error < best_error {
                for (li, &q) in l.iter_mut().zip(laux.iter()) {
                    *li = q as u8;
                }
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_q3_quants`: symmetric quantization of `x` to `l[i] ∈ [0, 2·nmax)` (stored as
/// `q + nmax`) with `x²` error weights, returning the scale. With `do_rmse` the first guess
/// `-nmax / max` is refined by up to five rounds of moving single quants to where the
/// least-squares scale of the others puts them (the reference Q3_K quantizer); without, that
/// guess is returned as is.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    debug_assert_eq!(l.len(), x.len());
    let (amax, max) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let quant = |v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    if !do_rmse {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (quant(v) + nmax) as i8;
        }
        return 1.0 / iscale;
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = quant(v);
        *li = q as i8;
        let w = v * v;
        let q = q as f32;
        sumlx += w * v * q;
        suml2 += w * q * q;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let old = *li as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    let q = new_l as f32;
                    slx += w * v * q;
                    sl2 += w * q * q;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's `make_qp_quants`: quantization of non-negative `x` (a super-block's sub-block scales
/// or mins) to `l[i] ∈ [0, nmax]` with `x ≈ scale · l`, returning the scale. Picks the best of
/// nine inverse scales `(nmax + 0.1·is) / max` by `quant_weights`-weighted squared error, then
/// refines by up to five rounds of single-quant moves.
///
/// As in C, `l` is `uint8_t`: a negative `x[i]` gives a negative quant stored truncated, and the
/// truncated value is what the later sums read.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    assert!(l.len() == n && quant_weights.len() == n);
    // `MAX(max, x[i])`: `max > x[i] ? max : x[i]`.
    let max = x
        .iter()
        .fold(0.0f32, |max, &v| if max > v { max } else { v });
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for ((&li, &v), &w) in l.iter().zip(x).zip(quant_weights) {
        let diff = v - scale * li as f32;
        best_mse += w * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for (&v, &w) in x.iter().zip(quant_weights) {
            let q = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * q as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for ((li, &v), &w) in l.iter_mut().zip(x).zip(quant_weights) {
        let q = nearest_int(iscale * v).min(nmax);
        *li = q as u8;
        let q = q as f32;
        sumlx += w * v * q;
        suml2 += w * q * q;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for ((li, &v), &w) in l.iter_mut().zip(x).zip(quant_weights) {
            let old = *li as f32;
            let mut slx = sumlx - w * v * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != *li as i32 {
                    let q = new_l as f32;
                    slx += w * v * q;
                    sl2 += w * q * q;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qx_all_zero_group_gives_zero_scale_and_zero_quants() {
        let mut l = [5i8; 16];
        assert_eq!(make_qx_quants(8, &[0.0; 16], &mut l, 1, None), 0.0);
        assert_eq!(l, [0; 16]);
    }

    #[test]
    fn qx_reproduces_exact_grid_values() {
        // Values on the grid d·q with d = 0.25: every search recovers them.
        let x: Vec<f32> = (0..16).map(|i| 0.25 * (i as f32 - 8.0)).collect();
        let mut l = [0i8; 16];
        let d = make_qx_quants(8, &x, &mut l, 1, None);
        for (&li, &v) in l.iter().zip(&x) {
            assert!((d * (li as i32 - 8) as f32 - v).abs() < 1e-6);
        }
    }

    #[test]
    fn qkx3_constant_positive_group_has_zero_scale() {
        let search = ScaleSearch {
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        let mut l = [7u8; 32];
        // min clamps to 0, so a positive constant still spans [0, c]: scale c / nmax.
        let (scale, the_min) = make_qkx3_quants(15, &[2.0; 32], None, &mut l, search);
        assert_eq!(the_min, 0.0);
        assert!(l.iter().all(|&q| (scale * q as f32 - 2.0).abs() < 1e-5));
        let (scale, _) = make_qkx3_quants(15, &[0.0; 32], None, &mut l, search);
        assert_eq!(scale, 0.0);
        assert_eq!(l, [0; 32]);
    }
}
