//! `y = x · Wᵀ` for a PyTorch-layout weight `[out, in]`, with a backward pass that writes the weight's
//! gradient in its own layout.
//!
//! Through candle's ops the product is `x.matmul(&w.t())`: the backward pass then produces the weight's
//! gradient transposed and adds it into a zeroed buffer through a strided walk. Here both gradients are
//! one `gemm` each, read and written contiguously.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};

use super::{cpu_tensor, f32s, with_f32s};

/// `x` `[N, in]` times `weight` `[out, in]` transposed: `[N, out]`; differentiable in both.
pub fn linear(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (_, k) = x.dims2()?;
    let (_, wk) = weight.dims2()?;
    if k != wk {
        candle_core::bail!(
            "linear: input {:?} does not fit weight {:?}",
            x.dims(),
            weight.dims()
        );
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Linear)
}

struct Linear;

/// The pool-wide parallelism `gemm` splits its output over (rayon's pool, sized by the caller).
fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst[m × n] = lhs · rhs` with explicit strides (row, column) for both operands; `dst` is row-major.
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the assertions above keep every element `gemm` reads (`lhs[i·rs + p·cs]`,
    // `rhs[p·rs + j·cs]`) and writes (`dst[i·n + j]`) inside the slices.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "shuku-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (n, k) = l1.shape().dims2()?;
        let (out, _) = l2.shape().dims2()?;
        let mut y = vec![0f32; n * out];
        product(&mut y, (n, out, k), x, (k, 1), w, (1, k));
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    /// `dx = g · W` `[N, in]`, `dW = gᵀ · x` `[out, in]`.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let (out, _) = weight.dims2()?;
        let (dx, dw) = with_f32s([x, weight, grad], self.name(), |[x, w, g]| {
            let mut dx = vec![0f32; n * k];
            product(&mut dx, (n, k, out), g, (out, 1), w, (k, 1));
            let mut dw = vec![0f32; out * k];
            product(&mut dw, (out, k, n), g, (1, out), x, (k, 1));
            Ok((dx, dw))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
        ))
    }
}
