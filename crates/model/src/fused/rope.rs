//! HF rotate-half RoPE on `[B, T, H, D]`, `y = x·cos + cat(−x₂, x₁)·sin`, with its backward pass (the
//! transposed rotation).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use multiversion::multiversion;

use super::{cpu_tensor, f32s, rows_per_task, with_f32s};

/// RoPE of `x` `[B, T, H, D]` (token-major, as the projections produce it) with tables `cos`, `sin`
/// `[T, D]` (row `t` for the sequence's position `t`); differentiable in `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (_, t, _, d) = x.dims4()?;
    if cos.dims() != [t, d] || sin.dims() != [t, d] || d % 2 != 0 {
        candle_core::bail!(
            "rope: x {:?} needs [T, D] tables with even D, got {:?} and {:?}",
            x.dims(),
            cos.dims(),
            sin.dims()
        );
    }
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

struct Rope;

/// Rotates every `[D]` row of `x` (`heads` rows per position, `seq` positions per sequence) into `y`;
/// `transposed` applies the inverse rotation's transpose (the backward pass).
pub(super) fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    y: &mut [f32],
    seq: usize,
    heads: usize,
    transposed: bool,
) {
    let d = cos.len() / seq;
    let task = rows_per_task(d) * d;
    y.par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .enumerate()
        .for_each(|(chunk, (y, x))| {
            let first_row = chunk * task / d;
            for (r, (y, x)) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)).enumerate() {
                let pos = ((first_row + r) / heads) % seq;
                let (c, s) = (&cos[pos * d..][..d], &sin[pos * d..][..d]);
                let (s1, s2) = s.split_at(d / 2);
                if transposed {
                    rotate_row(y, x, c, (s2, s1), -1.0);
                } else {
                    rotate_row(y, x, c, (s1, s2), 1.0);
                }
            }
        });
}

/// One row rotated by its position's `cos` and `sin` (rotate-half): `y₁ = x₁·c₁ − x₂·sign·s_a`,
/// `y₂ = x₂·c₂ + x₁·sign·s_b`. The rotation is `(s₁, s₂, +1)`; its transpose, for the gradient, is
/// `(s₂, s₁, −1)` (negations are exact, so both equal the written-out formulas bit for bit).
#[multiversion(targets = "simd")]
fn rotate_row(y: &mut [f32], x: &[f32], c: &[f32], (s_a, s_b): (&[f32], &[f32]), sign: f32) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (y1, y2) = y.split_at_mut(half);
    let (c1, c2) = c.split_at(half);
    let n = half
        .min(y1.len())
        .min(y2.len())
        .min(c2.len())
        .min(s_a.len())
        .min(s_b.len());
    for i in 0..n {
        y1[i] = x1[i] * c1[i] - x2[i] * (sign * s_a[i]);
        y2[i] = x2[i] * c2[i] + x1[i] * (sign * s_b[i]);
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "shuku-rope"
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
        let x = f32s(s1, l1, self.name())?;
        let (cos, sin) = (f32s(s2, l2, self.name())?, f32s(s3, l3, self.name())?);
        let (_, t, h, _) = l1.shape().dims4()?;
        let mut y = vec![0f32; x.len()];
        rotate(x, cos, sin, &mut y, t, h, false);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, t, h, _) = x.dims4()?;
        let dx = with_f32s([grad, cos, sin], self.name(), |[g, cos, sin]| {
            let mut dx = vec![0f32; g.len()];
            rotate(g, cos, sin, &mut dx, t, h, true);
            Ok(dx)
        })?;
        Ok((Some(cpu_tensor(dx, x.dims())?), None, None))
    }
}
