//! `y = x · Wᵀ` for a PyTorch-layout weight `[out, in]`, with a backward pass that writes the weight's
//! gradient in its own layout.
//!
//! Through candle's ops the product is `x.matmul(&w.t())`: the backward pass then produces the weight's
//! gradient transposed and adds it into a zeroed buffer through a strided walk. Here both gradients are
//! one `gemm` each, read and written contiguously.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::Parallelism;

use super::{cpu_tensor, f32s, product, with_f32s, Operand};

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

/// `dst[m × n] = lhs · rhs` with explicit (row, column) strides for both operands; `dst` row-major.
fn checked_product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_strides): (&[f32], (usize, usize)),
    (rhs, rhs_strides): (&[f32], (usize, usize)),
) {
    let reach =
        |(rs, cs): (usize, usize), rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    assert!(dst.len() >= m * n);
    assert!(lhs.len() > reach(lhs_strides, m, k));
    assert!(rhs.len() > reach(rhs_strides, k, n));
    // SAFETY: the assertions above keep every element `gemm` reads and writes inside the slices;
    // `dst` is borrowed mutably.
    unsafe {
        product(
            dst.as_mut_ptr(),
            n,
            (m, n, k),
            Operand::of(lhs, 0, lhs_strides),
            Operand::of(rhs, 0, rhs_strides),
            1.0,
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
        checked_product(&mut y, (n, out, k), (x, (k, 1)), (w, (1, k)));
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
            checked_product(&mut dx, (n, k, out), (g, (out, 1)), (w, (k, 1)));
            let mut dw = vec![0f32; out * k];
            checked_product(&mut dw, (out, k, n), (g, (1, out)), (x, (k, 1)));
            Ok((dx, dw))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
        ))
    }
}
