//! Float dot products (f32 · f32, and f16 · f16 or bf16 · bf16 through [`HalfFloat`]) and the f16
//! multiply-add and scale of attention's value accumulator, each with an AVX2 path beside its scalar
//! reference.
//!
//! Written here because the plain-Rust versions were the engine's slowest code: without FMA enabled
//! at compile time `f32::mul_add` is a call into a software `fmaf`, and the `half` crate converts one
//! f16 at a time behind a run-time feature check; together they made F16 models 40× slower than
//! llama.cpp. The AVX2 paths use F16C and FMA, chosen at run time.
//!
//! Both paths follow llama.cpp's AVX2 order (`ggml_vec_dot_f16`, `ggml_vec_dot_f32`; BF16 takes the
//! same order, widened by a shift instead of F16C): four 8-lane
//! accumulators over steps of 32 elements, reduced pairwise (0+2, 1+3, then 0+1, then the two 128-bit
//! halves and two horizontal adds), the leftover elements added in f64. The scalar references
//! compute in exactly that order with fused multiply-adds, so the two paths agree bit for bit.

use super::half_float::HalfFloat;
use half::f16;

/// Elements per step: four accumulators of eight lanes.
const STEP: usize = 32;
const LANES: usize = 8;

/// `Σ a·b` of two f16 (or two bf16) vectors, products and sums in f32.
pub fn dot_half<H: HalfFloat>(a: &[H], b: &[H]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
        return unsafe { avx2::dot_half(a, b) };
    }
    dot_half_portable(a, b)
}

/// `Σ a·b` of two f32 vectors.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
        return unsafe { avx2::dot_f32(a, b) };
    }
    dot_f32_portable(a, b)
}

/// `acc[i] = f16(x[i]·s + acc[i])`, fused over whole steps of 32 and unfused for the leftover
/// elements, as ggml's `ggml_vec_mad_f16`.
pub fn mad_f16(acc: &mut [f16], x: &[f16], s: f32) {
    debug_assert_eq!(acc.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
        return unsafe { avx2::mad_f16(acc, x, s) };
    }
    mad_f16_portable(acc, x, s)
}

/// `acc[i] = f16(acc[i]·s)` (ggml's `ggml_vec_scale_f16`).
pub fn scale_f16(acc: &mut [f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time just above).
        return unsafe { avx2::scale_f16(acc, s) };
    }
    scale_f16_portable(acc, s)
}

/// The four accumulators reduced in llama.cpp's AVX2 order.
fn reduce(acc: [[f32; LANES]; 4]) -> f32 {
    let a: [f32; LANES] =
        std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// Scalar reference of [`dot_half`].
#[cfg(test)]
pub fn dot_half_scalar<H: HalfFloat>(a: &[H], b: &[H]) -> f32 {
    dot_scalar(a, b, H::widen)
}

/// Scalar reference of [`dot_f32`].
#[cfg(test)]
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    dot_scalar(a, b, |x| x)
}

/// Values widened at a time by [`dot_half_portable`].
const WIDEN_CHUNK: usize = 8 * STEP;

/// [`dot_half`] where there is no AVX2 path (AArch64 among them): the operands widened by
/// `half`'s vectorised slice conversions a chunk at a time, then [`accumulate`], which the compiler
/// vectorises (fused multiply-add is part of every AArch64 CPU). The AVX2 order, so it equals
/// [`dot_half_scalar`] bit for bit; without it, `half` converted one value at a time behind a
/// run-time feature check.
pub fn dot_half_portable<H: HalfFloat>(a: &[H], b: &[H]) -> f32 {
    let whole = a.len().min(b.len()) / STEP * STEP;
    let mut acc = [[0f32; LANES]; 4];
    let (mut wa, mut wb) = ([0f32; WIDEN_CHUNK], [0f32; WIDEN_CHUNK]);
    for (ac, bc) in a[..whole]
        .chunks(WIDEN_CHUNK)
        .zip(b[..whole].chunks(WIDEN_CHUNK))
    {
        let (wa, wb) = (&mut wa[..ac.len()], &mut wb[..ac.len()]);
        H::widen_slice(ac, wa);
        H::widen_slice(bc, wb);
        accumulate(&mut acc, wa, wb);
    }
    let mut sum = reduce(acc) as f64;
    for (&x, &y) in a[whole..].iter().zip(&b[whole..]) {
        sum += f64::from(x.widen() * y.widen());
    }
    sum as f32
}

/// [`dot_f32`] where there is no AVX2 path: [`accumulate`], vectorised by the compiler; equal to
/// [`dot_f32_scalar`] bit for bit.
pub fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    let whole = a.len().min(b.len()) / STEP * STEP;
    let mut acc = [[0f32; LANES]; 4];
    accumulate(&mut acc, &a[..whole], &b[..whole]);
    let mut sum = reduce(acc) as f64;
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        sum += f64::from(x * y);
    }
    sum as f32
}

/// Whole steps of `a · b` into the four accumulators of the AVX2 order.
fn accumulate(acc: &mut [[f32; LANES]; 4], a: &[f32], b: &[f32]) {
    for (ac, bc) in a.chunks_exact(STEP).zip(b.chunks_exact(STEP)) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            let (x, y) = (&ac[j * LANES..][..LANES], &bc[j * LANES..][..LANES]);
            for l in 0..LANES {
                lanes[l] = x[l].mul_add(y[l], lanes[l]);
            }
        }
    }
}

/// The AVX2 order in scalar code, over values widened to f32 by `f32_of`.
#[cfg(test)]
fn dot_scalar<T: Copy>(a: &[T], b: &[T], f32_of: impl Fn(T) -> f32) -> f32 {
    let whole = a.len() / STEP * STEP;
    let mut acc = [[0f32; LANES]; 4];
    for (ac, bc) in a[..whole]
        .chunks_exact(STEP)
        .zip(b[..whole].chunks_exact(STEP))
    {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                let i = j * LANES + l;
                *lane = f32_of(ac[i]).mul_add(f32_of(bc[i]), *lane);
            }
        }
    }
    let mut sum = reduce(acc) as f64;
    for (&x, &y) in a[whole..].iter().zip(&b[whole..]) {
        sum += f64::from(f32_of(x) * f32_of(y));
    }
    sum as f32
}

/// [`mad_f16`] where there is no AVX2 path: widened and rounded back by `half`'s slice
/// conversions a chunk at a time; equal to [`mad_f16_scalar`].
pub fn mad_f16_portable(acc: &mut [f16], x: &[f16], s: f32) {
    let whole = acc.len().min(x.len()) / STEP * STEP;
    let (mut wa, mut wx) = ([0f32; WIDEN_CHUNK], [0f32; WIDEN_CHUNK]);
    for (ac, xc) in acc[..whole]
        .chunks_mut(WIDEN_CHUNK)
        .zip(x[..whole].chunks(WIDEN_CHUNK))
    {
        let (wa, wx) = (&mut wa[..ac.len()], &mut wx[..ac.len()]);
        f16::widen_slice(ac, wa);
        f16::widen_slice(xc, wx);
        for (a, &v) in wa.iter_mut().zip(wx.iter()) {
            *a = v.mul_add(s, *a);
        }
        f16::round_slice(wa, ac);
    }
    for (a, v) in acc[whole..].iter_mut().zip(&x[whole..]) {
        *a = f16::from_f32(a.to_f32() + v.to_f32() * s);
    }
}

/// [`scale_f16`] where there is no AVX2 path, by chunks as [`mad_f16_portable`].
pub fn scale_f16_portable(acc: &mut [f16], s: f32) {
    let mut wa = [0f32; WIDEN_CHUNK];
    for ac in acc.chunks_mut(WIDEN_CHUNK) {
        let wa = &mut wa[..ac.len()];
        f16::widen_slice(ac, wa);
        for a in wa.iter_mut() {
            *a *= s;
        }
        f16::round_slice(wa, ac);
    }
}

/// Scalar reference of [`mad_f16`].
#[cfg(test)]
pub fn mad_f16_scalar(acc: &mut [f16], x: &[f16], s: f32) {
    let whole = acc.len() / STEP * STEP;
    for (a, v) in acc[..whole].iter_mut().zip(&x[..whole]) {
        *a = f16::from_f32(v.to_f32().mul_add(s, a.to_f32()));
    }
    for (a, v) in acc[whole..].iter_mut().zip(&x[whole..]) {
        *a = f16::from_f32(a.to_f32() + v.to_f32() * s);
    }
}

/// Scalar reference of [`scale_f16`].
#[cfg(test)]
pub fn scale_f16_scalar(acc: &mut [f16], s: f32) {
    for a in acc.iter_mut() {
        *a = f16::from_f32(a.to_f32() * s);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::super::half_float::{widen8, HalfFloat};
    use super::{LANES, STEP};
    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// `p` must point at 8 writable f16 values (16 bytes).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store8(p: *mut f16, v: __m256) {
        // SAFETY: the caller guarantees 16 writable bytes; rounding to nearest even (imm 0) as
        // ggml's `_mm256_cvtps_ph(x, 0)`.
        unsafe { _mm_storeu_si128(p.cast(), _mm256_cvtps_ph::<0>(v)) }
    }

    /// Four accumulators reduced in llama.cpp's AVX2 order (also the F16 tiles' reduction).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) fn reduce(acc: [__m256; 4]) -> f32 {
        let a02 = _mm256_add_ps(acc[0], acc[2]);
        let a13 = _mm256_add_ps(acc[1], acc[3]);
        let a = _mm256_add_ps(a02, a13);
        let t0 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `a` and `b` have equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_half<H: HalfFloat>(a: &[H], b: &[H]) -> f32 {
        let whole = a.len().min(b.len()) / STEP * STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(STEP) {
            for (j, lane) in acc.iter_mut().enumerate() {
                let at = i + j * LANES;
                // SAFETY: `at + 8 <= whole <= len` of both slices.
                let (x, y) = unsafe { (widen8(a.as_ptr().add(at)), widen8(b.as_ptr().add(at))) };
                *lane = _mm256_fmadd_ps(x, y, *lane);
            }
        }
        let mut sum = reduce(acc) as f64;
        for (x, y) in a[whole..].iter().zip(&b[whole..]) {
            sum += f64::from(x.widen() * y.widen());
        }
        sum as f32
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `a` and `b` have equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let whole = a.len().min(b.len()) / STEP * STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(STEP) {
            for (j, lane) in acc.iter_mut().enumerate() {
                let at = i + j * LANES;
                // SAFETY: `at + 8 <= whole <= len` of both slices; unaligned loads.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_ps(a.as_ptr().add(at)),
                        _mm256_loadu_ps(b.as_ptr().add(at)),
                    )
                };
                *lane = _mm256_fmadd_ps(x, y, *lane);
            }
        }
        let mut sum = reduce(acc) as f64;
        for (x, y) in a[whole..].iter().zip(&b[whole..]) {
            sum += f64::from(x * y);
        }
        sum as f32
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `acc` and `x` have equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn mad_f16(acc: &mut [f16], x: &[f16], s: f32) {
        let whole = acc.len().min(x.len()) / STEP * STEP;
        let vs = _mm256_set1_ps(s);
        for i in (0..whole).step_by(LANES) {
            // SAFETY: `i + 8 <= whole <= len` of both slices, and `acc` is borrowed mutably.
            unsafe {
                let y = widen8(acc.as_ptr().add(i));
                let v = widen8(x.as_ptr().add(i));
                store8(acc.as_mut_ptr().add(i), _mm256_fmadd_ps(v, vs, y));
            }
        }
        super::mad_tail(&mut acc[whole..], &x[whole..], s);
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scale_f16(acc: &mut [f16], s: f32) {
        let whole = acc.len() / LANES * LANES;
        let vs = _mm256_set1_ps(s);
        for i in (0..whole).step_by(LANES) {
            // SAFETY: `i + 8 <= whole <= acc.len()`, and `acc` is borrowed mutably.
            unsafe {
                let y = widen8(acc.as_ptr().add(i));
                store8(acc.as_mut_ptr().add(i), _mm256_mul_ps(y, vs));
            }
        }
        for a in &mut acc[whole..] {
            *a = f16::from_f32(a.to_f32() * s);
        }
    }
}

/// The leftover elements of the SIMD multiply-add, unfused as ggml's.
#[cfg(target_arch = "x86_64")]
fn mad_tail(acc: &mut [f16], x: &[f16], s: f32) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a = f16::from_f32(a.to_f32() + v.to_f32() * s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    fn halves(n: usize, seed: u64) -> Vec<f16> {
        values(n, seed).into_iter().map(f16::from_f32).collect()
    }

    fn brains(n: usize, seed: u64) -> Vec<half::bf16> {
        values(n, seed)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect()
    }

    /// Lengths with and without leftovers beyond whole steps.
    const LENS: [usize; 7] = [0, 5, 32, 64, 80, 256, 1000];

    #[test]
    fn dots_equal_their_scalar_references_bit_for_bit() {
        for n in LENS {
            let (a, b) = (halves(n, 1), halves(n, 2));
            assert_eq!(
                dot_half(&a, &b).to_bits(),
                dot_half_scalar(&a, &b).to_bits(),
                "f16, n = {n}"
            );
            let (a, b) = (brains(n, 1), brains(n, 2));
            assert_eq!(
                dot_half(&a, &b).to_bits(),
                dot_half_scalar(&a, &b).to_bits(),
                "bf16, n = {n}"
            );
            let (x, y) = (values(n, 3), values(n, 4));
            assert_eq!(
                dot_f32(&x, &y).to_bits(),
                dot_f32_scalar(&x, &y).to_bits(),
                "f32, n = {n}"
            );
        }
    }

    /// The portable paths (those of CPUs without AVX2, AArch64's) equal the scalar references bit
    /// for bit, across several widening chunks.
    #[test]
    fn portable_dots_equal_their_scalar_references_bit_for_bit() {
        for n in LENS.into_iter().chain([WIDEN_CHUNK + 37, 3 * WIDEN_CHUNK]) {
            let (a, b) = (halves(n, 11), halves(n, 12));
            let want = dot_half_scalar(&a, &b).to_bits();
            assert_eq!(dot_half_portable(&a, &b).to_bits(), want, "f16, n = {n}");
            let (a, b) = (brains(n, 11), brains(n, 12));
            let want = dot_half_scalar(&a, &b).to_bits();
            assert_eq!(dot_half_portable(&a, &b).to_bits(), want, "bf16, n = {n}");
            let (x, y) = (values(n, 13), values(n, 14));
            let want = dot_f32_scalar(&x, &y).to_bits();
            assert_eq!(dot_f32_portable(&x, &y).to_bits(), want, "f32, n = {n}");
        }
    }

    #[test]
    fn dots_match_f64_sums() {
        for n in LENS {
            let (a, b) = (halves(n, 5), halves(n, 6));
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x.to_f32()) * f64::from(y.to_f32()))
                .sum();
            let got = f64::from(dot_half(&a, &b));
            assert!((got - want).abs() < 1e-4 * (n as f64).max(1.0), "n = {n}");
            let (a, b) = (brains(n, 5), brains(n, 6));
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x.to_f32()) * f64::from(y.to_f32()))
                .sum();
            let got = f64::from(dot_half(&a, &b));
            assert!(
                (got - want).abs() < 1e-4 * (n as f64).max(1.0),
                "bf16, n = {n}"
            );
        }
    }

    #[test]
    fn multiply_add_and_scale_equal_their_scalar_references() {
        for n in LENS {
            let x = halves(n, 7);
            let mut simd = halves(n, 8);
            let mut scalar = simd.clone();
            mad_f16(&mut simd, &x, 0.37);
            mad_f16_scalar(&mut scalar, &x, 0.37);
            assert_eq!(simd, scalar, "mad, n = {n}");
            scale_f16(&mut simd, 0.61);
            scale_f16_scalar(&mut scalar, 0.61);
            assert_eq!(simd, scalar, "scale, n = {n}");
            let mut portable = halves(n, 8);
            let mut scalar = portable.clone();
            mad_f16_portable(&mut portable, &x, 0.37);
            mad_f16_scalar(&mut scalar, &x, 0.37);
            assert_eq!(portable, scalar, "portable mad, n = {n}");
            scale_f16_portable(&mut portable, 0.61);
            scale_f16_scalar(&mut scalar, 0.61);
            assert_eq!(portable, scalar, "portable scale, n = {n}");
        }
    }
}
