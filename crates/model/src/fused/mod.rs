//! Fused, differentiable CPU kernels for the model's hot element-wise steps and its attention.
//!
//! candle differentiates its basic ops, so the model could be (and on other devices still is) built from
//! them alone: RMSNorm as six passes over memory, softmax as five, RoPE as a `narrow`/`neg`/`cat` and two
//! products, every one allocating a fresh tensor, and attention through `repeat_kv`, transposes and a
//! dense mask. candle's own fused kernels (`candle_nn::ops::rms_norm`, `softmax_last_dim`,
//! `rotary_emb::rope`) have no backward pass. The kernels here are candle custom ops (`CustomOp1`..`3`) with
//! hand-written backward passes: one read and one write per element forward, one pass backward, work
//! spread over rayon's pool (which sleeps when idle instead of spinning).
//!
//! * [`rms_norm`]: RMSNorm over the last dimension, gradients for the input and the gain.
//! * [`rope`]: HF rotate-half RoPE on `[B, T, H, D]` with `[T, D]` tables.
//! * [`attention`]: causal grouped-query attention (optional sliding window, any number of cached
//!   positions), scores recomputed in the backward pass instead of stored; per-head products by `gemm`.
//! * [`linear`]: `x · Wᵀ`, the weight's gradient written in its own layout.
//! * [`linear_residual`]: `r + x · Wᵀ`, an output projection and its residual connection as one op.
//! * [`silu_mul`], [`gelu_tanh_mul`]: the gated FFN activation `act(gate) · up`.
//! * [`cross_entropy`], [`forward_kl`]: losses from logits, whose gradients need no `[N, V]` log-softmax
//!   kept alive.
//! * [`head_projection`]: an attention projection laid out in heads, RoPE applied on the way out, one
//!   op instead of a product, a reshape and a rotation.
//! * [`gated_projection`]: the FFN's two projections and the gated activation as one op, so the
//!   projections' `[N, F]` gradients never pass through the graph.
//! * [`head_loss`]: the output head's product and those losses as one op, a block of rows at a time,
//!   the gradients made in the forward pass, so the `[N, V]` logits and their gradient never exist.
//! * [`sum_of_squares`]: the gradient norm's reduction, in f64, without copies.
//!
//! The element-wise loops are written to vectorise (`shuku_math`'s inlined `exp`, sums in fixed
//! lanes) and compiled by `multiversion` once per CPU level (AVX-512, AVX2 with FMA, the baseline),
//! chosen at run time: the workspace builds for its target's baseline, four f32 lanes on x86-64.
//! The clones run the same operations in the same order (no contraction, no reassociation), so the
//! results do not depend on the CPU.
//!
//! Each applies to contiguous-able f32 tensors on the CPU ([`applies`]); callers keep the composed
//! version for anything else. Every kernel is tested against the composed candle ops (values and
//! gradients) and against finite differences (`tests/fused.rs`). Work is split in chunks whose size does
//! not depend on the thread count, and partial sums are combined in a fixed order, so results are the
//! same to the bit with any number of threads.

mod attention;
mod gated;
mod gated_projection;
mod head;
mod head_projection;
mod linear;
mod loss;
mod norm;
mod reduce;
mod rope;

pub use attention::attention;
pub use gated::{gelu_tanh_mul, silu_mul};
pub use gated_projection::gated_projection;
pub use head::{head_loss, HeadLoss, SoftTargets};
pub use head_projection::head_projection;
pub use linear::{linear, linear_residual};
pub use loss::{cross_entropy, forward_kl};
pub use norm::rms_norm;
pub use reduce::sum_of_squares;
pub use rope::rope;

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, DType, Layout, Storage, Tensor};
use gemm::Parallelism;

/// Whether the fused kernels can run on `t`: f32 on the CPU.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The values of f32 CPU storage under a contiguous `layout`.
fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

/// Runs `f` on the f32 values of `tensors` (made contiguous first), for backward passes, which receive
/// tensors rather than storages.
fn with_f32s<const N: usize, R>(
    tensors: [&Tensor; N],
    op: &str,
    f: impl FnOnce([&[f32]; N]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let owned = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: [&[f32]; N] = [&[]; N];
    for (slot, (storage, layout)) in slices.iter_mut().zip(&guards) {
        *slot = match &**storage {
            Storage::Cpu(cpu) => f32s(cpu, layout, op)?,
            _ => bail!("{op}: the fused kernels run on the CPU"),
        };
    }
    f(slices)
}

/// A tensor on the CPU from `values` shaped `dims`.
fn cpu_tensor(values: Vec<f32>, dims: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, dims, &candle_core::Device::Cpu)
}

/// A new buffer of `n` values, each written by `fill`, without zeroing it first: zeroing a fresh
/// buffer runs on the calling thread, a serial part of every multi-threaded step.
///
/// # Safety
/// `fill` must write every one of the `n` values it is given.
unsafe fn written(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's `fill` wrote all `n` values, the first `n` of the buffer's capacity.
    unsafe { v.set_len(n) };
    v
}

/// Rows handed to one rayon task: enough work (about 16 k values) to pay for the hand-off, fixed so the
/// split never depends on the thread count.
fn rows_per_task(row_len: usize) -> usize {
    (16 * 1024 / row_len.max(1)).max(1)
}

/// The pool-wide parallelism `gemm` splits its output over (rayon's pool, sized by the caller).
fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// One operand of [`product`]: its first element and its row and column strides (in values).
#[derive(Clone, Copy)]
struct Operand {
    start: *const f32,
    row: usize,
    col: usize,
}

impl Operand {
    /// The matrix starting at `values[offset]` with strides `(row, col)`.
    fn of(values: &[f32], offset: usize, (row, col): (usize, usize)) -> Self {
        Self {
            start: values[offset..].as_ptr(),
            row,
            col,
        }
    }
}

/// `dst = scale · lhs · rhs` (`m × k` times `k × n`), or `dst += …` with `accumulate`; `dst` has row
/// stride `dst_row` and unit column stride. `gemm` on this thread, or spread over rayon's pool.
///
/// # Safety
/// Every element the strides address (`lhs`: `m × k`, `rhs`: `k × n`, `dst`: `m × n`) must lie inside
/// a live buffer, and no one else may touch `dst`'s elements during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    dst: *mut f32,
    dst_row: usize,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    scale: f32,
    accumulate: bool,
    parallelism: Parallelism,
) {
    // SAFETY: the caller keeps every addressed element in bounds and `dst` exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row as isize,
            accumulate,
            lhs.start,
            lhs.col as isize,
            lhs.row as isize,
            rhs.start,
            rhs.col as isize,
            rhs.row as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}
