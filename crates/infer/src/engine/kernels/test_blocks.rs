//! Seeded ggml blocks for the kernel tests: arbitrary codes (the products must be right for any
//! bit pattern, not only the ones a quantizer writes) under chosen scales.

use bytemuck::Pod;
use half::f16;

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
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

/// `n` blocks of deterministic pseudo-random bytes.
pub fn random<T: Pod>(n: usize, seed: u64) -> Vec<T> {
    let mut b = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut b).copy_from_slice(&bytes(n * size_of::<T>(), seed));
    b
}

/// Writes the leading f16 fields of each block (`scales.len()` of them), varied by block.
pub fn with_scales<T: Pod>(mut b: Vec<T>, scales: &[f32]) -> Vec<T> {
    for (i, blk) in b.iter_mut().enumerate() {
        let blk = bytemuck::bytes_of_mut(blk);
        let k = 1.0 + (i % 7) as f32 / 7.0;
        for (f, &s) in scales.iter().enumerate() {
            blk[2 * f..2 * f + 2].copy_from_slice(&f16::from_f32(s * k).to_le_bytes());
        }
    }
    b
}

/// Blocks with scale 1 and, where `fields` is 2, offset (or sum) 0: every partial sum of a dot
/// product over them is an exact integer in f32.
pub fn unit<T: Pod>(b: &[T], fields: usize) -> Vec<T> {
    let mut b = b.to_vec();
    for blk in &mut b {
        let blk = bytemuck::bytes_of_mut(blk);
        blk[0..2].copy_from_slice(&f16::ONE.to_le_bytes());
        if fields == 2 {
            blk[2..4].copy_from_slice(&f16::ZERO.to_le_bytes());
        }
    }
    b
}
