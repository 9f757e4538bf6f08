//! The two 16-bit float weight formats, IEEE binary16 (F16) and bfloat16 (BF16), behind one trait,
//! so the float products (`dot_float`, `gemm_f16`) and the packing (`repack`) are written once for
//! both.
//!
//! Both widen exactly to f32: F16 through the F16C conversion, BF16 by placing its bits in the top
//! half of an f32 (a zero-extension and a shift). That conversion is the only difference the
//! kernels see; [`HalfFloat::BRAIN`] is a constant, so each kernel is compiled once per format
//! with the other branch removed.

use bytemuck::Pod;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// A 16-bit float weight format.
pub trait HalfFloat: Pod + Send + Sync + 'static {
    /// Whether the bits are bfloat16's (an f32's top half) rather than IEEE binary16's.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86 widenings
    const BRAIN: bool;
    /// The value as f32 (exact).
    fn widen(self) -> f32;
    /// `x` rounded to nearest (ties to even), as ggml's `GGML_FP32_TO_FP16` / `GGML_FP32_TO_BF16`.
    fn round(x: f32) -> Self;
    /// `src` widened into `dst` (same length), by `half`'s vectorised slice conversion.
    fn widen_slice(src: &[Self], dst: &mut [f32]);
    /// `src` rounded into `dst` (same length), as [`HalfFloat::round`], vectorised.
    fn round_slice(src: &[f32], dst: &mut [Self]);
}

impl HalfFloat for f16 {
    const BRAIN: bool = false;
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn round(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn widen_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn round_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

impl HalfFloat for bf16 {
    const BRAIN: bool = true;
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn round(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn widen_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn round_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// Eight values at `p` widened to f32.
///
/// # Safety
/// `p` must point at 8 readable values (16 bytes); the CPU must support AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn widen8<H: HalfFloat>(p: *const H) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let bits = unsafe { _mm_loadu_si128(p.cast()) };
    if H::BRAIN {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits)))
    } else {
        _mm256_cvtph_ps(bits)
    }
}

/// Sixteen values at `p` widened to f32.
///
/// # Safety
/// `p` must point at 16 readable values (32 bytes); the CPU must support AVX-512 F and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
pub unsafe fn widen16<H: HalfFloat>(p: *const H) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 32 readable bytes; the load is unaligned.
    let bits = unsafe { _mm256_loadu_si256(p.cast()) };
    if H::BRAIN {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
    } else {
        _mm512_cvtph_ps(bits)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn check<H: HalfFloat>(values: &[H]) {
        if !super::super::cpu::has_avx512f() {
            eprintln!("skipped: this CPU has no AVX-512 F");
            return;
        }
        for chunk in values.chunks_exact(16) {
            let mut wide = [0f32; 16];
            let mut narrow = [0f32; 16];
            // SAFETY: the CPU has AVX-512 F, AVX2 and F16C (checked above); `chunk` holds 16
            // values and the stores write 16 and 8 f32 into 16-value arrays.
            unsafe {
                std::arch::x86_64::_mm512_storeu_ps(wide.as_mut_ptr(), widen16(chunk.as_ptr()));
                std::arch::x86_64::_mm256_storeu_ps(narrow.as_mut_ptr(), widen8(chunk.as_ptr()));
            }
            // NaNs may differ in their quiet bit; every other value bit for bit.
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            for (i, v) in chunk.iter().enumerate() {
                assert!(same(wide[i], v.widen()), "{:#x}", wide[i].to_bits());
                assert!(i >= 8 || same(narrow[i], v.widen()));
            }
        }
    }

    /// The vector widenings equal the scalar ones on every bit pattern (infinities and subnormals
    /// included; NaNs stay NaNs).
    #[test]
    fn vector_widening_equals_the_scalar_one_on_every_value() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        check::<f16>(&bits.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>());
        check::<bf16>(&bits.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>());
    }
}
