//! The output head and its training loss as one op: `hidden · Wᵀ` followed by the cross-entropy and,
//! for distillation, the forward KL to a teacher, computed a block of rows at a time.
//!
//! Through [`super::linear`] and [`super::cross_entropy`] the step keeps the `[N, V]` logits alive
//! until the backward pass, which then writes an `[N, V]` gradient, and candle accumulates that
//! gradient by zeroing another `[N, V]` buffer and adding into it: four buffers of the largest size in
//! the step (a 4096-word vocabulary at 2048 positions: 32 MiB each; SmolLM2's 49 152 words at 1024:
//! 192 MiB each), each a fresh allocation the kernel pages in. Here the loss's gradient with respect to
//! a block's logits is known as soon as the block's losses are (it is the softmax minus the target
//! distribution), so the forward pass turns each block of logits into its gradient in place and
//! multiplies it out at once into the gradients of the hidden states and of the weight; only a block's
//! logits ever exist. The backward pass scales those two gradients by the loss's incoming gradient.
//!
//! The total is `α · T² · KL(softmax(t/T) ‖ softmax(s/T))` averaged over every row, plus
//! `(1 − α) ·` the cross-entropy averaged over the rows whose target is not ignored: the same
//! definitions as [`super::forward_kl`] and [`super::cross_entropy`]. Without a teacher it is the
//! cross-entropy alone.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::loss::{kl_row, log_sum_exp, target_ids, IGNORED};
use super::{cpu_tensor, f32s, parallelism, product, rows_per_task, with_f32s, Operand};
use shuku_math::exp;

/// The teacher side of a distillation loss fused with the head.
#[derive(Debug, Clone)]
pub struct SoftTargets {
    /// Teacher logits `[N, V]`; they receive no gradient.
    pub teacher: Tensor,
    /// Softmax temperature `T` of both distributions.
    pub temperature: f64,
    /// Weight `α` of the KL term; the cross-entropy gets `1 − α`.
    pub alpha: f64,
}

/// The fused loss and its two terms' values.
#[derive(Debug, Clone)]
pub struct HeadLoss {
    /// The scalar to differentiate (in `hidden` and `weight`).
    pub total: Tensor,
    /// Mean cross-entropy over the rows not ignored.
    pub hard: f64,
    /// `T² · KL`, averaged over the rows, with a teacher.
    pub soft: Option<f64>,
}

/// Logit values a block of rows may hold at once (8 MiB): small enough to stay in the last-level
/// cache between the product that writes a block and the two that read its gradient.
const BLOCK_VALUES: usize = 1 << 21;

/// Rows per block: fewer blocks for large vocabularies, since every block multiplies the whole weight
/// (so at least 128 rows, which keeps the weight's reads a small share of the products).
fn rows_per_block(vocab: usize) -> usize {
    (BLOCK_VALUES / vocab.max(1)).max(128)
}

/// The loss of the head `hidden` `[N, H]` · `weight` `[V, H]`ᵀ against `targets` (one per row, `None`
/// to ignore the row) and, with `soft`, against the teacher's logits. Differentiable in `hidden` and
/// `weight`; both must be f32 on the CPU ([`super::applies`]).
pub fn head_loss(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[Option<u32>],
    soft: Option<&SoftTargets>,
) -> candle_core::Result<HeadLoss> {
    head_loss_in_blocks(hidden, weight, targets, soft, None)
}

/// [`head_loss`] with a chosen block height (tests cover several blocks on small shapes).
pub(super) fn head_loss_in_blocks(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[Option<u32>],
    soft: Option<&SoftTargets>,
    block_rows: Option<usize>,
) -> candle_core::Result<HeadLoss> {
    let (n, h) = hidden.dims2()?;
    let (v, wh) = weight.dims2()?;
    if h != wh {
        candle_core::bail!(
            "head_loss: hidden {:?} does not fit weight {:?}",
            hidden.dims(),
            weight.dims()
        );
    }
    let (ids, count) = target_ids(targets, (n, v), "head_loss")?;
    let teacher = match soft {
        Some(s) => {
            if s.teacher.dims() != [n, v] {
                candle_core::bail!(
                    "head_loss: teacher logits {:?}, expected [{n}, {v}]",
                    s.teacher.dims()
                );
            }
            let valid =
                s.temperature.is_finite() && s.temperature > 0.0 && (0.0..=1.0).contains(&s.alpha);
            if !valid {
                candle_core::bail!(
                    "head_loss: temperature {} must be positive and alpha {} in [0, 1]",
                    s.temperature,
                    s.alpha
                );
            }
            Some((
                s.teacher.detach().contiguous()?,
                s.temperature as f32,
                s.alpha as f32,
            ))
        }
        None => None,
    };
    let parts = Arc::new(Mutex::new(None));
    let op = FusedHead {
        targets: ids.into(),
        count,
        teacher,
        block_rows: block_rows.unwrap_or_else(|| rows_per_block(v)),
        parts: Arc::clone(&parts),
    };
    let total = hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    let parts = parts.lock().map_err(|_| lock_error())?;
    let Some(p) = parts.as_ref() else {
        candle_core::bail!("head_loss: the forward pass left no result");
    };
    Ok(HeadLoss {
        total,
        hard: p.hard,
        soft: soft.map(|_| p.soft),
    })
}

fn lock_error() -> candle_core::Error {
    candle_core::Error::Msg("head_loss: a thread panicked while holding its gradients".into())
}

/// What the forward pass leaves for the backward pass and the caller.
struct Parts {
    /// `d total / d hidden`, `[N, H]`.
    d_hidden: Arc<Vec<f32>>,
    /// `d total / d weight`, `[V, H]`.
    d_weight: Arc<Vec<f32>>,
    hard: f64,
    soft: f64,
}

struct FusedHead {
    targets: Arc<[u32]>,
    count: usize,
    /// Teacher logits (contiguous, detached), temperature and α.
    teacher: Option<(Tensor, f32, f32)>,
    block_rows: usize,
    parts: Arc<Mutex<Option<Parts>>>,
}

/// How one row's gradient is made from its logits.
#[derive(Clone, Copy)]
struct RowWeights {
    /// Weight of the cross-entropy's gradient, `(1 − α) / count`.
    hard: f32,
    /// Weight of the KL's gradient, `α · T / N`.
    soft: f32,
    inv_t: f32,
}

/// `x ← hard · softmax(x)` given `x`'s log-sum-exp: the cross-entropy's gradient before the target's
/// `− hard`.
#[multiversion(targets = "simd")]
fn softmax_scaled(x: &mut [f32], lse: f32, hard: f32) {
    for x in x.iter_mut() {
        *x = hard * exp(*x - lse);
    }
}

/// `x ← hard · softmax(x) + soft · (softmax(x/T) − softmax(t/T))` given the log-sum-exps `lse` of `x`
/// and `(zs, zt)` of `x/T` and `t/T`.
#[multiversion(targets = "simd")]
fn mixed_gradient(x: &mut [f32], t: &[f32], (lse, zs, zt): (f32, f32, f32), w: RowWeights) {
    for (x, t) in x.iter_mut().zip(t) {
        let v = *x;
        *x = w.hard * exp(v - lse) + w.soft * (exp(v * w.inv_t - zs) - exp(t * w.inv_t - zt));
    }
}

/// Turns one row of logits into the total's gradient with respect to it, in place, and returns the
/// row's cross-entropy (0 when ignored) and KL (`KL(softmax(t/T) ‖ softmax(x/T))`, 0 without teacher).
fn row_loss_and_gradient(
    x: &mut [f32],
    target: u32,
    teacher: Option<&[f32]>,
    w: RowWeights,
) -> (f64, f64) {
    let (max, sum) = log_sum_exp(x, 1.0);
    let lse = max + sum;
    let (hard, hard_weight) = match target {
        IGNORED => (0.0, 0.0),
        t => (f64::from(lse - x[t as usize]), w.hard),
    };
    let kl = match teacher {
        Some(t) => {
            let (ms, ls) = log_sum_exp(x, w.inv_t);
            let (mt, lt) = log_sum_exp(t, w.inv_t);
            let (zs, zt) = (ms + ls, mt + lt);
            let kl = kl_row(x, t, w.inv_t, (zs, zt));
            let w = RowWeights {
                hard: hard_weight,
                ..w
            };
            mixed_gradient(x, t, (lse, zs, zt), w);
            f64::from(kl)
        }
        None => {
            softmax_scaled(x, lse, hard_weight);
            0.0
        }
    };
    if target != IGNORED {
        x[target as usize] -= hard_weight;
    }
    (hard, kl)
}

impl FusedHead {
    /// Runs the blocks: `(d_hidden, d_weight, Σ cross-entropy, Σ KL)`.
    fn run(
        &self,
        x: &[f32],
        w: &[f32],
        teacher: Option<&[f32]>,
        (n, h, v): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>, f64, f64) {
        let (temperature, alpha) = match &self.teacher {
            Some((_, t, a)) => (*t, *a),
            None => (1.0, 0.0),
        };
        let weights = RowWeights {
            hard: (1.0 - alpha) / self.count as f32,
            soft: alpha * temperature / n.max(1) as f32,
            inv_t: 1.0 / temperature,
        };
        if n == 0 || h == 0 || v == 0 {
            return (vec![0f32; n * h], vec![0f32; v * h], 0.0, 0.0);
        }
        let block = self.block_rows.min(n).max(1);
        let mut logits = vec![0f32; block * v];
        let mut d_hidden = Vec::<f32>::with_capacity(n * h);
        let mut d_weight = Vec::<f32>::with_capacity(v * h);
        let (mut hard, mut kl) = (0f64, 0f64);
        for start in (0..n).step_by(block) {
            let rows = block.min(n - start);
            let g = &mut logits[..rows * v];
            // SAFETY: `x` holds `n × h` values and rows `start .. start + rows` of it are read; `w` holds
            // `v × h` read transposed (strides `(1, h)`); `g` holds `rows × v` values, all written.
            unsafe {
                product(
                    g.as_mut_ptr(),
                    v,
                    (rows, v, h),
                    Operand::of(x, start * h, (h, 1)),
                    Operand::of(w, 0, (1, h)),
                    1.0,
                    false,
                    parallelism(),
                );
            }
            let task = rows_per_task(v);
            let sums: Vec<(f64, f64)> = g
                .par_chunks_mut(task * v)
                .enumerate()
                .map(|(c, rows)| {
                    rows.chunks_exact_mut(v)
                        .enumerate()
                        .map(|(r, row)| {
                            let i = start + c * task + r;
                            let t = teacher.map(|t| &t[i * v..][..v]);
                            row_loss_and_gradient(row, self.targets[i], t, weights)
                        })
                        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
                })
                .collect();
            for (a, b) in sums {
                hard += a;
                kl += b;
            }
            let g = &logits[..rows * v];
            assert!(d_hidden.capacity() >= (start + rows) * h && d_weight.capacity() >= v * h);
            // SAFETY: rows `start .. start + rows` of `d_hidden` (`h` values each) lie inside its
            // reserved `n × h` values and are written here, once, without being read; `d_weight`'s
            // `v × h` reserved values are written by the first block (no accumulation) and read and
            // written by the later ones. `g` is `rows × v`, `w` is `v × h`, `x`'s rows are in bounds.
            unsafe {
                product(
                    d_hidden.as_mut_ptr().add(start * h),
                    h,
                    (rows, h, v),
                    Operand::of(g, 0, (v, 1)),
                    Operand::of(w, 0, (h, 1)),
                    1.0,
                    false,
                    parallelism(),
                );
                product(
                    d_weight.as_mut_ptr(),
                    h,
                    (v, h, rows),
                    Operand::of(g, 0, (1, v)),
                    Operand::of(x, start * h, (h, 1)),
                    1.0,
                    start > 0,
                    parallelism(),
                );
            }
        }
        // SAFETY: the blocks cover rows `0 .. n`, so every value of `d_hidden` was written, and the
        // first block wrote every value of `d_weight`.
        unsafe {
            d_hidden.set_len(n * h);
            d_weight.set_len(v * h);
        }
        (d_hidden, d_weight, hard, kl)
    }
}

impl CustomOp2 for FusedHead {
    fn name(&self) -> &'static str {
        "shuku-head-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (n, h) = l1.shape().dims2()?;
        let (v, _) = l2.shape().dims2()?;
        let (d_hidden, d_weight, hard, kl) = match &self.teacher {
            Some((t, _, _)) => with_f32s([t], self.name(), |[t]| {
                Ok(self.run(x, w, Some(t), (n, h, v)))
            })?,
            None => self.run(x, w, None, (n, h, v)),
        };
        let hard = hard / self.count as f64;
        let (soft, alpha) = match &self.teacher {
            Some((_, t, a)) => (f64::from(*t).powi(2) * kl / n.max(1) as f64, f64::from(*a)),
            None => (0.0, 0.0),
        };
        let total = alpha * soft + (1.0 - alpha) * hard;
        *self.parts.lock().map_err(|_| lock_error())? = Some(Parts {
            d_hidden: Arc::new(d_hidden),
            d_weight: Arc::new(d_weight),
            hard,
            soft,
        });
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    /// The forward pass's gradients times the incoming one.
    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let (d_hidden, d_weight) = {
            let parts = self.parts.lock().map_err(|_| lock_error())?;
            let Some(p) = parts.as_ref() else {
                candle_core::bail!("head_loss: backward before forward");
            };
            (Arc::clone(&p.d_hidden), Arc::clone(&p.d_weight))
        };
        let scaled = |d: &[f32]| -> Vec<f32> { d.par_iter().map(|v| g * v).collect() };
        Ok((
            Some(cpu_tensor(scaled(&d_hidden), hidden.dims())?),
            Some(cpu_tensor(scaled(&d_weight), weight.dims())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// Blocks of a few rows give the loss and gradients of one block over every row.
    #[test]
    fn blocks_of_rows_match_one_block() {
        let (n, h, v) = (23, 6, 9);
        let hidden = Var::from_vec(values(n * h, 1, 1.0), (n, h), &Device::Cpu).unwrap();
        let weight = Var::from_vec(values(v * h, 2, 1.0), (v, h), &Device::Cpu).unwrap();
        let teacher = Tensor::from_vec(values(n * v, 3, 3.0), (n, v), &Device::Cpu).unwrap();
        let targets: Vec<Option<u32>> = (0..n)
            .map(|i| (i % 5 != 2).then_some((i * 7 % v) as u32))
            .collect();
        let soft = SoftTargets {
            teacher,
            temperature: 1.5,
            alpha: 0.6,
        };
        for soft in [None, Some(&soft)] {
            let run = |rows| {
                let out = head_loss_in_blocks(
                    hidden.as_tensor(),
                    weight.as_tensor(),
                    &targets,
                    soft,
                    Some(rows),
                )
                .unwrap();
                let grads = (&out.total * 0.5).unwrap().backward().unwrap();
                let flat = |t: &Tensor| grads.get(t).unwrap().flatten_all().unwrap();
                let g = Tensor::cat(&[flat(hidden.as_tensor()), flat(weight.as_tensor())], 0)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                (out.total.to_scalar::<f32>().unwrap(), out.hard, out.soft, g)
            };
            let whole = run(n);
            for rows in [1, 4, 7] {
                let blocks = run(rows);
                assert!((blocks.0 - whole.0).abs() < 1e-6, "total, {rows} rows");
                assert!((blocks.1 - whole.1).abs() < 1e-6);
                assert_eq!(blocks.2.is_some(), whole.2.is_some());
                let worst = blocks
                    .3
                    .iter()
                    .zip(&whole.3)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-6,
                    "gradients differ by {worst} with {rows} rows per block"
                );
            }
        }
    }
}
