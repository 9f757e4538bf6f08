//! AdamW's update as in-place CPU kernels: the moments and the parameter are rewritten where they lie.
//!
//! Built from tensor ops, one AdamW step allocates and fills about ten parameter-sized tensors (each a
//! fresh, page-faulted buffer) and walks memory as many times. These three passes (`m`, `v`, then
//! `θ`) allocate nothing. They apply to f32 tensors on the CPU; [`crate::optim::AdamW`] keeps the tensor
//! version for everything else and as the reference the tests compare against.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout};
use rayon::prelude::*;

/// Values per rayon task.
const TASK: usize = 32 * 1024;

fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => bail!("{op}: tensor is not contiguous"),
    }
}

fn values_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (l.contiguous_offsets(), s) {
        (Some((a, b)), CpuStorage::F32(v)) => Ok(&mut v[a..b]),
        _ => bail!("{op}: needs a contiguous f32 tensor"),
    }
}

/// `x ← β·x + (1−β)·g` (first moment) or `x ← β·x + (1−β)·g²` (second moment), in place.
pub(crate) struct MovingAverage {
    pub beta: f64,
    pub squared: bool,
}

impl InplaceOp2 for MovingAverage {
    fn name(&self) -> &'static str {
        "shuku-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let g = values(s2, l2, self.name())?;
        let x = values_mut(s1, l1, self.name())?;
        if x.len() != g.len() {
            bail!(
                "{}: {} moments for {} gradients",
                self.name(),
                x.len(),
                g.len()
            );
        }
        let (beta, rest) = (self.beta as f32, (1.0 - self.beta) as f32);
        x.par_chunks_mut(TASK)
            .zip(g.par_chunks(TASK))
            .for_each(|(x, g)| {
                for (x, g) in x.iter_mut().zip(g) {
                    let g = if self.squared { g * g } else { *g };
                    *x = *x * beta + g * rest;
                }
            });
        Ok(())
    }
}

/// `θ ← θ·(1 − lr·λ) − lr · (m/bc₁) / (√(v/bc₂) + ε)`, in place.
pub(crate) struct ParameterStep {
    pub lr: f64,
    /// `lr · weight decay`, 0 for parameters that are not decayed.
    pub decay: f64,
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    pub eps: f64,
}

impl InplaceOp3 for ParameterStep {
    fn name(&self) -> &'static str {
        "shuku-adamw-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let m = values(s2, l2, self.name())?;
        let v = values(s3, l3, self.name())?;
        let theta = values_mut(s1, l1, self.name())?;
        if theta.len() != m.len() || theta.len() != v.len() {
            bail!("{}: parameter and moments differ in size", self.name());
        }
        let keep = (1.0 - self.decay) as f32;
        let (lr, eps) = (self.lr as f32, self.eps as f32);
        // Multiplied by the inverse, as the tensor version's `x / bc` (an affine map) does.
        let (inv_bc1, inv_bc2) = (
            (1.0 / self.bias_correction1) as f32,
            (1.0 / self.bias_correction2) as f32,
        );
        theta
            .par_chunks_mut(TASK)
            .zip(m.par_chunks(TASK).zip(v.par_chunks(TASK)))
            .for_each(|(theta, (m, v))| {
                for ((t, m), v) in theta.iter_mut().zip(m).zip(v) {
                    let update = (m * inv_bc1) / ((v * inv_bc2).sqrt() + eps);
                    *t = *t * keep - update * lr;
                }
            });
        Ok(())
    }
}
