//! The model's building blocks, each in up to three implementations:
//!
//! * **fused** ([`crate::fused`]): one-pass CPU kernels with hand-written backward passes, used for f32
//!   tensors on the CPU, with or without gradients;
//! * **composed**: element-wise ops, reductions, `narrow`/`cat` and `matmul`, all of which candle
//!   differentiates; used on other devices and dtypes, and everywhere inside [`composed_only`] (the
//!   reference the fused kernels are tested against);
//! * **candle-nn's fused kernels** (`candle_nn::ops::rms_norm`, `softmax_last_dim`, `rotary_emb::rope_thd`),
//!   which have no backward pass: used off the CPU inside [`without_gradients`], for passes that never
//!   call `backward` (calibration, pruning, quantization, evaluation).
//!
//! `tests/gradients.rs` proves every parameter receives a gradient; `tests/fused.rs` checks the fused
//! kernels' values and gradients against the composed ops and finite differences.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;
use crate::fused;

thread_local! {
    static NO_GRADIENTS: Cell<bool> = const { Cell::new(false) };
    static COMPOSED_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Sets `flag` for the duration of `f` on this thread, restoring it afterwards (also on panic).
fn scoped<T>(flag: &'static std::thread::LocalKey<Cell<bool>>, f: impl FnOnce() -> T) -> T {
    scoped_to(flag, true, f)
}

/// Gives `flag` the value `value` for the duration of `f` on this thread, restoring it afterwards
/// (also on panic).
fn scoped_to<T>(
    flag: &'static std::thread::LocalKey<Cell<bool>>,
    value: bool,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore(&'static std::thread::LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(value)));
    f()
}

/// The switches of [`without_gradients`] and [`composed_only`] in force on one thread, carried to
/// the thread that runs a pass for it ([`crate::threads::on_pool`]): they are thread-local.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelSwitches {
    no_gradients: bool,
    composed_only: bool,
}

impl KernelSwitches {
    /// This thread's switches.
    pub(crate) fn current() -> Self {
        Self {
            no_gradients: NO_GRADIENTS.with(Cell::get),
            composed_only: COMPOSED_ONLY.with(Cell::get),
        }
    }

    /// Runs `f` with these switches on this thread, restoring its own afterwards.
    pub(crate) fn apply<T>(self, f: impl FnOnce() -> T) -> T {
        scoped_to(&NO_GRADIENTS, self.no_gradients, || {
            scoped_to(&COMPOSED_ONLY, self.composed_only, f)
        })
    }
}

/// Runs `f` with candle-nn's forward-only kernels for RMSNorm, softmax and RoPE where the fused CPU
/// kernels do not apply (other devices, other dtypes). Anything computed inside may have no gradient
/// through those ops; use it only for passes that never call `backward`.
pub fn without_gradients<T>(f: impl FnOnce() -> T) -> T {
    scoped(&NO_GRADIENTS, f)
}

/// Runs `f` with the composed (basic candle op) versions of every block, the fused CPU kernels switched
/// off: the reference implementation, for tests and comparisons.
pub fn composed_only<T>(f: impl FnOnce() -> T) -> T {
    scoped(&COMPOSED_ONLY, f)
}

/// Whether this thread is inside [`without_gradients`]: candle-nn's gradient-free kernels may be used
/// and no backward pass follows.
pub(crate) fn no_gradients() -> bool {
    NO_GRADIENTS.with(Cell::get)
}

/// Whether the fused CPU kernels ([`crate::fused`]) take `t` here: f32 on the CPU, outside
/// [`composed_only`]. Other crates' losses follow the same switch through this.
pub fn fused_for(t: &Tensor) -> bool {
    !COMPOSED_ONLY.with(Cell::get) && fused::applies(t)
}

/// `x` `[N, in]` times a PyTorch-layout `weight` `[out, in]` transposed: `[N, out]`.
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::linear(x, weight)?);
    }
    Ok(x.matmul(&weight.t()?)?)
}

/// `residual + x · Wᵀ` for `x` `[N, in]`, a PyTorch-layout `weight` `[out, in]` and `residual`
/// `[N, out]`; differentiable in all three.
pub fn linear_residual(x: &Tensor, weight: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::linear_residual(x, weight, residual)?);
    }
    Ok((residual + linear(x, weight)?)?)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::rms_norm(x, weight, eps)?);
    }
    if no_gradients() {
        return Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            weight,
            eps as f32,
        )?);
    }
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv_rms)?.broadcast_mul(weight)?)
}

/// Softmax over the last dimension. The row maximum is subtracted for stability and detached: softmax is
/// shift-invariant, so the gradient through it would be zero anyway.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if no_gradients() {
        return Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dimension (stable: max subtracted, detached).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Mean cross-entropy of `logits` `[N, V]` against `targets` `[N]` (u32); differentiable, for trainers and
/// tests.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused_for(logits) {
        let ids = targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let ids: Vec<Option<u32>> = ids.into_iter().map(Some).collect();
        return Ok(fused::cross_entropy(logits, &ids)?);
    }
    let lp = log_softmax_last_dim(logits)?;
    let picked = lp.gather(&targets.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// The gated FFN activation `act(gate) · up`: `silu` (llama) or `gelu_tanh` (HF `gelu_pytorch_tanh`,
/// Gemma); differentiable.
pub fn gated(gate: &Tensor, up: &Tensor, act: crate::Activation) -> Result<Tensor> {
    use crate::Activation;
    if fused_for(gate) {
        return Ok(match act {
            Activation::Silu => fused::silu_mul(gate, up)?,
            Activation::GeluTanh => fused::gelu_tanh_mul(gate, up)?,
        });
    }
    let a = match act {
        Activation::Silu => gate.silu()?,
        Activation::GeluTanh => gate.gelu()?,
    };
    Ok((a * up)?)
}

/// The gated FFN's first half `act(x · w_gateᵀ) · (x · w_upᵀ)` for `x` `[N, H]` and PyTorch-layout
/// weights `[F, H]`; differentiable in all three.
pub fn gated_projection(
    x: &Tensor,
    w_gate: &Tensor,
    w_up: &Tensor,
    act: crate::Activation,
) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::gated_projection(x, w_gate, w_up, act)?);
    }
    gated(&linear(x, w_gate)?, &linear(x, w_up)?, act)
}

/// `x` `[B·T, H]` times a PyTorch-layout `weight` `[heads·D, H]` transposed, laid out in heads
/// `[B, T, heads, D]`, then rotated by RoPE tables `(cos, sin)` `[T, D]` when given ([`rope`]);
/// differentiable in `x` and `weight`.
pub fn head_projection(
    x: &Tensor,
    weight: &Tensor,
    dims: (usize, usize, usize, usize),
    rope_tables: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::head_projection(x, weight, dims, rope_tables)?);
    }
    let y = linear(x, weight)?.reshape(dims)?;
    match rope_tables {
        Some((cos, sin)) => rope(&y, cos, sin),
        None => Ok(y),
    }
}

/// Cosine and sine tables `[len, head_dim]` for positions `offset .. offset + len` and the `head_dim / 2`
/// rotation `frequencies` (radians per position), in HF's rotate-half layout (the frequencies repeated
/// twice), both multiplied by `scale` (LongRoPE's attention factor; 1 otherwise). Angles are computed in
/// f64 so long positions stay exact.
pub fn rope_tables(
    frequencies: &[f64],
    scale: f64,
    offset: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let head_dim = 2 * frequencies.len();
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for p in offset..offset + len {
        let row: Vec<f64> = frequencies.iter().map(|f| p as f64 * f).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|a| (a.cos() * scale) as f32));
            sin.extend(row.iter().map(|a| (a.sin() * scale) as f32));
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, head_dim), device)?,
        Tensor::from_vec(sin, (len, head_dim), device)?,
    ))
}

/// Applies HF rotate-half RoPE to `x` `[B, T, H, D]` (token-major, as the projections produce it) with
/// tables `[T, D]`: `x * cos + cat(-x₂, x₁) * sin`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        return Ok(fused::rope(x, cos, sin)?);
    }
    let d = x.dim(D::Minus1)?;
    if no_gradients() {
        // The forward-only kernel takes the `head_dim/2` distinct frequencies of the rotate-half tables.
        let half = |t: &Tensor| t.narrow(D::Minus1, 0, d / 2)?.contiguous();
        return Ok(candle_nn::rotary_emb::rope_thd(
            &x.contiguous()?,
            &half(cos)?,
            &half(sin)?,
        )?);
    }
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// Causal grouped-query attention of `q` `[B, T, H, D]` over `k`, `v` `[B, S, KV, D]` (the last `T` key
/// positions are the queries' own, earlier ones cached): scores scaled by `scale`, query `i` seeing keys
/// up to its own position and, with a `window`, only the last `window` of them. Returns `[B, T, H, D]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    if fused_for(q) {
        return Ok(fused::attention(q, k, v, scale, window)?);
    }
    let (_, t, h, _) = q.dims4()?;
    let (_, s, kv, _) = k.dims4()?;
    let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous();
    let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
    let k = repeat_kv(&k, h / kv)?;
    let v = repeat_kv(&v, h / kv)?;
    let mut att = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    // A single new position sees every cached one unless a window hides the oldest.
    if t > 1 || window.is_some_and(|w| s > w) {
        att = att.broadcast_add(&causal_mask(t, s - t, window, q.device())?)?;
    }
    let att = softmax_last_dim(&att)?;
    Ok(att.matmul(&v)?.transpose(1, 2)?.contiguous()?)
}

/// Additive causal mask `[T, offset + T]`: query `i` (absolute position `offset + i`) sees keys
/// `0 ..= offset + i`, and with a sliding `window` only the last `window` of them (itself included).
pub fn causal_mask(
    t: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let s = offset + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let q = offset + i;
            (0..s).map(move |j| {
                let too_far = window.is_some_and(|w| q - j.min(q) >= w);
                if j > q || too_far {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, s), device)?.to_dtype(DType::F32)?)
}

/// Repeats key/value heads `[B, KV, S, D]` → `[B, KV * rep, S, D]` so head `h` uses KV head `h / rep`.
pub fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, s, d))?
        .contiguous()?
        .reshape((b, kv * rep, s, d))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_match_exp_of_log_softmax() {
        let x = Tensor::new(&[[1000f32, 1001., 999.], [0., -1., 2.]], &Device::Cpu).unwrap();
        let s = softmax_last_dim(&x).unwrap();
        let sums = s.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|v| (v - 1.0).abs() < 1e-6));
        let ls = log_softmax_last_dim(&x).unwrap().exp().unwrap();
        let diff = (s - ls).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn default_kernels_agree_with_the_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (2, 5, 3, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let (cos, sin) = rope_tables(&[1.0, 0.1, 0.01, 0.001], 1.0, 3, 5, &dev).unwrap();
        let all = |x: &Tensor| -> [Tensor; 3] {
            [
                rms_norm(x, &w, 1e-5).unwrap(),
                softmax_last_dim(x).unwrap(),
                rope(x, &cos, &sin).unwrap(),
            ]
        };
        let fused = all(&x);
        let composed = composed_only(|| all(&x));
        for (a, b) in composed.iter().zip(&fused) {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        }
        // The switch is scoped: outside it, the fused kernels are back, and they have gradients.
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let g = rms_norm(v.as_tensor(), &w, 1e-5)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(v.as_tensor()).is_some());
        assert!(!COMPOSED_ONLY.with(Cell::get));
    }

    #[test]
    fn sliding_mask_keeps_the_last_window_positions() {
        let m = causal_mask(2, 3, Some(2), &Device::Cpu).unwrap();
        let rows = m.to_vec2::<f32>().unwrap();
        let seen = |r: &[f32]| r.iter().map(|v| v.is_finite()).collect::<Vec<_>>();
        assert_eq!(seen(&rows[0]), [false, false, true, true, false]);
        assert_eq!(seen(&rows[1]), [false, false, false, true, true]);
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let (cos, sin) = rope_tables(&[1.0, 0.01], 1.0, 0, 1, &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let y = rope(&x, &cos, &sin).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 2., 3., 4.]
        );
    }
}
