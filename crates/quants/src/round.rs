//! The rounding and half-precision conversions ggml's quantizers use, in one place.

use half::f16;

/// ggml's `nearest_int`: rounds to the nearest integer, ties to even (it adds `1.5 · 2²³` and
/// reads the mantissa). Valid for `|x| ≤ 4194303`, as in ggml; like ggml's release build, an
/// infinite `x` (a block whose range is subnormal, so `1/scale` overflows) gives 0.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    debug_assert!(x.abs() <= 4_194_303.0 || !x.is_finite());
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `GGML_FP32_TO_FP16`: round to nearest even, as F16C's `vcvtps2ph` does.
#[inline]
pub(crate) fn to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// `GGML_FP16_TO_FP32`.
#[inline]
pub(crate) fn from_f16(x: f16) -> f32 {
    x.to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(3.49), 3);
        assert_eq!(nearest_int(-7.51), -8);
    }
}
