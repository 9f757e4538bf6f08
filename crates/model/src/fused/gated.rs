//! The gated FFN activation `act(gate) · up` in one pass, with its backward pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::{cpu_tensor, f32s, with_f32s, written};
use multiversion::multiversion;
use shuku_math::exp;

/// Values per rayon task of the element-wise kernels.
pub(super) const TASK: usize = 16 * 1024;

/// `silu(gate) · up`, differentiable in both.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gated(gate, up, Act::Silu)
}

/// `gelu_tanh(gate) · up` (HF `gelu_pytorch_tanh`), differentiable in both.
pub fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gated(gate, up, Act::GeluTanh)
}

fn gated(gate: &Tensor, up: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    if gate.dims() != up.dims() {
        candle_core::bail!(
            "gated activation: gate {:?} and up {:?} differ",
            gate.dims(),
            up.dims()
        );
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, Gated(act))
}

#[derive(Clone, Copy)]
enum Act {
    Silu,
    GeluTanh,
}

/// `sqrt(2/π)`.
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

/// SiLU and its derivative at `x`.
#[inline(always)]
pub(super) fn silu(x: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + exp(-x));
    (x * s, s * (1.0 + x * (1.0 - s)))
}

/// GELU (tanh approximation) and its derivative at `x`.
#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> (f32, f32) {
    let t = (GELU_C * x * (1.0 + GELU_A * x * x)).tanh();
    let slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
    (0.5 * x * (1.0 + t), slope)
}

/// `y = act(g) · u` over one task's values, every value of `y` written; `act` gives an activation
/// and its derivative. One loop per activation: a choice of activation per value kept the loop from
/// vectorising.
#[multiversion(targets = "simd")]
pub(super) fn forward<A: Fn(f32) -> (f32, f32)>(
    act: A,
    y: &mut [MaybeUninit<f32>],
    g: &[f32],
    u: &[f32],
) {
    assert!(g.len() == y.len() && u.len() == y.len());
    for ((y, g), u) in y.iter_mut().zip(g).zip(u) {
        y.write(act(*g).0 * u);
    }
}

/// The gradients `dg`, `du` of `act(g) · u` for the output gradient `dy`, over one task's values,
/// every value of both written.
#[multiversion(targets = "simd")]
pub(super) fn backward<A: Fn(f32) -> (f32, f32)>(
    act: A,
    (dg, du): (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]),
    (g, u, dy): (&[f32], &[f32], &[f32]),
) {
    let n = dg.len();
    assert!(du.len() == n && g.len() == n && u.len() == n && dy.len() == n);
    for i in 0..n {
        let (a, slope) = act(g[i]);
        dg[i].write(dy[i] * u[i] * slope);
        du[i].write(dy[i] * a);
    }
}

struct Gated(Act);

impl CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Silu => "shuku-silu-mul",
            Act::GeluTanh => "shuku-gelu-tanh-mul",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let gate = f32s(s1, l1, self.name())?;
        let up = f32s(s2, l2, self.name())?;
        if up.len() != gate.len() {
            candle_core::bail!("{}: gate and up differ in size", self.name());
        }
        let fill = |y: &mut [MaybeUninit<f32>]| {
            y.par_chunks_mut(TASK)
                .zip(gate.par_chunks(TASK).zip(up.par_chunks(TASK)))
                .for_each(|(y, (g, u))| match self.0 {
                    Act::Silu => forward(silu, y, g, u),
                    Act::GeluTanh => forward(gelu_tanh, y, g, u),
                })
        };
        // SAFETY: the chunks of `y` pair with equally long chunks of `gate` and `up` (same length,
        // checked above), and `forward` writes every value of its chunk.
        let y = unsafe { written(gate.len(), fill) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (d_gate, d_up) = with_f32s([gate, up, grad], self.name(), |[g, u, dy]| {
            let n = g.len();
            if u.len() != n || dy.len() != n {
                candle_core::bail!("shuku-gated: gate, up and gradient differ in size");
            }
            let mut d_up = Vec::with_capacity(n);
            let fill = |d_gate: &mut [MaybeUninit<f32>]| {
                d_gate
                    .par_chunks_mut(TASK)
                    .zip(d_up.spare_capacity_mut()[..n].par_chunks_mut(TASK))
                    .zip(
                        g.par_chunks(TASK)
                            .zip(u.par_chunks(TASK))
                            .zip(dy.par_chunks(TASK)),
                    )
                    .for_each(|(d, ((g, u), dy))| match self.0 {
                        Act::Silu => backward(silu, d, (g, u, dy)),
                        Act::GeluTanh => backward(gelu_tanh, d, (g, u, dy)),
                    })
            };
            // SAFETY: the chunks of both outputs pair with equally long chunks of `g`, `u` and `dy`
            // (same length, checked above), and `backward` writes every value of both its chunks:
            // `d_gate` in full by `written`, `d_up`'s first `n` values, after which its length is
            // set.
            let d_gate = unsafe { written(n, fill) };
            // SAFETY: as above.
            unsafe { d_up.set_len(n) };
            Ok((d_gate, d_up))
        })?;
        Ok((
            Some(cpu_tensor(d_gate, gate.dims())?),
            Some(cpu_tensor(d_up, up.dims())?),
        ))
    }
}
