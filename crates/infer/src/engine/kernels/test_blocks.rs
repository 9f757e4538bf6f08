//! Seeded ggml blocks for the kernel tests.

use half::f16;

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Writes the leading f16 fields of each block (`scales.len()` of them), varied by block.
pub fn with_scales(mut b: Vec<u8>, block: usize, scales: &[f32]) -> Vec<u8> {
    for (i, blk) in b.chunks_exact_mut(block).enumerate() {
        let k = 1.0 + (i % 7) as f32 / 7.0;
        for (f, &s) in scales.iter().enumerate() {
            blk[2 * f..2 * f + 2].copy_from_slice(&f16::from_f32(s * k).to_le_bytes());
        }
    }
    b
}

/// Blocks with scale 1 and, where `fields` is 2, offset (or sum) 0: every partial sum of a dot
/// product over them is an exact integer in f32.
pub fn unit(b: &[u8], block: usize, fields: usize) -> Vec<u8> {
    b.chunks_exact(block)
        .flat_map(|blk| {
            let mut blk = blk.to_vec();
            blk[0..2].copy_from_slice(&f16::ONE.to_le_bytes());
            if fields == 2 {
                blk[2..4].copy_from_slice(&f16::ZERO.to_le_bytes());
            }
            blk
        })
        .collect()
}
