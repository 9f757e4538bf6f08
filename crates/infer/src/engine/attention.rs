//! Causal grouped-query attention over an f16 KV cache.
//!
//! The cache is f16 as llama.cpp's default, which halves its memory and makes the keys and values
//! the model attends to the same numbers llama.cpp attends to. Scores and values are combined in
//! the evaluation order of llama.cpp's CPU flash attention for decoding: Q rounded to f16, an
//! online softmax, and a value accumulator kept in f16. llama.cpp switches to an f32 tiled kernel
//! for batches of 64 rows or more; one order for every batch size keeps prefill and decoding
//! consistent (a batched prompt gives the logits of token-by-token decoding), and perplexity stays
//! within llama.cpp's own spread across batch sizes (see the crate's perplexity test).

use half::f16;
use rayon::prelude::*;

use super::dot_float::{dot_f16, mad_f16, scale_f16};

/// One layer's cached keys and values: `n_ctx` rows of `n_head_kv · head_dim` f16 values.
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: Vec<f16>,
    v: Vec<f16>,
    k_width: usize,
    v_width: usize,
}

impl LayerCache {
    /// An empty cache for `n_ctx` positions.
    pub fn new(n_ctx: usize, k_width: usize, v_width: usize) -> LayerCache {
        LayerCache {
            k: vec![f16::ZERO; n_ctx * k_width],
            v: vec![f16::ZERO; n_ctx * v_width],
            k_width,
            v_width,
        }
    }

    /// Stores the keys and values of `n` tokens starting at position `pos0`.
    pub fn store(&mut self, pos0: usize, k: &[f32], v: &[f32]) {
        let ks = &mut self.k[pos0 * self.k_width..pos0 * self.k_width + k.len()];
        for (d, s) in ks.iter_mut().zip(k) {
            *d = f16::from_f32(*s);
        }
        let vs = &mut self.v[pos0 * self.v_width..pos0 * self.v_width + v.len()];
        for (d, s) in vs.iter_mut().zip(v) {
            *d = f16::from_f32(*s);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        2 * (self.k.len() + self.v.len())
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

/// Attention of the query tokens at positions `pos0..` (their keys and values already in `cache`)
/// over every earlier position. `q` is `n × n_head·head_dim`; `out` is `n × n_head·head_dim_v`.
pub fn attend(cache: &LayerCache, q: &[f32], pos0: usize, s: AttnShape, out: &mut [f32]) {
    let group = s.n_head / s.n_head_kv;
    out.par_chunks_mut(s.head_dim_v)
        .enumerate()
        .for_each(|(i, o)| {
            let (t, h) = (i / s.n_head, i % s.n_head);
            let p = pos0 + t;
            let first = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let qh = &q[(t * s.n_head + h) * s.head_dim..][..s.head_dim];
            let kvh = h / group;
            let keys =
                (first..=p).map(|j| &cache.k[j * cache.k_width + kvh * s.head_dim..][..s.head_dim]);
            let vals = (first..=p)
                .map(|j| &cache.v[j * cache.v_width + kvh * s.head_dim_v..][..s.head_dim_v]);
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
        let s = dot_f16(k, &q16) * scale;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Agrees with a direct f32 softmax on a small example, with GQA and a sliding window.
    #[test]
    fn both_paths_match_reference() {
        let (n_head, n_kv, hd, n) = (4, 2, 8, 5);
        let mut cache = LayerCache::new(8, n_kv * hd, n_kv * hd);
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
}
