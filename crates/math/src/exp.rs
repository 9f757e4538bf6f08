//! `exp` for f32 in a form the compiler vectorises: Cody–Waite reduction by `ln 2` and a degree-6
//! polynomial, within 3e-7 (two to three ulp) of the correctly rounded value over the normal range.
//!
//! libm's `expf` is a call per value (no SIMD), and the softmaxes of the losses and of attention take
//! one exponential per logit and per score: with it, `exp` alone was the largest cost after the
//! matrix products. Written here because the few lines it needs beat a dependency, and the
//! kernels need the same definition in every loop.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting `1.5 · 2²³` rounds an f32 of magnitude below 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x`. Inputs below −87.3 give the smallest normal results (about 1e-38, not 0), above 88.3 about
/// 2e38 (not infinity); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `n` as an integer, read from `shifted`'s low bits (its ulp is 1) rather than by `n as i32`,
    // whose saturating conversion the compiler does not vectorise.
    let k = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    p * scale
}

/// `Σ f(a[i], b[i])` in eight independent lanes, so the loop (and an inlined [`exp`] inside `f`)
/// vectorises; a sequential f32 sum would not.
#[inline(always)]
pub fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += f(x[i], y[i]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| f(*x, *y)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The largest value of `xs` (−∞ for none), in eight lanes like [`lane_sum`].
#[inline(always)]
pub fn lane_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..8 {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sum_adds_every_term() {
        let a: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(
            lane_sum(&a, &a, |x, y| x * y),
            (0..21).map(|i| (i * i) as f32).sum::<f32>()
        );
        assert_eq!(lane_max(&a[..19]), 18.0);
        assert_eq!(lane_max(&[]), f32::NEG_INFINITY);
    }

    /// Reading `n` from the shifted value's bits gives what `n as i32` gives, on every input of the
    /// clamped range and beyond.
    #[test]
    fn integer_part_from_bits_equals_the_cast() {
        let by_cast = |x: f32| {
            let x = x.clamp(-87.3, 88.3);
            let n = (x * LOG2_E + ROUND) - ROUND;
            let r = x - n * LN2_HI - n * LN2_LO;
            let p = 1.0
                + r * (1.0
                    + r * (0.5
                        + r * (1.0 / 6.0
                            + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
            p * f32::from_bits(((n as i32 + 127) as u32) << 23)
        };
        let mut x = -100.0f32;
        while x < 100.0 {
            assert_eq!(exp(x).to_bits(), by_cast(x).to_bits(), "x = {x}");
            x += 0.000_37;
        }
    }

    #[test]
    fn matches_libm_to_two_or_three_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            let rel = ((f64::from(a) - f64::from(b)) / f64::from(b)).abs();
            worst = worst.max(rel);
            x += 0.001_7;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1.3e-38 && exp(f32::NEG_INFINITY) > 0.0);
        assert!(exp(f32::INFINITY).is_finite());
    }
}
