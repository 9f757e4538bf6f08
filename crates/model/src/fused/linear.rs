//! `y = x · Wᵀ` for a PyTorch-layout weight `[out, in]`, with a backward pass that writes the weight's
//! gradient in its own layout.
//!
//! Through candle's ops the product is `x.matmul(&w.t())`: the backward pass then produces the weight's
//! gradient transposed and adds it into a zeroed buffer through a strided walk. Here both gradients are
//! one `gemm` each, read and written contiguously.

use super::{cpu_tensor, f32s, parallelism, product, with_f32s, Operand};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

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

/// `lhs · rhs` (`m × k` times `k × n`, explicit (row, column) strides for both), row-major in a new
/// buffer that `gemm` writes without it being zeroed first: zeroing a fresh buffer ran on the calling
/// thread, a serial part of every multi-threaded step.
pub(super) fn new_product(
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_strides): (&[f32], (usize, usize)),
    (rhs, rhs_strides): (&[f32], (usize, usize)),
) -> Vec<f32> {
    let reach =
        |(rs, cs): (usize, usize), rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    assert!(lhs.len() > reach(lhs_strides, m, k));
    assert!(rhs.len() > reach(rhs_strides, k, n));
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the assertions above keep every element `gemm` reads inside `lhs` and `rhs`. With
    // `accumulate` false, `gemm` writes each of the `m × n` values of `dst` (row stride `n`) once and
    // reads none, so writing through the pointer into the buffer's `m · n` reserved values and then
    // setting its length exposes only written values.
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
        dst.set_len(m * n);
    }
    dst
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
        let y = new_product((n, out, k), (x, (k, 1)), (w, (1, k)));
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
            Ok(product_gradients((x, w, g), (n, k, out)))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
        ))
    }
}

/// The gradients of `x · Wᵀ` (`x` `[n, k]`, `W` `[out, k]`) for the output gradient `g` `[n, out]`:
/// `dx = g · W` `[n, k]` and `dW = gᵀ · x` `[out, k]`, each one `gemm` into a new buffer.
pub(super) fn product_gradients(
    (x, w, g): (&[f32], &[f32], &[f32]),
    (n, k, out): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let dx = new_product((n, k, out), (g, (out, 1)), (w, (k, 1)));
    let dw = new_product((out, k, n), (g, (1, out)), (x, (k, 1)));
    (dx, dw)
}

/// `residual + x · Wᵀ` (`x` `[N, in]`, `weight` `[out, in]`, `residual` `[N, out]`): a layer's output
/// projection and its residual connection as one op, differentiable in all three. The sum is
/// accumulated by `gemm` onto a copy of the residual, where a product node and an addition node each
/// made an `[N, out]` buffer (and candle's backward pass zeroed and added one more for the product's
/// gradient).
pub fn linear_residual(
    x: &Tensor,
    weight: &Tensor,
    residual: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, k) = x.dims2()?;
    let (out, wk) = weight.dims2()?;
    if k != wk || residual.dims() != [n, out] {
        candle_core::bail!(
            "linear_residual: input {:?}, weight {:?} and residual {:?} do not fit",
            x.dims(),
            weight.dims(),
            residual.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &residual.contiguous()?,
        LinearResidual,
    )
}

struct LinearResidual;

impl CustomOp3 for LinearResidual {
    fn name(&self) -> &'static str {
        "shuku-linear-residual"
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
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (n, k) = l1.shape().dims2()?;
        let (out, _) = l2.shape().dims2()?;
        let mut y = f32s(s3, l3, self.name())?.to_vec();
        if n * k * out > 0 {
            // SAFETY: `x` is `n × k` and `w` is `out × k` (read transposed), both contiguous; `y` is
            // this function's own `n × out` buffer, read and written.
            unsafe {
                product(
                    y.as_mut_ptr(),
                    out,
                    (n, out, k),
                    Operand::of(x, 0, (k, 1)),
                    Operand::of(w, 0, (1, k)),
                    1.0,
                    true,
                    parallelism(),
                );
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    /// The product's gradients, and the output gradient itself for the residual.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let (out, _) = weight.dims2()?;
        let (dx, dw) = with_f32s([x, weight, grad], self.name(), |[x, w, g]| {
            Ok(product_gradients((x, w, g), (n, k, out)))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
            Some(grad.clone()),
        ))
    }
}
