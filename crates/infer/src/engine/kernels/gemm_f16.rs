//! F16 or BF16 weights ([`HalfFloat`]) × a batch of tokens: each group of [`GROUP`] rows is widened to f32 and transposed
//! once per product (one column's 16 values side by side), then passes of `T` tokens keep one
//! 512-bit accumulator per token holding the group's 16 rows.
//!
//! Why: the F16 tiles of `tile_f16` keep llama.cpp's per-row order (two 512-bit accumulators per
//! (row, token) pair and a reduction across lanes at the end), so a tile of 4 rows × 8 tokens needs
//! 64 accumulators, twice the registers there are, and converts every weight chunk again for each
//! token pair. Here a column of the group is one load and each (column, token) one fused
//! multiply-add with the token's value broadcast from memory: the loop runs at the multiply-add
//! rate, and the conversion and transposition cost one pass over the weights per product.
//!
//! Where the engine packs F16 matrices at load ([`super::repack`], CPUs with AVX-512), each group is
//! stored transposed once and for all, in f16 (`repack::f16_group`): the kernels `*_lanes` convert a
//! column with one instruction as they read it, and neither batches nor single tokens pay a
//! transposition; single tokens run four groups at once, four independent chains.
//!
//! BF16 takes every path of F16, its weights widened by a shift instead of F16C's conversion
//! (`half_float`), its activations rounded to bf16 (llama.cpp's vec-dot type for BF16).
//!
//! The arithmetic, which [`reference`] computes and the tests check bit for bit: per (row, token) a
//! sequential chain of fused multiply-adds over the columns, of the weights and the f16-rounded
//! activations, from 0. (llama.cpp's batched F16 products, tinyBLAS, use yet another order.)
//! Unpacked matrices decode with the per-row product.

#[cfg(target_arch = "x86_64")]
use super::half_float::widen16;
use super::half_float::HalfFloat;
#[cfg(test)]
use half::f16;

/// Rows of one group: the 16 lanes of a 512-bit vector.
pub const GROUP: usize = 16;

/// Batches below this many tokens keep the per-row tiles (the transposition would not pay).
pub const MIN_TOKENS: usize = 8;

/// Rows `r0 … r0 + 15` of the row-major `rows × cols` F16 or BF16 matrix `w` (a short last group
/// repeats the last row), widened and transposed into `out`: `out[k · 16 + i] = w[r0 + i][k]`. The
/// scalar reference of [`transpose_group_avx512`].
#[cfg(test)]
pub fn transpose_group<H: HalfFloat>(
    w: &[H],
    rows: usize,
    cols: usize,
    r0: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), cols * GROUP);
    for i in 0..GROUP {
        let r = (r0 + i).min(rows - 1);
        for (k, x) in w[r * cols..(r + 1) * cols].iter().enumerate() {
            out[k * GROUP + i] = x.widen();
        }
    }
}

/// [`transpose_group`] by blocks of 16 × 16 values in registers ([`transpose16`]). The scalar
/// per-value transposition cost as much as a third of the multiply-adds of a 128-token batch.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub fn transpose_group_avx512<H: HalfFloat>(
    w: &[H],
    rows: usize,
    cols: usize,
    r0: usize,
    out: &mut [f32],
) {
    let rows16: [&[H]; GROUP] = std::array::from_fn(|i| {
        let r = (r0 + i).min(rows - 1);
        &w[r * cols..(r + 1) * cols]
    });
    transpose16(cols, out, |i, k| {
        // SAFETY: `transpose16` asks for columns `k..k + 16 <= cols` of a row: 16 values (32
        // bytes).
        unsafe { widen16(rows16[i][k..k + 16].as_ptr()) }
    });
    for (k, col) in out.chunks_exact_mut(GROUP).enumerate().skip(cols / 16 * 16) {
        for (i, x) in col.iter_mut().enumerate() {
            *x = rows16[i][k].widen();
        }
    }
}

/// The 16 rows `load(i, k)` gives 16 values of (row `i`, columns `k..k + 16`) of, for every whole
/// block of 16 columns of `cols`, transposed into `out` (`out[k · 16 + i]`). Each block is
/// transposed in registers by four rounds of two-source permutes: round `s` swaps the
/// off-diagonal `s × s` blocks of each pair of rows `s` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
fn transpose16(
    cols: usize,
    out: &mut [f32],
    load: impl Fn(usize, usize) -> std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    assert!(out.len() >= cols * 16);
    // Round s: lanes k with bit s clear keep a row's own value; with it set, they take the partner
    // row's value s lanes back (first row of the pair), or s lanes on (second row).
    let index = |s: usize, second: bool| {
        let idx: [i32; 16] = std::array::from_fn(|k| {
            (match (second, k & s == 0) {
                (false, true) => k,
                (false, false) => 16 + k - s,
                (true, true) => k + s,
                (true, false) => 16 + k,
            }) as i32
        });
        // SAFETY: `idx` is 16 i32 (64 bytes), one unaligned 512-bit load.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    };
    let rounds = [1, 2, 4, 8].map(|s| (s, index(s, false), index(s, true)));
    for b in 0..cols / 16 {
        let mut v: [__m512; 16] = std::array::from_fn(|i| load(i, 16 * b));
        for &(s, first, second) in &rounds {
            for i in (0..16).filter(|i| i & s == 0) {
                let (a, c) = (v[i], v[i + s]);
                v[i] = _mm512_permutex2var_ps(a, first, c);
                v[i + s] = _mm512_permutex2var_ps(a, second, c);
            }
        }
        for (k, col) in v.iter().enumerate() {
            // SAFETY: `out` holds `cols · 16` values; column `16 · b + k < cols` starts at
            // `(16 · b + k) · 16`: one unaligned 512-bit store of 16 f32.
            unsafe { _mm512_storeu_ps(out[(16 * b + k) * 16..].as_mut_ptr(), *col) };
        }
    }
}

/// The scalar reference the kernel is tested against: row `i` of a transposed group (`w`:
/// `cols × 16`) times one token `a`.
#[cfg(test)]
pub fn reference(w: &[f32], i: usize, a: &[f32]) -> f32 {
    w.chunks_exact(GROUP)
        .zip(a)
        .fold(0f32, |acc, (col, &x)| col[i].mul_add(x, acc))
}

/// Tokens of a packed pass ([`pack_tokens_avx512`], [`tile_packed`]).
pub const TOKENS: usize = 16;

/// The first `n / 16 · 16` tokens of `a` (`n × cols`, token-major) packed by passes of
/// [`TOKENS`], column-major within a pass: `out[(p · cols + k) · 16 + t] = a[16p + t][k]`, so a
/// pass reads one forward stream, 16 tokens' values of a column side by side.
#[cfg(test)]
pub fn pack_tokens(a: &[f32], cols: usize, out: &mut [f32]) {
    for (p, pass) in out.chunks_exact_mut(cols * TOKENS).enumerate() {
        for (t, row) in a[p * TOKENS * cols..][..TOKENS * cols]
            .chunks_exact(cols)
            .enumerate()
        {
            for (k, &x) in row.iter().enumerate() {
                pass[k * TOKENS + t] = x;
            }
        }
    }
}

/// [`pack_tokens`] by blocks of 16 × 16 values in registers ([`transpose16`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub fn pack_tokens_avx512(a: &[f32], cols: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (p, pass) in out.chunks_exact_mut(cols * TOKENS).enumerate() {
        let tokens: [&[f32]; TOKENS] =
            std::array::from_fn(|t| &a[(p * TOKENS + t) * cols..][..cols]);
        // SAFETY: `transpose16` asks for columns `k..k + 16 <= cols` of a token: 16 f32, one
        // unaligned 512-bit load.
        transpose16(cols, pass, |t, k| unsafe {
            _mm512_loadu_ps(tokens[t][k..k + 16].as_ptr())
        });
        for (k, col) in pass
            .chunks_exact_mut(TOKENS)
            .enumerate()
            .skip(cols / 16 * 16)
        {
            for (t, x) in col.iter_mut().enumerate() {
                *x = tokens[t][k];
            }
        }
    }
}

/// The group's 16 rows × one packed pass of 16 tokens (`a`: `cols × 16`) with AVX-512 F: the
/// arithmetic of [`reference`], each token's value broadcast from the pass's stream.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub fn tile_packed(w: &[f32], a: &[f32]) -> [[f32; GROUP]; TOKENS] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    for (col, at) in w.chunks_exact(GROUP).zip(a.chunks_exact(TOKENS)) {
        // SAFETY: `col` is 16 f32, one unaligned 512-bit load.
        let wv = unsafe { _mm512_loadu_ps(col.as_ptr()) };
        for (acc, &x) in acc.iter_mut().zip(at) {
            *acc = _mm512_fmadd_ps(wv, _mm512_set1_ps(x), *acc);
        }
    }
    super::x86::lanes16(&acc)
}

/// The group's 16 rows × `T` tokens with AVX-512 F: the arithmetic of [`reference`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub fn tile<const T: usize>(w: &[f32], a: [&[f32]; T]) -> [[f32; GROUP]; T] {
    use std::arch::x86_64::*;
    let cols = w.len() / GROUP;
    for a in &a {
        assert!(a.len() >= cols);
    }
    let mut acc = [_mm512_setzero_ps(); T];
    for (k, col) in w.chunks_exact(GROUP).enumerate() {
        // SAFETY: `col` is 16 f32, one unaligned 512-bit load.
        let wv = unsafe { _mm512_loadu_ps(col.as_ptr()) };
        for (acc, a) in acc.iter_mut().zip(&a) {
            *acc = _mm512_fmadd_ps(wv, _mm512_set1_ps(a[k]), *acc);
        }
    }
    super::x86::lanes16(&acc)
}

/// Column `k` of a packed group, widened: one unaligned 256-bit load and a conversion.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
fn column<H: HalfFloat>(w: &[H], k: usize) -> std::arch::x86_64::__m512 {
    let col = &w[k * GROUP..(k + 1) * GROUP];
    // SAFETY: `col` is 16 values (32 bytes).
    unsafe { widen16(col.as_ptr()) }
}

/// [`tile_packed`] on a packed group (`w`: `cols × 16` f16 or bf16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub fn tile_packed_lanes<H: HalfFloat>(w: &[H], a: &[f32]) -> [[f32; GROUP]; TOKENS] {
    use std::arch::x86_64::*;
    let cols = w.len() / GROUP;
    assert!(a.len() >= cols * TOKENS);
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    for (k, at) in a.chunks_exact(TOKENS).take(cols).enumerate() {
        let wv = column(w, k);
        for (acc, &x) in acc.iter_mut().zip(at) {
            *acc = _mm512_fmadd_ps(wv, _mm512_set1_ps(x), *acc);
        }
    }
    super::x86::lanes16(&acc)
}

/// `G` packed groups (`cols × 16` f16 or bf16 each) × `T` tokens: `out[g][t]` holds group `g`'s 16
/// rows. The arithmetic of [`reference`]; several groups at once keep as many chains in flight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub fn tile_lanes<H: HalfFloat, const G: usize, const T: usize>(
    w: [&[H]; G],
    a: [&[f32]; T],
) -> [[[f32; GROUP]; T]; G] {
    use std::arch::x86_64::*;
    let cols = w[0].len() / GROUP;
    for w in &w {
        assert!(w.len() >= cols * GROUP);
    }
    for a in &a {
        assert!(a.len() >= cols);
    }
    let mut acc = [[_mm512_setzero_ps(); T]; G];
    for k in 0..cols {
        let wv: [__m512; G] = std::array::from_fn(|g| column(w[g], k));
        for (t, a) in a.iter().enumerate() {
            let x = _mm512_set1_ps(a[k]);
            for g in 0..G {
                acc[g][t] = _mm512_fmadd_ps(wv[g], x, acc[g][t]);
            }
        }
    }
    let mut out = [[[0f32; GROUP]; T]; G];
    for g in 0..G {
        out[g] = super::x86::lanes16(&acc[g]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels equal the scalar reference bit for bit for a packed pass and for 16, 4 and 1
    /// tokens, on a short last group and on values of every magnitude f16 holds.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tile_equals_the_scalar_reference() {
        if !super::super::cpu::has_avx512f() {
            eprintln!("skipped: this CPU has no AVX-512 F (the per-row products run instead)");
            return;
        }
        let val = |i: usize| f16::from_f32(((i * 7919 % 2003) as f32 - 1001.0) * 60.0).to_f32();
        let (rows, cols) = (21, 70);
        let w: Vec<f16> = (0..rows * cols)
            .map(|i| f16::from_f32(val(i) / 1e4))
            .collect();
        let a: Vec<f32> = (0..16 * cols).map(|i| val(i + 5)).collect();
        let tokens: [&[f32]; 16] = std::array::from_fn(|t| &a[t * cols..(t + 1) * cols]);
        for r0 in [0, 16] {
            let mut g = vec![0f32; cols * GROUP];
            transpose_group(&w, rows, cols, r0, &mut g);
            // SAFETY: the CPU has AVX-512 F (checked above).
            let wide = unsafe { tile::<16>(&g, tokens) };
            let mut packed = vec![0f32; 16 * cols];
            pack_tokens(&a, cols, &mut packed);
            // SAFETY: as above.
            let pass = unsafe { tile_packed(&g, &packed) };
            assert_eq!(
                pass.map(|r| r.map(f32::to_bits)),
                wide.map(|r| r.map(f32::to_bits))
            );
            // SAFETY: as above.
            let four = unsafe { tile::<4>(&g, [tokens[3], tokens[4], tokens[5], tokens[6]]) };
            for t in 0..16 {
                // SAFETY: as above.
                let one = unsafe { tile::<1>(&g, [tokens[t]]) }[0];
                for i in 0..GROUP {
                    let want = reference(&g, i, tokens[t]).to_bits();
                    assert_eq!(wide[t][i].to_bits(), want, "rows {r0}+{i}, token {t}");
                    assert_eq!(one[i].to_bits(), want, "rows {r0}+{i}, token {t}");
                    if (3..7).contains(&t) {
                        assert_eq!(four[t - 3][i].to_bits(), want);
                    }
                }
            }
        }
    }

    /// The AVX-512 transposition equals the scalar one, whole blocks and tail columns, full and
    /// short groups, F16 and BF16.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_transpose_equals_the_scalar_one() {
        vector_transpose::<f16>();
        vector_transpose::<half::bf16>();
    }

    #[cfg(target_arch = "x86_64")]
    fn vector_transpose<H: HalfFloat>() {
        if !super::super::cpu::has_avx512f() {
            eprintln!("skipped: this CPU has no AVX-512 F");
            return;
        }
        for (rows, cols) in [(16, 16), (37, 53), (18, 256), (5, 7)] {
            let w: Vec<H> = (0..rows * cols)
                .map(|i| H::round((i as f32 - 500.0) / 7.0))
                .collect();
            for r0 in (0..rows).step_by(GROUP) {
                let mut want = vec![0f32; cols * GROUP];
                transpose_group(&w, rows, cols, r0, &mut want);
                let mut got = vec![f32::NAN; cols * GROUP];
                // SAFETY: the CPU has AVX-512 F (checked above).
                unsafe { transpose_group_avx512(&w, rows, cols, r0, &mut got) };
                assert_eq!(got, want, "{rows} × {cols}, rows from {r0}");
            }
        }
    }

    /// The AVX-512 token packing equals the scalar one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_packing_equals_the_scalar_one() {
        if !super::super::cpu::has_avx512f() {
            eprintln!("skipped: this CPU has no AVX-512 F");
            return;
        }
        for (n, cols) in [(16, 16), (33, 53), (32, 256), (16, 7)] {
            let a: Vec<f32> = (0..n * cols).map(|i| i as f32 * 0.5 - 9.0).collect();
            let len = n / TOKENS * TOKENS * cols;
            let mut want = vec![0f32; len];
            pack_tokens(&a, cols, &mut want);
            let mut got = vec![f32::NAN; len];
            // SAFETY: the CPU has AVX-512 F (checked above).
            unsafe { pack_tokens_avx512(&a, cols, &mut got) };
            assert_eq!(got, want, "{n} tokens × {cols}");
        }
    }

    /// The kernels on packed f16 and bf16 groups equal the scalar reference on the same group
    /// widened, bit for bit: a packed pass, 4 groups × 1 token, 1 group × 4 tokens, short last
    /// group.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn packed_group_kernels_equal_the_scalar_reference() {
        packed_group_kernels::<f16>();
        packed_group_kernels::<half::bf16>();
    }

    #[cfg(target_arch = "x86_64")]
    fn packed_group_kernels<H: HalfFloat>() {
        if !super::super::cpu::has_avx512f() {
            eprintln!("skipped: this CPU has no AVX-512 F");
            return;
        }
        let val = |i: usize| H::round(((i * 7919 % 2003) as f32 - 1001.0) * 60.0).widen();
        let (rows, cols) = (61, 70);
        let w: Vec<H> = (0..rows * cols).map(|i| H::round(val(i) / 1e4)).collect();
        let a: Vec<f32> = (0..16 * cols).map(|i| val(i + 5)).collect();
        let tokens: [&[f32]; 16] = std::array::from_fn(|t| &a[t * cols..(t + 1) * cols]);
        let groups: Vec<Vec<H>> = (0..4)
            .map(|g| {
                let mut out = vec![H::round(0.0); cols * GROUP];
                super::super::repack::half_group(&w, rows, cols, 16 * g, &mut out);
                out
            })
            .collect();
        let mut packed = vec![0f32; 16 * cols];
        pack_tokens(&a, cols, &mut packed);
        // SAFETY (all): the CPU has AVX-512 F (checked above).
        let four =
            unsafe { tile_lanes::<H, 4, 1>(std::array::from_fn(|g| &groups[g][..]), [tokens[9]]) };
        for (g, group) in groups.iter().enumerate() {
            let widened: Vec<f32> = group.iter().map(|x| x.widen()).collect();
            let mut transposed = vec![0f32; cols * GROUP];
            transpose_group(&w, rows, cols, 16 * g, &mut transposed);
            assert_eq!(widened, transposed, "group {g}");
            let pass = unsafe { tile_packed_lanes(group, &packed) };
            let some = unsafe {
                tile_lanes::<H, 1, 4>([group], [tokens[0], tokens[3], tokens[9], tokens[15]])
            };
            for i in 0..GROUP {
                let want = |t: usize| reference(&widened, i, tokens[t]).to_bits();
                for (t, pass) in pass.iter().enumerate() {
                    assert_eq!(pass[i].to_bits(), want(t), "group {g}, row {i}, token {t}");
                }
                for (j, t) in [0, 3, 9, 15].into_iter().enumerate() {
                    assert_eq!(some[0][j][i].to_bits(), want(t));
                }
                assert_eq!(four[g][0][i].to_bits(), want(9));
            }
        }
    }

    /// The transposition reads every row's values, repeating the last row in a short group.
    #[test]
    fn transpose_reads_each_row() {
        let (rows, cols) = (18, 3);
        let w: Vec<f16> = (0..rows * cols).map(|i| f16::from_f32(i as f32)).collect();
        let mut g = vec![0f32; cols * GROUP];
        transpose_group(&w, rows, cols, 16, &mut g);
        for k in 0..cols {
            for i in 0..GROUP {
                let r = (16 + i).min(rows - 1);
                assert_eq!(g[k * GROUP + i], (r * cols + k) as f32);
            }
        }
    }
}
