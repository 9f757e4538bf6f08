//! The gated FFN's first half, `act(x · W_gateᵀ) · (x · W_upᵀ)`, as one op.
//!
//! Built from [`super::linear`] twice and [`super::silu_mul`], the two projections are graph nodes of
//! their own, each `[N, F]` (the FFN's width, the widest activations of a layer). candle's backward pass
//! hands every node's gradient over by adding it into a fresh zeroed buffer, so each projection's
//! gradient was zeroed, added and copied once more before reaching its product, and `x` received two
//! `[N, H]` gradients that were added again. As one op, the activation's gradients go straight into
//! the products: `dx = dg · W_gate + du · W_up` accumulated by `gemm` in one buffer, and each weight's
//! gradient written in its own layout. The projections `g` and `u` are kept for the backward pass, as
//! the graph kept them before.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gated::{backward, forward, gelu_tanh, silu, TASK};
use super::linear::new_product;
use super::{cpu_tensor, f32s, parallelism, product, with_f32s, written, Operand};
use crate::Activation;

/// `act(x · w_gateᵀ) · (x · w_upᵀ)` for `x` `[N, H]` and both weights `[F, H]`: `[N, F]`,
/// differentiable in all three.
pub fn gated_projection(
    x: &Tensor,
    w_gate: &Tensor,
    w_up: &Tensor,
    act: Activation,
) -> candle_core::Result<Tensor> {
    let (_, h) = x.dims2()?;
    let (_, gh) = w_gate.dims2()?;
    if w_gate.dims() != w_up.dims() || gh != h {
        candle_core::bail!(
            "gated_projection: input {:?}, gate {:?} and up {:?} do not fit",
            x.dims(),
            w_gate.dims(),
            w_up.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &w_gate.contiguous()?,
        &w_up.contiguous()?,
        GatedProjection {
            act,
            kept: Arc::new(Mutex::new(None)),
        },
    )
}

/// The two projections `(g, u)`, each `[N, F]`, kept by the forward pass.
type Projections = (Arc<Vec<f32>>, Arc<Vec<f32>>);

struct GatedProjection {
    act: Activation,
    kept: Arc<Mutex<Option<Projections>>>,
}

fn lock_error() -> candle_core::Error {
    candle_core::Error::Msg("gated_projection: a thread panicked holding the projections".into())
}

impl CustomOp3 for GatedProjection {
    fn name(&self) -> &'static str {
        "shuku-gated-projection"
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
        let (wg, wu) = (f32s(s2, l2, self.name())?, f32s(s3, l3, self.name())?);
        let (n, h) = l1.shape().dims2()?;
        let (f, _) = l2.shape().dims2()?;
        let g = new_product((n, f, h), (x, (h, 1)), (wg, (1, h)));
        let u = new_product((n, f, h), (x, (h, 1)), (wu, (1, h)));
        let fill = |y: &mut [MaybeUninit<f32>]| {
            y.par_chunks_mut(TASK)
                .zip(g.par_chunks(TASK).zip(u.par_chunks(TASK)))
                .for_each(|(y, (g, u))| match self.act {
                    Activation::Silu => forward(silu, y, g, u),
                    Activation::GeluTanh => forward(gelu_tanh, y, g, u),
                })
        };
        // SAFETY: `g` and `u` hold `n × f` values each, so the chunks of `y` pair with equally long
        // chunks of both, and `forward` writes every value of its chunk.
        let y = unsafe { written(n * f, fill) };
        *self.kept.lock().map_err(|_| lock_error())? = Some((Arc::new(g), Arc::new(u)));
        Ok((CpuStorage::F32(y), Shape::from((n, f))))
    }

    /// `dg, du` from the activation's derivative, then `dx = dg · W_gate + du · W_up`,
    /// `dW_gate = dgᵀ · x`, `dW_up = duᵀ · x`.
    fn bwd(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, u) = match self.kept.lock().map_err(|_| lock_error())?.as_ref() {
            Some((g, u)) => (Arc::clone(g), Arc::clone(u)),
            None => candle_core::bail!("gated_projection: backward before forward"),
        };
        let (n, h) = x.dims2()?;
        let (f, _) = w_gate.dims2()?;
        let (dx, dwg, dwu) = with_f32s([x, w_gate, w_up, grad], self.name(), |[x, wg, wu, dy]| {
            if dy.len() != n * f || g.len() != n * f {
                candle_core::bail!("gated_projection: the gradient is not [{n}, {f}]");
            }
            let mut du = Vec::with_capacity(n * f);
            let fill = |dg: &mut [MaybeUninit<f32>]| {
                dg.par_chunks_mut(TASK)
                    .zip(du.spare_capacity_mut()[..n * f].par_chunks_mut(TASK))
                    .zip(
                        g.par_chunks(TASK)
                            .zip(u.par_chunks(TASK))
                            .zip(dy.par_chunks(TASK)),
                    )
                    .for_each(|(d, ((g, u), dy))| match self.act {
                        Activation::Silu => backward(silu, d, (g, u, dy)),
                        Activation::GeluTanh => backward(gelu_tanh, d, (g, u, dy)),
                    })
            };
            // SAFETY: `g`, `u` and `dy` hold `n × f` values each (checked above), so the chunks of
            // both outputs pair with equally long input chunks, and `backward` writes every value of
            // both: `dg` in full by `written`, `du`'s first `n × f`, after which its length is set.
            let dg = unsafe { written(n * f, fill) };
            // SAFETY: as above.
            unsafe { du.set_len(n * f) };
            let mut dx = new_product((n, h, f), (&dg, (f, 1)), (wg, (h, 1)));
            if n * h * f > 0 {
                // SAFETY: `du` is `n × f`, `wu` is `f × h` and `dx` is `n × h`, all in bounds (and
                // none empty); `dx` is this function's own buffer.
                unsafe {
                    product(
                        dx.as_mut_ptr(),
                        h,
                        (n, h, f),
                        Operand::of(&du, 0, (f, 1)),
                        Operand::of(wu, 0, (h, 1)),
                        1.0,
                        true,
                        parallelism(),
                    );
                }
            }
            let dwg = new_product((f, h, n), (&dg, (1, f)), (x, (h, 1)));
            let dwu = new_product((f, h, n), (&du, (1, f)), (x, (h, 1)));
            Ok((dx, dwg, dwu))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dwg, w_gate.dims())?),
            Some(cpu_tensor(dwu, w_up.dims())?),
        ))
    }
}
