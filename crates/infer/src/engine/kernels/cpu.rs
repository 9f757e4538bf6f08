//! What the CPU offers the hand-written kernels, detected once at run time.
//!
//! The kernels' SIMD paths need AVX2 (integer and float lanes), FMA (llama.cpp's fused
//! accumulation) and F16C (f16 scales and values); a CPU without all three runs the scalar
//! references instead.

/// Whether AVX2, FMA and F16C are all available.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma_f16c() -> bool {
    use std::sync::OnceLock;
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Whether AVX2, FMA and F16C are all available (never, off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2_fma_f16c() -> bool {
    false
}
