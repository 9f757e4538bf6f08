//! Causal grouped-query attention over an f16 KV cache.
//!
//! The cache is f16 as llama.cpp's default, which halves its memory and makes the keys and values
//! the model attends to the same numbers llama.cpp attends to. Scores and values are combined as
//! llama.cpp's CPU flash attention combines them, which has two evaluation orders:
//! * batches of fewer than [`TILE_Q`] tokens (decoding, short prompts): one query row at a time, Q
//!   rounded to f16, an online softmax key by key, and a value accumulator kept in f16;
//! * batches of [`TILE_Q`] tokens or more (long prompts, perplexity): everything in f32, keys taken
//!   in tiles of [`TILE_KV`], each score a sequential chain of fused multiply-adds, the softmax
//!   maximum updated once per tile, and the values accumulated with fused multiply-adds.
//!
//! The f16 accumulator of the first order rounds at about 1e-3; following llama.cpp's switch keeps
//! perplexity (long batches) and greedy decoding (single rows) each next to llama.cpp's. As in
//! llama.cpp, a prompt of 64 tokens or more is therefore evaluated slightly differently from the
//! same tokens fed one by one.

use super::kernels::pool;
use half::f16;

use super::kernels::dot_float::{dot_half, mad_f16, scale_f16};

/// One layer's cached keys and values: rows of `n_head_kv · head_dim` f16 values, one per
/// position.
///
/// A full-attention layer keeps every position of the context. A sliding-window layer attends to
/// its last `window` positions only, so it keeps `window + ubatch − 1` rows (enough for the first
/// token of a batch of `ubatch` to see its window) in a ring: position `p` lives in row
/// `p % rows`. For gemma-3 at a 32k context that is 15 of 18 layers holding 1 023 rows instead of
/// 32 768.
///
/// Rows are allocated as positions fill them (doubling, never past `rows`), so a session sized for
/// a long context costs only what it holds: a 40-token chat with a 4k-token context does not pay
/// for 4k positions, and a server's idle slots cost nothing until used.
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: Vec<f16>,
    v: Vec<f16>,
    k_width: usize,
    v_width: usize,
    rows: usize,
    window: Option<usize>,
    /// The oldest position whose keys and values are still in the ring.
    oldest: usize,
}

impl LayerCache {
    /// An empty cache for `n_ctx` positions; `sliding` is `(window, ubatch)` for a sliding-window
    /// layer.
    pub fn new(
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
        sliding: Option<(usize, usize)>,
    ) -> LayerCache {
        let rows = match sliding {
            Some((w, ubatch)) => n_ctx.min(w + ubatch.max(1) - 1),
            None => n_ctx,
        };
        LayerCache {
            k: Vec::new(),
            v: Vec::new(),
            k_width,
            v_width,
            rows,
            window: sliding.map(|(w, _)| w),
            oldest: 0,
        }
    }

    /// Makes room for rows `..filled` (at most `rows`), growing by doubling up to `rows`.
    fn grow_to(&mut self, filled: usize) {
        let filled = filled.min(self.rows);
        for (buf, width) in [(&mut self.k, self.k_width), (&mut self.v, self.v_width)] {
            let need = filled * width;
            if need <= buf.len() {
                continue;
            }
            let target = need.max(2 * buf.len()).min(self.rows * width);
            buf.reserve_exact(target - buf.len());
            buf.resize(target, f16::ZERO);
        }
    }

    /// Stores the keys and values of `n` tokens starting at position `pos0`.
    pub fn store(&mut self, pos0: usize, k: &[f32], v: &[f32]) {
        let n = k.len() / self.k_width.max(1);
        self.grow_to(pos0 + n);
        for t in 0..n {
            let row = (pos0 + t) % self.rows;
            let (kd, vd) = (
                &mut self.k[row * self.k_width..(row + 1) * self.k_width],
                &mut self.v[row * self.v_width..(row + 1) * self.v_width],
            );
            for (d, s) in kd.iter_mut().zip(&k[t * self.k_width..]) {
                *d = f16::from_f32(*s);
            }
            for (d, s) in vd.iter_mut().zip(&v[t * self.v_width..]) {
                *d = f16::from_f32(*s);
            }
        }
        self.oldest = self.oldest.max((pos0 + n).saturating_sub(self.rows));
    }

    /// The keys of position `p` (all KV heads).
    fn key(&self, p: usize) -> &[f16] {
        let row = p % self.rows;
        &self.k[row * self.k_width..(row + 1) * self.k_width]
    }

    /// The values of position `p` (all KV heads).
    fn value(&self, p: usize) -> &[f16] {
        let row = p % self.rows;
        &self.v[row * self.v_width..(row + 1) * self.v_width]
    }

    /// Whether a token at position `len` could be evaluated next: the cache still holds every
    /// earlier position it attends to.
    pub fn can_resume_at(&self, len: usize) -> bool {
        let needed_from = self.window.map_or(0, |w| (len + 1).saturating_sub(w));
        len == 0 || needed_from >= self.oldest
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        2 * (self.k.capacity() + self.v.capacity())
    }

    /// Bytes held once every row is filled.
    pub fn max_bytes(&self) -> usize {
        2 * self.rows * (self.k_width + self.v_width)
    }
}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a Q/K head.
    pub head_dim: usize,
    /// Width of a V head.
    pub head_dim_v: usize,
    /// Score scale.
    pub scale: f32,
    /// Sliding window (keys at distance ≥ window are masked).
    pub window: Option<usize>,
}

/// Query rows from which llama.cpp's CPU flash attention takes its tiled f32 path.
pub const TILE_Q: usize = 64;
/// Keys per tile of that path.
pub const TILE_KV: usize = 64;

/// Attention of the query tokens at positions `pos0..` (their keys and values already in `cache`)
/// over every earlier position. `q` is `n × n_head·head_dim`; `out` is `n × n_head·head_dim_v`.
pub fn attend(cache: &LayerCache, q: &[f32], pos0: usize, s: AttnShape, out: &mut [f32]) {
    let n = q.len() / (s.n_head * s.head_dim);
    if n >= TILE_Q {
        return attend_tiled(cache, q, pos0, s, out, n);
    }
    let group = s.n_head / s.n_head_kv;
    pool::for_each_chunk(out, s.head_dim_v, |i, o| {
        let (t, h) = (i / s.n_head, i % s.n_head);
        let p = pos0 + t;
        let first = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
        let qh = &q[(t * s.n_head + h) * s.head_dim..][..s.head_dim];
        let kvh = h / group;
        let keys = (first..=p).map(|j| &cache.key(j)[kvh * s.head_dim..][..s.head_dim]);
        let vals = (first..=p).map(|j| &cache.value(j)[kvh * s.head_dim_v..][..s.head_dim_v]);
        attend_online_f16(qh, keys, vals, s.scale, o);
    });
}

/// llama.cpp's one-row flash attention: Q rounded to f16, online softmax, the value accumulator
/// rescaled and accumulated in f16.
fn attend_online_f16<'a>(
    q: &[f32],
    keys: impl Iterator<Item = &'a [f16]>,
    vals: impl Iterator<Item = &'a [f16]>,
    scale: f32,
    out: &mut [f32],
) {
    let q16: Vec<f16> = q.iter().map(|&x| f16::from_f32(x)).collect();
    let mut acc = vec![f16::ZERO; out.len()];
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0f32;
    for (k, v) in keys.zip(vals) {
        let s = dot_half(k, &q16) * scale;
        let mut ms = 1.0f32;
        let mut vs = 1.0f32;
        if s > m {
            let old = m;
            m = s;
            ms = (old - m).exp();
            scale_f16(&mut acc, ms);
        } else {
            vs = (s - m).exp();
        }
        mad_f16(&mut acc, v, vs);
        sum = sum * ms + vs;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a.to_f32() * inv;
    }
}

/// The tiled f32 path, one query head at a time (all the batch's rows), in parallel over heads.
fn attend_tiled(
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    s: AttnShape,
    out: &mut [f32],
    n: usize,
) {
    let heads: Vec<Vec<f32>> = pool::map(s.n_head, |h| {
        let mut head_out = vec![0f32; n * s.head_dim_v];
        #[cfg(target_arch = "x86_64")]
        {
            if super::kernels::cpu::has_avx512f() {
                // SAFETY: the CPU supports AVX-512 F, AVX2 and FMA (checked just above).
                unsafe { tiled_head_avx512(cache, q, pos0, s, h, n, &mut head_out) };
                return head_out;
            }
            if super::kernels::cpu::has_avx2_fma_f16c() {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                unsafe { tiled_head_fma(cache, q, pos0, s, h, n, &mut head_out) };
                return head_out;
            }
        }
        tiled_head::<false>(cache, q, pos0, s, h, n, &mut head_out);
        head_out
    });
    let dv = s.head_dim_v;
    pool::for_each_chunk(out, s.n_head * dv, |t, out| {
        for (o, head_out) in out.chunks_exact_mut(dv).zip(&heads) {
            o.copy_from_slice(&head_out[t * dv..(t + 1) * dv]);
        }
    });
}

/// [`tiled_head`] compiled with FMA (and AVX2 for the vector loops): the same operations, so the
/// same results, without `mul_add` falling back to a software routine.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiled_head_fma(
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    s: AttnShape,
    h: usize,
    n: usize,
    out: &mut [f32],
) {
    tiled_head::<false>(cache, q, pos0, s, h, n, out)
}

/// [`tiled_head`] compiled for AVX-512 F as well: the vector loops (each lane its own key or
/// value dimension, no reduction across lanes) run 16 wide; the same operations, so the same
/// results.
///
/// # Safety
/// The CPU must support AVX-512 F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tiled_head_avx512(
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    s: AttnShape,
    h: usize,
    n: usize,
    out: &mut [f32],
) {
    tiled_head::<true>(cache, q, pos0, s, h, n, out)
}

/// One query head over the batch's `n` rows, in llama.cpp's tiled order; `out` is `n × head_dim_v`.
/// `AVX512`: the scores are computed with AVX-512 registers (only from [`tiled_head_avx512`]).
#[inline(always)]
fn tiled_head<const AVX512: bool>(
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    s: AttnShape,
    h: usize,
    n: usize,
    out: &mut [f32],
) {
    let (hd, dv) = (s.head_dim, s.head_dim_v);
    let kvh = h / (s.n_head / s.n_head_kv);
    let last = pos0 + n - 1;
    let mut max = vec![f32::NEG_INFINITY; n];
    let mut sum = vec![0f32; n];
    // The tile's keys transposed (`hd × TILE_KV`, keys contiguous) and values (`TILE_KV × dv`).
    let mut keys = vec![0f32; hd * TILE_KV];
    let mut vals = vec![0f32; TILE_KV * dv];
    // Keys before the earliest row's window are masked for every row (and may be gone from a
    // sliding-window ring): tiles before it are skipped.
    let first_needed = s.window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    for start in (first_needed / TILE_KV * TILE_KV..=last).step_by(TILE_KV) {
        let len = TILE_KV.min(last + 1 - start);
        keys.fill(0.0);
        for j in 0..len {
            let k = &cache.key(start + j)[kvh * hd..][..hd];
            for (d, x) in k.iter().enumerate() {
                keys[d * TILE_KV + j] = x.to_f32();
            }
            let v = &cache.value(start + j)[kvh * dv..][..dv];
            for (o, x) in vals[j * dv..(j + 1) * dv].iter_mut().zip(v) {
                *o = x.to_f32();
            }
        }
        // Four query rows at a time: four times the independent chains of fused multiply-adds for
        // the scores and the values, and each key and value vector loaded once for four rows; each
        // row's own operations in the same order as alone.
        let tile = KeyTile {
            keys: &keys,
            vals: &vals,
            start,
            len,
        };
        let mut t = 0;
        while t < n {
            if t + 4 <= n {
                tile_rows::<4, AVX512>(&tile, q, pos0, s, h, t, &mut max, &mut sum, out);
                t += 4;
            } else if t + 2 <= n {
                tile_rows::<2, AVX512>(&tile, q, pos0, s, h, t, &mut max, &mut sum, out);
                t += 2;
            } else {
                tile_rows::<1, AVX512>(&tile, q, pos0, s, h, t, &mut max, &mut sum, out);
                t += 1;
            }
        }
    }
    for (t, acc) in out.chunks_exact_mut(dv).enumerate() {
        let inv = if sum[t] == 0.0 { 0.0 } else { 1.0 / sum[t] };
        acc.iter_mut().for_each(|a| *a *= inv);
    }
}

/// One key tile of [`tiled_head`]: its keys transposed (`head_dim × TILE_KV`), its values
/// (`TILE_KV × head_dim_v`), its first position and its number of keys.
struct KeyTile<'a> {
    keys: &'a [f32],
    vals: &'a [f32],
    start: usize,
    len: usize,
}

/// Query rows `t..t + R` of head `h` over one key tile: scores, the online softmax update of each
/// row's `max` and `sum`, and the values accumulated into the rows of `out` (`n × head_dim_v`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_rows<const R: usize, const AVX512: bool>(
    tile: &KeyTile<'_>,
    q: &[f32],
    pos0: usize,
    s: AttnShape,
    h: usize,
    t: usize,
    max: &mut [f32],
    sum: &mut [f32],
    out: &mut [f32],
) {
    let (hd, dv) = (s.head_dim, s.head_dim_v);
    let (start, len) = (tile.start, tile.len);
    let first = |i: usize| s.window.map_or(0, |w| (pos0 + t + i + 1).saturating_sub(w));
    // A row sees none of the tile's keys when they all lie after it or before its window.
    let live: [bool; R] = std::array::from_fn(|i| start <= pos0 + t + i && start + len > first(i));
    if !live.contains(&true) {
        return;
    }
    let qh: [&[f32]; R] = std::array::from_fn(|i| &q[((t + i) * s.n_head + h) * hd..][..hd]);
    let keys = &tile.keys[..hd * TILE_KV];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `AVX512` is set only by `tiled_head_avx512`, which runs where the CPU has AVX-512 F.
    let mut scores = if AVX512 {
        unsafe { scores_avx512::<R>(keys, qh) }
    } else {
        scores::<R>(keys, qh)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let mut scores = scores::<R>(keys, qh);
    let mut rows = out[t * dv..(t + R) * dv].chunks_exact_mut(dv);
    let mut acc: [&mut [f32]; R] = std::array::from_fn(|_| rows.next().unwrap_or_default());
    for i in 0..R {
        let (p, first) = (pos0 + t + i, first(i));
        let scores = &mut scores[i];
        if !live[i] {
            scores.fill(0.0); // adds nothing below
            continue;
        }
        // The row sees keys `lo..hi` of the tile (up to itself, from its window's first): the
        // others are masked. Both loops run whole vectors.
        let lo = first.saturating_sub(start).min(len);
        let hi = (p + 1 - start).min(len);
        let visible = &mut scores[lo..hi];
        visible.iter_mut().for_each(|sc| *sc *= s.scale);
        let tile_max = shuku_math::lane_max(visible);
        let row = t + i;
        let new_max = max[row].max(tile_max);
        if new_max > max[row] {
            let ms = (max[row] - new_max).exp();
            acc[i].iter_mut().for_each(|a| *a *= ms);
            sum[row] *= ms;
        }
        max[row] = new_max;
        visible
            .iter_mut()
            .for_each(|sc| *sc = shuku_math::exp(*sc - new_max));
        scores[..lo].fill(0.0);
        scores[hi..].fill(0.0);
        // Probabilities, summed 8 at a time (each group pairwise) into an f64.
        let mut tile_sum = 0f64;
        for group in scores.chunks_exact(8) {
            let a: [f32; 4] = std::array::from_fn(|l| group[l + 4] + group[l]);
            tile_sum += f64::from((a[0] + a[2]) + (a[1] + a[3]));
        }
        sum[row] = (f64::from(sum[row]) + tile_sum) as f32;
    }
    // Runs of output values stay in registers over the tile's keys (the same multiply-adds in the
    // same order per value as key after key over the whole row); runs of 128 keep 8 independent
    // chains of fused multiply-adds in flight per row.
    let mut at = 0;
    for width in [128, 64, 16, 1] {
        while at + width <= dv {
            let probs = &scores;
            match width {
                128 => accumulate::<128, R>(&mut acc, probs, len, tile.vals, dv, at),
                64 => accumulate::<64, R>(&mut acc, probs, len, tile.vals, dv, at),
                16 => accumulate::<16, R>(&mut acc, probs, len, tile.vals, dv, at),
                _ => accumulate::<1, R>(&mut acc, probs, len, tile.vals, dv, at),
            }
            at += width;
        }
    }
}

/// Scores of `R` query rows against a key tile (`keys`: `head_dim × TILE_KV`, keys contiguous): per
/// row and key a sequential chain of fused multiply-adds over the head dimension.
#[inline(always)]
fn scores<const R: usize>(keys: &[f32], qh: [&[f32]; R]) -> [[f32; TILE_KV]; R] {
    let mut scores = [[0f32; TILE_KV]; R];
    for (d, row) in keys.chunks_exact(TILE_KV).enumerate() {
        for (sc, qh) in scores.iter_mut().zip(qh) {
            let qd = qh[d];
            for (sc, &k) in sc.iter_mut().zip(row) {
                *sc = k.mul_add(qd, *sc);
            }
        }
    }
    scores
}

/// [`scores`] with the `R × TILE_KV` accumulators held in AVX-512 registers (the compiler keeps
/// the plain version's array in memory, a store and a load per multiply-add): the same fused
/// multiply-adds in the same order, so the same results.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn scores_avx512<const R: usize>(keys: &[f32], qh: [&[f32]; R]) -> [[f32; TILE_KV]; R] {
    use std::arch::x86_64::*;
    const V: usize = TILE_KV / 16;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for (d, row) in keys.chunks_exact(TILE_KV).enumerate() {
        // SAFETY: `row` is TILE_KV f32, read as V unaligned 512-bit loads.
        let k: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(row[16 * v..].as_ptr()) });
        for (acc, qh) in acc.iter_mut().zip(qh) {
            let qd = _mm512_set1_ps(qh[d]);
            for (a, &k) in acc.iter_mut().zip(&k) {
                *a = _mm512_fmadd_ps(k, qd, *a);
            }
        }
    }
    let mut out = [[0f32; TILE_KV]; R];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `o[16v..16v + 16]` is in bounds (TILE_KV = 16 · V), one unaligned store.
            unsafe { _mm512_storeu_ps(o[16 * v..].as_mut_ptr(), *a) };
        }
    }
    out
}

/// `acc[i][at..at + N] += Σ_j p_ij · V_j[at..at + N]` over the tile's first `len` keys `j`
/// (skipping keys masked for every row, whose probabilities are 0), with the `R × N` values held
/// in fixed-size arrays the compiler keeps in vector registers.
#[inline(always)]
fn accumulate<const N: usize, const R: usize>(
    acc: &mut [&mut [f32]; R],
    probs: &[[f32; TILE_KV]; R],
    len: usize,
    vals: &[f32],
    dv: usize,
    at: usize,
) {
    let mut reg: [[f32; N]; R] = std::array::from_fn(|i| std::array::from_fn(|k| acc[i][at + k]));
    for j in 0..len {
        if probs.iter().all(|p| p[j] == 0.0) {
            continue; // masked for every row: adds nothing
        }
        let v = &vals[j * dv + at..][..N];
        for (reg, p) in reg.iter_mut().zip(probs) {
            let pj = p[j];
            for (a, &x) in reg.iter_mut().zip(v) {
                *a = x.mul_add(pj, *a);
            }
        }
    }
    for (acc, reg) in acc.iter_mut().zip(&reg) {
        acc[at..at + N].copy_from_slice(reg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agrees with a direct f32 softmax on a small example, with GQA and a sliding window.
    #[test]
    fn both_paths_match_reference() {
        let (n_head, n_kv, hd, n) = (4, 2, 8, 5);
        let mut cache = LayerCache::new(8, n_kv * hd, n_kv * hd, None);
        let val = |i: usize| ((i * 37 % 17) as f32 - 8.0) / 8.0;
        let k: Vec<f32> = (0..n * n_kv * hd).map(val).collect();
        let v: Vec<f32> = (0..n * n_kv * hd).map(|i| val(i + 5)).collect();
        let q: Vec<f32> = (0..n * n_head * hd).map(|i| val(i + 11)).collect();
        cache.store(0, &k, &v);
        for window in [None, Some(3)] {
            let s = AttnShape {
                n_head,
                n_head_kv: n_kv,
                head_dim: hd,
                head_dim_v: hd,
                scale: 0.3,
                window,
            };
            let mut out = vec![0f32; n * n_head * hd];
            attend(&cache, &q, 0, s, &mut out);
            for t in 0..n {
                for h in 0..n_head {
                    let kvh = h / 2;
                    let first = window.map_or(0, |w| (t + 1).saturating_sub(w));
                    let qh = &q[(t * n_head + h) * hd..][..hd];
                    let kf =
                        |j: usize, d: usize| f16::from_f32(k[(j * n_kv + kvh) * hd + d]).to_f32();
                    let vf =
                        |j: usize, d: usize| f16::from_f32(v[(j * n_kv + kvh) * hd + d]).to_f32();
                    let sc: Vec<f32> = (first..=t)
                        .map(|j| (0..hd).map(|d| kf(j, d) * qh[d]).sum::<f32>() * 0.3)
                        .collect();
                    let m = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = sc.iter().map(|s| (s - m).exp()).sum();
                    for d in 0..hd {
                        let r: f32 = sc
                            .iter()
                            .zip(first..=t)
                            .map(|(s, j)| (s - m).exp() / z * vf(j, d))
                            .sum();
                        let got = out[(t * n_head + h) * hd + d];
                        assert!((got - r).abs() < 5e-3, "t{t} h{h} d{d}: {got} vs {r}");
                    }
                }
            }
        }
    }

    /// The tiled f32 path (batches of 64 rows or more) against a direct f64 softmax over the
    /// f16-stored keys and values, with GQA, a sliding window and a cached prefix, over an odd
    /// number of rows (pairs and a last single row); and its FMA and AVX-512 builds equal bit for
    /// bit to the plain one.
    #[test]
    fn tiled_path_matches_reference_and_its_plain_build() {
        let (n_head, n_kv, hd, pos0, n) = (4, 2, 16, 57, 71);
        let total = pos0 + n;
        let val = |i: usize| ((i * 37 % 23) as f32 - 11.0) / 9.0;
        let k: Vec<f32> = (0..total * n_kv * hd).map(val).collect();
        let v: Vec<f32> = (0..total * n_kv * hd).map(|i| val(i + 5)).collect();
        let q: Vec<f32> = (0..n * n_head * hd).map(|i| val(i + 11)).collect();
        for window in [None, Some(40)] {
            // With the window, a ring of 40 + 71 − 1 = 110 rows: positions 110..127 overwrite
            // 0..17, which no query row attends to.
            let mut cache = LayerCache::new(total, n_kv * hd, n_kv * hd, window.map(|w| (w, n)));
            cache.store(0, &k[..pos0 * n_kv * hd], &v[..pos0 * n_kv * hd]);
            cache.store(pos0, &k[pos0 * n_kv * hd..], &v[pos0 * n_kv * hd..]);
            let s = AttnShape {
                n_head,
                n_head_kv: n_kv,
                head_dim: hd,
                head_dim_v: hd,
                scale: 0.25,
                window,
            };
            let mut out = vec![0f32; n * n_head * hd];
            attend(&cache, &q, pos0, s, &mut out);
            for t in 0..n {
                let p = pos0 + t;
                let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
                for h in 0..n_head {
                    let kvh = h / 2;
                    let qh = &q[(t * n_head + h) * hd..][..hd];
                    let f16_of = |x: f32| f64::from(f16::from_f32(x).to_f32());
                    let kf = |j: usize, d: usize| f16_of(k[(j * n_kv + kvh) * hd + d]);
                    let vf = |j: usize, d: usize| f16_of(v[(j * n_kv + kvh) * hd + d]);
                    let sc: Vec<f64> = (first..=p)
                        .map(|j| (0..hd).map(|d| kf(j, d) * f64::from(qh[d])).sum::<f64>() * 0.25)
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                    for d in 0..hd {
                        let r: f64 = sc
                            .iter()
                            .zip(first..=p)
                            .map(|(s, j)| (s - m).exp() / z * vf(j, d))
                            .sum();
                        let got = f64::from(out[(t * n_head + h) * hd + d]);
                        assert!((got - r).abs() < 1e-5, "t{t} h{h} d{d}: {got} vs {r}");
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            for h in 0..n_head {
                let mut plain = vec![0f32; n * hd];
                tiled_head::<false>(&cache, &q, pos0, s, h, n, &mut plain);
                if crate::engine::kernels::cpu::has_avx2_fma_f16c() {
                    let mut fused = vec![0f32; n * hd];
                    // SAFETY: AVX2 and FMA are available (checked just above).
                    unsafe { tiled_head_fma(&cache, &q, pos0, s, h, n, &mut fused) };
                    assert_eq!(plain, fused, "head {h}");
                }
                if crate::engine::kernels::cpu::has_avx512f() {
                    let mut wide = vec![0f32; n * hd];
                    // SAFETY: AVX-512 F, AVX2 and FMA are available (checked just above).
                    unsafe { tiled_head_avx512(&cache, &q, pos0, s, h, n, &mut wide) };
                    assert_eq!(plain, wide, "head {h}");
                }
            }
        }
    }
}
