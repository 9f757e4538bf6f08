//! What the CPU offers the hand-written kernels, detected once at run time.
//!
//! The per-row SIMD paths need AVX2 (integer and float lanes), FMA (llama.cpp's fused
//! accumulation) and F16C (f16 scales and values); a CPU without all three runs the scalar
//! references instead. The tiled products (`tile`, `tile_k`) also need AVX-512 F/BW/VL and VNNI
//! (`vpdpbusd`, `vpdpwssd` on 256-bit lanes, `vpmovm2b`); without them the per-row paths run.

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

/// Whether AVX-512 F is available besides AVX2, FMA and F16C (for loops the compiler vectorizes).
#[cfg(target_arch = "x86_64")]
pub fn has_avx512f() -> bool {
    use std::sync::OnceLock;
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| has_avx2_fma_f16c() && is_x86_feature_detected!("avx512f"))
}

/// Whether the tiled products can run: AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI, and the
/// tiles are not switched off by `SHUKU_NO_TILES=1` (to compare against the per-row paths).
#[cfg(target_arch = "x86_64")]
pub fn has_avx512_vnni() -> bool {
    use std::sync::OnceLock;
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        has_avx2_fma_f16c()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && std::env::var_os("SHUKU_NO_TILES").is_none_or(|v| v != "1")
    })
}

/// Whether the tiled products can run (never, off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx512_vnni() -> bool {
    false
}
