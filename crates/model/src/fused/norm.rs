//! RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) · w`, with its backward pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use multiversion::multiversion;

use super::{cpu_tensor, f32s, rows_per_task, with_f32s};

/// RMSNorm of `x` `[.., D]` with gain `weight` `[D]`; differentiable in both.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

/// `1 / sqrt(mean(x²) + eps)` of one row, summed in eight lanes (vectorisable).
#[inline(always)]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let sum = lanes.iter().sum::<f32>() + tail;
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

/// `y = x / rms(x) · w` for one row.
#[multiversion(targets = "simd")]
fn forward_row(y: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let r = inv_rms(x, eps);
    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
        *y = x * r * w;
    }
}

/// One row's input gradient into `dx` and its part of the gain's gradient added into `dw`, for the
/// output gradient `g`.
#[multiversion(targets = "simd")]
fn backward_row((dx, dw): (&mut [f32], &mut [f32]), (x, g, w): (&[f32], &[f32], &[f32]), eps: f32) {
    let r = inv_rms(x, eps);
    let ux: f32 = g.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
    let c = r * r * r * ux / x.len() as f32;
    for (i, dx) in dx.iter_mut().enumerate() {
        *dx = r * g[i] * w[i] - c * x[i];
        dw[i] += g[i] * x[i] * r;
    }
}

fn check(d: usize, w: usize) -> candle_core::Result<()> {
    if d != w {
        candle_core::bail!("rms_norm: gain has {w} values, rows have {d}");
    }
    Ok(())
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "shuku-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, self.name())?;
        let w = f32s(s2, l2, self.name())?;
        let d = l1.dims().last().copied().unwrap_or(1);
        check(d, w.len())?;
        let mut y = vec![0f32; x.len()];
        let task = rows_per_task(d) * d;
        y.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    forward_row(y, x, w, self.eps);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// With `r = 1/rms` and `u = g ⊙ w`: `dx = r·u − x·r³·(u·x)/D` and `dw = Σ_rows g ⊙ x · r`.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(candle_core::D::Minus1)?;
        let (dx, dw) = with_f32s([x, weight, grad], self.name(), |[x, w, g]| {
            let mut dx = vec![0f32; x.len()];
            let task = rows_per_task(d) * d;
            let partial: Vec<Vec<f32>> = dx
                .par_chunks_mut(task)
                .zip(x.par_chunks(task).zip(g.par_chunks(task)))
                .map(|(dx, (x, g))| {
                    let mut dw = vec![0f32; d];
                    for ((dx, x), g) in dx
                        .chunks_exact_mut(d)
                        .zip(x.chunks_exact(d))
                        .zip(g.chunks_exact(d))
                    {
                        backward_row((dx, &mut dw), (x, g, w), self.eps);
                    }
                    dw
                })
                .collect();
            let mut dw = vec![0f32; d];
            for p in &partial {
                dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            Ok((dx, dw))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
        ))
    }
}
