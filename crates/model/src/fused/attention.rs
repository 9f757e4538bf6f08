//! Causal grouped-query attention in one op: scores, mask, softmax and the value product per head, with
//! a backward pass that recomputes the probabilities (nothing of size `T × S` is kept between passes).
//!
//! Queries, keys and values stay in the projections' token-major layout (`[B, T, H, D]`), so no
//! transpose, `repeat_kv` copy or dense mask is built: the per-head products are `gemm` calls on strided
//! views, and each block of query rows only multiplies the key columns it can see (a causal pass does
//! about half the work of a dense one).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{cpu_tensor, f32s, product, with_f32s, Operand};
use multiversion::multiversion;
use shuku_math::{exp, lane_max, lane_sum};

/// Query rows per block: the unit of the causal column cut.
const ROW_BLOCK: usize = 64;

/// Attention of `q` `[B, T, H, D]` over `k`, `v` `[B, S, KV, D]` (`S ≥ T`; the last `T` key positions are
/// the queries' own, earlier ones cached), `H` a multiple of `KV`. Query `i` sees keys `j ≤ S − T + i`,
/// and with a `window` only the last `window` of them. Scores are multiplied by `scale` before the
/// softmax. Returns `[B, T, H, D]`; differentiable in `q`, `k` and `v`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (b, t, h, d) = q.dims4()?;
    let (kb, s, kv, kd) = k.dims4()?;
    if kb != b || kd != d || v.dims() != k.dims() || s < t || kv == 0 || h % kv != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit [B,T,H,D] / [B,S,KV,D] with S ≥ T and KV | H",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if window == Some(0) {
        candle_core::bail!("attention: a sliding window of 0 positions sees nothing");
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            scale: scale as f32,
            window,
        },
    )
}

struct Attention {
    scale: f32,
    window: Option<usize>,
}

/// The dimensions of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    s: usize,
    h: usize,
    kv: usize,
    d: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize]) -> Self {
        Self {
            b: q[0],
            t: q[1],
            h: q[2],
            d: q[3],
            s: k[1],
            kv: k[2],
        }
    }

    /// Offset of sequence `b`, position 0, head `h` in a `[B, T, H, D]` buffer.
    fn q_at(&self, b: usize, h: usize) -> usize {
        (b * self.t * self.h + h) * self.d
    }

    /// The same in a `[B, S, KV, D]` buffer.
    fn kv_at(&self, b: usize, g: usize) -> usize {
        (b * self.s * self.kv + g) * self.d
    }
}

/// The key columns one block of query rows multiplies: from its first row's first visible key to its
/// last row's last, `[first, end)`.
struct Visible {
    first: usize,
    end: usize,
}

impl Attention {
    /// The visible keys `[lo, hi)` of query row `i` (absolute position `S − T + i`).
    fn row_range(&self, dims: Dims, i: usize) -> (usize, usize) {
        let pos = dims.s - dims.t + i;
        let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        (lo, pos + 1)
    }

    fn block(&self, dims: Dims, rows: std::ops::Range<usize>) -> Visible {
        Visible {
            first: self.row_range(dims, rows.start).0,
            end: self.row_range(dims, rows.end - 1).1,
        }
    }

    /// The probabilities of query rows `rows` of head `h` of sequence `b` over the block's columns, into
    /// `p` (row stride `cols`): scaled scores, then a softmax over each row's visible keys, zero elsewhere.
    #[allow(clippy::too_many_arguments)]
    fn probabilities(
        &self,
        dims: Dims,
        q: &[f32],
        k: &[f32],
        b: usize,
        h: usize,
        rows: std::ops::Range<usize>,
        vis: &Visible,
        p: &mut [f32],
    ) {
        let cols = vis.end - vis.first;
        let m = rows.len();
        let g = h / (dims.h / dims.kv);
        let q0 = dims.q_at(b, h) + rows.start * dims.h * dims.d;
        let k0 = dims.kv_at(b, g) + vis.first * dims.kv * dims.d;
        assert!(
            p.len() >= m * cols,
            "attention: probability buffer too small"
        );
        // SAFETY: `p` holds `m × cols` values written with row stride `cols`; the query rows
        // `rows` of head `h` (stride H·D) and the key rows `first..end` of group `g` (stride KV·D) lie
        // inside `q` and `k`, whose lengths the op's shape checks fixed.
        unsafe {
            product(
                p.as_mut_ptr(),
                cols,
                (m, cols, dims.d),
                Operand::of(q, q0, (dims.h * dims.d, 1)),
                Operand::of(k, k0, (1, dims.kv * dims.d)),
                self.scale,
                false,
                Parallelism::None,
            );
        }
        for (r, row) in p[..m * cols].chunks_exact_mut(cols).enumerate() {
            let (lo, hi) = self.row_range(dims, rows.start + r);
            let (lo, hi) = (lo - vis.first, hi - vis.first);
            softmax_in_place(&mut row[lo..hi]);
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
        }
    }
}

/// The softmax of `x`, in place.
#[multiversion(targets = "simd")]
fn softmax_in_place(x: &mut [f32]) {
    let max = lane_max(x);
    x.iter_mut().for_each(|x| *x = exp(*x - max));
    let inv = 1.0 / lane_sum(x, x, |x, _| x);
    x.iter_mut().for_each(|x| *x *= inv);
}

/// `ds = p ⊙ (dp − delta)` in place over one row (`ds` holds `dp`): the softmax's backward pass,
/// `delta` the row's `Σ p·dp`.
#[multiversion(targets = "simd")]
fn softmax_gradient(ds: &mut [f32], p: &[f32], delta: f32) {
    for (ds, p) in ds.iter_mut().zip(p) {
        *ds = p * (*ds - delta);
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own head, or its own KV group), and the
// buffer outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` values past the start (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "shuku-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        let dims = Dims::of(l1.dims(), l2.dims());
        let mut out = vec![0f32; q.len()];
        let dst = SharedOut(out.as_mut_ptr());
        (0..dims.b * dims.h).into_par_iter().for_each(|bh| {
            let (b, h) = (bh / dims.h, bh % dims.h);
            let g = h / (dims.h / dims.kv);
            let mut p = Vec::new();
            for start in (0..dims.t).step_by(ROW_BLOCK) {
                let rows = start..(start + ROW_BLOCK).min(dims.t);
                let vis = self.block(dims, rows.clone());
                let cols = vis.end - vis.first;
                p.resize(rows.len() * cols, 0.0);
                self.probabilities(dims, q, k, b, h, rows.clone(), &vis, &mut p);
                let o0 = dims.q_at(b, h) + rows.start * dims.h * dims.d;
                let v0 = dims.kv_at(b, g) + vis.first * dims.kv * dims.d;
                // SAFETY: this task alone writes head `h` of sequence `b` (rows `rows`, stride H·D) of
                // `out`; `p` is `rows × cols`, the value rows `first..end` of group `g` lie inside `v`.
                unsafe {
                    product(
                        dst.at(o0),
                        dims.h * dims.d,
                        (rows.len(), dims.d, cols),
                        Operand::of(&p, 0, (cols, 1)),
                        Operand::of(v, v0, (dims.kv * dims.d, 1)),
                        1.0,
                        false,
                        Parallelism::None,
                    );
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// Per head, with `P` recomputed: `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`,
    /// `dQ = scale·dS·K`, `dK += scale·dSᵀ·Q`, `dV += Pᵀ·dO`. Tasks own a KV group, so the heads that
    /// share its keys add into them in order.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(q.dims(), k.dims());
        let (dq, dk, dv) = with_f32s([q, k, v, res, grad], self.name(), |[q, k, v, o, d_o]| {
            let mut dq = vec![0f32; q.len()];
            let mut dk = vec![0f32; k.len()];
            let mut dv = vec![0f32; v.len()];
            let (dq_p, dk_p, dv_p) = (
                SharedOut(dq.as_mut_ptr()),
                SharedOut(dk.as_mut_ptr()),
                SharedOut(dv.as_mut_ptr()),
            );
            let rep = dims.h / dims.kv;
            let (hd, kd) = (dims.h * dims.d, dims.kv * dims.d);
            (0..dims.b * dims.kv).into_par_iter().for_each(|bg| {
                let (b, g) = (bg / dims.kv, bg % dims.kv);
                let (mut p, mut ds) = (Vec::new(), Vec::new());
                for h in g * rep..(g + 1) * rep {
                    for start in (0..dims.t).step_by(ROW_BLOCK) {
                        let rows = start..(start + ROW_BLOCK).min(dims.t);
                        let m = rows.len();
                        let vis = self.block(dims, rows.clone());
                        let cols = vis.end - vis.first;
                        p.resize(m * cols, 0.0);
                        ds.resize(m * cols, 0.0);
                        self.probabilities(dims, q, k, b, h, rows.clone(), &vis, &mut p);
                        let q0 = dims.q_at(b, h) + start * dims.h * dims.d;
                        let k0 = dims.kv_at(b, g) + vis.first * dims.kv * dims.d;
                        // SAFETY (all four products): `p` and `ds` are `m × cols` (stride `cols`);
                        // rows `rows` of head `h` (stride H·D) lie inside `q`, `d_o` and `dq`, rows
                        // `first..end` of group `g` (stride KV·D) inside `k`, `v`, `dk` and `dv`.
                        // This task alone writes group `g` of `dk`/`dv` and the heads of that group in
                        // `dq`.
                        unsafe {
                            // dP = dO · Vᵀ
                            product(
                                ds.as_mut_ptr(),
                                cols,
                                (m, cols, dims.d),
                                Operand::of(d_o, q0, (hd, 1)),
                                Operand::of(v, k0, (1, kd)),
                                1.0,
                                false,
                                Parallelism::None,
                            );
                        }
                        for (r, (ds, p)) in ds
                            .chunks_exact_mut(cols)
                            .zip(p.chunks_exact(cols))
                            .enumerate()
                        {
                            let row = q0 + r * dims.h * dims.d;
                            let delta: f32 = d_o[row..row + dims.d]
                                .iter()
                                .zip(&o[row..row + dims.d])
                                .map(|(a, b)| a * b)
                                .sum();
                            softmax_gradient(ds, p, delta);
                        }
                        unsafe {
                            // dQ = scale · dS · K
                            product(
                                dq_p.at(q0),
                                hd,
                                (m, dims.d, cols),
                                Operand::of(&ds, 0, (cols, 1)),
                                Operand::of(k, k0, (kd, 1)),
                                self.scale,
                                false,
                                Parallelism::None,
                            );
                            // dK += scale · dSᵀ · Q
                            product(
                                dk_p.at(k0),
                                kd,
                                (cols, dims.d, m),
                                Operand::of(&ds, 0, (1, cols)),
                                Operand::of(q, q0, (hd, 1)),
                                self.scale,
                                true,
                                Parallelism::None,
                            );
                            // dV += Pᵀ · dO
                            product(
                                dv_p.at(k0),
                                kd,
                                (cols, dims.d, m),
                                Operand::of(&p, 0, (1, cols)),
                                Operand::of(d_o, q0, (hd, 1)),
                                1.0,
                                true,
                                Parallelism::None,
                            );
                        }
                    }
                }
            });
            Ok((dq, dk, dv))
        })?;
        Ok((
            Some(cpu_tensor(dq, q.dims())?),
            Some(cpu_tensor(dk, k.dims())?),
            Some(cpu_tensor(dv, v.dims())?),
        ))
    }
}
