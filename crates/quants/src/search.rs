//! The scale searches of ggml's quantizers (`make_qx_quants`, `make_qkx3_quants`, …), shared by
//! the legacy types and the k-quants.
//!
//! Each function mirrors the `static` helper of the same name in `ggml-quants.c`, keeping its
//! floating-point operations in the same order and in `f32`: the quantizers that call them must
//! give llama.cpp's bytes, and a reordered sum picks a different scale now and then.

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
#[inline]
pub(crate) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    assert_eq!(l.len(), x.len());
    match qw {
        Some(w) => {
            let w = &w[..x.len()];
            qx_search(nmax, x, l, rmse_type, |i, _| w[i])
        }
        None => {
            let kind = rmse_type.abs();
            qx_search(nmax, x, l, rmse_type, move |_, v| rmse_weight(kind, v))
        }
    }
}

/// The body of [`make_qx_quants`], for one source of error weights (`weight(i, x[i])`).
///
/// The trial loops round with [`round_in_range`] and clamp with float compares: every
/// `|iscale·x|` is at most `nmax + 0.9` there (checked, so that a degenerate group still takes
/// `nearest_int`'s path), and the float form keeps the loop free of the branches an integer
/// clamp compiles to.
#[inline(always)]
fn qx_search(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    weight: impl Fn(usize, f32) -> f32,
) -> f32 {
    let (amax, max) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (nmax + quant(iscale, v)) as i8;
        }
        return 1.0 / iscale;
    }
    let return_early = rmse_type < 0;

    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (i, (li, &v)) in l.iter_mut().zip(x).enumerate() {
        let q = quant(iscale, v);
        *li = (q + nmax) as i8;
        let w = weight(i, v);
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
    let (lo, hi) = (-(nmax as f32), (nmax - 1) as f32);
    let trial_iscale = |is: i32| -(nmax as f32 + 0.1 * is as f32) / max;
    // ggml's trials `is = -9..=9` except 0, taken two at a time: their sums do not depend on
    // each other, so they are computed in one pass (twice the arithmetic in flight), and then
    // judged in ggml's order.
    const TRIALS: [i32; 18] = [
        -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ];
    for pair in TRIALS.chunks_exact(2) {
        let iscales = [trial_iscale(pair[0]), trial_iscale(pair[1])];
        let sums = if iscales.iter().all(|s| s.abs() * amax < IN_RANGE) {
            let mut sums = [(0.0f32, 0.0f32); 2];
            let (mut qa, mut qb) = ([0.0f32; 32], [0.0f32; 32]);
            let round = |iscale: f32, v: f32| {
                let r = round_in_range(iscale * v);
                let r = if r > hi { hi } else { r };
                if r < lo {
                    lo
                } else {
                    r
                }
            };
            for (c, xc) in x.chunks(32).enumerate() {
                let (qa, qb) = (&mut qa[..xc.len()], &mut qb[..xc.len()]);
                for ((a, b), &v) in qa.iter_mut().zip(qb.iter_mut()).zip(xc) {
                    *a = round(iscales[0], v);
                    *b = round(iscales[1], v);
                }
                for (j, ((&a, &b), &v)) in qa.iter().zip(qb.iter()).zip(xc).enumerate() {
                    let w = weight(32 * c + j, v);
                    sums[0].0 += w * v * a;
                    sums[0].1 += w * a * a;
                    sums[1].0 += w * v * b;
                    sums[1].1 += w * b * b;
                }
            }
            sums
        } else {
            iscales.map(|iscale| {
                let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
                for (i, &v) in x.iter().enumerate() {
                    let q = quant(iscale, v) as f32;
                    let w = weight(i, v);
                    sumlx += w * v * q;
                    suml2 += w * q * q;
                }
                (sumlx, suml2)
            })
        };
        for (iscale, (sumlx, suml2)) in iscales.into_iter().zip(sums) {
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                for (li, &v) in l.iter_mut().zip(x) {
                    *li = (nmax + quant(iscale, v)) as i8;
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
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
/// the error. `x` has at most 32 elements (ggml's callers pass 16 or 32).
#[inline]
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    search: ScaleSearch,
) -> (f32, f32) {
    let n = x.len();
    assert!((1..=QKX_MAX_GROUP).contains(&n) && l.len() == n);
    let all_equal = |max: f32, min: f32| max <= min;
    match weights {
        Some(w) => qkx_search(nmax, x, &w[..n], l, search, all_equal),
        None => {
            let mut w = [0.0f32; QKX_MAX_GROUP];
            for (w, &v) in w.iter_mut().zip(x) {
                *w = v * v;
            }
            qkx_search(nmax, x, &w[..n], l, search, all_equal)
        }
    }
}

/// Bound below which [`round_in_range`] equals `nearest_int` (exactly `4194303`, with a margin
/// for the rounding of the bound's own computation).
const IN_RANGE: f32 = 4.0e6;

/// `nearest_int(x)` as an `f32`, for `|x| ≤ 4194303`: adding `1.5·2²³` rounds `x` to an integer
/// (ties to even) just as in `nearest_int`, and subtracting it again is exact, so the integer is
/// never moved to an integer register and back. Outside that range it differs from
/// `nearest_int`, whose bit trick then returns ggml's garbage, so callers check the range
/// first. A NaN gives NaN here and 0 there, but the sums it enters are NaN either way (through
/// the `l·x` term), so no trial it touches is kept on either path.
#[inline(always)]
fn round_in_range(x: f32) -> f32 {
    (x + 12_582_912.0) - 12_582_912.0
}

/// The largest group [`qkx_search`] takes: ggml's callers pass 16 or 32 elements.
const QKX_MAX_GROUP: usize = 32;

/// The state of a `make_qkx*_quants` search that its trials read: the group, its weights and
/// their sums, and the range the trials divide by.
struct QkxGroup<'a> {
    x: &'a [f32],
    weights: &'a [f32],
    nmax: i32,
    max: f32,
    /// The smallest element (before ggml clamps the minimum to at most 0).
    x_min: f32,
    sum_w: f32,
    sum_x: f32,
    search: ScaleSearch,
}

/// One trial's outcome: its quants (as the floats the sums use; ggml's `Laux`), and the fitted
/// scale and minimum when the fit exists (`D > 0`).
struct QkxTrial {
    laux: [f32; QKX_MAX_GROUP],
    fit: Option<(f32, f32)>,
}

impl QkxGroup<'_> {
    /// ggml's error term: absolute or squared difference.
    #[inline(always)]
    fn error(&self, diff: f32) -> f32 {
        if self.search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    }

    /// Trial `is` against the current minimum: the quants
    /// `clamp(round(iscale·(x - min)), 0, nmax)` with `iscale = (rmin + rdelta·is + nmax) /
    /// (max - min)`, the weighted sums `Σw·l`, `Σw·l²`, `Σw·l·x`, and the least-squares fit
    /// (minimum clamped to at most 0), all in ggml's order.
    ///
    /// The quants are rounded with [`round_in_range`] and clamped with float compares when every
    /// `iscale·(x - min)` is provably within `nearest_int`'s exact range (always, for data that
    /// is not degenerate), in a pass of their own that the compiler vectorizes; otherwise with
    /// `nearest_int` itself. Both give ggml's integers.
    #[inline(always)]
    fn trial(&self, is: i32, min: f32) -> QkxTrial {
        let (x, n) = (self.x, self.x.len());
        let top = self.nmax as f32;
        let iscale = (self.search.rmin + self.search.rdelta * is as f32 + top) / (self.max - min);
        // The largest |x - min| bounds every |iscale·(x - min)|.
        let reach = (self.max - min).abs().max((self.x_min - min).abs());
        let mut laux = [0.0f32; QKX_MAX_GROUP];
        let quants = &mut laux[..n];
        if iscale.abs() * reach < IN_RANGE {
            for (q, &v) in quants.iter_mut().zip(x) {
                let r = round_in_range(iscale * (v - min));
                let r = if r > top { top } else { r };
                *q = if r < 0.0 { 0.0 } else { r };
            }
        } else {
            for (q, &v) in quants.iter_mut().zip(x) {
                *q = nearest_int(iscale * (v - min)).clamp(0, self.nmax) as f32;
            }
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&q, &v), &w) in quants.iter().zip(x).zip(self.weights) {
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = self.sum_w * sum_l2 - sum_l * sum_l;
        let fit = (det > 0.0).then(|| {
            let this_scale = (self.sum_w * sum_xl - self.sum_x * sum_l) / det;
            let this_min = (sum_l2 * self.sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                (sum_xl / sum_l2, 0.0)
            } else {
                (this_scale, this_min)
            }
        });
        QkxTrial { laux, fit }
    }

    /// The weighted error of a fitted trial.
    #[inline(always)]
    fn trial_error(&self, laux: &[f32; QKX_MAX_GROUP], (scale, min): (f32, f32)) -> f32 {
        let mut err = 0.0f32;
        for ((&q, &v), &w) in laux.iter().zip(self.x).zip(self.weights) {
            err += w * self.error(scale * q + min - v);
        }
        err
    }

    /// The weighted errors of two fitted trials, in one pass (two independent sums in flight).
    #[inline(always)]
    fn trial_errors(
        &self,
        (la, fa): (&[f32; QKX_MAX_GROUP], (f32, f32)),
        (lb, fb): (&[f32; QKX_MAX_GROUP], (f32, f32)),
    ) -> (f32, f32) {
        let (mut ea, mut eb) = (0.0f32, 0.0f32);
        for (((&qa, &qb), &v), &w) in la.iter().zip(lb).zip(self.x).zip(self.weights) {
            ea += w * self.error(fa.0 * qa + fa.1 - v);
            eb += w * self.error(fb.0 * qb + fb.1 - v);
        }
        (ea, eb)
    }
}

/// The search `make_qkx2_quants` and `make_qkx3_quants` share, over materialized weights;
/// `all_equal(max, min)` is the early-out test that tells them apart. Returns `(scale,
/// the_min)`.
///
/// ggml runs its trials one after the other, and a trial that wins moves the minimum the next
/// ones divide by. Here trials go two at a time against the current minimum: both are fitted
/// and their errors summed in shared passes, then judged in ggml's order; when the first wins
/// and moves the minimum, the second is computed again against the new one. Every sum is still
/// the same sequence of float operations, so the result is ggml's.
#[inline(always)]
fn qkx_search(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    search: ScaleSearch,
    all_equal: impl Fn(f32, f32) -> bool,
) -> (f32, f32) {
    let n = x.len();
    assert!((1..=QKX_MAX_GROUP).contains(&n) && l.len() == n && weights.len() == n);
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
    let x_min = min;
    if min > 0.0 {
        min = 0.0;
    }
    if all_equal(max, min) {
        l.fill(0);
        return (0.0, -min);
    }
    let group = QkxGroup {
        x,
        weights,
        nmax,
        max,
        x_min,
        sum_w,
        sum_x,
        search,
    };
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &v), &w) in l.iter_mut().zip(x).zip(weights) {
        *li = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        let diff = scale * *li as f32 + min - v;
        best_error += w * group.error(diff);
    }
    if search.nstep < 1 {
        return (scale, -min);
    }
    // Keeps a trial when its error beats the best so far; true when it moved the minimum.
    let mut judge = |trial: &QkxTrial, err: f32, min: &mut f32| -> bool {
        let Some((this_scale, this_min)) = trial.fit else {
            return false;
        };
        if err < best_error {
            for (li, &q) in l.iter_mut().zip(&trial.laux) {
                *li = q as u8;
            }
            best_error = err;
            scale = this_scale;
            let moved = this_min.to_bits() != min.to_bits();
            *min = this_min;
            return moved;
        }
        false
    };
    let mut is = 0;
    while is <= search.nstep {
        let a = group.trial(is, min);
        if is == search.nstep {
            let ea = a.fit.map_or(0.0, |f| group.trial_error(&a.laux, f));
            judge(&a, ea, &mut min);
            break;
        }
        let mut b = group.trial(is + 1, min);
        let (ea, mut eb) = match (a.fit, b.fit) {
            (Some(fa), Some(fb)) => group.trial_errors((&a.laux, fa), (&b.laux, fb)),
            (Some(fa), None) => (group.trial_error(&a.laux, fa), 0.0),
            (None, Some(fb)) => (0.0, group.trial_error(&b.laux, fb)),
            (None, None) => (0.0, 0.0),
        };
        if judge(&a, ea, &mut min) {
            b = group.trial(is + 1, min);
            eb = b.fit.map_or(0.0, |f| group.trial_error(&b.laux, f));
        }
        judge(&b, eb, &mut min);
        is += 2;
    }
    (scale, -min)
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
    qkx_search(nmax, x, weights, l, search, |max, min| max == min)
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

/// Checks of the k-quant searches against line-for-line ports of ggml's sequential C.
#[cfg(test)]
mod qkx_tests {
    use super::*;

    /// ggml's `make_qkx2_quants` / `make_qkx3_quants` as written in C: one trial after the
    /// other, integer rounding and clamping.
    #[allow(clippy::too_many_arguments)]
    fn qkx_sequential(
        nmax: i32,
        x: &[f32],
        w: &[f32],
        l: &mut [u8],
        s: ScaleSearch,
        all_equal: fn(f32, f32) -> bool,
    ) -> (f32, f32) {
        let n = x.len();
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = w[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            sum_w += w[i];
            sum_x += w[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if all_equal(max, min) {
            l.fill(0);
            return (0.0, -min);
        }
        let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
        let mut iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best = 0.0f32;
        for i in 0..n {
            l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
            best += w[i] * err(scale * l[i] as f32 + min - x[i]);
        }
        let mut laux = vec![0u8; n];
        for is in 0..=s.nstep {
            iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
            let (mut sl, mut sl2, mut sxl) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..n {
                let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                laux[i] = q as u8;
                sl += w[i] * q as f32;
                sl2 += w[i] * q as f32 * q as f32;
                sxl += w[i] * q as f32 * x[i];
            }
            let d = sum_w * sl2 - sl * sl;
            if d > 0.0 {
                let mut this_scale = (sum_w * sxl - sum_x * sl) / d;
                let mut this_min = (sl2 * sum_x - sl * sxl) / d;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sxl / sl2;
                }
                let mut cur = 0.0f32;
                for i in 0..n {
                    cur += w[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
                }
                if cur < best {
                    l.copy_from_slice(&laux);
                    best = cur;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }

    /// A small deterministic generator for test groups.
    fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn round_in_range_is_nearest_int() {
        let mut s = 7u64;
        for i in 0..200_000 {
            let v = match i % 4 {
                0 => lcg(&mut s) * 40.0,
                1 => (lcg(&mut s) * 64.0).round() + 0.5,
                2 => lcg(&mut s) * 4_194_303.0,
                _ => (i as f32 - 100_000.0) * 0.25,
            };
            assert_eq!(round_in_range(v), nearest_int(v) as f32, "{v}");
        }
        assert_eq!(round_in_range(4_194_303.0), 4_194_303.0);
        assert_eq!(round_in_range(-4_194_303.0), -4_194_303.0);
    }

    #[test]
    fn paired_qkx_search_matches_sequential_ggml() {
        let searches = [
            ScaleSearch {
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: true,
            },
            ScaleSearch {
                rmin: -1.0,
                rdelta: 0.1,
                nstep: 20,
                use_mad: false,
            },
            ScaleSearch {
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
                use_mad: false,
            },
            ScaleSearch {
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: false,
            },
        ];
        let mut s = 11u64;
        for case in 0..4000 {
            let n = if case % 2 == 0 { 16 } else { 32 };
            let nmax = [3, 15, 31][case % 3];
            let search = searches[case % searches.len()];
            let mut x: Vec<f32> = (0..n)
                .map(|i| match case % 7 {
                    0 => lcg(&mut s),
                    1 => lcg(&mut s).abs() * 3.0 + 0.5,
                    2 => -lcg(&mut s).abs(),
                    3 => (lcg(&mut s) * 8.0).round() * 0.125,
                    4 => lcg(&mut s) * 1e-38,
                    5 => {
                        if i % 5 == 0 {
                            1e30 * lcg(&mut s)
                        } else {
                            lcg(&mut s)
                        }
                    }
                    _ => lcg(&mut s).powi(3) * 100.0,
                })
                .collect();
            if case % 13 == 0 {
                // A NaN element: no trial may be kept, on either path.
                x[n / 3] = f32::NAN;
            }
            let w: Vec<f32> = (0..n)
                .map(|i| {
                    if case % 5 == 0 && i % 4 == 0 {
                        0.0
                    } else {
                        lcg(&mut s).abs() + 0.01
                    }
                })
                .collect();
            let all_equal: fn(f32, f32) -> bool = if case % 2 == 0 {
                |max, min| max == min
            } else {
                |max, min| max <= min
            };
            let (mut got, mut want) = (vec![0u8; n], vec![0u8; n]);
            let a = qkx_search(nmax, &x, &w, &mut got, search, all_equal);
            let b = qkx_sequential(nmax, &x, &w, &mut want, search, all_equal);
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "case {case}"
            );
            assert_eq!(got, want, "case {case}");
        }
    }
}
